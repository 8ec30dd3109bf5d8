//! The routed pages.

pub mod graph;
pub mod history;
pub mod home;
pub mod run;
pub mod signin;

use leptos::prelude::*;

pub use graph::GraphPage;
pub use history::HistoryPage;
pub use home::HomePage;
pub use run::RunPage;
pub use signin::{SessionBadge, SignInPage};

/// Opens `href` in this tab: a new page load, rendered by the server (pages have no
/// client-side router; only their islands run in the browser). Does nothing on the server.
pub fn go_to(href: &str) {
    #[cfg(feature = "hydrate")]
    if let Err(err) = window().location().set_href(href) {
        leptos::logging::error!("could not open {href}: {err:?}");
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = href;
}

/// Shown for any path no route matches.
#[component]
pub fn NotFound() -> impl IntoView {
    view! {
        <section class="error-state">
            <h1>"Not found"</h1>
            <p>"No page lives at this address."</p>
            <a href="/">"Back to Weft"</a>
        </section>
    }
}
