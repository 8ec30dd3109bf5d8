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
