//! The server's side of the web UI: the [`Backend`] that server rendering reads through,
//! answering from the runner directly with the same shapes (and the same errors) as the
//! REST API, and seeing what the request's principal sees, as the API does.

use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};
use weft_app::{
    api::{Backend, BoxFuture, RunQuery},
    wire::{ApiErrorBody, GraphDetail, GraphStats, PresetInfo, RunDetail, RunPage, Session},
};

use crate::{
    api::{
        auth::session_of,
        error::ApiError,
        runs::{status_filter, DEFAULT_PAGE},
    },
    auth::{Principal, Tokens},
    ids::{GraphId, RunId},
    runner::{Runner, RunnerError},
    store::{now_millis, RunFilter, StoreError},
};

/// The UI's reads for one request, answered by the runner.
pub struct UiBackend {
    runner: Runner,
    tokens: Arc<Tokens>,
    principal: Principal,
}

impl UiBackend {
    /// A backend over `runner` for a request by `principal`.
    pub fn new(runner: Runner, tokens: Arc<Tokens>, principal: Principal) -> Arc<Self> {
        Arc::new(Self {
            runner,
            tokens,
            principal,
        })
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
        let access = self.principal.access();
        Box::pin(async move {
            runner
                .graph_view(&GraphId::from(graph_id), &access)
                .await
                .map_err(error)
        })
    }

    fn graph_stats(&self, graph_id: String) -> BoxFuture<Result<GraphStats, ApiErrorBody>> {
        let runner = self.runner.clone();
        let access = self.principal.access();
        Box::pin(async move {
            runner
                .graph_stats(&GraphId::from(graph_id), 30, now_millis(), &access)
                .await
                .map_err(error)
        })
    }

    fn run(&self, run_id: String) -> BoxFuture<Result<RunDetail, ApiErrorBody>> {
        let runner = self.runner.clone();
        let access = self.principal.access();
        Box::pin(async move {
            let detail = runner.run_detail(&RunId::from(run_id), &access).await.map_err(error)?;
            retype(&detail)
        })
    }

    fn runs(&self, query: RunQuery) -> BoxFuture<Result<RunPage, ApiErrorBody>> {
        let runner = self.runner.clone();
        let access = self.principal.access();
        Box::pin(async move {
            let filter = RunFilter {
                graph_id: query.graph_id.map(GraphId::from),
                status: status_filter(query.status.as_deref()).map_err(ApiError::into_body)?,
                before: query.before.map(RunId::from),
                created_since: query.since,
                created_until: query.until,
                limit: DEFAULT_PAGE,
                created_by: None,
            };
            runner.run_page(filter, &access).await.map_err(error)
        })
    }

    fn session(&self) -> BoxFuture<Result<Session, ApiErrorBody>> {
        let tokens = Arc::clone(&self.tokens);
        let principal = self.principal.clone();
        Box::pin(async move { session_of(&tokens, &principal).await.map_err(ApiError::into_body) })
    }

    fn now_millis(&self) -> i64 {
        now_millis()
    }

    fn not_found(&self) {
        crate::api::error::page_not_found();
    }
}
