//! The API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the wire types' schemas, served at `/openapi.json`, and the
//! interactive page at `/docs` (Swagger UI, whose assets are built into the binary).

use axum::{extract::State, Json, Router};
use serde::Serialize;
use serde_json::Value;
use utoipa::{Modify, OpenApi, PartialSchema, ToResponse, ToSchema};
use utoipa_swagger_ui::{Config, SwaggerUi};
use weft_app::wire::{
    ApiErrorBody, CancelAccepted, DayStats, EdgeKind, EdgeView, ErrorEvent, ForkOrigin, ForkRequest, GraphCreated,
    GraphDetail, GraphPage, GraphStats, GraphSummary, GraphValidated, GraphView, Health, Interrupt, InterruptedEvent,
    NodeFailedEvent, NodeStartedEvent, NodeStats, NodeView, PoolHealth, PresetInfo, Problem, ResumeRequest, Resumed,
    RunDetail, RunEvent, RunFinished, RunPage, RunQueuedEvent, RunRequest, RunSnapshot, RunStarted, RunStartedEvent,
    RunStatus, RunSummary, Session, StoreHealth, TokenEvent, ToolInfo,
};

use super::{graphs, runs, ws};
use crate::runner::Runner;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";
/// Where the interactive page is served.
pub const DOCS_PATH: &str = "/docs";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Weft",
        description = "Define graphs of nodes over a shared JSON state, run them, and follow each run step by \
                       step. `POST /graph/create`, `POST /graph/run`, `GET /graph/state/{run_id}` and \
                       `WS /ws/{run_id}` keep the prototype's contract; every other field and endpoint is \
                       additive. Every 4xx and 5xx answer is JSON: `{detail, code, errors?}`.",
        license(name = "MIT", identifier = "MIT")
    ),
    paths(
        graphs::create_graph,
        graphs::validate_graph,
        graphs::graph_stats,
        runs::run_graph,
        runs::run_state,
        runs::list_runs,
        runs::run_detail,
        runs::cancel_run,
        runs::fork_run,
        runs::resume_run,
        runs::delete_run,
        ws::stream,
        graphs::list_tools,
        graphs::list_presets,
        graphs::list_graphs,
        graphs::graph_detail,
        graphs::delete_graph,
        health,
        super::metrics,
        super::auth::session,
    ),
    components(
        schemas(
            CreateGraphBody, PresetRequest, GraphSpec, NodeSpec, RetrySpec, EdgeSpec, StaticEdge,
            ConditionalEdge, FanOutEdge, JoinEdge, MapEdge, BranchSpec, PrototypeSpec, RunAnswer, GraphCreated, GraphValidated, GraphStats, DayStats, NodeStats, RunRequest, RunStarted,
            RunFinished, RunSnapshot, RunSummary, RunPage, RunDetail, CancelAccepted, ForkRequest, ForkOrigin, RunStatus, RunEvent,
            Interrupt, InterruptedEvent, ResumeRequest, Resumed, TokenEvent,
            RunQueuedEvent, RunStartedEvent, NodeStartedEvent, NodeFailedEvent, ErrorEvent, ApiErrorBody,
            Problem, Health, Session, PoolHealth, StoreHealth, ToolInfo, PresetInfo, GraphSummary, GraphPage, GraphDetail, GraphView, NodeView, EdgeView, EdgeKind,
        ),
        responses(
            BadRequest, Unauthorized, Forbidden, NotFound, Conflict, PayloadTooLarge, UnsupportedMediaType, Invalid,
            TooManyRequests, Unavailable
        )
    ),
    modifiers(&AnyValue, &BearerTokens),
    tags(
        (name = "graphs", description = "Define graphs and discover tools, presets and stored graphs."),
        (name = "runs", description = "Start runs, follow them, answer their questions, fork them, list them and cancel them."),
        (name = "service", description = "The server itself."),
    )
)]
struct ApiDoc;

/// Adds the schema of a run's state (any JSON value), which the generic wire types refer
/// to by the name of their type parameter, `Value`.
struct AnyValue;

impl Modify for AnyValue {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components
                .schemas
                .insert("Value".to_owned(), <Value as PartialSchema>::schema());
        }
    }
}

/// Declares the bearer scheme: once a token exists (`weft-server token create`), every
/// request sends `Authorization: Bearer weft_…`; before that, Weft runs open on
/// loopback and no token is needed (the empty requirement).
struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("weft_<id>_<secret>")
            .description(Some(
                "An API token from `weft-server token create --name NAME`. Needed once any token exists.",
            ))
            .build();
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
        }
        openapi.security = Some(vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::default(),
        ]);
    }
}

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `/openapi.json` and the `/docs` page.
pub fn router() -> Router {
    let config = Config::new([OPENAPI_PATH])
        // Swagger UI would otherwise ask validator.swagger.io for a badge.
        .validator_url("none")
        .try_it_out_enabled(true)
        // A token pasted into "Authorize" survives a reload of the page.
        .persist_authorization(true)
        .display_request_duration(true);
    SwaggerUi::new(DOCS_PATH)
        .url(OPENAPI_PATH, openapi())
        .config(config)
        .into()
}

/// `GET /health`: whether the server is up, how busy its CPU pool is, and whether its
/// database answers.
#[utoipa::path(
    get,
    path = "/health",
    summary = "Check the server is up",
    tag = "service",
    responses((status = 200, description = "The server is up.", body = Health))
)]
pub async fn health(State(runner): State<Runner>) -> Json<Health> {
    let pool = runner.cpu_pool();
    let store = runner.store();
    let ok = store.ping().await.is_ok();
    Json(Health {
        status: if ok { "ok" } else { "degraded" }.into(),
        cpu_pool: PoolHealth {
            threads: pool.threads(),
            busy: pool.busy(),
        },
        store: StoreHealth {
            kind: store.kind().into(),
            ok,
        },
    })
}

// The request bodies below exist only to be documented: the handlers read bodies as JSON
// and hand them to the graph parser, whose every problem is reported with its pointer.

/// `POST /graph/create`'s body: a preset, a version 2 spec, or the prototype's form.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum CreateGraphBody {
    /// A graph made from a preset.
    Preset(PresetRequest),
    /// Graph language version 2.
    Graph(GraphSpec),
    /// The prototype's form.
    Prototype(PrototypeSpec),
}

/// A graph made from a preset (`GET /presets` lists them).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"preset": "code_review"}))]
pub struct PresetRequest {
    /// The preset's name.
    preset: String,
}

/// Graph language version 2: told apart from the prototype's form by `nodes` being a list.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "name": "triage",
    "description": "Scores a ticket, then pages or queues it.",
    "start": "score",
    "max_steps": 10,
    "nodes": [
        {"id": "score", "tool": "script", "config": {"script": "#{score: state.text.len()}"}},
        {"id": "page", "tool": "noop", "timeout_ms": 500, "retry": {"attempts": 2, "backoff_ms": 100}},
        {"id": "queue", "tool": "increment", "config": {"key": "queued"}}
    ],
    "edges": [
        {"from": "score", "branches": [{"when": "state.score > 40", "to": "page"}], "default": "queue"},
        {"from": "page", "to": null}
    ]
}))]
pub struct GraphSpec {
    /// A name, shown in listings.
    name: Option<String>,
    /// What the graph does.
    description: Option<String>,
    /// The node runs start at (default: the first node).
    start: Option<String>,
    /// The most nodes one run may execute, 1 to 10000 (default 100).
    max_steps: Option<u32>,
    /// The nodes; ids must be unique.
    nodes: Vec<NodeSpec>,
    /// At most one edge entry per node; a node with none ends the run.
    edges: Option<Vec<EdgeSpec>>,
    /// How concurrent writes to a key merge, by key: `append`, `extend`, `sum`, `max`,
    /// `merge` or `last`. A key two parallel branches write without one fails the run.
    #[schema(value_type = Option<Object>, example = json!({"found": "extend", "total": "sum"}))]
    reducers: Option<Value>,
}

/// A node of a version 2 graph.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"id": "wait", "tool": "sleep", "config": {"ms": 250}, "timeout_ms": 1000}))]
pub struct NodeSpec {
    /// The node's id, unique in the graph.
    id: String,
    /// A registered tool (`GET /tools`).
    tool: String,
    /// The tool's config, checked against its `config_schema`.
    #[schema(value_type = Object)]
    config: Option<Value>,
    /// The time one attempt may take, 1 to 3600000 ms (default 60000).
    timeout_ms: Option<u64>,
    /// How failures are retried (default: one attempt).
    retry: Option<RetrySpec>,
}

/// A node's retry policy: the wait doubles from `backoff_ms` up to `max_backoff_ms`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"attempts": 3, "backoff_ms": 100, "max_backoff_ms": 2000}))]
pub struct RetrySpec {
    /// Tries in all, 1 to 10.
    attempts: Option<u32>,
    /// The wait after the first failure (default 100).
    backoff_ms: Option<u64>,
    /// The longest wait (default 10000).
    max_backoff_ms: Option<u64>,
}

/// An edge of a version 2 graph: static, conditional, a fan-out, a join or a map.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum EdgeSpec {
    /// Always to `to`.
    Static(StaticEdge),
    /// To the first branch whose `when` holds, else to `default`.
    Conditional(ConditionalEdge),
    /// To every node of `to` at once, each in a branch of its own.
    FanOut(FanOutEdge),
    /// From every node of `from` to `to`, which runs once all of them have.
    Join(JoinEdge),
    /// `map.to` once per element of the list at `map.over`, then `then`.
    Map(MapEdge),
}

/// A fan-out: two or more nodes that run at once.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"from": "fetch", "to": ["scan_a", "scan_b"]}))]
pub struct FanOutEdge {
    from: String,
    to: Vec<String>,
}

/// A join: `to` runs once every node of `from` has run.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"from": ["scan_a", "scan_b"], "to": "report"}))]
pub struct JoinEdge {
    from: Vec<String>,
    to: String,
}

/// A map: `map.to` runs once per element of the list at `map.over`, each seeing its
/// element at `map.as` and the keys in `map.with`, `map.max_concurrency` (1 to 64,
/// default 4) at once; each key they write is collected, in order, into a list, and the
/// run goes on at `then` (`null` ends it).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"from": "split", "map": {"over": "chunks", "as": "chunk", "to": "summarize_chunk", "max_concurrency": 4}, "then": "merge"}))]
pub struct MapEdge {
    from: String,
    #[schema(value_type = Object)]
    map: Value,
    then: Option<String>,
}

/// A static edge; `to: null` ends the run.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"from": "extract", "to": "complexity"}))]
pub struct StaticEdge {
    from: String,
    to: Option<String>,
}

/// A conditional edge: branches tried in order, then `default` (`null` ends the run).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"from": "assess", "branches": [{"when": "state.score >= 80", "to": null}], "default": "refine"}))]
pub struct ConditionalEdge {
    from: String,
    /// 1 to 64 branches.
    branches: Vec<BranchSpec>,
    default: Option<String>,
}

/// One branch: `when` is a Rhai expression over `state` giving true or false.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"when": "state.count < 3 && state.contains(\"items\")", "to": "again"}))]
pub struct BranchSpec {
    when: String,
    to: Option<String>,
}

/// The prototype's form: nodes keyed by name in order (the first is the start node), a
/// node spec being `{}`, a tool name, or `{tool, config, timeout_ms, retry}`; edges from
/// name to name (or `null`, or `{branches, default}`).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"nodes": {"first": "increment", "wait": {"tool": "sleep", "config": {"ms": 100}}}, "edges": {"first": "wait", "wait": null}}))]
pub struct PrototypeSpec {
    #[schema(value_type = Object)]
    nodes: Value,
    #[schema(value_type = Object)]
    edges: Value,
    max_steps: Option<u32>,
    name: Option<String>,
}

/// `POST /graph/run`'s answer: at once with `wait: false`, at the end with `wait: true`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum RunAnswer {
    /// `wait: false`.
    Started(RunStarted),
    /// `wait: true`.
    Finished(RunFinished),
}

/// 400: malformed JSON, a body of the wrong shape, or a bad query string.
#[derive(ToResponse)]
#[response(
    description = "Malformed JSON, a body of the wrong shape, or a bad query string.",
    example = json!({"detail": "give either `preset` or both `nodes` and `edges`", "code": "bad_request"})
)]
pub struct BadRequest(#[allow(dead_code)] ApiErrorBody);

/// 401: no token, or one that is not valid (or revoked).
#[derive(ToResponse)]
#[response(
    description = "The request needs a token (`Authorization: Bearer weft_…`) and brought none, or one that is not valid or was revoked.",
    example = json!({"detail": "this server needs an API token: send `Authorization: Bearer weft_…`", "code": "token_required"})
)]
pub struct Unauthorized(#[allow(dead_code)] ApiErrorBody);

/// 403: a read-only token asked to change something, or a request from a foreign origin.
#[derive(ToResponse)]
#[response(
    description = "The token may only read, or the request comes from a host or origin this server does not serve.",
    example = json!({"detail": "the token `auditor` may only read", "code": "read_only"})
)]
pub struct Forbidden(#[allow(dead_code)] ApiErrorBody);

/// 404: no such graph or run.
#[derive(ToResponse)]
#[response(
    description = "No such graph or run.",
    example = json!({"detail": "no run with id `nope`", "code": "run_not_found"})
)]
pub struct NotFound(#[allow(dead_code)] ApiErrorBody);

/// 409: the run has already ended.
#[derive(ToResponse)]
#[response(
    description = "The run has already ended.",
    example = json!({"detail": "run `01a20f5e-f732-75ee-9f64-aa5f9c716fa8` has already ended", "code": "run_ended"})
)]
pub struct Conflict(#[allow(dead_code)] ApiErrorBody);

/// 413: the body is larger than the server accepts.
#[derive(ToResponse)]
#[response(
    description = "The body is larger than the server accepts (16 MiB by default).",
    example = json!({"detail": "the request body is larger than this server accepts", "code": "payload_too_large"})
)]
pub struct PayloadTooLarge(#[allow(dead_code)] ApiErrorBody);

/// 415: the body is not sent as JSON.
#[derive(ToResponse)]
#[response(
    description = "The body is not sent as `application/json`.",
    example = json!({"detail": "send the body as JSON with `Content-Type: application/json`", "code": "unsupported_media_type"})
)]
pub struct UnsupportedMediaType(#[allow(dead_code)] ApiErrorBody);

/// 422: well-formed JSON whose content is wrong; `errors` lists every problem found.
#[derive(ToResponse)]
#[response(
    description = "Well-formed JSON whose content is wrong: `errors` lists every problem, each at its JSON pointer.",
    example = json!({
        "detail": "the graph has 2 problem(s): /nodes/0/tool: `download` is not a registered tool (GET /tools lists them); /edges/1/to: edge to `publish`, which is not a node",
        "code": "invalid_graph",
        "errors": [
            {"path": "/nodes/0/tool", "message": "`download` is not a registered tool (GET /tools lists them)"},
            {"path": "/edges/1/to", "message": "edge to `publish`, which is not a node"}
        ]
    })
)]
pub struct Invalid(#[allow(dead_code)] ApiErrorBody);

/// 429: this principal starts runs faster than `WEFT_RATE_LIMIT` allows.
#[derive(ToResponse)]
#[response(
    description = "This principal starts runs faster than the server allows: retry after the `Retry-After` header's seconds.",
    example = json!({"detail": "too many runs started; retry in 1 s", "code": "rate_limited"})
)]
pub struct TooManyRequests(#[allow(dead_code)] ApiErrorBody);

/// 503: the run queue is full; retry after `Retry-After` seconds.
#[derive(ToResponse)]
#[response(
    description = "The run queue is full: retry after the `Retry-After` header's seconds.",
    example = json!({"detail": "the server is at capacity: 256 runs running and 4096 waiting; try again shortly", "code": "at_capacity"})
)]
pub struct Unavailable(#[allow(dead_code)] ApiErrorBody);
