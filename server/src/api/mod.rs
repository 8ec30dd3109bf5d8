//! The HTTP surface: the prototype-compatible REST API, the run WebSocket and discovery.
//!
//! [`router`] builds every API route over a [`Runner`]; HTTP status codes appear only in
//! this module tree, and [`error::ApiError`] is the one place errors become answers.

pub mod docs;
pub mod edge;
pub mod error;
pub mod graphs;
pub mod json;
pub mod runs;
pub mod ws;

use axum::{
    extract::DefaultBodyLimit,
    routing::{get, post},
    Router,
};

use crate::runner::Runner;

/// The largest request body accepted, by default: room for a 100,000-line source file.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

async fn method_not_allowed() -> error::ApiError {
    error::ApiError::MethodNotAllowed
}

/// Every API route, over `runner`, accepting bodies of at most `max_body_bytes`.
pub fn router(runner: Runner, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/graph/create", post(graphs::create_graph))
        .route("/graph/run", post(runs::run_graph))
        .route("/graph/state/{run_id}", get(runs::run_state))
        .route("/runs", get(runs::list_runs))
        .route("/runs/{run_id}", get(runs::run_detail).delete(runs::delete_run))
        .route("/runs/{run_id}/cancel", post(runs::cancel_run))
        .route("/ws/{run_id}", get(ws::stream))
        .route("/tools", get(graphs::list_tools))
        .route("/presets", get(graphs::list_presets))
        .route("/graphs", get(graphs::list_graphs))
        .route(
            "/graphs/{graph_id}",
            get(graphs::graph_detail).delete(graphs::delete_graph),
        )
        .route("/health", get(docs::health))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(runner)
        .merge(docs::router())
}
