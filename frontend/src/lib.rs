//! The browser entry point. cargo-leptos compiles this crate to wasm32 and calls
//! [`hydrate`] once the server-rendered page has loaded; everything else lives in `weft-app`.

// Leptos views are deeply nested types; the run page needs more room than the default.
#![recursion_limit = "256"]

/// Attaches the Leptos app to the server-rendered DOM.
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(weft_app::App);
}
