//! The routed pages.

use leptos::prelude::*;

/// The presets the home page offers, with what each does.
const PRESETS: &[(&str, &str)] = &[(
    "code_review",
    "Code Review: extract functions, measure complexity, detect issues, suggest fixes, \
     and refine until the quality score reaches the threshold.",
)];

/// The landing page.
#[component]
pub fn HomePage() -> impl IntoView {
    // Effects never run during server rendering: this flips only once the wasm has
    // hydrated the page, which is what the browser test looks for.
    let (hydrated, set_hydrated) = signal(false);
    Effect::new(move |_| set_hydrated.set(true));
    let (clicks, set_clicks) = signal(0u32);

    view! {
        <header class="hero">
            <h1>"Weft"</h1>
            <p class="tagline">"Workflow graphs over a shared JSON state, run live."</p>
            <p class="status" data-testid="hydration">
                {move || if hydrated.get() { "interactive" } else { "server-rendered" }}
            </p>
        </header>
        <section class="presets">
            <h2>"Presets"</h2>
            <ul>
                {PRESETS
                    .iter()
                    .map(|(name, description)| {
                        view! {
                            <li>
                                <code>{*name}</code>
                                " "
                                {*description}
                            </li>
                        }
                    })
                    .collect_view()}
            </ul>
        </section>
        <section class="api">
            <h2>"API"</h2>
            <p>
                "Create a graph with " <code>"POST /graph/create"</code> ", run it with "
                <code>"POST /graph/run"</code> ", read it with "
                <code>"GET /graph/state/{run_id}"</code> " and watch it with "
                <code>"WS /ws/{run_id}"</code> "."
            </p>
            <button data-testid="ping" on:click=move |_| set_clicks.update(|n| *n += 1)>
                "Clicked " {move || clicks.get()} " times"
            </button>
        </section>
    }
}

/// Shown for any path no route matches.
#[component]
pub fn NotFound() -> impl IntoView {
    view! {
        <h1>"Not found"</h1>
        <p>"No page lives at this address."</p>
        <a href="/">"Back to Weft"</a>
    }
}
