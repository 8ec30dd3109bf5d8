//! Runs and graphs as the outside world reads them: the wire shapes of `weft_app::wire`,
//! built once here for both the REST API and the server-rendered UI.

use serde_json::value::RawValue;
use weft_app::wire::{
    EndEvent, EventKind, ForkOrigin, GraphDetail, GraphPage, GraphSummary, Interrupt, PresetInfo, RunDetail, RunEvent,
    RunPage, RunSnapshot, RunSummary,
};

use super::{Replay, Runner, RunnerError};
use crate::{
    auth::Access,
    ids::{GraphId, RunId},
    store::{RunFilter, Store, StoreError, StoredRun},
    tools::presets::PRESETS,
};

impl Snapshot {
    /// The snapshot as `GET /graph/state` answers it.
    pub fn into_wire(self) -> RunSnapshot<Box<RawValue>> {
        RunSnapshot {
            run_id: self.run.id.to_string(),
            graph_id: self.run.graph_id.to_string(),
            status: self.run.status,
            state: self.state,
            log: self.log,
            steps: self.run.step_count,
            error: self.run.error,
            graph_name: self.run.graph_name,
            created_at: self.run.created_at,
            finished_at: self.run.finished_at,
            forked_from: self.run.forked_from.map(|fork| ForkOrigin {
                run_id: fork.run.to_string(),
                step: fork.step,
            }),
            interrupts: self.interrupts,
            usage: self.run.usage,
        }
    }
}

fn summary(run: StoredRun) -> RunSummary {
    RunSummary {
        run_id: run.id.to_string(),
        graph_id: run.graph_id.to_string(),
        graph_name: run.graph_name,
        status: run.status,
        steps: run.step_count,
        created_at: run.created_at,
        finished_at: run.finished_at,
        error: run.error,
        usage: run.usage,
    }
}

impl Runner {
    /// Every preset, with its graph laid out for drawing; built once, on first use.
    pub fn presets(&self) -> &[PresetInfo] {
        self.presets.get_or_init(|| {
            PRESETS
                .iter()
                .filter_map(|preset| match preset.info(self.registry()) {
                    Ok(info) => Some(info),
                    Err(err) => {
                        tracing::error!(preset = preset.name, error = %err, "a preset does not parse");
                        None
                    }
                })
                .collect()
        })
    }

    /// A stored graph `access` sees: its spec as posted and its drawing.
    pub async fn graph_view(&self, id: &GraphId, access: &Access) -> Result<GraphDetail, RunnerError> {
        let (stored, spec, graph) = self.graph_detail(id).await?;
        if !access.sees(stored.created_by.as_deref()) {
            return Err(RunnerError::GraphNotFound(id.clone()));
        }
        Ok(GraphDetail {
            graph_id: stored.id.to_string(),
            name: stored.name,
            description: graph.description().map(str::to_owned),
            spec,
            warnings: graph.warnings().to_vec(),
            view: graph.view().clone(),
        })
    }

    /// A page of the stored graphs `access` sees, newest first, with the cursor for the
    /// next page.
    pub async fn graph_page(
        &self,
        before: Option<&GraphId>,
        limit: u32,
        access: &Access,
    ) -> Result<GraphPage, RunnerError> {
        let creator = access.creator_filter();
        let graphs = self.store().list_graphs(before, creator.as_deref(), limit).await?;
        let next_before = (graphs.len() == limit as usize)
            .then(|| graphs.last().map(|graph| graph.id.to_string()))
            .flatten();
        Ok(GraphPage {
            graphs: graphs
                .into_iter()
                .map(|graph| GraphSummary {
                    graph_id: graph.id.to_string(),
                    name: graph.name,
                    nodes: graph.nodes,
                    created_at: graph.created_at,
                })
                .collect(),
            next_before,
        })
    }

    /// A run `access` sees, and every event it has produced so far.
    pub async fn run_detail(
        &self,
        id: &RunId,
        access: &Access,
    ) -> Result<RunDetail<Box<RawValue>, Box<RawValue>>, RunnerError> {
        let snapshot = self.snapshot(id, access).await?;
        let events = self.events(&snapshot.run).await?;
        // Only the forks `access` sees are listed, filtered by the store in one query.
        let forks = self.forks_of(id, access).await?;
        Ok(RunDetail {
            run: snapshot.into_wire(),
            events,
            forks: forks.iter().map(RunId::to_string).collect(),
        })
    }

    /// A page of the runs `access` sees, newest first, with the cursor for the next page.
    pub async fn run_page(&self, filter: RunFilter, access: &Access) -> Result<RunPage, RunnerError> {
        let filter = RunFilter {
            created_by: access.creator_filter(),
            ..filter
        };
        let (runs, next) = self.list_runs(&filter).await?;
        Ok(RunPage {
            runs: runs.into_iter().map(summary).collect(),
            next_before: next.map(|id| id.to_string()),
        })
    }
}

/// A run as `GET /graph/state` shows it, with the state kept as JSON text.
#[derive(Debug)]
pub struct Snapshot {
    /// The stored run.
    pub run: StoredRun,
    /// The current state: final, after the latest step, or initial.
    pub state: Box<RawValue>,
    /// Every log line so far.
    pub log: Vec<String>,
    /// The questions it waits on, while `waiting`.
    pub interrupts: Vec<Interrupt>,
}

impl Runner {
    /// The current state and log of a run `access` sees.
    pub async fn snapshot(&self, id: &RunId, access: &Access) -> Result<Snapshot, RunnerError> {
        let run = self.visible_run(id, access).await?;
        let state = current_state(self.store.as_ref(), &run).await?;
        let log = self.store.run_log(id).await?;
        let interrupts = self.pending_questions(&run).await?;
        Ok(Snapshot {
            run,
            state,
            log,
            interrupts,
        })
    }
}

/// The `end` event of an ended run, as JSON text, rebuilt from the store.
pub async fn end_event(store: &dyn Store, run: &StoredRun) -> Result<String, StoreError> {
    let state = current_state(store, run).await?;
    let event = RunEvent::End(EndEvent {
        run_id: run.id.to_string(),
        seq: run.last_seq + 1,
        steps: run.step_count,
        status: run.status,
        state: &*state,
        error: run.error.clone(),
    });
    serde_json::to_string(&event).map_err(|err| StoreError::Corrupt(err.to_string()))
}

impl Runner {
    /// A page of runs, newest first.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<(Vec<StoredRun>, Option<RunId>), RunnerError> {
        let runs = self.store.list_runs(filter).await?;
        let next = (runs.len() == filter.limit as usize)
            .then(|| runs.last().map(|run| run.id.clone()))
            .flatten();
        Ok((runs, next))
    }

    /// Every event of a run so far, as streamed: its steps, then `end` once it has ended.
    pub async fn events(&self, run: &StoredRun) -> Result<Vec<Box<RawValue>>, RunnerError> {
        let corrupt = |err: serde_json::Error| StoreError::Corrupt(format!("stored event: {err}"));
        let mut events = Vec::new();
        let mut ended = false;
        let mut pages = Replay::after(self.store.as_ref(), run, 0).await?;
        while let Some(page) = pages.next().await? {
            for event in page {
                ended |= event.kind == EventKind::End;
                events.push(RawValue::from_string(event.event).map_err(corrupt)?);
            }
        }
        // Runs recorded before `end` was an event of its own get it rebuilt.
        if run.status.is_terminal() && !ended {
            events.push(RawValue::from_string(end_event(self.store.as_ref(), run).await?).map_err(corrupt)?);
        }
        Ok(events)
    }
}

/// The state of a stored run, as JSON text: final once ended, else after its latest step
/// (rebuilt from its latest snapshot and the updates after it).
pub async fn current_state(store: &dyn Store, run: &StoredRun) -> Result<Box<RawValue>, StoreError> {
    let corrupt = |err: serde_json::Error| StoreError::Corrupt(format!("run state: {err}"));
    if let Some(state) = &run.final_state {
        return RawValue::from_string(state.clone()).map_err(corrupt);
    }
    let state = Replay::state_after(store, run, run.last_seq).await?;
    serde_json::value::to_raw_value(&state).map_err(corrupt)
}
