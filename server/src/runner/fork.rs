//! Forks: a new run from the state after any step of another, with a patch, going on
//! along the graph's edges (`POST /runs/{id}/fork`).
//!
//! Steps are numbered once per run, so a step inside a loop is one particular pass of
//! it: forking there starts from that pass's state. The fork may run a newer graph that
//! has the node the step ran, so a fixed graph can take over where a failed run stopped:
//! fork from the step before the failure, and the failed node runs again, fixed.

use std::sync::Arc;

use serde_json::{Map, Value};
use weft_app::wire::EventKind;

use super::{EventPages, Replay, Runner, RunnerError, StartRun, Started};
use crate::{
    auth::{Access, Principal},
    engine::{
        graph::Route,
        parallel::{At, Frontier},
    },
    ids::{GraphId, RunId},
    store::{ForkedFrom, StoreError, StoredRun},
};

/// What `POST /runs/{id}/fork` asks.
pub struct Fork {
    /// The parent's step whose state to start from (0: its initial state, at the start).
    pub from_step: u64,
    /// A JSON Merge Patch (RFC 7396) applied to that state.
    pub state_patch: Value,
    /// The graph to run (default: the parent's).
    pub graph_id: Option<GraphId>,
    /// Who forks: the parent and the graph must be theirs to see; the fork is theirs.
    pub by: Principal,
}

/// A step as its event records it.
struct StepAt {
    /// The event's number.
    seq: u64,
    /// The node it ran.
    node: String,
}

impl Runner {
    /// Starts a fork of run `parent` (see the module docs).
    pub async fn fork(&self, parent: &RunId, fork: Fork) -> Result<Started, RunnerError> {
        let access = fork.by.access();
        let run = self.visible_run(parent, &access).await?;
        let graph_id = fork.graph_id.unwrap_or_else(|| run.graph_id.clone());
        let graph = self.visible_graph(&graph_id, &access).await?;
        if !fork.state_patch.is_object() {
            return Err(RunnerError::InvalidFork(
                "`state_patch` must be a JSON object (a merge patch)".into(),
            ));
        }
        let mut frontier = None;
        let (state, next) = if fork.from_step == 0 {
            let state: Map<String, Value> =
                serde_json::from_str(&run.initial_state).map_err(|err| StoreError::Corrupt(err.to_string()))?;
            (patched(state, &fork.state_patch), Some(graph.start()))
        } else {
            let step = self.step_at(&run, fork.from_step).await?;
            let node = graph.find(&step.node).ok_or_else(|| {
                RunnerError::InvalidFork(format!(
                    "step {} ran `{}`, which graph `{graph_id}` has no node for",
                    fork.from_step, step.node
                ))
            })?;
            let state = patched(
                Replay::state_after(self.store.as_ref(), &run, step.seq).await?,
                &fork.state_patch,
            );
            // Along the node's edges, on the patched state.
            let shared = Arc::new(state);
            let next = match &graph.node(node).route {
                // Inside branches: the other inputs' work is in the state already.
                Route::Join(join) => Some(*join),
                Route::FanOut(targets) => {
                    let mut branches = Frontier::at(None);
                    for &target in targets {
                        branches.ready.push_back(At {
                            branch: branches.next_branch.to_string(),
                            node: graph.node(target).name.clone(),
                        });
                        branches.next_branch += 1;
                    }
                    frontier = Some(branches);
                    targets.first().copied()
                }
                Route::Map(_) => {
                    return Err(RunnerError::InvalidFork(format!(
                        "step {} ran `{}`, whose map starts at the fork: fork from the step before it",
                        fork.from_step, step.node
                    )))
                }
                route => route
                    .next(&shared)
                    .map_err(|message| RunnerError::InvalidFork(format!("after `{}`: {message}", step.node)))?,
            };
            (Arc::unwrap_or_clone(shared), next)
        };
        let Some(next) = next else {
            return Err(RunnerError::InvalidFork(format!(
                "nothing follows step {}: the fork would end before it began",
                fork.from_step
            )));
        };
        self.start_run(StartRun {
            graph_id,
            initial_state: state,
            max_steps: None,
            by: fork.by,
            start_at: Some(next),
            frontier,
            forked_from: Some(ForkedFrom {
                run: run.id.clone(),
                step: fork.from_step,
            }),
        })
        .await
    }

    /// The step event numbered `step` of `run`.
    async fn step_at(&self, run: &StoredRun, step: u64) -> Result<StepAt, RunnerError> {
        if step > run.step_count {
            return Err(RunnerError::InvalidFork(format!(
                "run `{}` has {} step(s); there is no step {step}",
                run.id, run.step_count
            )));
        }
        let mut pages = EventPages::after(self.store.as_ref(), &run.id, 0);
        while let Some(page) = pages.next().await? {
            for event in page.iter().filter(|event| event.kind == EventKind::Step) {
                #[derive(serde::Deserialize)]
                struct Step {
                    step: u64,
                    node: String,
                }
                let parsed: Step =
                    serde_json::from_str(&event.event).map_err(|err| StoreError::Corrupt(format!("step: {err}")))?;
                if parsed.step == step {
                    return Ok(StepAt {
                        seq: event.seq,
                        node: parsed.node,
                    });
                }
            }
        }
        Err(RunnerError::InvalidFork(format!(
            "run `{}` recorded no step {step}",
            run.id
        )))
    }

    /// The runs forked from `id` that `access` sees, oldest first.
    pub async fn forks_of(&self, id: &RunId, access: &Access) -> Result<Vec<RunId>, RunnerError> {
        let creator = access.creator_filter();
        Ok(self.store.forks_of(id, creator.as_deref()).await?)
    }
}

/// `state` with `patch` applied as a JSON Merge Patch (RFC 7396).
fn patched(state: Map<String, Value>, patch: &Value) -> Map<String, Value> {
    let mut state = Value::Object(state);
    json_patch::merge(&mut state, patch);
    match state {
        Value::Object(state) => state,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_merge_patch_sets_replaces_and_removes_keys() {
        let state = json!({"count": 3, "keep": true, "nested": {"a": 1, "b": 2}, "gone": "x"});
        let Value::Object(state) = state else { unreachable!() };
        let patch = json!({"count": 10, "nested": {"b": null, "c": 3}, "gone": null, "new": [1]});
        assert_eq!(
            Value::Object(patched(state, &patch)),
            json!({"count": 10, "keep": true, "nested": {"a": 1, "c": 3}, "new": [1]})
        );
    }
}
