//! The server's side of the web UI: the [`Backend`] that server rendering reads through,
//! answering from the runner directly with the same shapes (and the same errors) as the
//! REST API.

use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};
use weft_app::{
    api::{Backend, BoxFuture, RunQuery},
    wire::{ApiErrorBody, GraphDetail, PresetInfo, RunDetail, RunPage},
};

use crate::{
    api::{
        error::ApiError,
        runs::{status_filter, DEFAULT_PAGE},
    },
    ids::{GraphId, RunId},
    runner::{Runner, RunnerError},
    store::{now_millis, RunFilter, StoreError},
};

/// The UI's reads, answered by the runner.
pub struct UiBackend {
    runner: Runner,
}

impl UiBackend {
    /// A backend over `runner`.
    pub fn new(runner: Runner) -> Arc<Self> {
        Arc::new(Self { runner })
    }
}

fn error(err: RunnerError) -> ApiErrorBody {
    ApiError::from(err).into_body()
}

/// Re-reads a value holding raw JSON as its plain, typed form.
fn retype<T: Serialize, U: DeserializeOwned>(value: &T) -> Result<U, ApiErrorBody> {
    serde_json::to_string(value)
        .and_then(|json| serde_json::from_str(&json))
        .map_err(|err| error(RunnerError::Store(StoreError::Corrupt(err.to_string()))))
}

impl Backend for UiBackend {
    fn presets(&self) -> BoxFuture<Result<Vec<PresetInfo>, ApiErrorBody>> {
        let presets = self.runner.presets().to_vec();
        Box::pin(async move { Ok(presets) })
    }

    fn graph(&self, graph_id: String) -> BoxFuture<Result<GraphDetail, ApiErrorBody>> {
        let runner = self.runner.clone();
        Box::pin(async move { runner.graph_view(&GraphId::from(graph_id)).await.map_err(error) })
    }

    fn run(&self, run_id: String) -> BoxFuture<Result<RunDetail, ApiErrorBody>> {
        let runner = self.runner.clone();
        Box::pin(async move {
            let detail = runner.run_detail(&RunId::from(run_id)).await.map_err(error)?;
            retype(&detail)
        })
    }

    fn runs(&self, query: RunQuery) -> BoxFuture<Result<RunPage, ApiErrorBody>> {
        let runner = self.runner.clone();
        Box::pin(async move {
            let filter = RunFilter {
                graph_id: query.graph_id.map(GraphId::from),
                status: status_filter(query.status.as_deref()).map_err(ApiError::into_body)?,
                before: query.before.map(RunId::from),
                limit: DEFAULT_PAGE,
            };
            runner.run_page(&filter).await.map_err(error)
        })
    }

    fn now_millis(&self) -> i64 {
        now_millis()
    }

    fn not_found(&self) {
        crate::api::error::page_not_found();
    }
}
