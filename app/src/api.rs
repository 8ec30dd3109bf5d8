//! How the UI reaches Weft's data, on either side of the wire.
//!
//! In the browser every read and action is a call to the REST API (gloo-net). During
//! server rendering the same reads go straight to the server's runner, through the
//! [`Backend`] the server provides as context, so a page renders complete without an
//! HTTP hop back to itself. Either way the answers are the [`crate::wire`] types, and a
//! failure is the API's own error body.
//!
//! Each read captures what it needs synchronously and returns a `Send` future, as a
//! Leptos resource requires.

use std::{future::Future, pin::Pin, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::wire::{ApiErrorBody, GraphDetail, GraphStats, PresetInfo, RunDetail, RunPage, Session};

/// A boxed, sendable future: what [`Backend`] methods return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The server's side of the UI's reads, provided as context while rendering.
pub trait Backend: Send + Sync + 'static {
    /// Every preset.
    fn presets(&self) -> BoxFuture<Result<Vec<PresetInfo>, ApiErrorBody>>;
    /// One stored graph.
    fn graph(&self, graph_id: String) -> BoxFuture<Result<GraphDetail, ApiErrorBody>>;
    /// How a graph's runs of the last 30 days went.
    fn graph_stats(&self, graph_id: String) -> BoxFuture<Result<GraphStats, ApiErrorBody>>;
    /// One run with its events.
    fn run(&self, run_id: String) -> BoxFuture<Result<RunDetail, ApiErrorBody>>;
    /// A page of runs.
    fn runs(&self, query: RunQuery) -> BoxFuture<Result<RunPage, ApiErrorBody>>;
    /// Whom the request is signed in as.
    fn session(&self) -> BoxFuture<Result<Session, ApiErrorBody>>;
    /// The server's clock, in milliseconds since the Unix epoch.
    fn now_millis(&self) -> i64;
    /// Marks the page being rendered as one whose subject does not exist, so that the
    /// server answers it with a 404 (the page itself still explains).
    fn not_found(&self);
}

/// Marks the page being rendered as not found: the server answers it with a 404. In the
/// browser, where the status has long been sent, this does nothing.
pub fn mark_not_found() {
    #[cfg(feature = "ssr")]
    if let Some(BackendHandle(backend)) = leptos::prelude::use_context::<BackendHandle>() {
        backend.not_found();
    }
}

/// The [`Backend`] as it travels through Leptos context.
#[derive(Clone)]
pub struct BackendHandle(pub Arc<dyn Backend>);

/// The filters of the run history, as `GET /runs` takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunQuery {
    /// Only runs with this status.
    pub status: Option<String>,
    /// Only runs of this graph.
    pub graph_id: Option<String>,
    /// Only runs older than this one.
    pub before: Option<String>,
    /// Only runs created at or after this time (Unix milliseconds).
    pub since: Option<i64>,
    /// Only runs created before this time (Unix milliseconds).
    pub until: Option<i64>,
}

impl RunQuery {
    /// The query string for `GET /runs`, without the `?`.
    pub fn to_query_string(&self) -> String {
        [
            ("status", &self.status),
            ("graph_id", &self.graph_id),
            ("before", &self.before),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.as_ref().map(|value| format!("{key}={}", encode(value))))
        .chain(
            [("since", self.since), ("until", self.until)]
                .into_iter()
                .filter_map(|(key, value)| value.map(|ms| format!("{key}={ms}"))),
        )
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// Percent-encodes a query value (ids and status names need little, but be safe).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// The error shown when the data cannot be reached at all.
pub fn unreachable(detail: impl std::fmt::Display) -> ApiErrorBody {
    ApiErrorBody {
        detail: format!("Weft's server cannot be reached ({detail})."),
        code: "unreachable".into(),
        errors: Vec::new(),
    }
}

/// What the run page needs: the run, its graph, and the clock when it was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPageData {
    /// The run and its events.
    pub detail: RunDetail,
    /// The graph it runs.
    pub graph: GraphDetail,
    /// When this was read, in milliseconds since the Unix epoch.
    pub read_at: i64,
}

/// What the graph page needs: the graph and how its runs went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphPageData {
    /// The graph.
    pub graph: GraphDetail,
    /// Its runs of the last 30 days.
    pub stats: GraphStats,
}

#[cfg(not(feature = "hydrate"))]
mod imp {
    //! Server rendering: straight to the runner through the provided [`Backend`].
    use leptos::prelude::use_context;

    use super::*;

    fn backend() -> Result<Arc<dyn Backend>, ApiErrorBody> {
        use_context::<BackendHandle>()
            .map(|handle| handle.0)
            .ok_or_else(|| unreachable("no backend while rendering"))
    }

    /// Actions happen in the browser only; while rendering there is nothing to post.
    pub async fn post<B: Serialize, T: serde::de::DeserializeOwned>(_path: &str, _body: &B) -> Result<T, ApiErrorBody> {
        Err(unreachable("not in a browser"))
    }

    /// Actions happen in the browser only; while rendering there is nothing to delete.
    pub async fn delete(_path: &str) -> Result<(), ApiErrorBody> {
        Err(unreachable("not in a browser"))
    }

    /// Every preset.
    pub fn presets() -> impl Future<Output = Result<Vec<PresetInfo>, ApiErrorBody>> + Send + 'static {
        let backend = backend();
        async move { backend?.presets().await }
    }

    /// A page of the run history.
    pub fn runs(query: RunQuery) -> impl Future<Output = Result<RunPage, ApiErrorBody>> + Send + 'static {
        let backend = backend();
        async move { backend?.runs(query).await }
    }

    /// Whom this browser is signed in as.
    pub fn session() -> impl Future<Output = Result<Session, ApiErrorBody>> + Send + 'static {
        let backend = backend();
        async move { backend?.session().await }
    }

    /// A graph and how its runs went.
    pub fn graph_page(graph_id: String) -> impl Future<Output = Result<GraphPageData, ApiErrorBody>> + Send + 'static {
        let backend = backend();
        async move {
            let backend = backend?;
            let graph = backend.graph(graph_id.clone()).await?;
            let stats = backend.graph_stats(graph_id).await?;
            Ok(GraphPageData { graph, stats })
        }
    }

    /// A run, its events and its graph.
    pub fn run_page(run_id: String) -> impl Future<Output = Result<RunPageData, ApiErrorBody>> + Send + 'static {
        let backend = backend();
        async move {
            let backend = backend?;
            let detail = backend.run(run_id).await?;
            let graph = backend.graph(detail.run.graph_id.clone()).await?;
            Ok(RunPageData {
                detail,
                graph,
                read_at: backend.now_millis(),
            })
        }
    }
}

#[cfg(feature = "hydrate")]
mod imp {
    //! The browser: the REST API over gloo-net.
    use gloo_net::http::{Request, Response};
    use send_wrapper::SendWrapper;
    use serde::de::DeserializeOwned;

    use super::*;

    async fn read<T: DeserializeOwned>(response: Response) -> Result<T, ApiErrorBody> {
        if response.ok() {
            return response.json::<T>().await.map_err(unreachable);
        }
        let status = response.status();
        Err(response.json::<ApiErrorBody>().await.unwrap_or_else(|_| ApiErrorBody {
            detail: format!("the server answered {status}"),
            code: "http_error".into(),
            errors: Vec::new(),
        }))
    }

    async fn get<T: DeserializeOwned>(path: &str) -> Result<T, ApiErrorBody> {
        read(Request::get(path).send().await.map_err(unreachable)?).await
    }

    /// Posts `body` as JSON to `path` and reads the answer.
    pub async fn post<B: Serialize, T: DeserializeOwned>(path: &str, body: &B) -> Result<T, ApiErrorBody> {
        let request = Request::post(path).json(body).map_err(unreachable)?;
        read(request.send().await.map_err(unreachable)?).await
    }

    /// Deletes what `path` names.
    pub async fn delete(path: &str) -> Result<(), ApiErrorBody> {
        let response = Request::delete(path).send().await.map_err(unreachable)?;
        if response.ok() {
            return Ok(());
        }
        read::<()>(response).await
    }

    /// Every preset.
    pub fn presets() -> impl Future<Output = Result<Vec<PresetInfo>, ApiErrorBody>> + Send + 'static {
        SendWrapper::new(async move { get("/presets").await })
    }

    /// A page of the run history.
    pub fn runs(query: RunQuery) -> impl Future<Output = Result<RunPage, ApiErrorBody>> + Send + 'static {
        SendWrapper::new(async move { get(&format!("/runs?{}", query.to_query_string())).await })
    }

    /// Whom this browser is signed in as.
    pub fn session() -> impl Future<Output = Result<Session, ApiErrorBody>> + Send + 'static {
        SendWrapper::new(async move { get("/auth/session").await })
    }

    /// A graph and how its runs went.
    pub fn graph_page(graph_id: String) -> impl Future<Output = Result<GraphPageData, ApiErrorBody>> + Send + 'static {
        SendWrapper::new(async move {
            let graph = get(&format!("/graphs/{}", encode(&graph_id))).await?;
            let stats = get(&format!("/graphs/{}/stats", encode(&graph_id))).await?;
            Ok(GraphPageData { graph, stats })
        })
    }

    /// A run, its events and its graph.
    pub fn run_page(run_id: String) -> impl Future<Output = Result<RunPageData, ApiErrorBody>> + Send + 'static {
        SendWrapper::new(async move {
            let detail: RunDetail = get(&format!("/runs/{}", encode(&run_id))).await?;
            let graph = get(&format!("/graphs/{}", encode(&detail.run.graph_id))).await?;
            Ok(RunPageData {
                detail,
                graph,
                read_at: js_sys::Date::now() as i64,
            })
        })
    }
}

pub use imp::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_query_strings_carry_only_the_set_filters() {
        assert_eq!(RunQuery::default().to_query_string(), "");
        let query = RunQuery {
            status: Some("failed".into()),
            graph_id: None,
            before: Some("a b/c".into()),
            since: Some(1_000),
            until: None,
        };
        assert_eq!(query.to_query_string(), "status=failed&before=a%20b%2Fc&since=1000");
    }
}
