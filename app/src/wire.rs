//! The JSON shapes Weft speaks over REST and the WebSocket, defined once for the server
//! and the browser alike.
//!
//! The prototype's contract (`POST /graph/create`, `POST /graph/run`, `GET /graph/state`,
//! `WS /ws/{run_id}`) fixes the names of the fields it had; everything added here is
//! additive, so an old client never meets a shape it cannot read.
//!
//! Types that carry a run's state are generic over how the state is held: the server
//! serializes a borrowed, already-encoded state without copying it, while the browser
//! and the tests read it back as a [`serde_json::Value`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A run's shared JSON state: an object whose keys the nodes read and update.
pub type State = serde_json::Map<String, Value>;

/// Where a run stands. The legal moves between these live in the server's engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Accepted, waiting for a free worker.
    Queued,
    /// A node is executing or about to.
    Running,
    /// Reached a node with nowhere to go.
    Completed,
    /// A node failed, the step limit was hit, or the graph was broken at run time.
    Failed,
    /// Stopped on request at a safe point.
    Cancelled,
    /// Paused at an `interrupt` node for a person's answer (`POST /runs/{run_id}/resume`):
    /// it holds no worker and no lease meanwhile.
    Waiting,
}

impl RunStatus {
    /// The name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Waiting => "waiting",
        }
    }

    /// Reads the name written by [`RunStatus::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "waiting" => Self::Waiting,
            _ => return None,
        })
    }

    /// Whether the run has ended and will never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// `200` answer of `GET /auth/session`: whom this browser is signed in as.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"required": true, "name": "alice", "admin": false, "read_only": false})))]
pub struct Session {
    /// Whether this server needs a token (one exists); `false`: it runs open.
    pub required: bool,
    /// The principal signed in, if any.
    pub name: Option<String>,
    /// Whether it sees everything.
    pub admin: bool,
    /// Whether it may only read.
    pub read_only: bool,
}

/// `200` answer of `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"status": "ok", "cpu_pool": {"threads": 2, "busy": 0}})))]
pub struct Health {
    /// `ok` while the server answers.
    pub status: String,
    /// The pool CPU-heavy tools run on.
    pub cpu_pool: PoolHealth,
    /// The database.
    pub store: StoreHealth,
}

/// Which database the server uses, and whether it answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"kind": "postgres", "ok": true})))]
pub struct StoreHealth {
    /// `sqlite` or `postgres`.
    pub kind: String,
    /// Whether it answered a query just now.
    pub ok: bool,
}

/// How busy the CPU pool is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"threads": 2, "busy": 1})))]
pub struct PoolHealth {
    /// Jobs it runs at most at once.
    pub threads: usize,
    /// Jobs running now, counting those whose callers gave up (a timed-out review, say)
    /// until they stop at their next check.
    pub busy: usize,
}

/// `200` answer of `POST /graph/create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"graph_id": "01a20f5e-dfcc-76b1-a3c1-c36456f65bb5", "warnings": []})))]
pub struct GraphCreated {
    /// The id to pass to `POST /graph/run`.
    pub graph_id: String,
    /// What is suspicious but valid about the spec (a loop with no exit condition, say),
    /// each with its JSON pointer.
    #[serde(default)]
    pub warnings: Vec<Problem>,
}

/// `200` answer of `POST /graph/validate`: the graph is valid, and nothing was stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"warnings": [{"path": "/edges/loop", "message": "this loop has no exit condition"}]})))]
pub struct GraphValidated {
    /// What is suspicious but valid about the spec, each with its JSON pointer: what
    /// `POST /graph/create` would answer in its `warnings`.
    #[serde(default)]
    pub warnings: Vec<Problem>,
}

/// Body of `POST /graph/run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"graph_id": "01a20f5e-dfcc-76b1-a3c1-c36456f65bb5", "initial_state": {"code": "def f(x):\n    # TODO\n    return x\n"}, "wait": false})))]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// A graph created by `POST /graph/create`.
    pub graph_id: String,
    /// The state the start node sees; `{}` when absent.
    #[serde(default)]
    #[cfg_attr(feature = "ssr", schema(value_type = Object))]
    pub initial_state: State,
    /// `true`: answer when the run has ended; `false` (the default): answer at once.
    #[serde(default)]
    pub wait: bool,
    /// Overrides the graph's step limit for this run only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
}

/// `200` answer of `POST /graph/run` with `wait: false`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8"})))]
pub struct RunStarted {
    /// Queryable at once with `GET /graph/state/{run_id}`.
    pub run_id: String,
}

/// Body of `POST /runs/{run_id}/fork`: a new run from the state after a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"from_step": 3, "state_patch": {"threshold": 60}})))]
pub struct ForkRequest {
    /// The step whose state to start from (0: the run's initial state).
    pub from_step: u64,
    /// A JSON Merge Patch (RFC 7396) applied to that state: keys set, `null` removes.
    #[serde(default = "empty_object")]
    pub state_patch: Value,
    /// The graph to run, when not the parent's: it must have the node step `from_step`
    /// ran (a fixed graph taking over a failed run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_id: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// Where a forked run came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "step": 3})))]
pub struct ForkOrigin {
    /// The parent run.
    pub run_id: String,
    /// The parent's step it started from (0: the parent's initial state).
    pub step: u64,
}

/// `202` answer of `POST /runs/{run_id}/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "cancel_requested": true})))]
pub struct CancelAccepted {
    /// The run.
    pub run_id: String,
    /// Always `true`: the run will end `cancelled` at its next safe point.
    pub cancel_requested: bool,
}

/// `200` answer of `POST /graph/run` with `wait: true`, once the run has ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "status": "completed", "state": {"count": 2}, "log": ["[RUNNING] first", "[RUNNING] second"]})))]
pub struct RunFinished<S = Value> {
    /// The run's id.
    pub run_id: String,
    /// How the run ended.
    pub status: RunStatus,
    /// The final state.
    pub state: S,
    /// Every log line, in order.
    pub log: Vec<String>,
    /// Why the run failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `200` answer of `GET /graph/state/{run_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "graph_id": "01a20f5e-dfcc-76b1-a3c1-c36456f65bb5", "status": "running", "state": {"count": 1}, "log": ["[RUNNING] first"], "steps": 1, "graph_name": "counter", "created_at": 1795000000000_i64})))]
pub struct RunSnapshot<S = Value> {
    /// The run's id.
    pub run_id: String,
    /// The graph it runs.
    pub graph_id: String,
    /// Where it stands.
    pub status: RunStatus,
    /// The state after the latest executed node (the initial state before the first).
    pub state: S,
    /// Every log line so far, in order.
    pub log: Vec<String>,
    /// Nodes executed so far.
    pub steps: u64,
    /// Why the run failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The graph's name (a preset's name for preset graphs), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_name: Option<String>,
    /// When the run was accepted, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub created_at: i64,
    /// When it ended, in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// The run and step it was forked from, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<ForkOrigin>,
    /// The questions the run waits on, while it is `waiting`: answer each with
    /// `POST /runs/{run_id}/resume`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interrupts: Vec<Interrupt>,
    /// What its model calls used so far, summed over its steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A question a run asks at an `interrupt` node, waiting for the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"interrupt_id": "01a20f5f-0c1d-7a52-8d6e-3f1f4c1e2b7a", "node": "approve", "step": 9, "prompt": "Approve the revised code?", "input_schema": {"type": "object", "required": ["approved"], "properties": {"approved": {"type": "boolean"}, "comment": {"type": "string"}}}, "context": {"revised_code": "def f(x):\n    return x\n"}})))]
pub struct Interrupt {
    /// Its id: what `POST /runs/{run_id}/resume` answers.
    pub interrupt_id: String,
    /// The `interrupt` node asking.
    pub node: String,
    /// The step the node is.
    pub step: u64,
    /// The question, for a person.
    pub prompt: String,
    /// The JSON Schema the answer must match.
    pub input_schema: Value,
    /// The state keys the node shows with its question (its config's `show`), as they
    /// stood when it asked.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[cfg_attr(feature = "ssr", schema(value_type = Object))]
    pub context: State,
    /// Until when it waits, in milliseconds since the Unix epoch; then the node's
    /// `on_timeout` is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<i64>,
}

/// Tokens model calls used, and what they cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"prompt_tokens": 812, "completion_tokens": 240, "cost_usd": 0.00027})))]
pub struct Usage {
    /// Tokens of the prompts.
    pub prompt_tokens: u64,
    /// Tokens of the answers.
    pub completion_tokens: u64,
    /// Their cost in US dollars, when the models' prices are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

impl std::ops::Add for Usage {
    type Output = Usage;

    /// This and `other`, added up.
    fn add(self, other: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens + other.prompt_tokens,
            completion_tokens: self.completion_tokens + other.completion_tokens,
            cost_usd: match (self.cost_usd, other.cost_usd) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
            },
        }
    }
}

/// Body of `POST /runs/{run_id}/resume`: the answer to a waiting run's question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"interrupt_id": "01a20f5f-0c1d-7a52-8d6e-3f1f4c1e2b7a", "input": {"approved": true, "comment": "ship it"}})))]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    /// The question answered (see the run's `interrupts`).
    pub interrupt_id: String,
    /// The answer: it must match the question's `input_schema`, and is written to the
    /// state at the node's `key`.
    pub input: Value,
}

/// `202` answer of `POST /runs/{run_id}/resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "interrupt_id": "01a20f5f-0c1d-7a52-8d6e-3f1f4c1e2b7a", "status": "queued"})))]
pub struct Resumed {
    /// The run.
    pub run_id: String,
    /// The question answered.
    pub interrupt_id: String,
    /// `queued` when it was the last question the run waited on (it goes on from the
    /// node's edges), else `waiting`.
    pub status: RunStatus,
}

/// One run in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "graph_id": "01a20f5e-dfcc-76b1-a3c1-c36456f65bb5", "graph_name": "code_review", "status": "completed", "steps": 5, "created_at": 1795000000000_i64, "finished_at": 1795000000042_i64})))]
pub struct RunSummary {
    /// The run's id.
    pub run_id: String,
    /// The graph it runs.
    pub graph_id: String,
    /// The graph's name (a preset's name for preset graphs), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_name: Option<String>,
    /// Where it stands.
    pub status: RunStatus,
    /// Nodes executed so far.
    pub steps: u64,
    /// When it was accepted, in milliseconds since the Unix epoch.
    pub created_at: i64,
    /// When it ended, in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What its model calls used, summed over its steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// `200` answer of `GET /runs`: a page of runs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"runs": [{"run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "graph_id": "01a20f5e-dfcc-76b1-a3c1-c36456f65bb5", "status": "failed", "steps": 2, "created_at": 1795000000000_i64, "finished_at": 1795000000003_i64, "error": "node `fail` failed: disk full"}], "next_before": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8"})))]
pub struct RunPage {
    /// The runs.
    pub runs: Vec<RunSummary>,
    /// Pass as `?before=` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

/// `200` answer of `GET /runs/{run_id}`: the run and every event it produced, each
/// step event holding the state after that step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"run": {"run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "graph_id": "01a20f5e-dfcc-76b1-a3c1-c36456f65bb5", "status": "completed", "state": {"count": 1}, "log": ["[RUNNING] first"], "steps": 1, "created_at": 1795000000000_i64, "finished_at": 1795000000001_i64}, "events": [{"type": "run_queued", "run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "seq": 1, "graph_id": "01a20f5e-dfcc-76b1-a3c1-c36456f65bb5"}, {"type": "end", "run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "seq": 5, "steps": 1, "status": "completed", "state": {"count": 1}}]})))]
pub struct RunDetail<S = Value, E = RunEvent> {
    /// The run as `GET /graph/state` shows it.
    pub run: RunSnapshot<S>,
    /// Its events in order, ending with `end` once the run has ended.
    pub events: Vec<E>,
    /// The runs forked from it, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forks: Vec<String>,
}

/// The type of a [`RunEvent`], as its JSON `type` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `run_queued`
    RunQueued,
    /// `run_started`
    RunStarted,
    /// `node_started`
    NodeStarted,
    /// `step`
    Step,
    /// `node_failed`
    NodeFailed,
    /// `end`
    End,
    /// `error`
    Error,
    /// `interrupted`
    Interrupted,
    /// `token`
    Token,
}

impl EventKind {
    const ALL: [Self; 9] = [
        Self::RunQueued,
        Self::RunStarted,
        Self::NodeStarted,
        Self::Step,
        Self::NodeFailed,
        Self::End,
        Self::Error,
        Self::Interrupted,
        Self::Token,
    ];

    /// The name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunQueued => "run_queued",
            Self::RunStarted => "run_started",
            Self::NodeStarted => "node_started",
            Self::Step => "step",
            Self::NodeFailed => "node_failed",
            Self::End => "end",
            Self::Error => "error",
            Self::Interrupted => "interrupted",
            Self::Token => "token",
        }
    }

    /// Reads the name written by [`EventKind::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// One event of a run: what `WS /ws/{run_id}` streams and `GET /runs/{run_id}` lists.
///
/// Every event but `error` is stored, with a sequence number that grows by one per event
/// of the run; `?since=<seq>` resumes a stream after that event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunEvent<S = Value> {
    /// The run was accepted (always the first event).
    RunQueued(RunQueuedEvent),
    /// The run got a slot and starts, or starts again after a restart.
    RunStarted(RunStartedEvent),
    /// A node starts an attempt.
    NodeStarted(NodeStartedEvent),
    /// A node finished: exactly one per executed node, in execution order (the
    /// prototype's message, which old clients read).
    Step(StepEvent<S>),
    /// An attempt of a node failed; `retry_in_ms` says whether another follows.
    NodeFailed(NodeFailedEvent),
    /// The run has ended: always the last event.
    End(EndEvent<S>),
    /// The run paused at an `interrupt` node and is `waiting` for the answer to its
    /// question.
    Interrupted(InterruptedEvent),
    /// A piece of a model's answer, as it streams in (not stored, no `seq`; the step
    /// stores the whole text). A client that connects mid-answer first gets the answer so
    /// far in one.
    Token(TokenEvent),
    /// The stream cannot be served (for example, the run does not exist); the socket closes.
    Error(ErrorEvent),
}

impl<S> RunEvent<S> {
    /// The event's `type`, as written in its JSON.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::RunQueued(_) => EventKind::RunQueued,
            Self::RunStarted(_) => EventKind::RunStarted,
            Self::NodeStarted(_) => EventKind::NodeStarted,
            Self::Step(_) => EventKind::Step,
            Self::NodeFailed(_) => EventKind::NodeFailed,
            Self::End(_) => EventKind::End,
            Self::Error(_) => EventKind::Error,
            Self::Interrupted(_) => EventKind::Interrupted,
            Self::Token(_) => EventKind::Token,
        }
    }

    /// The node the event is about, for node events.
    pub fn node(&self) -> Option<&str> {
        match self {
            Self::NodeStarted(event) => Some(&event.node),
            Self::Step(event) => Some(&event.node),
            Self::NodeFailed(event) => Some(&event.node),
            Self::Interrupted(event) => Some(&event.interrupt.node),
            Self::Token(event) => Some(&event.node),
            Self::RunQueued(_) | Self::RunStarted(_) | Self::End(_) | Self::Error(_) => None,
        }
    }
}

/// The run was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"type": "run_queued", "run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "seq": 1, "graph_id": "01a20f5e-dfcc-76b1-a3c1-c36456f65bb5"})))]
pub struct RunQueuedEvent {
    /// The run's id.
    pub run_id: String,
    /// The event's number in the run.
    pub seq: u64,
    /// The graph it runs.
    pub graph_id: String,
}

/// The run starts executing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"type": "run_started", "run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "seq": 2, "resumed": false})))]
pub struct RunStartedEvent {
    /// The run's id.
    pub run_id: String,
    /// The event's number in the run.
    pub seq: u64,
    /// Whether it goes on from a checkpoint after the server restarted.
    #[serde(default)]
    pub resumed: bool,
}

/// A node starts an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"type": "node_started", "run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "seq": 3, "step": 1, "node": "extract", "attempt": 1})))]
pub struct NodeStartedEvent {
    /// The run's id.
    pub run_id: String,
    /// The event's number in the run.
    pub seq: u64,
    /// The step this node is: 1 for the first node the run executes.
    pub step: u64,
    /// The node's name.
    pub node: String,
    /// 1 for the first try, then +1 per retry.
    pub attempt: u32,
    /// The branch it runs in, in a graph whose edges fan out or map (see the step's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// An attempt of a node failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"type": "node_failed", "run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "seq": 4, "step": 1, "node": "fetch", "attempt": 1, "error": "timed out after 500 ms", "retry_in_ms": 100})))]
pub struct NodeFailedEvent {
    /// The run's id.
    pub run_id: String,
    /// The event's number in the run.
    pub seq: u64,
    /// The step this node is.
    pub step: u64,
    /// The node's name.
    pub node: String,
    /// Which attempt failed.
    pub attempt: u32,
    /// Why.
    pub error: String,
    /// When the next attempt starts; absent when this was the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    /// The branch it runs in, in a graph whose edges fan out or map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// A node has executed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"type": "step", "run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "seq": 4, "step": 1, "node": "extract", "state": {"code": "def f(): pass", "functions": ["f"]}, "update": {"functions": ["f"]}, "attempt": 1, "log": "[RUNNING] extract", "changed": ["functions"], "status": "running", "duration_us": 812})))]
pub struct StepEvent<S = Value> {
    /// The run's id.
    pub run_id: String,
    /// The event's number in the run: clients resume with `?since=<seq>`.
    pub seq: u64,
    /// The step this node is: 1 for the first node the run executes, then +1 per node.
    #[serde(default)]
    pub step: u64,
    /// The node's name.
    pub node: String,
    /// The state after the node.
    pub state: S,
    /// The keys the node wrote, with the values it wrote.
    pub update: S,
    /// The attempt that produced this result.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// `"[RUNNING] <node>"`, the prototype's log line.
    pub log: String,
    /// Further log lines the node wrote.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The top-level state keys the node wrote.
    #[serde(default)]
    pub changed: Vec<String>,
    /// `running` while the run goes on; the final status when this node ended it.
    pub status: RunStatus,
    /// Wall time the node took, in microseconds.
    #[serde(default)]
    pub duration_us: u64,
    /// Why the node failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The Weft instance that executed the node (its id): with several instances on one
    /// database, a run that passed from one to another shows where each step ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The branch the node ran in, in a graph whose edges fan out or map: `0` is the
    /// run's first, each fan-out target gets a new number, and a map's element `i` runs
    /// in `<branch>[i]`. Branches run at once; their steps may finish in any order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// A map element's own update: kept apart (its `update` is empty) until every element
    /// is done, when the last one's step writes the collected lists.
    #[serde(default = "nothing", skip_serializing_if = "Option::is_none")]
    pub output: Option<S>,
    /// What the node's model calls used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// No value: the default of a field that may be left out.
fn nothing<S>() -> Option<S> {
    None
}

fn first_attempt() -> u32 {
    1
}

/// The run has ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"type": "end", "run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "seq": 17, "steps": 5, "status": "completed", "state": {"quality_score": 98}})))]
pub struct EndEvent<S = Value> {
    /// The run's id.
    pub run_id: String,
    /// The event's number in the run: the last one.
    pub seq: u64,
    /// Nodes executed in all.
    #[serde(default)]
    pub steps: u64,
    /// How the run ended.
    pub status: RunStatus,
    /// The final state.
    pub state: S,
    /// Why the run failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The run paused at an `interrupt` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"type": "interrupted", "run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "seq": 30, "interrupt_id": "01a20f5f-0c1d-7a52-8d6e-3f1f4c1e2b7a", "node": "approve", "step": 9, "prompt": "Approve the revised code?", "input_schema": {"type": "object", "required": ["approved"], "properties": {"approved": {"type": "boolean"}}}})))]
pub struct InterruptedEvent {
    /// The run's id.
    pub run_id: String,
    /// The event's number in the run.
    pub seq: u64,
    /// The question it waits on.
    #[serde(flatten)]
    pub interrupt: Interrupt,
}

/// A piece of text a node's model call streamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"type": "token", "run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "step": 3, "node": "review", "text": "Looks "})))]
pub struct TokenEvent {
    /// The run's id.
    pub run_id: String,
    /// The step the node is.
    pub step: u64,
    /// The node.
    pub node: String,
    /// The text, to add to what came before.
    pub text: String,
}

/// The stream cannot be served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"type": "error", "detail": "no run with id `nope`"})))]
pub struct ErrorEvent {
    /// What went wrong, for a person.
    pub detail: String,
}

/// The body of every 4xx and 5xx answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"detail": "the graph has 1 problem(s): /edges/0/to: edge to `ghost`, which is not a node", "code": "invalid_graph", "errors": [{"path": "/edges/0/to", "message": "edge to `ghost`, which is not a node"}]})))]
pub struct ApiErrorBody {
    /// What is wrong, for a person (the prototype's field).
    pub detail: String,
    /// A stable machine-readable code, such as `graph_not_found` or `invalid_graph`.
    pub code: String,
    /// Every problem found in the request, each with where it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Problem>,
}

/// One thing wrong with a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"path": "/nodes/1/config/ms", "message": "bad config for `sleep`: must be at most 60000"})))]
pub struct Problem {
    /// A JSON pointer into the request body, such as `/edges/extract`.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

/// A registered tool, as `GET /tools` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"name": "increment", "description": "Adds 1 to the number at `config.key` (default `count`), starting from 0.", "config_schema": {"type": "object", "properties": {"key": {"type": ["string", "null"]}}}})))]
pub struct ToolInfo {
    /// The name nodes refer to.
    pub name: String,
    /// One line on what it does.
    pub description: String,
    /// The JSON Schema of a node's `config` for this tool.
    pub config_schema: Value,
}

/// A ready-made graph, as `GET /presets` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"name": "summarize", "description": "Split `text` into chunks, summarize each, merge, and refine.", "nodes": ["split", "summarize", "merge", "refine"], "spec": {"nodes": {"split": "split_text", "summarize": "summarize_chunks", "merge": "merge_summaries", "refine": "refine_summary"}, "edges": {"split": "summarize", "summarize": "merge", "merge": "refine", "refine": null}}, "view": {"nodes": [{"id": "split", "tool": "split_text", "x": 100.0, "y": 56.0}], "edges": [], "width": 200.0, "height": 112.0}, "example": {"text": "Weft runs graphs. It streams every step.", "max_chars": 40}, "title": "Summarization"})))]
pub struct PresetInfo {
    /// The name to pass as `{"preset": ...}`.
    pub name: String,
    /// Its name for people.
    #[serde(default)]
    pub title: String,
    /// Why it cannot run on this server, and what to set, in one line; absent when it
    /// can. Creating it then answers 422 with this line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// What it does.
    pub description: String,
    /// Its nodes, in order.
    pub nodes: Vec<String>,
    /// Its graph spec, in the form `POST /graph/create` takes: a starting point for a
    /// graph of one's own.
    #[serde(default)]
    pub spec: Value,
    /// How to draw it.
    pub view: GraphView,
    /// An initial state to try it with.
    #[serde(default)]
    pub example: Value,
    /// What its initial state may hold, as a JSON Schema (`POST /graph/validate` checks
    /// an `initial_state` against it).
    #[serde(default)]
    pub input_schema: Value,
}

/// One graph in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"graph_id": "01a20f5e-dfcc-76b1-a3c1-c36456f65bb5", "name": "triage", "nodes": 4, "created_at": 1795000000000_i64})))]
pub struct GraphSummary {
    /// The graph's id.
    pub graph_id: String,
    /// Its name, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How many nodes it has.
    pub nodes: u64,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// `200` answer of `GET /graphs`: a page of graphs, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"graphs": [{"graph_id": "01a20f5e-dfcc-76b1-a3c1-c36456f65bb5", "name": "triage", "nodes": 4, "created_at": 1795000000000_i64}]})))]
pub struct GraphPage {
    /// The graphs.
    pub graphs: Vec<GraphSummary>,
    /// Pass as `?before=` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

/// `200` answer of `GET /graphs/{graph_id}`: a stored graph, its spec as posted, and
/// how to draw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"graph_id": "01a20f5e-dfcc-76b1-a3c1-c36456f65bb5", "name": "triage", "spec": {"nodes": [{"id": "a", "tool": "noop"}]}, "warnings": [], "view": {"nodes": [{"id": "a", "tool": "noop", "x": 100.0, "y": 56.0}], "edges": [], "width": 200.0, "height": 112.0}})))]
pub struct GraphDetail {
    /// The graph's id.
    pub graph_id: String,
    /// Its name (the preset's, for preset graphs), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the spec's `description` says, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The spec exactly as it was posted.
    pub spec: Value,
    /// What is suspicious but valid about the spec.
    #[serde(default)]
    pub warnings: Vec<Problem>,
    /// How to draw it.
    pub view: GraphView,
}

/// `200` answer of `GET /graphs/{graph_id}/stats`: how the graph's recent runs went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"graph_id": "01a20f5e-dfcc-76b1-a3c1-c36456f65bb5", "since": 1795000000000_i64, "runs": 12, "days": [{"day": "2026-11-30", "start": 1795996800000_i64, "completed": 10, "failed": 2, "cancelled": 0, "other": 0, "p50_ms": 42, "p95_ms": 180}], "nodes": [{"node": "extract", "steps": 12, "failures": 2, "mean_us": 850, "failure_rate": 0.142857}], "node_runs": 12})))]
pub struct GraphStats {
    /// The graph's id.
    pub graph_id: String,
    /// The start of the window counted (Unix milliseconds): runs created since.
    pub since: i64,
    /// Runs counted: those created in the window, the newest [`GraphStats::MAX_RUNS`].
    pub runs: u64,
    /// Each UTC day of the window from its first run to today, oldest first.
    pub days: Vec<DayStats>,
    /// Each node that ran, with its mean step time and failure rate.
    pub nodes: Vec<NodeStats>,
    /// The newest runs the node figures are taken from (at most
    /// [`GraphStats::MAX_NODE_RUNS`]).
    pub node_runs: u64,
}

impl GraphStats {
    /// The most runs counted.
    pub const MAX_RUNS: u64 = 5_000;
    /// The most runs whose steps are read for the node figures.
    pub const MAX_NODE_RUNS: u64 = 200;
}

/// One UTC day of a graph's runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"day": "2026-11-30", "start": 1795996800000_i64, "completed": 10, "failed": 2, "cancelled": 0, "other": 0, "p50_ms": 42, "p95_ms": 180})))]
pub struct DayStats {
    /// The day, `YYYY-MM-DD`.
    pub day: String,
    /// Its start, in Unix milliseconds.
    pub start: i64,
    /// Runs created that day that completed.
    pub completed: u64,
    /// ... that failed.
    pub failed: u64,
    /// ... that were cancelled.
    pub cancelled: u64,
    /// ... that have not ended (queued, running or waiting).
    pub other: u64,
    /// The median duration of that day's ended runs, in milliseconds.
    pub p50_ms: Option<u64>,
    /// Their 95th percentile.
    pub p95_ms: Option<u64>,
}

/// One node's record over a graph's recent runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"node": "boom", "steps": 0, "failures": 2, "mean_us": 0, "failure_rate": 1.0})))]
pub struct NodeStats {
    /// The node.
    pub node: String,
    /// Its finished steps.
    pub steps: u64,
    /// Its failed attempts (retried or not).
    pub failures: u64,
    /// The mean time of its finished steps, in microseconds.
    pub mean_us: u64,
    /// Failed attempts over all attempts, 0 to 1.
    pub failure_rate: f64,
}

/// A graph laid out for drawing: every node with its centre, every edge, and the size
/// of the whole drawing, in pixels. Nodes are [`GraphView::NODE_WIDTH`] by
/// [`GraphView::NODE_HEIGHT`]; runs flow from left to right.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"nodes": [{"id": "a", "tool": "noop", "x": 100.0, "y": 56.0}, {"id": "b", "tool": "noop", "x": 284.0, "y": 56.0}], "edges": [{"from": "a", "to": "b", "kind": "next"}], "width": 384.0, "height": 112.0})))]
pub struct GraphView {
    /// The nodes, in spec order.
    pub nodes: Vec<NodeView>,
    /// The edges: static ones first, then the jumps tools may take.
    pub edges: Vec<EdgeView>,
    /// The drawing's width.
    pub width: f64,
    /// The drawing's height.
    pub height: f64,
}

impl GraphView {
    /// The width of a node's box.
    pub const NODE_WIDTH: f64 = 128.0;
    /// The height of a node's box.
    pub const NODE_HEIGHT: f64 = 40.0;

    /// The node of this id.
    pub fn node(&self, id: &str) -> Option<&NodeView> {
        self.nodes.iter().find(|node| node.id == id)
    }
}

/// One node of a [`GraphView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"id": "extract", "tool": "extract_functions", "x": 100.0, "y": 56.0})))]
pub struct NodeView {
    /// The node's name.
    pub id: String,
    /// The tool it runs.
    pub tool: String,
    /// Its centre, from the left.
    pub x: f64,
    /// Its centre, from the top.
    pub y: f64,
}

/// One edge of a [`GraphView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ssr", schema(example = json!({"from": "score", "to": "page", "kind": "branch", "label": "state.score >= 8"})))]
pub struct EdgeView {
    /// Where it starts.
    pub from: String,
    /// Where it goes.
    pub to: String,
    /// What kind of edge it is.
    pub kind: EdgeKind,
    /// A branch's condition (`else` for a conditional edge's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Why a run may go along an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// The node's static edge: always taken unless the tool says otherwise.
    Next,
    /// A jump the node's tool may take instead (the Code Review's refine loop, say).
    Jump,
    /// A branch of a conditional edge, taken when its condition holds (or its default).
    Branch,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_event_has_the_prototype_shape() {
        let event: RunEvent = RunEvent::Step(StepEvent {
            run_id: "r1".into(),
            seq: 3,
            step: 1,
            node: "extract".into(),
            state: serde_json::json!({"code": "x"}),
            update: serde_json::json!({"functions": []}),
            attempt: 1,
            log: "[RUNNING] extract".into(),
            notes: vec![],
            changed: vec!["functions".into()],
            status: RunStatus::Running,
            duration_us: 7,
            error: None,
            instance: None,
            branch: None,
            output: None,
            usage: None,
        });
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "step");
        assert_eq!(event.kind(), EventKind::Step);
        assert_eq!(EventKind::parse(event.kind().as_str()), Some(EventKind::Step));
        assert_eq!(event.node(), Some("extract"));
        assert_eq!(json["node"], "extract");
        assert_eq!(json["log"], "[RUNNING] extract");
        assert_eq!(json["status"], "running");
        assert_eq!(json["state"]["code"], "x");
        assert!(json.get("notes").is_none());
        let back: RunEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ] {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(RunStatus::parse("done"), None);
        assert!(RunStatus::Failed.is_terminal());
        assert!(!RunStatus::Queued.is_terminal());
    }

    #[test]
    fn run_request_defaults_and_rejects_unknown_fields() {
        let req: RunRequest = serde_json::from_str(r#"{"graph_id":"g"}"#).unwrap();
        assert!(!req.wait);
        assert!(req.initial_state.is_empty());
        assert!(serde_json::from_str::<RunRequest>(r#"{"graph_id":"g","wiat":true}"#).is_err());
    }
}
