//! Runs and graphs as the outside world reads them: the wire shapes of `weft_app::wire`,
//! built once here for both the REST API and the server-rendered UI.

use serde_json::value::RawValue;
use weft_app::wire::{GraphDetail, GraphPage, GraphSummary, PresetInfo, RunDetail, RunPage, RunSnapshot, RunSummary};

use super::{Runner, RunnerError, Snapshot};
use crate::{
    ids::{GraphId, RunId},
    store::{RunFilter, StoredRun},
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

    /// A stored graph: its spec as posted and its drawing.
    pub async fn graph_view(&self, id: &GraphId) -> Result<GraphDetail, RunnerError> {
        let (stored, spec, graph) = self.graph_detail(id).await?;
        Ok(GraphDetail {
            graph_id: stored.id.to_string(),
            name: stored.name,
            description: graph.description().map(str::to_owned),
            spec,
            warnings: graph.warnings().to_vec(),
            view: graph.view().clone(),
        })
    }

    /// A page of stored graphs, newest first, with the cursor for the next page.
    pub async fn graph_page(&self, before: Option<&GraphId>, limit: u32) -> Result<GraphPage, RunnerError> {
        let graphs = self.store().list_graphs(before, limit).await?;
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

    /// A run and every event it has produced so far.
    pub async fn run_detail(&self, id: &RunId) -> Result<RunDetail<Box<RawValue>, Box<RawValue>>, RunnerError> {
        let snapshot = self.snapshot(id).await?;
        let events = self.events(&snapshot.run).await?;
        Ok(RunDetail {
            run: snapshot.into_wire(),
            events,
        })
    }

    /// A page of runs, newest first, with the cursor for the next page.
    pub async fn run_page(&self, filter: &RunFilter) -> Result<RunPage, RunnerError> {
        let (runs, next) = self.list_runs(filter).await?;
        Ok(RunPage {
            runs: runs.into_iter().map(summary).collect(),
            next_before: next.map(|id| id.to_string()),
        })
    }
}
