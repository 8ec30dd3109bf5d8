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

use std::sync::Arc;

use axum::{
    extract::DefaultBodyLimit,
    routing::{get, post},
    Extension, Router,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::runner::Runner;

/// The requests held open at once, at most: run streams (`WS /ws/{id}`) and `wait: true`
/// runs, each of which holds its connection until its run ends. Past the cap, new ones
/// get `503` with `Retry-After` rather than piling up.
#[derive(Clone)]
pub struct HeldOpen(Arc<Semaphore>);

impl HeldOpen {
    /// Room for `max` requests held open.
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Semaphore::new(max.max(1))))
    }

    /// A place for one more, held until dropped; a 503 when there is none.
    fn take(&self) -> Result<OwnedSemaphorePermit, error::ApiError> {
        Arc::clone(&self.0)
            .try_acquire_owned()
            .map_err(|_| error::ApiError::Unavailable {
                detail: "too many streams and waiting runs are open; try again shortly".to_owned(),
                retry_after: 1,
            })
    }
}

/// The default cap of [`HeldOpen`].
pub const DEFAULT_MAX_HELD_OPEN: usize = 4_096;

/// The largest request body accepted, by default: room for a 100,000-line source file.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

async fn method_not_allowed() -> error::ApiError {
    error::ApiError::MethodNotAllowed
}

/// Every API route, over `runner`, accepting bodies of at most `max_body_bytes` and
/// holding at most `max_held_open` requests open (see [`HeldOpen`]).
pub fn router(runner: Runner, max_body_bytes: usize, max_held_open: usize) -> Router {
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
        .layer(Extension(HeldOpen::new(max_held_open)))
        .with_state(runner)
        .merge(docs::router())
}
