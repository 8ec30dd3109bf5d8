//! Runs, end to end: creating graphs, starting runs, recording and publishing each
//! step, ending runs, and resuming the runs a crash interrupted.
//!
//! A run's task drives the engine with a [`RunSink`]: each event is serialized once into
//! the text clients receive, committed to the store with its effect on the run (a step's
//! checkpoint, the end), and only then published live. Nothing is streamed that the
//! store could lose.

pub mod hub;
mod replay;
#[cfg(test)]
mod tests;
mod views;

pub use self::replay::{EventPages, Replay};

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock, RwLock,
    },
};

use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use futures::FutureExt;
use serde::{ser::SerializeMap, Serialize};
use serde_json::{value::RawValue, Value};
use weft_app::wire::{
    EndEvent, NodeFailedEvent, NodeStartedEvent, PresetInfo, Problem, RunEvent, RunQueuedEvent, RunStartedEvent,
    RunStatus, State, StepEvent,
};

use self::hub::{Hub, LiveEvent, Publisher};
use crate::{
    engine::{
        execute,
        graph::{parse_max_steps, MAX_STEPS_CEILING},
        Bounds, Checkpoint, Control, CpuPool, Graph, GraphError, NodeFailure, NodeStart, Registry, RunEnd, SinkError,
        StepSink, StepView,
    },
    ids::{GraphId, OwnerId, RunId},
    lifecycle::Transition,
    store::{now_millis, EventRecord, Millis, NewRun, RunEffect, RunFilter, Store, StoreError, StoredGraph, StoredRun},
    tools::presets,
};

/// Why the runner refused a request.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// No graph has this id.
    #[error("no graph with id `{0}`")]
    GraphNotFound(GraphId),
    /// No run has this id.
    #[error("no run with id `{0}`")]
    RunNotFound(RunId),
    /// No preset has this name.
    #[error("no preset named `{0}`")]
    UnknownPreset(String),
    /// The graph spec is not a runnable graph.
    #[error(transparent)]
    InvalidGraph(#[from] GraphError),
    /// A run request's step limit is out of range.
    #[error("`max_steps` must be a whole number from 1 to {MAX_STEPS_CEILING}")]
    InvalidMaxSteps,
    /// As many runs as allowed are running and waiting: try again later.
    #[error("the server is at capacity: {running} runs running and {queued} waiting; try again shortly")]
    QueueFull {
        /// Runs executing.
        running: usize,
        /// Runs waiting for a slot.
        queued: usize,
    },
    /// The run has ended; there is nothing to cancel.
    #[error("run `{0}` has already ended")]
    AlreadyEnded(RunId),
    /// The run is not executing in this server process.
    #[error("run `{0}` is not running in this server")]
    NotLive(RunId),
    /// The server is shutting down and takes no new runs.
    #[error("the server is shutting down; try again in a moment")]
    ShuttingDown,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many runs execute at once, and how many may wait for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Runs executing at once; more wait, `queued`.
    pub max_running: usize,
    /// Runs waiting at most; past it, new runs are refused rather than piling up in memory.
    pub max_queued: usize,
    /// A run's state at most, serialized: a node whose update would go past it fails.
    pub max_state_bytes: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_running: 256,
            max_queued: 4_096,
            max_state_bytes: crate::engine::executor::DEFAULT_MAX_STATE_BYTES,
        }
    }
}

/// How long an instance holds a run without renewing, and how often it renews.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leases {
    /// A lease's length: past it, another instance may claim the run.
    pub duration: std::time::Duration,
    /// How often the leases of running runs are renewed (and expired ones claimed).
    pub renew_every: std::time::Duration,
}

impl Default for Leases {
    fn default() -> Self {
        Self {
            duration: std::time::Duration::from_secs(30),
            renew_every: std::time::Duration::from_secs(5),
        }
    }
}

impl Leases {
    /// When a lease taken now runs out.
    fn until_from_now(&self) -> Millis {
        now_millis().saturating_add(i64::try_from(self.duration.as_millis()).unwrap_or(i64::MAX))
    }
}

/// How a finished run ended, for `POST /graph/run` with `wait: true`.
#[derive(Debug, Clone)]
pub struct Finished {
    /// How it ended.
    pub status: RunStatus,
    /// The final state.
    pub state: State,
    /// Why it failed.
    pub error: Option<String>,
}

/// What [`Runner::start_run`] needs.
#[derive(Debug, Clone)]
pub struct StartRun {
    /// The graph to run.
    pub graph_id: GraphId,
    /// The state the start node sees.
    pub initial_state: State,
    /// Overrides the graph's step limit.
    pub max_steps: Option<u32>,
}

/// A started run.
pub struct Started {
    /// Its id, readable in the store already.
    pub run_id: RunId,
    /// Resolves when the run ends.
    pub finished: tokio::task::JoinHandle<Finished>,
}

/// The most parsed graphs kept in memory; past it the cache starts over.
const GRAPH_CACHE_SIZE: usize = 1_024;

/// Starts and tracks runs. Cheap to clone.
#[derive(Clone)]
pub struct Runner {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    hub: Hub,
    graphs: Arc<RwLock<HashMap<GraphId, Arc<Graph>>>>,
    limits: RunLimits,
    /// One permit per run allowed to execute.
    slots: Arc<Semaphore>,
    /// Runs accepted but waiting for a slot.
    waiting: Arc<AtomicUsize>,
    /// The presets as listed, built on first use (they never change).
    presets: Arc<OnceLock<Vec<PresetInfo>>>,
    /// The pool the registry's CPU-heavy tools run on, for reporting how busy it is.
    pool: CpuPool,
    /// This instance, as the owner of the runs it executes.
    owner: OwnerId,
    /// Raised when the server starts to shut down: runs stop after their current step,
    /// new runs are refused, streams close.
    shutdown: CancellationToken,
    /// The runs' tasks, to wait for at shutdown.
    tasks: TaskTracker,
    /// Its leases on them.
    leases: Leases,
}

impl Runner {
    /// A runner over `store` with the tools in `registry` (whose CPU-heavy tools run on
    /// `pool`), running at most `limits.max_running` runs at once.
    pub fn new(store: Arc<dyn Store>, registry: Registry, pool: CpuPool, limits: RunLimits) -> Self {
        Self {
            pool,
            owner: OwnerId::generate(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            leases: Leases::default(),
            store,
            registry: Arc::new(registry),
            hub: Hub::default(),
            graphs: Arc::default(),
            slots: Arc::new(Semaphore::new(limits.max_running.max(1))),
            waiting: Arc::default(),
            presets: Arc::default(),
            limits,
        }
    }

    /// Asks a run to stop: a queued run ends at once, a running one at its next safe
    /// point (after the node it is executing). Both end `cancelled`.
    pub async fn cancel(&self, id: &RunId) -> Result<(), RunnerError> {
        let run = self
            .store
            .run(id)
            .await?
            .ok_or_else(|| RunnerError::RunNotFound(id.clone()))?;
        if run.status.is_terminal() {
            return Err(RunnerError::AlreadyEnded(id.clone()));
        }
        if self.hub.cancel(id) {
            Ok(())
        } else if self.store.run(id).await?.is_some_and(|run| run.status.is_terminal()) {
            // It ended between the two reads.
            Err(RunnerError::AlreadyEnded(id.clone()))
        } else {
            Err(RunnerError::NotLive(id.clone()))
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The runs in flight.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The tools.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The pool CPU-heavy tools run on.
    pub fn cpu_pool(&self) -> &CpuPool {
        &self.pool
    }

    /// The same runner, holding its runs with `leases`.
    pub fn with_leases(mut self, leases: Leases) -> Self {
        self.leases = leases;
        self
    }

    /// This instance's id, as the owner of its runs.
    pub fn owner(&self) -> &OwnerId {
        &self.owner
    }

    /// Keeps this instance's leases: every `renew_every`, renews the leases of the runs it
    /// holds, then claims and resumes the runs whose lease expired (an instance that died
    /// left them). Runs until the task is dropped.
    pub async fn keep_leases(self) {
        let mut tick = tokio::time::interval(self.leases.renew_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(err) = self.store.renew_leases(&self.owner, self.leases.until_from_now()).await {
                tracing::warn!(error = %err, "could not renew leases; trying again");
                continue;
            }
            match self.resume_unfinished().await {
                Ok(0) => {}
                Ok(resumed) => tracing::info!(resumed, "claimed runs whose lease had expired"),
                Err(err) => tracing::warn!(error = %err, "could not claim expired runs; trying again"),
            }
        }
    }

    /// Hands back every run this instance holds, for the next instance to claim at once.
    pub async fn release_runs(&self) -> Result<u64, RunnerError> {
        Ok(self.store.release_runs(&self.owner).await?)
    }

    /// The signal raised when shutdown begins.
    pub fn shutdown_signal(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Shuts down: refuses new runs, lets each run finish the step it is in (within
    /// `grace`), then hands back every run this instance holds, checkpointed, for the
    /// next start. Answers how many runs were still mid-node when the grace ran out.
    pub async fn shut_down(&self, grace: std::time::Duration) -> usize {
        self.shutdown.cancel();
        self.tasks.close();
        let cut = match tokio::time::timeout(grace, self.tasks.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tasks.len(),
        };
        match self.release_runs().await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, cut, "handed back unfinished runs"),
            Err(err) => tracing::error!(error = %err, "could not hand back unfinished runs"),
        }
        cut
    }

    /// Checks `spec` and stores it as a new graph: its id, and what the check warned of.
    pub async fn create_graph(&self, spec: &Value) -> Result<(GraphId, Vec<Problem>), RunnerError> {
        self.insert_graph(spec, None).await
    }

    async fn insert_graph(&self, spec: &Value, name: Option<&str>) -> Result<(GraphId, Vec<Problem>), RunnerError> {
        let graph = Arc::new(Graph::parse(spec, &self.registry)?);
        let id = GraphId::generate();
        self.store
            .insert_graph(StoredGraph {
                id: id.clone(),
                name: name.or(graph.name()).map(str::to_owned),
                spec: spec.to_string(),
                created_at: now_millis(),
            })
            .await?;
        let warnings = graph.warnings().to_vec();
        self.cache(&id, graph);
        Ok((id, warnings))
    }

    /// Stores a new graph made from the named preset.
    pub async fn create_preset(&self, name: &str) -> Result<(GraphId, Vec<Problem>), RunnerError> {
        let preset = presets::find(name).ok_or_else(|| RunnerError::UnknownPreset(name.to_owned()))?;
        self.insert_graph(&preset.spec(), Some(preset.name)).await
    }

    fn cache(&self, id: &GraphId, graph: Arc<Graph>) {
        let mut graphs = self.graphs.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if graphs.len() >= GRAPH_CACHE_SIZE {
            graphs.clear();
        }
        graphs.insert(id.clone(), graph);
    }

    fn cached(&self, id: &GraphId) -> Option<Arc<Graph>> {
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

    fn parse_and_cache(&self, id: &GraphId, spec: &Value) -> Result<Arc<Graph>, RunnerError> {
        let graph = Arc::new(Graph::parse(spec, &self.registry)?);
        self.cache(id, Arc::clone(&graph));
        Ok(graph)
    }

    /// The parsed graph of this id, from memory or the store.
    pub async fn graph(&self, id: &GraphId) -> Result<Arc<Graph>, RunnerError> {
        if let Some(graph) = self.cached(id) {
            return Ok(graph);
        }
        let (_, spec) = self.stored_graph(id).await?;
        self.parse_and_cache(id, &spec)
    }

    /// A stored graph as stored, its spec, and its parsed form: one read, one parse.
    pub async fn graph_detail(&self, id: &GraphId) -> Result<(StoredGraph, Value, Arc<Graph>), RunnerError> {
        let (stored, spec) = self.stored_graph(id).await?;
        let graph = match self.cached(id) {
            Some(graph) => graph,
            None => self.parse_and_cache(id, &spec)?,
        };
        Ok((stored, spec, graph))
    }

    /// Stores a new run and starts it in the background.
    pub async fn start_run(&self, request: StartRun) -> Result<Started, RunnerError> {
        if self.shutdown.is_cancelled() {
            return Err(RunnerError::ShuttingDown);
        }
        let graph = self.graph(&request.graph_id).await?;
        let max_steps = match request.max_steps {
            None => graph.max_steps(),
            Some(n) => parse_max_steps(&n.into()).map_err(|_| RunnerError::InvalidMaxSteps)?,
        };
        let queued = self.waiting.load(Ordering::SeqCst);
        let full = self.slots.available_permits() == 0;
        if full && queued >= self.limits.max_queued {
            return Err(RunnerError::QueueFull {
                running: self.limits.max_running,
                queued,
            });
        }
        let run_id = RunId::generate();
        let start = graph.start();
        let queued: RunEvent = RunEvent::RunQueued(RunQueuedEvent {
            run_id: run_id.to_string(),
            seq: 1,
            graph_id: request.graph_id.to_string(),
        });
        let status = if full { RunStatus::Queued } else { RunStatus::Running };
        let initial_state = state_text(&request.initial_state);
        let state_bytes = initial_state.len();
        let new_run = NewRun {
            id: run_id.clone(),
            owner: self.owner.clone(),
            lease_until: self.leases.until_from_now(),
            event: serde_json::to_string(&queued).map_err(|err| StoreError::Corrupt(err.to_string()))?,
            graph_id: request.graph_id,
            status,
            initial_state,
            next_node: graph.node(start).name.clone(),
            max_steps,
            created_at: now_millis(),
        };
        // All or nothing: storing the run and starting its task happen in a task of their
        // own, which finishes even if the request that asked for them is dropped midway,
        // so a stored run always has a task executing it.
        let runner = self.clone();
        let id = run_id.clone();
        let finished = tokio::spawn(async move {
            runner.store.insert_run(new_run).await?;
            let checkpoint = Checkpoint::start(&graph, request.initial_state);
            Ok::<_, StoreError>(runner.spawn(id, graph, checkpoint, max_steps, Resume::No { status, state_bytes }))
        })
        .await
        .map_err(|err| StoreError::Corrupt(format!("the run could not be started: {err}")))??;
        Ok(Started { run_id, finished })
    }

    /// Claims every run whose lease has expired (a stop or a crash interrupted it) and
    /// starts it again from its last checkpoint. Answers how many were resumed.
    pub async fn resume_unfinished(&self) -> Result<usize, RunnerError> {
        let runs = self
            .store
            .claim_expired(&self.owner, now_millis(), self.leases.until_from_now())
            .await?;
        let count = runs.len();
        for run in runs {
            let run_id = run.id.clone();
            if let Err(err) = self.resume(run).await {
                tracing::error!(%run_id, error = %err, "could not resume run");
                let reason = format!("the run could not be resumed: {err}");
                fail_durably(self.store.as_ref(), &self.owner, &run_id, &reason).await;
            }
        }
        Ok(count)
    }

    async fn resume(&self, run: StoredRun) -> Result<(), RunnerError> {
        let graph = self.graph(&run.graph_id).await?;
        let state = current_state(self.store.as_ref(), &run).await?;
        let state: State =
            serde_json::from_str(state.get()).map_err(|err| StoreError::Corrupt(format!("run state: {err}")))?;
        let next = match run.next_node.as_deref() {
            None => None,
            Some(name) => Some(graph.find(name).ok_or_else(|| {
                StoreError::Corrupt(format!("run {} checkpoint names missing node `{name}`", run.id))
            })?),
        };
        tracing::info!(run_id = %run.id, steps = run.step_count, "resuming run");
        // A node that had started when the server stopped has had its "[RUNNING]" line.
        let last = self
            .store
            .events_after(&run.id, run.last_seq.saturating_sub(1), 1)
            .await?;
        let announced = last
            .first()
            .is_some_and(|event| matches!(event.kind.as_str(), "node_started" | "node_failed"))
            .then_some(run.step_count + 1);
        let checkpoint = Checkpoint {
            state,
            next,
            steps: run.step_count,
        };
        let resume = Resume::Yes {
            last_seq: run.last_seq,
            announced,
        };
        drop(self.spawn(run.id, graph, checkpoint, run.max_steps, resume));
        Ok(())
    }

    fn spawn(
        &self,
        run_id: RunId,
        graph: Arc<Graph>,
        checkpoint: Checkpoint,
        max_steps: u32,
        resume: Resume,
    ) -> tokio::task::JoinHandle<Finished> {
        let (last_seq, announced, status, initial_bytes) = match resume {
            // A new run has its `run_queued` event, and its initial state stored whole.
            Resume::No { status, state_bytes } => (1, None, status, state_bytes),
            // A claimed run was handed back to `queued`; its first step is a snapshot.
            Resume::Yes { last_seq, announced } => (last_seq, announced, RunStatus::Queued, 0),
        };
        // Registered before the task starts, so a subscriber never misses the run.
        let publisher = self.hub.register(&run_id);
        let store = Arc::clone(&self.store);
        let owner = self.owner.clone();
        let shutdown = self.shutdown.clone();
        let slots = Arc::clone(&self.slots);
        let waiting = Arc::clone(&self.waiting);
        let bounds = Bounds {
            max_steps,
            max_state_bytes: self.limits.max_state_bytes,
        };
        waiting.fetch_add(1, Ordering::SeqCst);
        self.tasks.spawn(async move {
            let mut sink = RunSink {
                run_id: run_id.clone(),
                owner,
                status,
                store: Arc::clone(&store),
                publisher,
                seq: last_seq,
                announced,
                held: Vec::new(),
                shutdown: shutdown.clone(),
                snapshot_bytes: initial_bytes,
                unsnapshotted: 0,
            };
            // Wait for a slot, unless the run is cancelled while it waits.
            let slot = tokio::select! {
                slot = slots.acquire_owned() => slot.ok(),
                () = sink.publisher.cancelled() => None,
                () = shutdown.cancelled() => {
                    waiting.fetch_sub(1, Ordering::SeqCst);
                    return sink.suspend();
                }
            };
            waiting.fetch_sub(1, Ordering::SeqCst);
            let Some(_slot) = slot else {
                let end = RunEnd {
                    status: RunStatus::Cancelled,
                    state: checkpoint.state,
                    steps: checkpoint.steps,
                    error: None,
                };
                return sink.finish(end).await;
            };
            let started: RunEvent = RunEvent::RunStarted(RunStartedEvent {
                run_id: run_id.to_string(),
                seq: sink.seq + 1,
                resumed: matches!(resume, Resume::Yes { .. }),
            });
            if let Err(err) = sink.emit(&started, &[], RunEffect::Started).await {
                tracing::error!(%run_id, error = %err, "run stopped: its start cannot be recorded");
                return sink.abandon("the run's start could not be recorded").await;
            }
            sink.status = RunStatus::Running;
            let outcome = std::panic::AssertUnwindSafe(execute(&graph, checkpoint, bounds, &mut sink))
                .catch_unwind()
                .await;
            let end = match outcome {
                Ok(Ok(end)) => end,
                Ok(Err(_)) if sink.shutdown.is_cancelled() => return sink.suspend(),
                Ok(Err(err)) => {
                    // The store refused a step: the run cannot go on, and its record may lag.
                    tracing::error!(%run_id, error = %err, "run stopped: its steps cannot be recorded");
                    return sink.abandon("the run's steps could not be recorded").await;
                }
                Err(_) => {
                    tracing::error!(%run_id, "run panicked");
                    return sink.abandon("the run crashed").await;
                }
            };
            sink.finish(end).await
        })
    }
}

/// A state as JSON text, serialized in place (no copy of the state is made).
fn state_text(state: &State) -> String {
    // Cannot fail: the keys are strings and a `Value` holds no non-finite number.
    serde_json::to_string(state).unwrap_or_else(|_| "{}".to_owned())
}

/// Whether a run starts fresh or goes on after a restart.
#[derive(Debug, Clone, Copy)]
enum Resume {
    /// A new run, stored with this status and an initial state of this size.
    No { status: RunStatus, state_bytes: usize },
    Yes {
        /// The number of its last recorded event.
        last_seq: u64,
        /// The step whose node had started (and logged "[RUNNING]") when the server stopped.
        announced: Option<u64>,
    },
}

/// Serializes the state keys a node wrote, from the state after it, without copying them.
struct Pick<'a> {
    state: &'a State,
    keys: &'a [String],
}

impl Serialize for Pick<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.keys.len()))?;
        for key in self.keys {
            if let Some(value) = self.state.get(key) {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

fn raw(value: &impl Serialize) -> Result<Box<RawValue>, SinkError> {
    serde_json::value::to_raw_value(value).map_err(|err| SinkError(err.to_string()))
}

/// Records and publishes one run's events.
struct RunSink {
    run_id: RunId,
    /// This instance, which must still own the run for any event to be written.
    owner: OwnerId,
    /// The run's status as stored, the start of its next move.
    status: RunStatus,
    store: Arc<dyn Store>,
    publisher: Publisher,
    /// The number of the last event recorded.
    seq: u64,
    /// The step whose "[RUNNING]" line was logged before a restart, not to be repeated.
    announced: Option<u64>,
    /// Events numbered but not yet written: the last step, until the run's end joins it.
    held: Vec<Held>,
    /// Raised at shutdown: the run stops after the step it is in.
    shutdown: CancellationToken,
    /// The size of the last state stored whole (a snapshot, or the initial state); 0 when
    /// unknown, which makes the next step a snapshot.
    snapshot_bytes: usize,
    /// The bytes of updates stored since then.
    unsnapshotted: usize,
}

#[cfg(feature = "test-hooks")]
mod test_hooks {
    //! `WEFT_TEST_ABORT_AFTER_STEP=<node>` aborts the process right after the first commit
    //! that records a step of that node: a crash at the worst moment, for process tests.

    use std::sync::OnceLock;

    use crate::store::EventRecord;

    /// Whether the commit of `records` is the one to crash after.
    pub(super) fn crashes_after(records: &[EventRecord]) -> bool {
        static NODE: OnceLock<Option<String>> = OnceLock::new();
        let node = NODE.get_or_init(|| std::env::var("WEFT_TEST_ABORT_AFTER_STEP").ok());
        node.as_deref().is_some_and(|node| {
            records
                .iter()
                .any(|record| record.kind == "step" && record.node.as_deref() == Some(node))
        })
    }
}

/// The first pause before writing a run's ending again after a store error.
const STORE_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(50);
/// The longest pause between two tries.
const STORE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// An event serialized for the store and for live subscribers.
struct Texts {
    /// As stored.
    stored: String,
    /// As published, when that differs (a step stored without its state).
    live: Option<String>,
    /// Whether it is a step stored with its whole state.
    snapshot: bool,
}

/// An event held back to be written with the next one.
struct Held {
    record: EventRecord,
    live: LiveEvent,
}

impl RunSink {
    /// Records `event` (numbered `self.seq + 1`) with its log lines and effect, then
    /// publishes it: nothing is streamed that the store could lose. Events held back
    /// (see [`RunSink::hold`]) are written in the same transaction, before it.
    async fn emit<S: Serialize>(
        &mut self,
        event: &RunEvent<S>,
        lines: &[String],
        effect: RunEffect,
    ) -> Result<(), StoreError> {
        self.hold(event, lines, effect)?;
        self.flush().await
    }

    /// Writes every held event in one transaction, then publishes them.
    async fn flush(&mut self) -> Result<(), StoreError> {
        let (records, published): (Vec<EventRecord>, Vec<LiveEvent>) = std::mem::take(&mut self.held)
            .into_iter()
            .map(|held| (held.record, held.live))
            .unzip();
        self.write(records).await?;
        for live in published {
            self.publisher.publish(live);
        }
        Ok(())
    }

    /// Writes `records` in one transaction (one event, or several all or none).
    async fn write(&self, mut records: Vec<EventRecord>) -> Result<(), StoreError> {
        #[cfg(feature = "test-hooks")]
        let crash = test_hooks::crashes_after(&records);
        match records.len() {
            1 => self.store.append_event(records.swap_remove(0)).await?,
            _ => self.store.append_events(records).await?,
        }
        #[cfg(feature = "test-hooks")]
        if crash {
            std::process::abort();
        }
        Ok(())
    }

    /// Numbers `event` and keeps it, unwritten and unpublished, to be written with the
    /// next emitted event in one transaction: how a run's last step and its ending land
    /// together, so that no crash can record the one without the other.
    fn hold<S: Serialize>(
        &mut self,
        event: &RunEvent<S>,
        lines: &[String],
        effect: RunEffect,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(event).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        let texts = Texts {
            stored: text,
            live: None,
            snapshot: false,
        };
        self.hold_texts((event.kind(), event.node()), lines, effect, texts)
    }

    /// [`RunSink::hold`] for an event already serialized.
    fn hold_texts(
        &mut self,
        (kind, node): (&'static str, Option<&str>),
        lines: &[String],
        effect: RunEffect,
        texts: Texts,
    ) -> Result<(), StoreError> {
        let seq = self.seq + 1;
        let end = matches!(effect, RunEffect::Ended { .. });
        let log = serde_json::to_string(lines).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        // Subscribers get the whole event; a step stored without its state is published
        // without it only when nobody was listening (see `LiveEvent::full`).
        let (text, full) = match texts.live {
            Some(live) => (live, true),
            None => (texts.stored.clone(), kind != "step" || texts.snapshot),
        };
        self.held.push(Held {
            record: EventRecord {
                run_id: self.run_id.clone(),
                owner: self.owner.clone(),
                seq,
                kind,
                node: node.map(str::to_owned),
                log,
                event: texts.stored,
                snapshot: texts.snapshot,
                effect,
            },
            live: LiveEvent { seq, end, full, text },
        });
        self.seq = seq;
        Ok(())
    }

    async fn finish(mut self, end: RunEnd) -> Finished {
        let RunEnd {
            mut status,
            state,
            steps,
            error,
        } = end;
        // No cancel is accepted past this point, and every one accepted before it (its
        // request answered 202) ends the run `cancelled`, whatever its last step did.
        if self.publisher.close() {
            status = RunStatus::Cancelled;
        }
        let error = error.map(|err| err.to_string());
        let lines: Vec<String> = error.iter().map(|error| format!("[FAILED] {error}")).collect();
        let event: RunEvent<&State> = RunEvent::End(EndEvent {
            run_id: self.run_id.to_string(),
            seq: self.seq + 1,
            steps,
            status,
            state: &state,
            error: error.clone(),
        });
        match Transition::new(self.status, status) {
            Ok(transition) => {
                let effect = RunEffect::Ended {
                    transition,
                    final_state: state_text(&state),
                    steps,
                    error: error.clone(),
                };
                match self.hold(&event, &lines, effect) {
                    Ok(()) => self.write_held_until_stored().await,
                    Err(err) => {
                        tracing::error!(run_id = %self.run_id, error = %err, "could not record the end of a run")
                    }
                }
            }
            Err(err) => tracing::error!(run_id = %self.run_id, error = %err, "refused to end a run"),
        }
        Finished { status, state, error }
    }

    /// Writes the held events (a run's ending, with its last step), retrying with backoff
    /// while the store fails: an ending is never dropped for a passing store error. Gives
    /// up only when the run is no longer this instance's (another owns it now).
    async fn write_held_until_stored(&mut self) {
        let mut delay = STORE_RETRY_FIRST;
        loop {
            let records: Vec<EventRecord> = self.held.iter().map(|held| held.record.clone()).collect();
            match self.write(records).await {
                Ok(()) => break,
                Err(err @ StoreError::NotOwned { .. }) => {
                    tracing::warn!(run_id = %self.run_id, error = %err, "the run is no longer ours: its ending is not written");
                    self.held.clear();
                    return;
                }
                Err(err) => {
                    tracing::error!(run_id = %self.run_id, error = %err, retry_in_ms = delay.as_millis() as u64,
                        "could not record the end of a run; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(STORE_RETRY_MAX);
                }
            }
        }
        for held in std::mem::take(&mut self.held) {
            self.publisher.publish(held.live);
        }
    }

    /// The run stops here for the server's shutdown, its last step committed: it is
    /// handed back (`queued`) and the next start resumes it.
    fn suspend(self) -> Finished {
        tracing::info!(run_id = %self.run_id, "run suspended for shutdown");
        Finished {
            status: RunStatus::Queued,
            state: State::new(),
            error: None,
        }
    }

    /// The run cannot go on here: it is ended `failed` with `why`, durably.
    async fn abandon(self, why: &str) -> Finished {
        // Nothing held is written: the store's last checkpoint is what the run reached.
        self.publisher.close();
        let status = fail_durably(self.store.as_ref(), &self.owner, &self.run_id, why).await;
        Finished {
            status,
            state: State::new(),
            error: Some(why.to_owned()),
        }
    }
}

fn sink_error(err: StoreError) -> SinkError {
    SinkError(err.to_string())
}

impl StepSink for RunSink {
    async fn node_started(&mut self, start: NodeStart<'_>) -> Result<(), SinkError> {
        let event: RunEvent = RunEvent::NodeStarted(NodeStartedEvent {
            run_id: self.run_id.to_string(),
            seq: self.seq + 1,
            step: start.step,
            node: start.node.to_owned(),
            attempt: start.attempt,
        });
        // The prototype's one "[RUNNING]" line per executed node: on its first attempt.
        let lines = if start.attempt == 1 && self.announced != Some(start.step) {
            vec![format!("[RUNNING] {}", start.node)]
        } else {
            Vec::new()
        };
        self.emit(&event, &lines, RunEffect::None).await.map_err(sink_error)
    }

    async fn node_failed(&mut self, failure: NodeFailure<'_>) -> Result<(), SinkError> {
        let retry_in_ms = failure
            .retry_in
            .map(|delay| u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        let event: RunEvent = RunEvent::NodeFailed(NodeFailedEvent {
            run_id: self.run_id.to_string(),
            seq: self.seq + 1,
            step: failure.step,
            node: failure.node.to_owned(),
            attempt: failure.attempt,
            error: failure.error.to_string(),
            retry_in_ms,
        });
        // The last failure is told by the run's end; retried ones get a line of their own.
        let lines: Vec<String> = retry_in_ms
            .map(|ms| {
                format!(
                    "{}: attempt {} failed: {}; retrying in {ms} ms",
                    failure.node, failure.attempt, failure.error
                )
            })
            .into_iter()
            .collect();
        self.emit(&event, &lines, RunEffect::None).await.map_err(sink_error)
    }

    fn cancel_token(&self) -> Option<CancellationToken> {
        Some(self.publisher.cancel_token())
    }

    async fn step(&mut self, step: StepView<'_>) -> Result<Control, SinkError> {
        let lines: Vec<String> = step.notes.iter().map(|note| format!("{}: {note}", step.node)).collect();
        let update = raw(&Pick {
            state: step.state,
            keys: step.changed,
        })?;
        // The store keeps the update; the whole state only once the updates since the last
        // snapshot add up to that snapshot's size, so storage stays proportional to the
        // updates and rebuilding a state folds at most about one state's worth of them.
        let snapshot = self.unsnapshotted + update.get().len() >= self.snapshot_bytes;
        let listening = self.publisher.listening();
        let state = if snapshot || listening {
            Some(raw(step.state)?)
        } else {
            None
        };
        if snapshot {
            self.snapshot_bytes = state.as_ref().map_or(0, |state| state.get().len());
            self.unsnapshotted = 0;
        } else {
            self.unsnapshotted += update.get().len();
        }
        let mut event: RunEvent<Option<&RawValue>> = RunEvent::Step(StepEvent {
            run_id: self.run_id.to_string(),
            seq: self.seq + 1,
            step: step.step,
            node: step.node.to_owned(),
            state: None,
            update: Some(&update),
            attempt: step.attempt,
            log: format!("[RUNNING] {}", step.node),
            notes: step.notes.to_vec(),
            changed: step.changed.to_vec(),
            status: step.status,
            duration_us: u64::try_from(step.duration.as_micros()).unwrap_or(u64::MAX),
            error: step.error.map(str::to_owned),
        });
        let text = |event: &RunEvent<Option<&RawValue>>| {
            serde_json::to_string(event).map_err(|err| SinkError(err.to_string()))
        };
        // Without its state, as stored between snapshots.
        let lite = if snapshot { None } else { Some(text(&event)?) };
        // With it, as stored in a snapshot and as subscribers get it.
        let whole = match (&mut event, state.as_deref()) {
            (RunEvent::Step(step_event), Some(state)) => {
                step_event.state = Some(state);
                Some(text(&event)?)
            }
            _ => None,
        };
        let texts = match lite {
            None => Texts {
                stored: whole.unwrap_or_default(),
                live: None,
                snapshot: true,
            },
            Some(lite) => Texts {
                stored: lite,
                live: whole,
                snapshot: false,
            },
        };
        let effect = RunEffect::Checkpoint {
            step_count: step.step,
            next_node: step.next.map(str::to_owned),
        };
        self.hold_texts(("step", Some(step.node)), &lines, effect, texts)
            .map_err(sink_error)?;
        let cancel = self.publisher.cancel_requested();
        if step.next.is_some() && !cancel && self.shutdown.is_cancelled() {
            // Shutting down: this step is committed, and the run stops here.
            self.flush().await.map_err(sink_error)?;
            return Err(SinkError("the server is shutting down".into()));
        }
        // A run that ends after this step writes it with its ending, in one commit.
        if step.next.is_some() && !cancel {
            self.flush().await.map_err(sink_error)?;
        }
        Ok(if cancel { Control::Cancel } else { Control::Continue })
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
}

impl Runner {
    /// The run's current state and log.
    pub async fn snapshot(&self, id: &RunId) -> Result<Snapshot, RunnerError> {
        let run = self
            .store
            .run(id)
            .await?
            .ok_or_else(|| RunnerError::RunNotFound(id.clone()))?;
        let state = current_state(self.store.as_ref(), &run).await?;
        let log = self.store.run_log(id).await?;
        Ok(Snapshot { run, state, log })
    }
}

/// Ends a run `failed` with `reason`, durably, from what the store holds (its last
/// checkpoint), when its task cannot go on: the tool panicked, the store failed mid-run,
/// or it could not be resumed. Retries with backoff until the store answers. Answers how
/// the run stands: `failed`, or as it was if it had ended already or is another
/// instance's now.
async fn fail_durably(store: &dyn Store, owner: &OwnerId, run_id: &RunId, reason: &str) -> RunStatus {
    let mut delay = STORE_RETRY_FIRST;
    loop {
        match try_fail(store, owner, run_id, reason).await {
            Ok(status) => return status,
            Err(StoreError::NotOwned { .. }) => {
                tracing::warn!(%run_id, "the run is another instance's now: not failing it here");
                return RunStatus::Queued;
            }
            Err(err) => {
                tracing::error!(%run_id, error = %err, retry_in_ms = delay.as_millis() as u64,
                    "could not record a run's failure; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(STORE_RETRY_MAX);
            }
        }
    }
}

async fn try_fail(store: &dyn Store, owner: &OwnerId, run_id: &RunId, reason: &str) -> Result<RunStatus, StoreError> {
    let Some(run) = store.run(run_id).await? else {
        return Err(StoreError::Corrupt(format!("run {run_id} vanished")));
    };
    if run.status.is_terminal() {
        return Ok(run.status);
    }
    let transition =
        Transition::new(run.status, RunStatus::Failed).map_err(|err| StoreError::Corrupt(err.to_string()))?;
    let state = current_state(store, &run).await?;
    let error = Some(reason.to_owned());
    let event = RunEvent::End(EndEvent {
        run_id: run.id.to_string(),
        seq: run.last_seq + 1,
        steps: run.step_count,
        status: RunStatus::Failed,
        state: &*state,
        error: error.clone(),
    });
    let corrupt = |err: serde_json::Error| StoreError::Corrupt(err.to_string());
    store
        .append_event(EventRecord {
            run_id: run.id.clone(),
            owner: owner.clone(),
            seq: run.last_seq + 1,
            kind: "end",
            node: None,
            log: serde_json::to_string(&[format!("[FAILED] {reason}")]).map_err(corrupt)?,
            event: serde_json::to_string(&event).map_err(corrupt)?,
            snapshot: false,
            effect: RunEffect::Ended {
                transition,
                final_state: state.get().to_owned(),
                steps: run.step_count,
                error,
            },
        })
        .await?;
    Ok(RunStatus::Failed)
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
                ended |= event.kind == "end";
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
