//! `POST /graph/create` and the discovery endpoints.

use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    Extension, Json,
};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;
use weft_app::wire::{GraphCreated, GraphDetail, GraphPage, GraphStats, GraphValidated, PresetInfo, ToolInfo};

use super::{
    docs::{BadRequest, Conflict, CreateGraphBody, Invalid, NotFound, PayloadTooLarge, UnsupportedMediaType},
    error::ApiError,
    json::ApiJson,
    runs::page_limit,
};
use crate::{auth::Principal, engine::graph, ids::GraphId, runner::Runner, store::now_millis};

/// `POST /graph/create`: `{"preset": NAME}` or `{"nodes": {...}, "edges": {...}}`.
#[utoipa::path(
    post,
    path = "/graph/create",
    summary = "Create a graph",
    tag = "graphs",
    description = "Checks a graph and stores it. The body is a preset (`{\"preset\": NAME}`), a version 2 spec \
                   (`nodes` is a list: name, description, start, nodes with config, timeout and retry, static and \
                   conditional edges), or the prototype's form (`nodes` is an object whose first key is the start \
                   node). A spec with problems answers 422 with every problem at once, each at its JSON pointer; \
                   a valid spec may still carry `warnings` (a loop no node can leave, say).",
    request_body(
        content = CreateGraphBody,
        examples(
            ("preset" = (summary = "A preset", value = json!({"preset": "code_review"}))),
            ("version 2" = (summary = "Graph language version 2, with a script and a conditional edge", value = json!({
                "name": "triage",
                "start": "score",
                "nodes": [
                    {"id": "score", "tool": "script", "config": {"script": "#{score: state.text.len()}"}},
                    {"id": "page", "tool": "noop", "timeout_ms": 500, "retry": {"attempts": 2}},
                    {"id": "queue", "tool": "increment", "config": {"key": "queued"}}
                ],
                "edges": [
                    {"from": "score", "branches": [{"when": "state.score > 40", "to": "page"}], "default": "queue"},
                    {"from": "page", "to": null}
                ]
            }))),
            ("prototype" = (summary = "The prototype's form", value = json!({
                "nodes": {"first": "increment", "wait": {"tool": "sleep", "config": {"ms": 100}}},
                "edges": {"first": "wait", "wait": null}
            }))),
        )
    ),
    responses(
        (status = 200, description = "The graph is stored.", body = GraphCreated),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Invalid),
    )
)]
pub async fn create_graph(
    State(runner): State<Runner>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<GraphCreated>, ApiError> {
    let (id, warnings) = match creation(&body)? {
        Creation::Preset(name) => runner.create_preset(name, &principal).await?,
        Creation::Spec => runner.create_graph(&body, &principal).await?,
    };
    Ok(Json(GraphCreated {
        graph_id: id.to_string(),
        warnings,
    }))
}

/// `POST /graph/validate`: what `POST /graph/create` would answer, storing nothing.
#[utoipa::path(
    post,
    path = "/graph/validate",
    summary = "Check a graph without storing it",
    tag = "graphs",
    description = "Checks a body exactly as `POST /graph/create` does (a preset, a version 2 spec or the \
                   prototype's form) and answers what it would: 422 with every problem at its JSON pointer, or \
                   200 with the `warnings`. With a preset, an `initial_state` beside it is checked against \
                   the preset's `input_schema` (422 `invalid_input`, each problem under `/initial_state`). \
                   Nothing is stored, so editors may call it as a person types; a read-only token may call it \
                   too.",
    request_body(content = CreateGraphBody),
    responses(
        (status = 200, description = "The graph is valid; nothing was stored.", body = GraphValidated),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Invalid),
    )
)]
pub async fn validate_graph(
    State(runner): State<Runner>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<GraphValidated>, ApiError> {
    let warnings = match creation(&body)? {
        Creation::Preset(name) => {
            let warnings = runner.validate_preset(name)?;
            if let Some(initial_state) = body.get("initial_state") {
                runner.validate_preset_input(name, initial_state)?;
            }
            warnings
        }
        Creation::Spec => runner.validate_graph(&body)?,
    };
    Ok(Json(GraphValidated { warnings }))
}

/// What a create (or validate) body asks for.
enum Creation<'a> {
    /// The preset of this name.
    Preset(&'a str),
    /// The body is a spec.
    Spec,
}

/// Reads a create body: a preset's name, or a spec with what it must have.
fn creation(body: &Value) -> Result<Creation<'_>, ApiError> {
    let Value::Object(fields) = body else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object: {\"preset\": NAME} or {\"nodes\": {...}, \"edges\": {...}}".into(),
        ));
    };
    // Version 2 (`nodes` is a list) may leave `edges` out; the prototype's form may not,
    // and there an empty (or null) `nodes` or `edges` counts as missing, as it did in the
    // prototype.
    let v2 = graph::is_version_2(fields);
    let given = |key: &str| match fields.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::Object(entries)) => !entries.is_empty(),
        Some(_) => true,
    };
    match fields.get("preset") {
        Some(Value::String(name)) => Ok(Creation::Preset(name)),
        Some(_) => Err(ApiError::invalid("invalid_request", "/preset", "must be a preset name")),
        None if v2 || (given("nodes") && given("edges")) => Ok(Creation::Spec),
        None => Err(ApiError::BadRequest(
            "give either `preset` or both `nodes` and `edges`".into(),
        )),
    }
}

/// `GET /tools`: every registered tool.
#[utoipa::path(
    get,
    path = "/tools",
    summary = "List the tools",
    tag = "graphs",
    responses((status = 200, description = "Every tool a node may run, by name, with its config's JSON Schema.", body = Vec<ToolInfo>))
)]
pub async fn list_tools(State(runner): State<Runner>) -> Json<Vec<ToolInfo>> {
    Json(runner.registry().list())
}

/// `GET /presets`: every preset.
#[utoipa::path(
    get,
    path = "/presets",
    summary = "List the presets",
    tag = "graphs",
    responses((status = 200, description = "Every preset, with its graph drawn and an input to try it with.", body = Vec<PresetInfo>))
)]
pub async fn list_presets(State(runner): State<Runner>) -> Json<Vec<PresetInfo>> {
    Json(runner.presets().to_vec())
}

/// The query of `GET /graphs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GraphListQuery {
    /// Only graphs older than this one (the previous page's `next_before`).
    #[param(example = "01a20f5e-dfcc-76b1-a3c1-c36456f65bb5")]
    before: Option<String>,
    /// Graphs per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500, example = 20)]
    limit: Option<u32>,
}

/// `GET /graphs`: stored graphs, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/graphs",
    summary = "List stored graphs",
    tag = "graphs",
    params(GraphListQuery),
    responses(
        (status = 200, description = "A page of stored graphs, newest first.", body = GraphPage),
        (status = 400, response = BadRequest),
        (status = 422, response = Invalid),
    )
)]
pub async fn list_graphs(
    State(runner): State<Runner>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<GraphListQuery>, QueryRejection>,
) -> Result<Json<GraphPage>, ApiError> {
    let Query(query) = query?;
    let limit = page_limit(query.limit)?;
    let before = query.before.map(GraphId::from);
    Ok(Json(
        runner.graph_page(before.as_ref(), limit, &principal.access()).await?,
    ))
}

/// `GET /graphs/{graph_id}`: a stored graph's spec as posted, and its drawing.
#[utoipa::path(
    get,
    path = "/graphs/{graph_id}",
    summary = "Read a graph",
    tag = "graphs",
    params(("graph_id" = String, Path, description = "The graph's id, as `POST /graph/create` answered it.", example = "01a20f5e-dfcc-76b1-a3c1-c36456f65bb5")),
    responses(
        (status = 200, description = "The graph's spec as posted, its warnings, and its drawing.", body = GraphDetail),
        (status = 404, response = NotFound),
    )
)]
pub async fn graph_detail(
    State(runner): State<Runner>,
    Extension(principal): Extension<Principal>,
    Path(graph_id): Path<String>,
) -> Result<Json<GraphDetail>, ApiError> {
    Ok(Json(
        runner.graph_view(&GraphId::from(graph_id), &principal.access()).await?,
    ))
}

/// The window of `GET /graphs/{graph_id}/stats`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Days counted back from today (today included), 1 to 366; default 30.
    #[param(example = 30)]
    days: Option<u32>,
}

/// `GET /graphs/{graph_id}/stats`: how the graph's recent runs went.
#[utoipa::path(
    get,
    path = "/graphs/{graph_id}/stats",
    summary = "Read a graph's run statistics",
    tag = "graphs",
    description = "The runs created in the window, by UTC day and status, with each day's median and 95th \
                   percentile duration; and, over the newest 200 of them, each node's finished steps, mean step \
                   time, failed attempts and failure rate. What the graph page charts.",
    params(
        ("graph_id" = String, Path, description = "The graph's id.", example = "01a20f5e-dfcc-76b1-a3c1-c36456f65bb5"),
        StatsQuery
    ),
    responses(
        (status = 200, description = "The graph's runs, by day and by node.", body = GraphStats),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
pub async fn graph_stats(
    State(runner): State<Runner>,
    Extension(principal): Extension<Principal>,
    Path(graph_id): Path<String>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<GraphStats>, ApiError> {
    let Query(query) = query?;
    let days = query.days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(ApiError::BadRequest(
            "`days` must be a whole number from 1 to 366".into(),
        ));
    }
    Ok(Json(
        runner
            .graph_stats(&GraphId::from(graph_id), days, now_millis(), &principal.access())
            .await?,
    ))
}

/// `DELETE /graphs/{graph_id}`: deletes a graph with its runs, once none of them is live.
#[utoipa::path(
    delete,
    path = "/graphs/{graph_id}",
    summary = "Delete a graph",
    tag = "graphs",
    params(("graph_id" = String, Path, description = "The graph's id.", example = "01a20f5e-dfcc-76b1-a3c1-c36456f65bb5")),
    responses(
        (status = 204, description = "The graph, its runs and their events are gone."),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    )
)]
pub async fn delete_graph(
    State(runner): State<Runner>,
    Extension(principal): Extension<Principal>,
    Path(graph_id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    runner
        .delete_graph(&GraphId::from(graph_id), &principal.access())
        .await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
