//! The islands: the only parts of a page that run in the browser.
//!
//! Every page renders completely on the server; the browser's wasm holds just these
//! components and what they use, and Leptos hydrates each where the server placed it.
//! The big ones are lazy: each one's code is split into a chunk of its own
//! (`cargo leptos build --split`) that a page fetches only when it holds that island, so
//! the history never loads the run page's code, nor the run page a start form's, nor the
//! Code Review's start page the custom graph's editor. [`Hydrated`] and [`DeleteRun`]
//! are small and stay in the main module.
//!
//! An island's props travel in the page as JSON: they are kept few and small.

// The `#[island]` macro writes undocumented items beside each island (its props as
// serialized, its hydrate function); the islands themselves are documented.
#![allow(missing_docs)]

use leptos::prelude::*;

use crate::pages;

/// The start page's form for a Code Review.
#[island(lazy)]
pub fn ReviewForm(preset: String) -> impl IntoView {
    view! { <pages::home::ReviewView preset/> }
}

/// The start page's form for a preset that takes its initial state as JSON.
#[island(lazy)]
pub fn StateForm(preset: String, example: String) -> impl IntoView {
    view! { <pages::home::StateView preset example/> }
}

/// The start page's form for a custom graph.
#[island(lazy)]
pub fn CustomForm() -> impl IntoView {
    view! { <pages::home::CustomView/> }
}

/// The run page's live part: follows the run and keeps the server-rendered page current
/// (see [`crate::follow`]).
#[island(lazy)]
pub fn LiveRun(run_id: String, since: u64, ended: bool, created_at: i64, step: Option<u64>) -> impl IntoView {
    view! { <crate::follow::LiveStatus run_id since ended created_at step/> }
}

/// An ended run's Delete button in the history. Once the run is deleted its row is
/// hidden (the stylesheet hides a row holding a `.deleted` mark). Not lazy: it is small,
/// and a chunk of its own would split the code it shares with the other islands into
/// more, smaller chunks, which weigh more on every page than it does.
#[island]
pub fn DeleteRun(run_id: String) -> impl IntoView {
    let deleted = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let delete = move |_| {
        let path = format!("/runs/{run_id}");
        leptos::task::spawn_local(async move {
            match crate::api::delete(&path).await {
                Ok(()) => deleted.set(true),
                Err(err) => error.set(Some(err.detail)),
            }
        });
    };
    view! {
        <span class="delete-run" class:deleted=move || deleted.get()>
            <button class="danger" data-testid="delete-run" title="Delete this run and its events"
                on:click=delete>"Delete"</button>
            {move || error.get().map(|err| view! { <span class="error">{err}</span> })}
        </span>
    }
}

/// Says whether the page is interactive yet: effects never run while rendering on the
/// server, so this flips only once the wasm has hydrated it. It is the last island on
/// every page, and islands hydrate in document order, so by then every island before it
/// is interactive too (tests wait for it).
#[island]
pub fn Hydrated() -> impl IntoView {
    let (hydrated, set_hydrated) = signal(false);
    Effect::new(move |_| set_hydrated.set(true));
    view! {
        <span class="hydration" data-testid="hydration">
            {move || if hydrated.get() { "interactive" } else { "server-rendered" }}
        </span>
    }
}
