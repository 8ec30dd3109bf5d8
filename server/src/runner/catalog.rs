//! The graph catalog: storing graphs (specs and presets), and the parsed graphs kept in
//! memory so that a run does not parse its graph again.

use std::sync::Arc;

use serde_json::Value;
use weft_app::wire::Problem;

use super::{Runner, RunnerError};
use crate::{
    auth::{Access, Principal},
    engine::{Graph, GraphError},
    ids::GraphId,
    store::{now_millis, Deleted, StoreError, StoredGraph},
    tools::presets,
};

/// The most parsed graphs kept in memory; past it the cache starts over.
const GRAPH_CACHE_SIZE: usize = 1_024;

/// A parsed graph kept in memory, with who created it (to check who may run it).
#[derive(Clone)]
pub(super) struct Cataloged {
    graph: Arc<Graph>,
    created_by: Option<String>,
    /// Its name (a preset's, or the spec's), which labels its runs' metrics.
    name: Option<Arc<str>>,
}

impl Runner {
    /// Checks `spec` and stores it as a new graph of `by`'s: its id, and what the check
    /// warned of.
    pub async fn create_graph(&self, spec: &Value, by: &Principal) -> Result<(GraphId, Vec<Problem>), RunnerError> {
        self.insert_graph(spec, None, by).await
    }

    /// Deletes a graph `access` sees, with its runs, none of which may be live.
    pub async fn delete_graph(&self, id: &GraphId, access: &Access) -> Result<(), RunnerError> {
        self.visible_graph(id, access).await?;
        match self.store.delete_graph(id).await? {
            Deleted::Done => {
                self.forget_graph(id);
                Ok(())
            }
            Deleted::NotFound => Err(RunnerError::GraphNotFound(id.clone())),
            Deleted::Live => Err(RunnerError::GraphHasLiveRuns(id.clone())),
        }
    }

    /// Drops a deleted graph from the parsed graphs kept in memory.
    pub(super) fn forget_graph(&self, id: &GraphId) {
        self.graphs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }

    /// Checks `spec` as [`Runner::create_graph`] does, storing nothing: what the check
    /// warned of.
    pub fn validate_graph(&self, spec: &Value) -> Result<Vec<Problem>, RunnerError> {
        Ok(self.checked(spec)?.warnings().to_vec())
    }

    /// Checks that the named preset can be created here, as [`Runner::create_preset`]
    /// does, storing nothing.
    pub fn validate_preset(&self, name: &str) -> Result<Vec<Problem>, RunnerError> {
        let preset = self.creatable_preset(name)?;
        Ok(self.checked(&preset.spec())?.warnings().to_vec())
    }

    /// Checks `initial_state` against the named preset's input schema.
    pub fn validate_preset_input(&self, name: &str, initial_state: &Value) -> Result<(), RunnerError> {
        let preset = presets::find(name).ok_or_else(|| RunnerError::UnknownPreset(name.to_owned()))?;
        let problems = crate::tools::schema::check(&preset.input_schema(), initial_state);
        if problems.is_empty() {
            return Ok(());
        }
        Err(RunnerError::InvalidInitialState(
            problems
                .into_iter()
                .map(|problem| Problem {
                    path: format!("/initial_state{}", problem.path),
                    message: problem.message,
                })
                .collect(),
        ))
    }

    /// `spec` parsed, if it is a graph this server can run.
    fn checked(&self, spec: &Value) -> Result<Graph, RunnerError> {
        let graph = Graph::parse(spec, &self.registry)?;
        if !graph.unavailable().is_empty() {
            return Err(GraphError {
                problems: graph.unavailable().to_vec(),
            }
            .into());
        }
        Ok(graph)
    }

    /// The named preset, if it exists and can run here.
    fn creatable_preset(&self, name: &str) -> Result<&'static presets::Preset, RunnerError> {
        let preset = presets::find(name).ok_or_else(|| RunnerError::UnknownPreset(name.to_owned()))?;
        let listed = self.presets().iter().find(|info| info.name == preset.name);
        match listed.and_then(|info| info.unavailable.clone()) {
            Some(why) => Err(RunnerError::PresetUnavailable(why)),
            None => Ok(preset),
        }
    }

    async fn insert_graph(
        &self,
        spec: &Value,
        name: Option<&str>,
        by: &Principal,
    ) -> Result<(GraphId, Vec<Problem>), RunnerError> {
        let graph = Arc::new(self.checked(spec)?);
        let id = GraphId::generate();
        let created_by = by.created_by();
        self.store
            .insert_graph(StoredGraph {
                id: id.clone(),
                name: name.or(graph.name()).map(str::to_owned),
                spec: spec.to_string(),
                created_at: now_millis(),
                created_by: created_by.clone(),
            })
            .await?;
        let warnings = graph.warnings().to_vec();
        let name = name.or(graph.name()).map(Arc::from);
        self.cache(
            &id,
            Cataloged {
                graph,
                created_by,
                name,
            },
        );
        Ok((id, warnings))
    }

    /// Stores a new graph of `by`'s made from the named preset.
    pub async fn create_preset(&self, name: &str, by: &Principal) -> Result<(GraphId, Vec<Problem>), RunnerError> {
        let preset = self.creatable_preset(name)?;
        self.insert_graph(&preset.spec(), Some(preset.name), by).await
    }

    fn cache(&self, id: &GraphId, entry: Cataloged) {
        let mut graphs = self.graphs.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if graphs.len() >= GRAPH_CACHE_SIZE {
            graphs.clear();
        }
        graphs.insert(id.clone(), entry);
    }

    fn cached(&self, id: &GraphId) -> Option<Cataloged> {
        self.graphs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    async fn stored_graph(&self, id: &GraphId) -> Result<(StoredGraph, Value), RunnerError> {
        let stored = self
            .store
            .graph(id)
            .await?
            .ok_or_else(|| RunnerError::GraphNotFound(id.clone()))?;
        let spec =
            serde_json::from_str(&stored.spec).map_err(|err| StoreError::Corrupt(format!("graph spec: {err}")))?;
        Ok((stored, spec))
    }

    fn parse_and_cache(&self, stored: &StoredGraph, spec: &Value) -> Result<Arc<Graph>, RunnerError> {
        let graph = Arc::new(Graph::parse(spec, &self.registry)?);
        self.cache(
            &stored.id,
            Cataloged {
                graph: Arc::clone(&graph),
                created_by: stored.created_by.clone(),
                name: stored.name.as_deref().map(Arc::from),
            },
        );
        Ok(graph)
    }

    async fn cataloged(&self, id: &GraphId) -> Result<Cataloged, RunnerError> {
        if let Some(entry) = self.cached(id) {
            return Ok(entry);
        }
        let (stored, spec) = self.stored_graph(id).await?;
        let graph = self.parse_and_cache(&stored, &spec)?;
        Ok(Cataloged {
            graph,
            name: stored.name.as_deref().map(Arc::from),
            created_by: stored.created_by,
        })
    }

    /// The parsed graph of this id, from memory or the store.
    pub async fn graph(&self, id: &GraphId) -> Result<Arc<Graph>, RunnerError> {
        Ok(self.cataloged(id).await?.graph)
    }

    /// The parsed graph of this id, if `access` sees it: others' graphs are not found.
    pub async fn visible_graph(&self, id: &GraphId, access: &Access) -> Result<Arc<Graph>, RunnerError> {
        let entry = self.cataloged(id).await?;
        if !access.sees(entry.created_by.as_deref()) {
            return Err(RunnerError::GraphNotFound(id.clone()));
        }
        Ok(entry.graph)
    }

    /// What labels the metrics of runs of graph `id`: its name, or `unnamed`. Not its
    /// id: clients that create a graph per run would grow the metrics without end.
    pub(super) fn metric_label(&self, id: &GraphId) -> Arc<str> {
        self.cached(id)
            .and_then(|entry| entry.name)
            .unwrap_or_else(|| Arc::from("unnamed"))
    }

    /// A stored graph as stored, its spec, and its parsed form: one read, one parse.
    pub async fn graph_detail(&self, id: &GraphId) -> Result<(StoredGraph, Value, Arc<Graph>), RunnerError> {
        let (stored, spec) = self.stored_graph(id).await?;
        let graph = match self.cached(id) {
            Some(entry) => entry.graph,
            None => self.parse_and_cache(&stored, &spec)?,
        };
        Ok((stored, spec, graph))
    }
}
