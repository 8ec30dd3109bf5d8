//! `POST /graph/create` and the discovery endpoints.

use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    Json,
};
use serde::Deserialize;
use serde_json::Value;
use weft_app::wire::{GraphCreated, GraphDetail, GraphPage, PresetInfo, ToolInfo};

use super::{error::ApiError, json::ApiJson, runs::page_limit};
use crate::{ids::GraphId, runner::Runner};

/// `POST /graph/create`: `{"preset": NAME}` or `{"nodes": {...}, "edges": {...}}`.
pub async fn create_graph(
    State(runner): State<Runner>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<GraphCreated>, ApiError> {
    let Value::Object(fields) = &body else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object: {\"preset\": NAME} or {\"nodes\": {...}, \"edges\": {...}}".into(),
        ));
    };
    // Version 2 (`nodes` is a list) may leave `edges` out; the prototype's form may not.
    let v2 = fields.get("nodes").is_some_and(Value::is_array);
    let (id, warnings) = match fields.get("preset") {
        Some(Value::String(name)) => runner.create_preset(name).await?,
        Some(_) => return Err(ApiError::invalid("invalid_request", "/preset", "must be a preset name")),
        None if v2 || (fields.contains_key("nodes") && fields.contains_key("edges")) => {
            runner.create_graph(&body).await?
        }
        None => {
            return Err(ApiError::BadRequest(
                "give either `preset` or both `nodes` and `edges`".into(),
            ))
        }
    };
    Ok(Json(GraphCreated {
        graph_id: id.to_string(),
        warnings,
    }))
}

/// `GET /tools`: every registered tool.
pub async fn list_tools(State(runner): State<Runner>) -> Json<Vec<ToolInfo>> {
    Json(runner.registry().list())
}

/// `GET /presets`: every preset.
pub async fn list_presets(State(runner): State<Runner>) -> Json<Vec<PresetInfo>> {
    Json(runner.presets().to_vec())
}

/// The query of `GET /graphs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphListQuery {
    /// Only graphs older than this one (the previous page's last).
    before: Option<String>,
    /// Graphs per page, 1 to [`super::runs::MAX_PAGE`] (default [`super::runs::DEFAULT_PAGE`]).
    limit: Option<u32>,
}

/// `GET /graphs`: stored graphs, newest first, a page at a time.
pub async fn list_graphs(
    State(runner): State<Runner>,
    query: Result<Query<GraphListQuery>, QueryRejection>,
) -> Result<Json<GraphPage>, ApiError> {
    let Query(query) = query?;
    let limit = page_limit(query.limit)?;
    let before = query.before.map(GraphId::from);
    Ok(Json(runner.graph_page(before.as_ref(), limit).await?))
}

/// `GET /graphs/{graph_id}`: a stored graph's spec as posted, and its drawing.
pub async fn graph_detail(
    State(runner): State<Runner>,
    Path(graph_id): Path<String>,
) -> Result<Json<GraphDetail>, ApiError> {
    Ok(Json(runner.graph_view(&GraphId::from(graph_id)).await?))
}
