//! The HTTP surface: the prototype-compatible REST API, the run WebSocket and discovery.
//!
//! [`router`] builds every API route over a [`Runner`]; HTTP status codes appear only in
//! this module tree, and [`error::ApiError`] is the one place errors become answers.

pub mod auth;
pub mod docs;
pub mod edge;
pub mod error;
pub mod graphs;
pub mod json;
pub mod runs;
pub mod ws;

use std::sync::Arc;

use axum::{
    error_handling::HandleErrorLayer,
    extract::{DefaultBodyLimit, State},
    http::header,
    response::{IntoResponse, Response},
    routing::{get, post},
    Extension, Router,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    auth::{Principal, Tokens},
    config::Settings,
    runner::Runner,
};

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

/// The `/metrics` scrape: Prometheus's text format (see [`crate::meters`]). Admins only
/// once tokens exist (it names every graph), unless `WEFT_PUBLIC_METRICS=on`.
#[utoipa::path(
    get,
    path = "/metrics",
    summary = "Scrape the metrics",
    tag = "service",
    responses(
        (status = 200, description = "Runs started and ended, node durations, queue depth, running runs, WebSocket \
                                      clients, store commits and HTTP requests, in Prometheus's text format.",
         content_type = "text/plain", body = String,
         example = "# TYPE weft_runs_started_total counter\nweft_runs_started_total{graph=\"code_review\"} 3\n"),
        (status = 401, response = docs::Unauthorized),
        (status = 403, response = docs::Forbidden),
    )
)]
pub async fn metrics(
    State(runner): State<Runner>,
    Extension(principal): Extension<Principal>,
    Extension(exempt): Extension<auth::Exempt>,
) -> Result<Response, error::ApiError> {
    if !principal.admin && !exempt.metrics {
        return Err(error::ApiError::Forbidden {
            code: "admin_only",
            detail: "metrics are for admin tokens".to_owned(),
        });
    }
    let queued = runner.store().waiting_runs().await.unwrap_or(0);
    crate::meters::runs_now(queued, runner.hub().live_runs());
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        crate::meters::render(),
    )
        .into_response())
}

/// Every API route, over `runner`, with the settings' body limit, cap on requests held
/// open (see [`HeldOpen`]), request timeout and rate limit. The routes that hold their
/// request open on purpose (the run stream, and `POST /graph/run`, whose `wait: true`
/// waits for the run's end) are outside the request timeout; `POST /graph/run` applies it
/// itself when it does not wait.
pub fn router(runner: Runner, settings: &Settings, tokens: Arc<Tokens>) -> Router {
    let timeout = auth::RequestTimeout(settings.request_timeout);
    let timed = Router::new()
        .route("/graph/create", post(graphs::create_graph))
        .route("/graph/validate", post(graphs::validate_graph))
        .route("/graph/state/{run_id}", get(runs::run_state))
        .route("/runs", get(runs::list_runs))
        .route("/runs/{run_id}", get(runs::run_detail).delete(runs::delete_run))
        .route("/runs/{run_id}/cancel", post(runs::cancel_run))
        .route("/runs/{run_id}/fork", post(runs::fork_run))
        .route("/runs/{run_id}/resume", post(runs::resume_run))
        .route("/tools", get(graphs::list_tools))
        .route("/presets", get(graphs::list_presets))
        .route("/graphs", get(graphs::list_graphs))
        .route(
            "/graphs/{graph_id}",
            get(graphs::graph_detail).delete(graphs::delete_graph),
        )
        .route("/graphs/{graph_id}/stats", get(graphs::graph_stats))
        .route("/health", get(docs::health))
        .route("/metrics", get(metrics))
        .route("/auth/signin", post(auth::sign_in))
        .route("/auth/signout", post(auth::sign_out))
        .route("/auth/session", get(auth::session));
    // JSON answers compressed for clients that accept it (the run stream is not).
    let timed = with_timeout(timed.layer(tower_http::compression::CompressionLayer::new()), timeout);
    Router::new()
        .route("/graph/run", post(runs::run_graph))
        .route("/ws/{run_id}", get(ws::stream))
        .merge(timed)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(Extension(HeldOpen::new(settings.max_held_open)))
        .layer(Extension(auth::StartLimiter::new(settings.rate_limit)))
        .layer(Extension(timeout))
        .layer(Extension(settings.exempt))
        .layer(Extension(tokens))
        .with_state(runner)
        .merge(docs::router())
}

/// `router` with the request timeout: tower's, answered with the API's JSON `408`.
pub fn with_timeout<S: Clone + Send + Sync + 'static>(router: Router<S>, timeout: auth::RequestTimeout) -> Router<S> {
    router.layer(
        tower::ServiceBuilder::new()
            .layer(HandleErrorLayer::new(timed_out))
            .timeout(timeout.0),
    )
}

async fn timed_out(_: tower::BoxError) -> error::ApiError {
    error::ApiError::Timeout
}
