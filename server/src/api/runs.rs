//! Runs: `POST /graph/run`, `GET /graph/state/{run_id}`, the run history
//! (`GET /runs`, `GET /runs/{run_id}`), `POST /runs/{run_id}/cancel`, `/fork` and
//! `/resume`.

use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Extension, Json,
};
use serde::Deserialize;
use utoipa::IntoParams;
use weft_app::wire::{
    CancelAccepted, ForkRequest, ResumeRequest, Resumed, RunDetail, RunFinished, RunPage, RunRequest, RunSnapshot,
    RunStarted, RunStatus,
};

use super::{
    auth::{RequestTimeout, StartLimiter},
    docs::{
        BadRequest, Conflict, Invalid, NotFound, PayloadTooLarge, RunAnswer, TooManyRequests, Unavailable,
        UnsupportedMediaType,
    },
    error::ApiError,
    json::ApiJson,
    HeldOpen,
};
use crate::{
    auth::Principal,
    ids::{GraphId, RunId},
    runner::{Fork, Runner, RunnerError, StartRun},
    store::RunFilter,
};

/// `POST /graph/run`: starts a run; with `wait: true`, answers once it has ended.
#[utoipa::path(
    post,
    path = "/graph/run",
    summary = "Start a run",
    tag = "runs",
    request_body = RunRequest,
    responses(
        (status = 200, description = "`wait: false`: the run's id, at once (the run is queryable immediately). \
                                      `wait: true`: the run's end, its final state and its log.", body = RunAnswer),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Invalid),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    )
)]
pub async fn run_graph(
    State(runner): State<Runner>,
    Extension(held_open): Extension<HeldOpen>,
    Extension(limiter): Extension<StartLimiter>,
    Extension(timeout): Extension<RequestTimeout>,
    Extension(principal): Extension<Principal>,
    ApiJson(request): ApiJson<RunRequest>,
) -> Result<Response, ApiError> {
    limiter.check(&principal)?;
    // A run waited on holds its request open until it ends: one place, taken first.
    let _place = request.wait.then(|| held_open.take()).transpose()?;
    let start = runner.start_run(StartRun {
        graph_id: GraphId::from(request.graph_id),
        initial_state: request.initial_state,
        max_steps: request.max_steps,
        by: principal,
        start_at: None,
        frontier: None,
        forked_from: None,
    });
    // Waiting is capped by `WEFT_MAX_OPEN`; answering at once, by the request timeout.
    let started = if request.wait {
        start.await?
    } else {
        tokio::time::timeout(timeout.0, start)
            .await
            .map_err(|_| ApiError::Timeout)??
    };
    let id = started.run_id.clone();
    let run_id = id.to_string();
    if !request.wait {
        return Ok(Json(RunStarted { run_id }).into_response());
    }
    let finished = runner.finished(started).await?;
    // A run that waits for an answer is answered as it stands: `waiting`.
    if !finished.status.is_terminal() && finished.status != RunStatus::Waiting {
        // The server began shutting down mid-run: the run is checkpointed and goes on at
        // the next start; its id says where to find it.
        return Err(ApiError::Unavailable {
            detail: format!("the server is shutting down; run `{run_id}` goes on after it restarts"),
            retry_after: 1,
        });
    }
    // A long log is read back from the store: a run keeps only a short one in memory.
    let log = match finished.log {
        Some(log) => log,
        None => runner.store().run_log(&id).await.map_err(RunnerError::from)?,
    };
    Ok(Json(RunFinished {
        run_id,
        status: finished.status,
        state: finished.state,
        log,
        error: finished.error,
    })
    .into_response())
}

/// `GET /graph/state/{run_id}`: where a run stands.
#[utoipa::path(
    get,
    path = "/graph/state/{run_id}",
    summary = "Read a run's state",
    tag = "runs",
    params(("run_id" = String, Path, description = "The run's id, as `POST /graph/run` answered it.", example = "01a20f5e-f732-75ee-9f64-aa5f9c716fa8")),
    responses(
        (status = 200, description = "Where the run stands: its state after the latest step and its log.", body = RunSnapshot),
        (status = 404, response = NotFound),
    )
)]
pub async fn run_state(
    State(runner): State<Runner>,
    Extension(principal): Extension<Principal>,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    let snapshot = runner.snapshot(&RunId::from(run_id), &principal.access()).await?;
    Ok(Json(snapshot.into_wire()).into_response())
}

/// `GET /runs/{run_id}`: the run and every event it produced, with the state after each step.
#[utoipa::path(
    get,
    path = "/runs/{run_id}",
    summary = "Read a run and its events",
    tag = "runs",
    params(("run_id" = String, Path, description = "The run's id, as `POST /graph/run` answered it.", example = "01a20f5e-f732-75ee-9f64-aa5f9c716fa8")),
    responses(
        (status = 200, description = "The run and every event it produced, each step with the state after it.", body = RunDetail),
        (status = 404, response = NotFound),
    )
)]
pub async fn run_detail(
    State(runner): State<Runner>,
    Extension(principal): Extension<Principal>,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(runner.run_detail(&RunId::from(run_id), &principal.access()).await?).into_response())
}

/// The most runs one page of `GET /runs` holds.
pub const MAX_PAGE: u32 = 500;
/// The page size of a listing that names none.
pub const DEFAULT_PAGE: u32 = 50;

/// Reads a listing's `limit`: [`DEFAULT_PAGE`] when absent, else 1 to [`MAX_PAGE`].
pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid(
            "invalid_request",
            "limit",
            format!("must be from 1 to {MAX_PAGE}"),
        ))
    }
}

/// Reads a `status` filter: none, or the name of a run status.
pub fn status_filter(name: Option<&str>) -> Result<Option<RunStatus>, ApiError> {
    name.map(|name| {
        RunStatus::parse(name).ok_or_else(|| {
            ApiError::invalid(
                "invalid_request",
                "status",
                format!("`{name}` is no status; use queued, running, completed, failed or cancelled"),
            )
        })
    })
    .transpose()
}

/// `GET /runs` query: every field optional.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only runs of this graph.
    #[param(example = "01a20f5e-dfcc-76b1-a3c1-c36456f65bb5")]
    graph_id: Option<String>,
    /// Only runs in this status: `queued`, `running`, `completed`, `failed` or `cancelled`.
    #[param(example = "failed")]
    status: Option<String>,
    /// Only runs older than this one (the previous page's `next_before`).
    #[param(example = "01a20f5e-f732-75ee-9f64-aa5f9c716fa8")]
    before: Option<String>,
    /// Only runs created at or after this time, in Unix milliseconds.
    #[param(example = 1795000000000_i64)]
    since: Option<i64>,
    /// Only runs created before this time, in Unix milliseconds.
    #[param(example = 1795086400000_i64)]
    until: Option<i64>,
    /// Runs per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500, example = 20)]
    limit: Option<u32>,
}

/// `GET /runs?graph_id=&status=&since=&until=&before=&limit=`: runs, newest first.
#[utoipa::path(
    get,
    path = "/runs",
    summary = "List runs",
    tag = "runs",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of runs, newest first.", body = RunPage),
        (status = 400, response = BadRequest),
        (status = 422, response = Invalid),
    )
)]
pub async fn list_runs(
    State(runner): State<Runner>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<RunPage>, ApiError> {
    let Query(query) = query?;
    let filter = RunFilter {
        graph_id: query.graph_id.map(GraphId::from),
        status: status_filter(query.status.as_deref())?,
        before: query.before.map(RunId::from),
        created_since: query.since,
        created_until: query.until,
        limit: page_limit(query.limit)?,
        created_by: None,
    };
    Ok(Json(runner.run_page(filter, &principal.access()).await?))
}

/// `POST /runs/{run_id}/cancel`: stops a queued run at once, a running one after the
/// node it is executing. `202` when the request is taken, `409` when the run has ended.
#[utoipa::path(
    post,
    path = "/runs/{run_id}/cancel",
    summary = "Cancel a run",
    tag = "runs",
    params(("run_id" = String, Path, description = "The run's id, as `POST /graph/run` answered it.", example = "01a20f5e-f732-75ee-9f64-aa5f9c716fa8")),
    responses(
        (status = 202, description = "The run will end `cancelled`: at once if queued, else after its current node.", body = CancelAccepted),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    )
)]
pub async fn cancel_run(
    State(runner): State<Runner>,
    Extension(principal): Extension<Principal>,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    let run_id = RunId::from(run_id);
    runner.cancel(&run_id, &principal.access()).await?;
    let body = CancelAccepted {
        run_id: run_id.to_string(),
        cancel_requested: true,
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `POST /runs/{run_id}/fork`: a new run from the state after one of this run's steps.
#[utoipa::path(
    post,
    path = "/runs/{run_id}/fork",
    summary = "Fork a run from a step",
    tag = "runs",
    description = "Starts a new run from the state after step `from_step` of this run (0: its initial state), with \
                   `state_patch` applied as a JSON Merge Patch (RFC 7396), going on along the graph's edges from \
                   the node that step ran. Any step works, a pass inside a loop included. With `graph_id`, the \
                   fork runs that graph instead (it must have the node): a fixed graph can take over a failed run. \
                   The new run's `forked_from` names its parent, and the parent's `forks` list it.",
    params(("run_id" = String, Path, description = "The parent run's id.", example = "01a20f5e-f732-75ee-9f64-aa5f9c716fa8")),
    request_body = ForkRequest,
    responses(
        (status = 200, description = "The fork started; follow it like any run.", body = RunStarted),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 422, response = Invalid),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    )
)]
pub async fn fork_run(
    State(runner): State<Runner>,
    Extension(limiter): Extension<StartLimiter>,
    Extension(principal): Extension<Principal>,
    Path(run_id): Path<String>,
    ApiJson(request): ApiJson<ForkRequest>,
) -> Result<Json<RunStarted>, ApiError> {
    limiter.check(&principal)?;
    let fork = Fork {
        from_step: request.from_step,
        state_patch: request.state_patch,
        graph_id: request.graph_id.map(GraphId::from),
        by: principal,
    };
    let started = runner.fork(&RunId::from(run_id), fork).await?;
    Ok(Json(RunStarted {
        run_id: started.run_id.to_string(),
    }))
}

/// `POST /runs/{run_id}/resume`: answers a waiting run's question.
#[utoipa::path(
    post,
    path = "/runs/{run_id}/resume",
    summary = "Answer a waiting run",
    tag = "runs",
    description = "Answers the question a run asked at an `interrupt` node (see the run's `interrupts`, and its \
                   `interrupted` events). The `input` must match the question's `input_schema`: otherwise 422, \
                   with the JSON pointer of each problem in `errors`. The answer is written to the state at the \
                   node's `key`, and once no question of the run is pending it goes on from that node's edges \
                   (`status: queued`), on whichever instance has a free slot. A question answers once: a second \
                   answer, or one after it timed out, gets 409.",
    params(("run_id" = String, Path, description = "The waiting run's id.", example = "01a20f5e-f732-75ee-9f64-aa5f9c716fa8")),
    request_body = ResumeRequest,
    responses(
        (status = 202, description = "Answered; the run goes on (`queued`), or waits on its other questions (`waiting`).", body = Resumed),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Invalid),
    )
)]
pub async fn resume_run(
    State(runner): State<Runner>,
    Extension(principal): Extension<Principal>,
    Path(run_id): Path<String>,
    ApiJson(request): ApiJson<ResumeRequest>,
) -> Result<Response, ApiError> {
    let resumed = runner.answer(&RunId::from(run_id), request, &principal).await?;
    Ok((StatusCode::ACCEPTED, Json(resumed)).into_response())
}

/// `DELETE /runs/{run_id}`: deletes an ended run with its events.
#[utoipa::path(
    delete,
    path = "/runs/{run_id}",
    summary = "Delete a run",
    tag = "runs",
    params(("run_id" = String, Path, description = "The run's id.", example = "01a20f5e-f732-75ee-9f64-aa5f9c716fa8")),
    responses(
        (status = 204, description = "The run and its events are gone."),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    )
)]
pub async fn delete_run(
    State(runner): State<Runner>,
    Extension(principal): Extension<Principal>,
    Path(run_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    runner.delete_run(&RunId::from(run_id), &principal.access()).await?;
    Ok(StatusCode::NO_CONTENT)
}
