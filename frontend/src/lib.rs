//! The browser entry point. cargo-leptos compiles this crate to wasm32; once the
//! server-rendered page has loaded, [`hydrate`] starts Leptos and the page's islands (the
//! interactive parts, each an `#[island]` in `weft-app`) are hydrated one by one.

// Leptos views are deeply nested types; the run page needs more room than the default.
#![recursion_limit = "256"]

// Linked for its islands, which export their own hydrate functions; nothing here names them.
use weft_app as _;

/// Starts Leptos in the browser; Leptos's island script then hydrates each island.
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    // Panic messages in the console, in debug builds: the hook and the formatting of a
    // panic's message and place weigh on every page's first load.
    #[cfg(debug_assertions)]
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_islands();
}
