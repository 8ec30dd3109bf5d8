//! A run as the run page shows it, rebuilt from its stored events.
//!
//! The server renders the run page from this model, each time the page is read (the
//! browser reads it again as events arrive, see [`crate::follow`]). Events it already
//! has (same or lower `seq`) are ignored, and so are tokens, which are never stored.

use std::collections::HashMap;

use serde_json::Value;

use crate::wire::{Interrupt, NodeFailedEvent, RunDetail, RunEvent, RunStatus, StepEvent, Usage};

/// Where a node of the graph stands in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Not reached (yet).
    Pending,
    /// Executing, or waiting to retry.
    Running,
    /// Its latest execution finished.
    Completed,
    /// Its latest attempt failed with no retry left.
    Failed,
    /// The run ended without reaching it.
    Skipped,
    /// It asked a question, and the run waits for the answer.
    Waiting,
}

impl NodeState {
    /// The CSS class (and `data-state`) for the node.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Waiting => "waiting",
        }
    }
}

/// One line of the timeline: a finished step, or a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A node finished (index into [`RunModel::steps`]).
    Step(usize),
    /// An attempt failed.
    Failure(NodeFailedEvent),
    /// A node asked a question.
    Question(Box<Interrupt>),
}

/// The run page's model of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunModel {
    /// The run's id.
    pub run_id: String,
    /// Where the run stands.
    pub status: RunStatus,
    /// The latest event applied.
    pub last_seq: u64,
    /// Every finished step, in order.
    pub steps: Vec<StepEvent>,
    /// The timeline, in order.
    pub timeline: Vec<Entry>,
    /// Each node's state, by name.
    pub nodes: HashMap<String, NodeState>,
    /// For each node, the steps (1-based) at which it finished.
    pub finished_at_steps: HashMap<String, Vec<u64>>,
    /// The initial state.
    pub initial_state: Value,
    /// The latest state.
    pub state: Value,
    /// The log, in order, as the server writes it.
    pub log: Vec<String>,
    /// The step whose "[RUNNING]" line was written last.
    announced: Option<u64>,
    /// Why the run failed.
    pub error: Option<String>,
    /// The questions the run waits on.
    pub pending: Vec<Interrupt>,
}

impl RunModel {
    /// The model of a run as read from `GET /runs/{id}`, over the graph's `nodes`.
    pub fn new(detail: RunDetail, nodes: &[String]) -> Self {
        let RunDetail { run, events, .. } = detail;
        let initial_state = events
            .iter()
            .find_map(|event| match event {
                RunEvent::Step(step) => Some(before_step(step)),
                _ => None,
            })
            .unwrap_or_else(|| run.state.clone());
        let mut model = Self {
            run_id: run.run_id,
            status: RunStatus::Queued,
            last_seq: 0,
            steps: Vec::new(),
            timeline: Vec::new(),
            nodes: nodes.iter().map(|node| (node.clone(), NodeState::Pending)).collect(),
            finished_at_steps: HashMap::new(),
            initial_state,
            state: run.state,
            log: Vec::new(),
            announced: None,
            error: run.error,
            pending: Vec::new(),
        };
        // Each event moves into the model: a step's state is not copied.
        for event in events {
            model.apply(event);
        }
        // The snapshot may be newer than the events read a moment before it.
        if run.status.is_terminal() || model.status == RunStatus::Queued {
            model.status = run.status;
        }
        model
    }

    /// Whether the run has ended.
    pub fn ended(&self) -> bool {
        self.status.is_terminal()
    }

    /// Applies one event; answers whether it was new.
    pub fn apply(&mut self, event: RunEvent) -> bool {
        let seq = match &event {
            RunEvent::RunQueued(e) => e.seq,
            RunEvent::RunStarted(e) => e.seq,
            RunEvent::NodeStarted(e) => e.seq,
            RunEvent::Step(e) => e.seq,
            RunEvent::NodeFailed(e) => e.seq,
            RunEvent::End(e) => e.seq,
            RunEvent::Interrupted(e) => e.seq,
            RunEvent::Error(_) | RunEvent::Token(_) => return false,
        };
        if seq <= self.last_seq {
            return false;
        }
        self.last_seq = seq;
        match event {
            RunEvent::RunQueued(_) => self.status = RunStatus::Queued,
            RunEvent::RunStarted(_) => self.status = RunStatus::Running,
            RunEvent::NodeStarted(e) => {
                self.status = RunStatus::Running;
                // As the server logs it: one "[RUNNING]" line per executed node, on its
                // first attempt, and not again when a restart re-runs the step.
                if e.attempt == 1 && self.announced != Some(e.step) {
                    self.log.push(format!("[RUNNING] {}", e.node));
                }
                self.announced = Some(e.step);
                // Answered: the node goes on.
                self.pending.retain(|asked| asked.node != e.node);
                self.nodes.insert(e.node, NodeState::Running);
            }
            RunEvent::Step(step) => {
                let failed = step.error.is_some() || step.status == RunStatus::Failed;
                let state = if failed {
                    NodeState::Failed
                } else {
                    NodeState::Completed
                };
                self.nodes.insert(step.node.clone(), state);
                self.finished_at_steps
                    .entry(step.node.clone())
                    .or_default()
                    .push(step.step);
                self.state = step.state.clone();
                self.log
                    .extend(step.notes.iter().map(|note| format!("{}: {note}", step.node)));
                self.timeline.push(Entry::Step(self.steps.len()));
                self.steps.push(step);
            }
            RunEvent::NodeFailed(e) => {
                let state = match e.retry_in_ms {
                    Some(ms) => {
                        self.log.push(format!(
                            "{}: attempt {} failed: {}; retrying in {ms} ms",
                            e.node, e.attempt, e.error
                        ));
                        NodeState::Running
                    }
                    None => NodeState::Failed,
                };
                self.nodes.insert(e.node.clone(), state);
                self.timeline.push(Entry::Failure(e));
            }
            RunEvent::End(end) => {
                if let Some(error) = &end.error {
                    self.log.push(format!("[FAILED] {error}"));
                }
                self.status = end.status;
                self.state = end.state;
                self.error = end.error;
                self.pending.clear();
                for state in self.nodes.values_mut() {
                    match *state {
                        NodeState::Pending | NodeState::Waiting => *state = NodeState::Skipped,
                        // Cancelled mid-node: the node's work was not kept.
                        NodeState::Running if end.status != RunStatus::Failed => *state = NodeState::Skipped,
                        NodeState::Running => *state = NodeState::Failed,
                        _ => {}
                    }
                }
            }
            RunEvent::Interrupted(e) => {
                self.status = RunStatus::Waiting;
                let question = e.interrupt;
                self.log
                    .push(format!("[WAITING] {}: {}", question.node, question.prompt));
                self.nodes.insert(question.node.clone(), NodeState::Waiting);
                self.timeline.push(Entry::Question(Box::new(question.clone())));
                self.pending.push(question);
            }
            RunEvent::Error(_) | RunEvent::Token(_) => {}
        }
        true
    }

    /// The state before step `index` (0-based into [`RunModel::steps`]).
    pub fn state_before(&self, index: usize) -> &Value {
        match index.checked_sub(1).and_then(|previous| self.steps.get(previous)) {
            Some(previous) => &previous.state,
            None => &self.initial_state,
        }
    }

    /// What the run's model calls have used so far: its steps' usage added up, or `None`
    /// when no step called a model.
    pub fn usage(&self) -> Option<Usage> {
        self.steps.iter().filter_map(|step| step.usage).reduce(|a, b| a + b)
    }

    /// A node's state.
    pub fn node_state(&self, node: &str) -> NodeState {
        self.nodes.get(node).copied().unwrap_or(NodeState::Pending)
    }
}

/// The state before a step, rebuilt from the state after it and the keys it wrote:
/// keys the step added are dropped. (A key it overwrote keeps its new value; only the
/// first step's "before" is rebuilt this way, and only when the initial state is unknown.)
fn before_step(step: &StepEvent) -> Value {
    let mut before = step.state.clone();
    if let (Value::Object(before), Value::Object(update)) = (&mut before, &step.update) {
        for key in update.keys() {
            before.remove(key);
        }
    }
    before
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wire::{EndEvent, NodeStartedEvent, RunQueuedEvent, RunSnapshot};

    fn step(seq: u64, step: u64, node: &str, state: Value) -> RunEvent {
        RunEvent::Step(StepEvent {
            run_id: "r".into(),
            seq,
            step,
            node: node.into(),
            update: state.clone(),
            state,
            attempt: 1,
            log: format!("[RUNNING] {node}"),
            notes: vec![],
            changed: vec![],
            status: RunStatus::Running,
            duration_us: 5,
            error: None,
            instance: None,
            branch: None,
            output: None,
            usage: None,
        })
    }

    fn detail(events: Vec<RunEvent>, status: RunStatus) -> RunDetail {
        RunDetail {
            run: RunSnapshot {
                run_id: "r".into(),
                graph_id: "g".into(),
                status,
                state: json!({"x": 0}),
                log: vec![],
                steps: 0,
                error: None,
                graph_name: None,
                created_at: 0,
                finished_at: None,
                forked_from: None,
                interrupts: Vec::new(),
                usage: None,
            },
            events,
            forks: Vec::new(),
        }
    }

    fn nodes() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[test]
    fn live_events_move_nodes_from_pending_to_running_to_completed() {
        let queued = RunEvent::RunQueued(RunQueuedEvent {
            run_id: "r".into(),
            seq: 1,
            graph_id: "g".into(),
        });
        let mut model = RunModel::new(detail(vec![queued], RunStatus::Queued), &nodes());
        assert_eq!(model.status, RunStatus::Queued);
        assert_eq!(model.node_state("a"), NodeState::Pending);

        let started = RunEvent::NodeStarted(NodeStartedEvent {
            run_id: "r".into(),
            seq: 2,
            step: 1,
            node: "a".into(),
            attempt: 1,
            branch: None,
        });
        assert!(model.apply(started.clone()));
        assert_eq!(model.node_state("a"), NodeState::Running);
        assert_eq!(model.status, RunStatus::Running);
        // A replayed event changes nothing.
        assert!(!model.apply(started));

        assert!(model.apply(step(3, 1, "a", json!({"x": 1}))));
        assert_eq!(model.node_state("a"), NodeState::Completed);
        assert_eq!(model.state, json!({"x": 1}));
        // The line comes with node_started, once, as in the server's log.
        assert_eq!(model.log, ["[RUNNING] a"]);
        assert!(model.apply(step(4, 2, "b", json!({"x": 2}))));
        assert_eq!(model.finished_at_steps["b"], [2]);
        assert_eq!(model.state_before(1), &json!({"x": 1}));

        let end = RunEvent::End(EndEvent {
            run_id: "r".into(),
            seq: 5,
            steps: 2,
            status: RunStatus::Completed,
            state: json!({"x": 2}),
            error: None,
        });
        assert!(model.apply(end));
        assert!(model.ended());
        assert_eq!(model.node_state("c"), NodeState::Skipped);
        assert_eq!(model.timeline.len(), 2);
    }

    #[test]
    fn a_question_makes_the_run_wait_until_its_node_starts_again() {
        let mut model = RunModel::new(detail(vec![], RunStatus::Running), &nodes());
        let question = crate::wire::Interrupt {
            interrupt_id: "q".into(),
            node: "b".into(),
            step: 2,
            prompt: "ok?".into(),
            input_schema: json!({}),
            context: serde_json::Map::new(),
            deadline: None,
        };
        assert!(model.apply(RunEvent::Interrupted(crate::wire::InterruptedEvent {
            run_id: "r".into(),
            seq: 4,
            interrupt: question.clone(),
        })));
        assert_eq!(model.status, RunStatus::Waiting);
        assert!(!model.ended());
        assert_eq!(model.node_state("b"), NodeState::Waiting);
        assert_eq!(model.pending, std::slice::from_ref(&question));
        assert_eq!(model.timeline, [Entry::Question(Box::new(question))]);
        assert_eq!(model.log, ["[WAITING] b: ok?"]);
        // Answered: the node starts again, and nothing is pending.
        model.apply(RunEvent::NodeStarted(NodeStartedEvent {
            run_id: "r".into(),
            seq: 6,
            step: 2,
            node: "b".into(),
            attempt: 1,
            branch: None,
        }));
        assert_eq!(
            (model.status, model.node_state("b")),
            (RunStatus::Running, NodeState::Running)
        );
        assert!(model.pending.is_empty());
    }

    #[test]
    fn a_failed_attempt_with_a_retry_keeps_the_node_running() {
        let mut model = RunModel::new(detail(vec![], RunStatus::Running), &nodes());
        let failure = |seq, retry_in_ms| {
            RunEvent::NodeFailed(NodeFailedEvent {
                run_id: "r".into(),
                seq,
                step: 1,
                node: "a".into(),
                attempt: seq as u32,
                error: "boom".into(),
                retry_in_ms,
                branch: None,
            })
        };
        model.apply(failure(1, Some(10)));
        assert_eq!(model.node_state("a"), NodeState::Running);
        model.apply(failure(2, None));
        assert_eq!(model.node_state("a"), NodeState::Failed);
        assert_eq!(model.timeline.len(), 2);
    }

    #[test]
    fn the_initial_state_is_rebuilt_when_the_first_step_is_known() {
        let RunEvent::Step(mut first) = step(1, 1, "a", json!({"code": "x", "functions": []})) else {
            unreachable!()
        };
        first.update = json!({"functions": []});
        let model = RunModel::new(detail(vec![RunEvent::Step(first)], RunStatus::Running), &nodes());
        assert_eq!(model.initial_state, json!({"code": "x"}));
        assert_eq!(model.state_before(0), &json!({"code": "x"}));
    }

    #[test]
    fn the_run_uses_what_its_model_steps_used_added_up() {
        let with_usage = |seq, usage| {
            let RunEvent::Step(mut event) = step(seq, seq, "a", json!({})) else {
                unreachable!()
            };
            event.usage = usage;
            RunEvent::Step(event)
        };
        let mut model = RunModel::new(detail(vec![with_usage(1, None)], RunStatus::Running), &nodes());
        assert_eq!(model.usage(), None, "no model call, no usage");
        let used = |prompt, completion, cost| Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cost_usd: cost,
        };
        model.apply(with_usage(2, Some(used(100, 20, Some(0.5)))));
        model.apply(with_usage(3, Some(used(7, 3, None))));
        assert_eq!(model.usage(), Some(used(107, 23, Some(0.5))));
        assert_eq!(crate::format::usage(&used(107, 23, Some(0.5))), "130 tok · $0.5000");
        assert_eq!(crate::format::usage(&used(7, 3, None)), "10 tok");
    }
}
