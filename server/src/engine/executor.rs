//! The step loop: runs a graph's nodes one after another over a shared state.
//!
//! Each step calls the node's tool with the state (an `Arc`, so no copy is made), merges
//! the tool's update into the state at the top level, decides the next node (the tool's
//! explicit choice, else the static edge) and hands a borrowed view of the step to a
//! [`StepSink`] before the next step starts. The sink is where persistence and live
//! streaming plug in; the engine itself knows nothing of storage or HTTP.
//!
//! Every run has a step limit, so no loop can run forever: reaching it fails the run with
//! an error naming the limit and the nodes the run was cycling through.

use std::{collections::HashMap, future::Future, sync::Arc, task::Poll, time::Duration, time::Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use weft_app::wire::{RunStatus, State};

use super::{
    graph::{Graph, Node, NodeId},
    tool::{Answer, Next, Outcome, Pause, ToolError, ToolInput},
};

/// One executed node, as the sink sees it. Everything is borrowed: a sink that needs
/// to keep something copies just that.
#[derive(Debug)]
pub struct StepView<'a> {
    /// 1 for the first node executed in the run, then +1 per node.
    pub step: u64,
    /// The node's name.
    pub node: &'a str,
    /// The tool it ran.
    pub tool: &'a str,
    /// The state after the node.
    pub state: &'a State,
    /// Log lines the tool wrote.
    pub notes: &'a [String],
    /// The top-level keys the node wrote.
    pub changed: &'a [String],
    /// `Running` while the run goes on, else how this step ended it.
    pub status: RunStatus,
    /// The attempt that produced this result.
    pub attempt: u32,
    /// Where the run goes next (`None`: it ends after this step).
    pub next: Option<&'a str>,
    /// Wall time the node took.
    pub duration: Duration,
    /// Why the node failed, when it did.
    pub error: Option<&'a str>,
    /// The branch it ran in, in a parallel graph.
    pub branch: Option<&'a str>,
    /// Steps started so far, in all (its own number, in a run of one branch): where
    /// numbering goes on after a restart.
    pub started: u64,
    /// Where every branch stands after it, as JSON, in a parallel graph: what a restart
    /// goes on from.
    pub frontier: Option<&'a str>,
    /// A map element's own update, kept apart from the state until every element is done
    /// (its step writes no key of the state before then).
    pub output: Option<&'a State>,
    /// What the node's model calls used.
    pub usage: Option<weft_app::wire::Usage>,
}

/// A node asking a person a question: the run waits for the answer.
#[derive(Debug, Clone, Copy)]
pub struct Interruption<'a> {
    /// The step the node is: it is executed (and counted) once answered.
    pub step: u64,
    /// The node's name.
    pub node: &'a str,
    /// The question.
    pub pause: &'a Pause,
}

/// Where a run stops to wait: the questions asked, and what it goes on from.
#[derive(Debug, Clone, Copy)]
pub struct Waiting<'a> {
    /// The questions, one per waiting branch (one in a run of one branch).
    pub questions: &'a [Interruption<'a>],
    /// Steps started so far, in all.
    pub started: u64,
    /// Where every branch stands, as JSON, in a parallel graph.
    pub frontier: Option<&'a str>,
}

/// What the sink tells the loop after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on with the next node.
    Continue,
    /// Stop at this safe point: the run ends `cancelled`.
    Cancel,
}

/// Why the sink could not take a step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the step could not be recorded: {0}")]
pub struct SinkError(pub String);

/// A node starting an attempt.
#[derive(Debug, Clone, Copy)]
pub struct NodeStart<'a> {
    /// The step this node is (1-based).
    pub step: u64,
    /// The node's name.
    pub node: &'a str,
    /// 1 for the first try.
    pub attempt: u32,
    /// The branch it runs in, in a parallel graph.
    pub branch: Option<&'a str>,
}

/// A failed attempt of a node.
#[derive(Debug, Clone, Copy)]
pub struct NodeFailure<'a> {
    /// The step this node is.
    pub step: u64,
    /// The node's name.
    pub node: &'a str,
    /// Which attempt failed.
    pub attempt: u32,
    /// Why.
    pub error: &'a ToolError,
    /// The wait before the next attempt; `None` when this was the last.
    pub retry_in: Option<Duration>,
    /// The branch it runs in, in a parallel graph.
    pub branch: Option<&'a str>,
}

/// Receives everything a run does, as it happens; the loop waits for each call.
pub trait StepSink: Send {
    /// A node starts an attempt.
    fn node_started(&mut self, _start: NodeStart<'_>) -> impl Future<Output = Result<(), SinkError>> + Send {
        std::future::ready(Ok(()))
    }

    /// An attempt of a node failed.
    fn node_failed(&mut self, _failure: NodeFailure<'_>) -> impl Future<Output = Result<(), SinkError>> + Send {
        std::future::ready(Ok(()))
    }

    /// A node finished (or failed for good): exactly once per executed node. The loop's
    /// next call, before anything else runs, is the next node's start or the run's end,
    /// so a sink may write the step together with that.
    fn step(&mut self, step: StepView<'_>) -> impl Future<Output = Result<Control, SinkError>> + Send;

    /// Nodes asked questions ([`Next::Wait`]) and nothing else can run: the run stops here
    /// and waits for the answers, which resume it at those nodes. [`Control::Cancel`] ends
    /// it `cancelled` instead (it was asked to stop). By default the run just stops,
    /// `waiting`.
    fn interrupted(&mut self, _waiting: Waiting<'_>) -> impl Future<Output = Result<Control, SinkError>> + Send {
        std::future::ready(Ok(Control::Continue))
    }

    /// Makes everything reported so far durable now, rather than with the next event: a
    /// parallel run calls it before it waits for its branches, so that each branch's step
    /// is committed as it finishes.
    fn commit(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        std::future::ready(Ok(()))
    }

    /// Where a node (`node`, at `step`) may tell its work as it goes, for whoever watches
    /// the run live: nowhere by default.
    fn progress(&self, _step: u64, _node: &str) -> Option<super::tool::Progress> {
        None
    }

    /// The run's stop signal, if it can be cancelled: once raised, a node in progress is
    /// dropped at once (its tool stops: an async tool with its future, a pooled job at its
    /// next check), so is a retry backoff, and the run ends `cancelled` at its last step.
    fn cancel_token(&self) -> Option<CancellationToken> {
        None
    }

    /// The run's span, parent of each node's (whose logs and traces then carry the run's
    /// fields too); none by default.
    fn span(&self) -> tracing::Span {
        tracing::Span::none()
    }
}

/// Resolves when `token` is raised; never, without one.
pub(super) async fn raised(token: &Option<CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

/// A sink that keeps nothing, for benchmarks and tests of the loop itself.
#[derive(Debug, Default)]
pub struct NullSink;

impl StepSink for NullSink {
    fn step(&mut self, _step: StepView<'_>) -> impl Future<Output = Result<Control, SinkError>> + Send {
        std::future::ready(Ok(Control::Continue))
    }
}

/// Where a run starts from: the beginning, or a checkpoint after a restart.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The state before `next` runs.
    pub state: State,
    /// The node to run next (`None`: nothing is left to run).
    pub next: Option<NodeId>,
    /// Steps already executed.
    pub steps: u64,
    /// The answers to the questions the run waited on, each with the node that asked and
    /// the step it asked at.
    pub answers: Vec<(String, u64, Answer)>,
    /// Where every branch stands, in a parallel graph (`None`: one branch, at `next`).
    pub frontier: Option<super::parallel::Frontier>,
}

impl Checkpoint {
    /// The start of a run of `graph` over `state`.
    pub fn start(graph: &Graph, state: State) -> Self {
        Self {
            state,
            next: Some(graph.start()),
            steps: 0,
            answers: Vec::new(),
            frontier: None,
        }
    }

    /// The answer to the question `node` asked at `step`, if it was answered.
    pub(super) fn take_answer(answers: &mut Vec<(String, u64, Answer)>, node: &str, step: u64) -> Option<Answer> {
        let at = answers.iter().position(|(asked, at, _)| asked == node && *at == step)?;
        Some(answers.swap_remove(at).2)
    }
}

/// The largest state a run may hold, serialized, unless its server says otherwise.
pub const DEFAULT_MAX_STATE_BYTES: usize = 16 * 1024 * 1024;

/// What bounds a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Steps in all, counting those before a checkpoint.
    pub max_steps: u32,
    /// The state's size, serialized: a node whose update would take it past this fails.
    pub max_state_bytes: usize,
}

impl From<u32> for Bounds {
    /// A step limit, and the default state size limit.
    fn from(max_steps: u32) -> Self {
        Self {
            max_steps,
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
        }
    }
}

/// A state's serialized size, kept key by key, so that a step costs only its update to
/// account for.
#[derive(Debug, Default)]
pub(super) struct StateSize {
    per_key: HashMap<String, usize>,
    total: usize,
}

/// Counts the bytes serde writes, keeping none.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The bytes one `"key":value,` entry of a state takes.
pub(super) fn entry_bytes(key: &str, value: &serde_json::Value) -> usize {
    let mut counter = Counter(0);
    let _ = serde_json::to_writer(&mut counter, key);
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0 + 2
}

impl StateSize {
    pub(super) fn of(state: &State) -> Self {
        let per_key: HashMap<String, usize> = state
            .iter()
            .map(|(key, value)| (key.clone(), entry_bytes(key, value)))
            .collect();
        let total = per_key.values().sum::<usize>() + 2;
        Self { per_key, total }
    }

    /// The size once `update` (with each entry's size) is merged.
    pub(super) fn after(&self, update: &[(String, usize)]) -> usize {
        update.iter().fold(self.total, |total, (key, bytes)| {
            total - self.per_key.get(key).copied().unwrap_or(0) + bytes
        })
    }

    pub(super) fn apply(&mut self, update: Vec<(String, usize)>) {
        self.total = self.after(&update);
        self.per_key.extend(update);
    }
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The run executed as many nodes as it may.
    #[error("step limit of {limit} reached; the run was cycling through {}", .cycle.join(" → "))]
    StepLimit {
        /// The limit in force.
        limit: u32,
        /// The nodes of the loop, first node repeated at the end.
        cycle: Vec<String>,
    },
    /// A node's tool failed on its last attempt.
    #[error("node `{node}` failed{}: {source}", attempts_said(*.attempts))]
    NodeFailed {
        /// The node.
        node: String,
        /// What its tool said the last time.
        source: ToolError,
        /// How many times it was tried.
        attempts: u32,
    },
    /// A conditional edge's condition failed to evaluate.
    #[error("the edge from `{node}` could not choose: {message}")]
    Route {
        /// The node whose edge it is.
        node: String,
        /// What went wrong.
        message: String,
    },
    /// A tool sent the run to a node the graph does not have.
    #[error("node `{node}` sent the run to `{target}`, which is not in the graph")]
    UnknownNext {
        /// The node whose tool chose.
        node: String,
        /// The name it chose.
        target: String,
    },
    /// Two parallel branches wrote one key that has no reducer.
    #[error("nodes `{first}` and `{second}` both wrote `{key}` in parallel branches; give `{key}` a reducer in the graph's `reducers` (append, extend, sum, max, merge or last)")]
    Conflict {
        /// The key.
        key: String,
        /// The node that wrote it first.
        first: String,
        /// The node that wrote it second.
        second: String,
    },
    /// A reducer could not merge a write.
    #[error("node `{node}` wrote `{key}`, which its reducer could not merge: {message}")]
    Reduce {
        /// The node.
        node: String,
        /// The key.
        key: String,
        /// Why.
        message: String,
    },
    /// A branch wrote the list a map runs over, while it ran.
    #[error("node `{node}` wrote `{key}` while a map over it ran")]
    MapChanged {
        /// The node.
        node: String,
        /// The key.
        key: String,
    },
    /// A map's `over` is not a list.
    #[error("the map after `{node}` needs a list at `{key}`")]
    MapOver {
        /// The node whose edge maps.
        node: String,
        /// The key.
        key: String,
    },
    /// The run ended with a join some of whose inputs never ran.
    #[error("join `{join}` never ran: only {} of its inputs reached it", .arrived.join(", "))]
    JoinUnmet {
        /// The join node.
        join: String,
        /// The inputs that reached it.
        arrived: Vec<String>,
    },
    /// A node's update would have taken the state past its size limit; it was not applied.
    #[error("node `{node}` would grow the state to {bytes} bytes, over the limit of {limit}")]
    StateTooLarge {
        /// The node.
        node: String,
        /// The state's size with the update.
        bytes: usize,
        /// The limit in force.
        limit: usize,
    },
}

fn attempts_said(attempts: u32) -> String {
    if attempts > 1 {
        format!(" after {attempts} attempts")
    } else {
        String::new()
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct RunEnd {
    /// `Completed`, `Failed` or `Cancelled`; or `Waiting`, stopped at a node's question
    /// (see [`StepSink::interrupted`]).
    pub status: RunStatus,
    /// The final state.
    pub state: State,
    /// Nodes executed, in all.
    pub steps: u64,
    /// Why it failed, when it did.
    pub error: Option<RunError>,
}

/// Runs `graph` from `checkpoint` until it ends, handing each step to `sink`.
///
/// `max_steps` bounds the total steps of the run, counting those before the checkpoint.
/// A sink error stops the run at once and is returned: the run's fate is then unknown
/// to the store, and the caller decides what to do.
pub async fn execute<S: StepSink>(
    graph: &Graph,
    checkpoint: Checkpoint,
    bounds: impl Into<Bounds>,
    sink: &mut S,
) -> Result<RunEnd, SinkError> {
    let bounds = bounds.into();
    if graph.is_parallel() {
        return super::parallel::execute(graph, checkpoint, bounds, sink).await;
    }
    let max_steps = bounds.max_steps;
    let Checkpoint {
        state,
        mut next,
        mut steps,
        mut answers,
        ..
    } = checkpoint;
    // For the checkpoint's node only: the first one run.
    let mut answer = next
        .and_then(|next| Checkpoint::take_answer(&mut answers, &graph.node(next).name, steps + 1))
        .map(Arc::new);
    let mut size = StateSize::of(&state);
    let mut state = Arc::new(state);
    // The nodes executed by this process, to name the loop if the limit is hit.
    let mut trail: Vec<NodeId> = Vec::new();

    while let Some(id) = next {
        if steps >= u64::from(max_steps) {
            let error = RunError::StepLimit {
                limit: max_steps,
                cycle: cycle_names(graph, &trail, id),
            };
            return Ok(ended(RunStatus::Failed, state, steps, Some(error)));
        }
        let node = graph.node(id);
        steps += 1;
        trail.push(id);

        let started = Instant::now();
        // Logs (and exported traces) from the node, its tool and its retries carry its
        // name, and its parent, the run's span, the run's id. Entered only while the node
        // runs: a span entered on every poll of the whole run cost a tenth of the
        // server's throughput.
        let span =
            tracing::info_span!(parent: &sink.span(), "node", node = %node.name, tool = %node.tool_name, step = steps);
        let attempted = attempt(node, &state, (steps, answer.take()), sink)
            .instrument(span.clone())
            .await?;
        let Some((result, attempts)) = attempted else {
            // Cancelled mid-node: the node's step never happened.
            return Ok(ended(RunStatus::Cancelled, state, steps - 1, None));
        };
        if let Ok(Outcome {
            next: Next::Wait(pause),
            ..
        }) = &result
        {
            // The node asked: its step happens once it is answered.
            let question = [Interruption {
                step: steps,
                node: &node.name,
                pause,
            }];
            let control = sink
                .interrupted(Waiting {
                    questions: &question,
                    started: steps - 1,
                    frontier: None,
                })
                .await?;
            let status = match control {
                Control::Continue => RunStatus::Waiting,
                Control::Cancel => RunStatus::Cancelled,
            };
            return Ok(ended(status, state, steps - 1, None));
        }
        let duration = started.elapsed();
        span.in_scope(|| match &result {
            Ok(_) => tracing::debug!(duration_us = duration.as_micros() as u64, "node finished"),
            Err(err) => tracing::info!(attempts, error = %err, "node failed"),
        });

        let mut result = result;
        let usage = result.as_mut().ok().and_then(|outcome| outcome.usage.take());
        let Decided {
            notes,
            changed,
            next: decided,
        } = match result {
            Ok(outcome) => decide(graph, node, outcome, (&mut state, &mut size), bounds.max_state_bytes),
            Err(source) => Decided {
                notes: Vec::new(),
                changed: Vec::new(),
                next: Err(RunError::NodeFailed {
                    node: node.name.clone(),
                    source,
                    attempts,
                }),
            },
        };
        let status = match &decided {
            Ok(Some(_)) => RunStatus::Running,
            Ok(None) => RunStatus::Completed,
            Err(_) => RunStatus::Failed,
        };
        let message = decided.as_ref().err().map(RunError::to_string);
        let control = sink
            .step(StepView {
                step: steps,
                node: &node.name,
                tool: &node.tool_name,
                state: &state,
                notes: &notes,
                changed: &changed,
                status,
                attempt: attempts,
                next: decided
                    .as_ref()
                    .ok()
                    .copied()
                    .flatten()
                    .map(|id| graph.node(id).name.as_str()),
                duration,
                error: message.as_deref(),
                branch: None,
                started: steps,
                frontier: None,
                output: None,
                usage,
            })
            .await?;
        next = match decided {
            Ok(next) => next,
            Err(error) => return Ok(ended(RunStatus::Failed, state, steps, Some(error))),
        };
        if control == Control::Cancel && next.is_some() {
            return Ok(ended(RunStatus::Cancelled, state, steps, None));
        }
    }
    Ok(ended(RunStatus::Completed, state, steps, None))
}

/// What a node's step comes to.
struct Decided {
    /// The log lines its tool wrote.
    notes: Vec<String>,
    /// The top-level keys it wrote.
    changed: Vec<String>,
    /// Where the run goes next (`None`: it ends), or why it fails here.
    next: Result<Option<NodeId>, RunError>,
}

/// Where the run goes after `node`, whose tool answered `outcome`.
///
/// A jump to a node the graph lacks fails the run before the update is written. Else the
/// update is merged into `state`, and a tool that left the choice to the graph is followed
/// along the node's route, whose conditions read the state after the update.
fn decide(
    graph: &Graph,
    node: &Node,
    outcome: Outcome,
    (state, size): (&mut Arc<State>, &mut StateSize),
    max_state_bytes: usize,
) -> Decided {
    let Outcome {
        update, next, notes, ..
    } = outcome;
    let measured: Vec<(String, usize)> = update
        .iter()
        .map(|(key, value)| (key.clone(), entry_bytes(key, value)))
        .collect();
    let bytes = size.after(&measured);
    if bytes > max_state_bytes {
        return Decided {
            notes,
            changed: Vec::new(),
            next: Err(RunError::StateTooLarge {
                node: node.name.clone(),
                bytes,
                limit: max_state_bytes,
            }),
        };
    }
    let chosen = match next {
        // Handled before: a question is no step.
        Next::Edge | Next::Wait(_) => None,
        Next::End => Some(None),
        Next::Node(target) => match graph.find(&target) {
            Some(target) => Some(Some(target)),
            None => {
                return Decided {
                    notes,
                    changed: Vec::new(),
                    next: Err(RunError::UnknownNext {
                        node: node.name.clone(),
                        target,
                    }),
                }
            }
        },
    };
    let changed = update.keys().cloned().collect();
    size.apply(measured);
    // The tool's clone of the state is gone by now, so this writes in place.
    let current = Arc::make_mut(state);
    for (key, value) in update {
        current.insert(key, value);
    }
    let next = match chosen {
        Some(next) => Ok(next),
        None => node.route.next(state).map_err(|message| RunError::Route {
            node: node.name.clone(),
            message,
        }),
    };
    Decided { notes, changed, next }
}

/// Runs a node's tool under its timeout, retrying as its policy says, and tells the
/// sink of each attempt. Answers the last result and the attempts made, or `None` when
/// the run was cancelled during an attempt or a backoff.
async fn attempt<S: StepSink>(
    node: &Node,
    state: &Arc<State>,
    (step, answer): (u64, Option<Arc<Answer>>),
    sink: &mut S,
) -> Result<Option<(Result<Outcome, ToolError>, u32)>, SinkError> {
    let stop = sink.cancel_token();
    let mut attempt = 1;
    loop {
        sink.node_started(NodeStart {
            step,
            node: &node.name,
            attempt,
            branch: None,
        })
        .await?;
        let mut call = node.tool.call(ToolInput {
            state: Arc::clone(state),
            config: Arc::clone(&node.config),
            timeout: node.policy.timeout,
            missing: node.missing,
            answer: answer.clone(),
            progress: node.tool.streams().then(|| sink.progress(step, &node.name)).flatten(),
        });
        // A tool that finishes without waiting (most do) needs no timer: arm one only
        // for a call that is still pending after its first poll.
        let result = match futures::poll!(call.as_mut()) {
            Poll::Ready(result) => result,
            Poll::Pending => tokio::select! {
                timed = tokio::time::timeout(node.policy.timeout, call) => match timed {
                    Ok(result) => result,
                    Err(_) => Err(ToolError::TimedOut(node.policy.timeout)),
                },
                () = raised(&stop) => return Ok(None),
            },
        };
        let error = match result {
            Ok(outcome) => return Ok(Some((Ok(outcome), attempt))),
            Err(error) => error,
        };
        let retry_in = node.policy.retry.delay_after(attempt);
        sink.node_failed(NodeFailure {
            step,
            node: &node.name,
            attempt,
            error: &error,
            retry_in,
            branch: None,
        })
        .await?;
        match retry_in {
            None => return Ok(Some((Err(error), attempt))),
            Some(delay) => {
                tokio::select! {
                    () = tokio::time::sleep(delay) => attempt += 1,
                    () = raised(&stop) => return Ok(None),
                }
            }
        }
    }
}

pub(super) fn ended(status: RunStatus, state: Arc<State>, steps: u64, error: Option<RunError>) -> RunEnd {
    RunEnd {
        status,
        state: Arc::unwrap_or_clone(state),
        steps,
        error,
    }
}

/// The loop the run was caught in: from the last time `next` ran up to now, then `next`
/// again. Falls back to the last few nodes when `next` never ran in this process.
fn cycle_names(graph: &Graph, trail: &[NodeId], next: NodeId) -> Vec<String> {
    let from = trail
        .iter()
        .rposition(|&id| id == next)
        .unwrap_or_else(|| trail.len().saturating_sub(5));
    trail[from..]
        .iter()
        .chain(std::iter::once(&next))
        .map(|&id| graph.node(id).name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn a_state_size_is_kept_per_key_and_matches_the_serialized_state() {
        let mut state: State = serde_json::from_value(serde_json::json!({"a": "x", "b": [1, 2, {"c": null}]})).unwrap();
        let serialized = |state: &State| serde_json::to_string(state).unwrap().len();
        let mut size = StateSize::of(&state);
        // Within the comma after the last entry.
        assert_eq!(size.total, serialized(&state) + 1);
        let update: State = serde_json::from_value(serde_json::json!({"a": "longer text", "d": 5})).unwrap();
        let measured: Vec<(String, usize)> = update
            .iter()
            .map(|(key, value)| (key.clone(), entry_bytes(key, value)))
            .collect();
        size.apply(measured);
        state.extend(update);
        assert_eq!(size.total, serialized(&state) + 1);
    }
    use crate::engine::tool::{FnTool, Outcome, Registry};

    /// Records each step's node, status and the value of `n` after it.
    #[derive(Default)]
    struct Recorder {
        steps: Vec<(u64, String, RunStatus, Value)>,
        cancel_after: Option<u64>,
    }

    impl StepSink for Recorder {
        fn step(&mut self, step: StepView<'_>) -> impl Future<Output = Result<Control, SinkError>> + Send {
            self.steps.push((
                step.step,
                step.node.to_owned(),
                step.status,
                step.state.get("n").cloned().unwrap_or(Value::Null),
            ));
            let control = match self.cancel_after {
                Some(seq) if seq == step.step => Control::Cancel,
                _ => Control::Continue,
            };
            std::future::ready(Ok(control))
        }
    }

    fn registry() -> Registry {
        let mut registry = Registry::new();
        registry
            .register(
                "inc",
                FnTool::inline("adds 1 to n", |state, _| {
                    let n = state.get("n").and_then(Value::as_i64).unwrap_or(0);
                    let mut update = State::new();
                    update.insert("n".into(), json!(n + 1));
                    Ok(Outcome::update(update))
                }),
            )
            .register(
                "until3",
                FnTool::inline("loops back to inc until n is 3", |state, _| {
                    let done = state.get("n").and_then(Value::as_i64) >= Some(3);
                    Ok(Outcome::default().then(if done { Next::End } else { Next::Node("inc".into()) }))
                }),
            )
            .register(
                "fail",
                FnTool::inline("fails", |_, _| Err(ToolError::Failed("no luck".into()))),
            );
        registry
    }

    async fn run(spec: Value, max_steps: Option<u32>, sink: &mut Recorder) -> RunEnd {
        let graph = Graph::parse(&spec, &registry()).unwrap();
        let limit = max_steps.unwrap_or(graph.max_steps());
        execute(&graph, Checkpoint::start(&graph, State::new()), limit, sink)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn follows_explicit_next_until_the_tool_ends_the_run() {
        let mut sink = Recorder::default();
        let end = run(
            json!({"nodes": {"inc": {}, "until3": {}}, "edges": {"inc": "until3"}}),
            None,
            &mut sink,
        )
        .await;
        assert_eq!(end.status, RunStatus::Completed);
        assert_eq!(end.state["n"], 3);
        assert_eq!(end.steps, 6);
        let trace: Vec<_> = sink
            .steps
            .iter()
            .map(|(seq, node, status, n)| (*seq, node.as_str(), *status, n.clone()))
            .collect();
        assert_eq!(
            trace,
            vec![
                (1, "inc", RunStatus::Running, json!(1)),
                (2, "until3", RunStatus::Running, json!(1)),
                (3, "inc", RunStatus::Running, json!(2)),
                (4, "until3", RunStatus::Running, json!(2)),
                (5, "inc", RunStatus::Running, json!(3)),
                (6, "until3", RunStatus::Completed, json!(3)),
            ]
        );
    }

    #[tokio::test]
    async fn the_step_limit_ends_a_loop_and_names_it() {
        let mut sink = Recorder::default();
        let spec = json!({"nodes": {"start": "inc", "inc": {}, "again": "inc"}, "edges": {"start": "inc", "inc": "again", "again": "inc"}});
        let end = run(spec, Some(7), &mut sink).await;
        assert_eq!(end.status, RunStatus::Failed);
        assert_eq!(end.steps, 7);
        assert_eq!(end.state["n"], 7);
        assert_eq!(
            end.error.unwrap().to_string(),
            "step limit of 7 reached; the run was cycling through inc → again → inc"
        );
        assert_eq!(sink.steps.len(), 7);
    }

    #[tokio::test]
    async fn a_failing_node_fails_the_run_with_its_error() {
        let mut sink = Recorder::default();
        let end = run(
            json!({"nodes": {"inc": {}, "fail": {}}, "edges": {"inc": "fail"}}),
            None,
            &mut sink,
        )
        .await;
        assert_eq!(end.status, RunStatus::Failed);
        assert_eq!(end.error.unwrap().to_string(), "node `fail` failed: no luck");
        assert_eq!(sink.steps.last().unwrap().2, RunStatus::Failed);
        assert_eq!(end.state["n"], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_node_is_retried_with_backoff_then_succeeds() {
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = Arc::clone(&calls);
        let mut registry = registry();
        registry.register(
            "flaky",
            FnTool::inline("fails twice", move |_, _| {
                if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                    Err(ToolError::Failed("not yet".into()))
                } else {
                    Ok(Outcome::default())
                }
            }),
        );
        let spec = json!({"nodes": {"flaky": {"retry": {"attempts": 3, "backoff_ms": 100}}}, "edges": {}});
        let graph = Graph::parse(&spec, &registry).unwrap();
        let started = tokio::time::Instant::now();
        let mut sink = NotesRecorder::default();
        let end = execute(&graph, Checkpoint::start(&graph, State::new()), 100, &mut sink)
            .await
            .unwrap();
        assert_eq!(end.status, RunStatus::Completed);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(started.elapsed(), Duration::from_millis(300), "waited 100 then 200 ms");
        assert_eq!(
            sink.notes,
            vec![
                "attempt 1 failed: not yet; retrying in 100 ms".to_owned(),
                "attempt 2 failed: not yet; retrying in 200 ms".to_owned()
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_past_its_timeout_fails_after_its_last_attempt() {
        let mut registry = registry();
        crate::tools::builtin::register(&mut registry);
        let spec = json!({
            "nodes": {"slow": {"tool": "sleep", "config": {"ms": 5000}, "timeout_ms": 50, "retry": {"attempts": 2, "backoff_ms": 10}}},
            "edges": {}
        });
        let graph = Graph::parse(&spec, &registry).unwrap();
        let mut sink = NotesRecorder::default();
        let end = execute(&graph, Checkpoint::start(&graph, State::new()), 100, &mut sink)
            .await
            .unwrap();
        assert_eq!(end.status, RunStatus::Failed);
        assert_eq!(
            end.error.unwrap().to_string(),
            "node `slow` failed after 2 attempts: timed out after 50 ms"
        );
        assert_eq!(
            sink.notes,
            vec![
                "attempt 1 failed: timed out after 50 ms; retrying in 10 ms".to_owned(),
                "attempt 2 failed: timed out after 50 ms; giving up".to_owned()
            ]
        );
    }

    /// Keeps every step's notes.
    #[derive(Default)]
    struct NotesRecorder {
        notes: Vec<String>,
    }

    impl StepSink for NotesRecorder {
        fn node_failed(&mut self, failure: NodeFailure<'_>) -> impl Future<Output = Result<(), SinkError>> + Send {
            let next = match failure.retry_in {
                Some(delay) => format!("retrying in {} ms", delay.as_millis()),
                None => "giving up".to_owned(),
            };
            self.notes
                .push(format!("attempt {} failed: {}; {next}", failure.attempt, failure.error));
            std::future::ready(Ok(()))
        }

        fn step(&mut self, step: StepView<'_>) -> impl Future<Output = Result<Control, SinkError>> + Send {
            self.notes.extend(step.notes.iter().cloned());
            std::future::ready(Ok(Control::Continue))
        }
    }

    #[tokio::test]
    async fn cancel_stops_at_the_next_safe_point() {
        let mut sink = Recorder {
            cancel_after: Some(2),
            ..Recorder::default()
        };
        let end = run(
            json!({"nodes": {"inc": {}, "until3": {}}, "edges": {"inc": "until3"}}),
            None,
            &mut sink,
        )
        .await;
        assert_eq!(end.status, RunStatus::Cancelled);
        assert_eq!(end.steps, 2);
    }

    #[tokio::test]
    async fn resumes_from_a_checkpoint_counting_earlier_steps() {
        let graph = Graph::parse(
            &json!({"nodes": {"inc": {}, "until3": {}}, "edges": {"inc": "until3"}}),
            &registry(),
        )
        .unwrap();
        let mut state = State::new();
        state.insert("n".into(), json!(2));
        let checkpoint = Checkpoint {
            state,
            next: graph.find("inc"),
            steps: 4,
            answers: Vec::new(),
            frontier: None,
        };
        let mut sink = Recorder::default();
        let end = execute(&graph, checkpoint, 100, &mut sink).await.unwrap();
        assert_eq!(end.state["n"], 3);
        assert_eq!(end.steps, 6);
        assert_eq!(sink.steps[0].0, 5);
    }
}
