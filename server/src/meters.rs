//! Metrics: what `GET /metrics` shows, in Prometheus's text format.
//!
//! Recorded with the `metrics` crate's macros where things happen (the runner, the
//! stores, the WebSocket, the HTTP layer) and rendered by `metrics-exporter-prometheus`.
//! The recorder is the process's: installed once, by the first server built in it.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `weft_runs_started_total` | counter | `graph` (its name, or `unnamed`) |
//! | `weft_runs_ended_total` | counter | `graph`, `status` |
//! | `weft_node_duration_seconds` | histogram | `tool` |
//! | `weft_runs_queued` | gauge (read at each scrape) | |
//! | `weft_runs_running` | gauge (read at each scrape) | |
//! | `weft_ws_clients` | gauge | |
//! | `weft_store_commit_seconds` | histogram | `store` |
//! | `weft_store_commit_batch_size` | histogram | `store` |
//! | `weft_http_requests_total` | counter | `method`, `route`, `status` |
//! | `weft_http_request_duration_seconds` | histogram | `method`, `route`, `status` |
//! | `weft_llm_tokens_total` | counter | `model`, `kind` (`prompt` or `completion`) |
//! | `weft_llm_cost_usd_total` | gauge, only growing | `model` |

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use axum::{extract::MatchedPath, extract::Request, middleware::Next, response::Response};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use weft_app::wire::RunStatus;

/// Seconds: from half a millisecond to a minute.
const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Writes per commit: up to the stores' largest batch.
const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first use; `None` if another was installed.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(SECONDS)
                .and_then(|builder| builder.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.to_owned()), BATCH));
            match builder.and_then(PrometheusBuilder::install_recorder) {
                Ok(handle) => {
                    // Histograms keep their samples until upkeep folds them in.
                    let upkeep = handle.clone();
                    std::thread::Builder::new()
                        .name("weft-metrics".into())
                        .spawn(move || loop {
                            std::thread::sleep(Duration::from_secs(5));
                            upkeep.run_upkeep();
                        })
                        .ok()?;
                    Some(handle)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "metrics are off: a recorder is installed already");
                    None
                }
            }
        })
        .as_ref()
}

const BATCH_SIZE: &str = "weft_store_commit_batch_size";

/// A run of the graph named `graph` was accepted.
pub fn run_started(graph: &str) {
    counter!("weft_runs_started_total", "graph" => graph.to_owned()).increment(1);
}

/// A run of the graph named `graph` ended, with `status`.
pub fn run_ended(graph: &str, status: RunStatus) {
    counter!("weft_runs_ended_total", "graph" => graph.to_owned(), "status" => status.as_str()).increment(1);
}

/// A model call's tokens and cost.
pub fn llm_used(model: &str, usage: &weft_app::wire::Usage) {
    let model = model.to_owned();
    counter!("weft_llm_tokens_total", "model" => model.clone(), "kind" => "prompt").increment(usage.prompt_tokens);
    counter!("weft_llm_tokens_total", "model" => model.clone(), "kind" => "completion")
        .increment(usage.completion_tokens);
    if let Some(cost) = usage.cost_usd {
        gauge!("weft_llm_cost_usd_total", "model" => model).increment(cost);
    }
}

/// A node of `tool` took `duration`.
pub fn node_finished(tool: &str, duration: Duration) {
    histogram!("weft_node_duration_seconds", "tool" => tool.to_owned()).record(duration.as_secs_f64());
}

/// A `store` commit of `writes` writes took `duration`.
pub fn store_commit(store: &'static str, writes: usize, duration: Duration) {
    histogram!("weft_store_commit_seconds", "store" => store).record(duration.as_secs_f64());
    histogram!(BATCH_SIZE, "store" => store).record(writes as f64);
}

/// A WebSocket client came (`+1`) or went (`-1`).
pub fn ws_clients(delta: f64) {
    gauge!("weft_ws_clients").increment(delta);
}

/// What the store and the runner say at a scrape.
pub fn runs_now(queued: u64, running: usize) {
    gauge!("weft_runs_queued").set(queued as f64);
    gauge!("weft_runs_running").set(running as f64);
}

/// Counts and times each request by its route (the matched pattern, so ids do not
/// multiply the series) and status: axum's middleware, as its metrics example does it.
pub async fn track_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    // `/runs/{run_id}` is labelled `/runs/:run_id`: braces inside label values trip up
    // some exposition parsers.
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || "unmatched".to_owned(),
        |path| path.as_str().replace('{', ":").replace('}', ""),
    );
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    counter!("weft_http_requests_total", &labels).increment(1);
    histogram!("weft_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

/// The text `GET /metrics` answers; empty when metrics are off.
pub fn render() -> String {
    handle().map(PrometheusHandle::render).unwrap_or_default()
}
