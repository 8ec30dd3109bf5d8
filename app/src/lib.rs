//! Weft's web UI and the wire types shared by the server and the browser.
//!
//! Every page renders completely on the server (feature `ssr`); only its interactive
//! parts, the [`islands`], are compiled for the browser (feature `hydrate`) and hydrated
//! there. The two features are never enabled in the same build.
//! [`wire`] holds every JSON shape of the REST API and the WebSocket stream.

// Leptos views are deeply nested types; the run page needs more room than the default.
#![recursion_limit = "256"]

pub mod api;
pub mod components;
pub mod follow;
pub mod format;
pub mod islands;
pub mod json_lines;
pub mod live;
pub mod pages;
pub mod wire;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, HashedStylesheet, MetaTags, Title};
use leptos_router::{
    components::{Route, Router, Routes, A},
    ParamSegment, SsrMode, StaticSegment,
};

/// The HTML document the server renders around [`App`].
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                // The stylesheet and scripts under their hashed names, when the server
                // gives them such (see `server/src/assets.rs`).
                <HashedStylesheet id="leptos" options=options.clone()/>
                <HydrationScripts options islands=true/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The root component: the title and the routes.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Title text="Weft"/>
        <Router>
            <nav class="top">
                <A href="/" attr:class="brand">"Weft"</A>
                <A href="/">"New run"</A>
                <A href="/history">"History"</A>
                <a href="/presets" rel="external">"API"</a>
                <pages::SessionBadge/>
            </nav>
            <main>
                // Async rendering: each page arrives complete, readable without JavaScript.
                <Routes fallback=pages::NotFound>
                    <Route path=StaticSegment("") view=pages::HomePage ssr=SsrMode::Async/>
                    <Route path=(StaticSegment("run"), ParamSegment("id")) view=pages::RunPage ssr=SsrMode::Async/>
                    <Route path=StaticSegment("history") view=pages::HistoryPage ssr=SsrMode::Async/>
                    <Route path=(StaticSegment("graph"), ParamSegment("id")) view=pages::GraphPage ssr=SsrMode::Async/>
                    <Route path=StaticSegment("signin") view=pages::SignInPage ssr=SsrMode::Async/>
                </Routes>
            </main>
            // Last on the page: islands hydrate in document order, so this one says that
            // every island before it is interactive.
            <footer class="page-foot"><islands::Hydrated/></footer>
        </Router>
    }
}
