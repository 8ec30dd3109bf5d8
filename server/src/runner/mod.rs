//! Runs, end to end, split by job:
//!
//! - here: admission and the lifecycle: starting runs (or refusing them: a full queue,
//!   a shutdown), their tasks, leases, claiming and resuming, cancel and shutdown;
//! - `catalog`: storing graphs, and the parsed graphs kept in memory;
//! - `interrupts`: runs that wait for a person's answer;
//! - `sink`: recording a run, each event committed before it is published, and
//!   ending it, durably, however it ends;
//! - `views` and [`replay`](Replay): the read models, runs and their
//!   events as clients see them, each step's state rebuilt from the store;
//! - [`hub`]: the live channel of each run in flight here;
//! - [`watch`]: waiting on a run that is not in flight here.
//!
//! A run admitted while a slot is free is stored already `running`, owned by this
//! instance, and starts at once. One admitted while every slot is busy is stored
//! `queued` with no owner: whichever instance has a free slot first claims it (this one
//! when one of its runs ends, another when told by the store's notices), so a queue
//! never waits on a busy instance while another is idle.

mod catalog;
mod fork;
pub mod hub;
mod interrupts;
mod replay;
mod sink;
mod stats;
#[cfg(test)]
mod tests;
mod views;
pub mod watch;

use self::sink::{fail_durably, RunSink};
pub use self::{
    fork::Fork,
    replay::{EventPages, Replay},
    sink::token_message,
    views::{current_state, end_event, Snapshot},
    watch::{RunWatch, Wake},
};

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock, RwLock,
    },
};

use tokio::sync::{broadcast::error::RecvError, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use futures::FutureExt;
use weft_app::wire::{EventKind, PresetInfo, RunEvent, RunQueuedEvent, RunStartedEvent, RunStatus, State};

use self::hub::Hub;
use crate::{
    auth::{Access, Principal},
    engine::{
        execute,
        graph::{parse_max_steps, MAX_STEPS_CEILING},
        Bounds, Checkpoint, CpuPool, Graph, GraphError, NodeId, NodeStart, Registry, RunEnd,
    },
    ids::{GraphId, OwnerId, RunId},
    store::{now_millis, Deleted, ForkedFrom, Millis, NewRun, Notice, RunEffect, Store, StoreError, StoredRun},
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
    /// The preset needs something this server does not have (an LLM provider): why,
    /// and what to set.
    #[error("{0}")]
    PresetUnavailable(String),
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
    /// The run has not ended: it cannot be deleted yet.
    #[error("run `{0}` has not ended; cancel it first")]
    RunLive(RunId),
    /// A run of the graph has not ended: the graph cannot be deleted yet.
    #[error("graph `{0}` has runs that have not ended; cancel them first")]
    GraphHasLiveRuns(GraphId),
    /// A fork cannot start as asked (422).
    #[error("{0}")]
    InvalidFork(String),
    /// The run asked no question with this id.
    #[error("run `{run}` has no question `{interrupt}`")]
    InterruptNotFound {
        /// The run.
        run: RunId,
        /// The question's id.
        interrupt: String,
    },
    /// The question was answered already, or timed out, or the run stopped waiting.
    #[error("question `{0}` is not pending: it was answered, timed out, or its run stopped waiting")]
    InterruptResolved(String),
    /// The answer does not match the question's schema (422, with each problem).
    #[error("the input does not match the question's schema")]
    InvalidAnswer(Vec<weft_app::wire::Problem>),
    /// An initial state does not match its preset's input schema (422, with each
    /// problem at its pointer under `/initial_state`).
    #[error("the initial state does not match the preset's input schema")]
    InvalidInitialState(Vec<weft_app::wire::Problem>),
    /// The server is shutting down and takes no new runs.
    #[error("the server is shutting down; try again in a moment")]
    ShuttingDown,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The most runs one purge deletes in one transaction.
const PURGE_BATCH: u32 = 1_000;

/// How many runs execute at once, and how many may wait for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Runs executing at once; more wait, `queued`.
    pub max_running: usize,
    /// Runs waiting in the store's queue at most (for any instance, when several share
    /// it); past it, new runs are refused rather than piling up.
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
    /// The final state, as JSON text: serialized once, for its `end` event, and answered
    /// as it is.
    pub state: Box<serde_json::value::RawValue>,
    /// Why it failed.
    pub error: Option<String>,
    /// Its log, when it was short enough to keep in memory; else read it from the store.
    pub log: Option<Vec<String>>,
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
    /// Who starts it: the graph must be theirs to see, and the run is theirs.
    pub by: Principal,
    /// The node to start at (a fork's next node); `None`: the graph's start.
    pub start_at: Option<NodeId>,
    /// Where its branches start, in a parallel graph, when not at `start_at` alone (a fork
    /// after a fan-out); its first ready branch runs `start_at`.
    pub frontier: Option<crate::engine::parallel::Frontier>,
    /// The run and step it is forked from, if it is.
    pub forked_from: Option<ForkedFrom>,
}

/// A started run.
pub struct Started {
    /// Its id, readable in the store already.
    pub run_id: RunId,
    /// Resolves when the run ends, when it executes here; `None` when it was queued for
    /// any instance to claim ([`Runner::finished`] waits on either).
    pub finished: Option<tokio::task::JoinHandle<Finished>>,
}

/// When to look for queued runs to claim: a run was queued, or a slot freed up while one
/// might be waiting.
#[derive(Clone, Default)]
struct Claims {
    /// Wakes [`Runner::watch_notices`] to claim.
    wake: Arc<Notify>,
    /// Whether a run may be waiting to be claimed; cleared when a claim finds none.
    maybe_waiting: Arc<AtomicBool>,
}

impl Claims {
    /// Runs may be waiting: the next slot freed looks for them.
    fn may_wait(&self) {
        self.maybe_waiting.store(true, Ordering::SeqCst);
    }

    /// A run was queued (here, or as another instance told): claim it if there is room.
    fn queued(&self) {
        self.may_wait();
        self.wake.notify_one();
    }

    /// A slot freed up: claim into it, if a run may be waiting.
    fn slot_freed(&self) {
        if self.maybe_waiting.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }
}

/// A run's slot, held while it executes: giving it back wakes the claims.
struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    claims: Claims,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Freed before the claims look for it.
        drop(self.permit.take());
        self.claims.slot_freed();
    }
}

/// Starts and tracks runs. Cheap to clone.
#[derive(Clone)]
pub struct Runner {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    hub: Hub,
    graphs: Arc<RwLock<HashMap<GraphId, catalog::Cataloged>>>,
    limits: RunLimits,
    /// One permit per run allowed to execute.
    slots: Arc<Semaphore>,
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
    /// When to claim queued runs.
    claims: Claims,
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
            presets: Arc::default(),
            limits,
            claims: Claims::default(),
        }
    }

    /// Asks a run to stop: a queued run ends at once, a running one at its next safe
    /// point (after the node it is executing). Both end `cancelled`.
    pub async fn cancel(&self, id: &RunId, access: &Access) -> Result<(), RunnerError> {
        let run = self.visible_run(id, access).await?;
        if run.status.is_terminal() {
            return Err(RunnerError::AlreadyEnded(id.clone()));
        }
        if self.hub.cancel(id) {
            return Ok(());
        }
        // Executing elsewhere (or waiting for an instance to claim it): asked through the
        // store, it can only end `cancelled`, and its instance stops it when told.
        if !self.store.request_cancel(id).await? {
            // It ended between the two reads.
            return Err(RunnerError::AlreadyEnded(id.clone()));
        }
        // No instance holds it (queued, or its instance died): claimed here, it ends now.
        let claimed = self
            .store
            .claim_run(id, &self.owner, now_millis(), self.leases.until_from_now())
            .await?;
        if let Some(run) = claimed {
            if let Err(err) = self.resume(run).await {
                let reason = format!("the run could not be resumed: {err}");
                fail_durably(self.store.as_ref(), &self.owner, id, &reason).await;
            }
        }
        Ok(())
    }

    /// The stored run `id`, if `access` sees it: others' runs are not found.
    pub async fn visible_run(&self, id: &RunId, access: &Access) -> Result<StoredRun, RunnerError> {
        self.store
            .run(id)
            .await?
            .filter(|run| access.sees(run.created_by.as_deref()))
            .ok_or_else(|| RunnerError::RunNotFound(id.clone()))
    }

    /// Deletes an ended run `access` sees, with its events.
    pub async fn delete_run(&self, id: &RunId, access: &Access) -> Result<(), RunnerError> {
        self.visible_run(id, access).await?;
        match self.store.delete_run(id).await? {
            Deleted::Done => Ok(()),
            Deleted::NotFound => Err(RunnerError::RunNotFound(id.clone())),
            Deleted::Live => Err(RunnerError::RunLive(id.clone())),
        }
    }

    /// Deletes, every hour from now on, the runs that ended more than `keep` ago. Runs
    /// until the task is dropped.
    pub async fn purge_old_runs(self, keep: std::time::Duration) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3_600));
        loop {
            tick.tick().await;
            let before = now_millis().saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
            let mut purged = 0;
            // In batches, so no transaction holds the database long.
            loop {
                match self.store.purge_ended(before, PURGE_BATCH).await {
                    Ok(n) => {
                        purged += n;
                        if n < u64::from(PURGE_BATCH) {
                            break;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "could not purge old runs; trying again in an hour");
                        break;
                    }
                }
            }
            if purged > 0 {
                tracing::info!(purged, "purged runs past the retention period");
            }
        }
    }

    /// Acts on what happens elsewhere, as it happens: stops the runs executing here that
    /// were asked to stop through another instance, and claims queued runs into free
    /// slots, when a run is queued (here or, as the store tells, anywhere) or a slot frees
    /// up. Runs until the task is dropped; the lease ticks find any notice missed.
    pub async fn watch_notices(self) {
        let mut notices = self.store.notices();
        loop {
            let claim = match notices.as_mut() {
                Some(receiver) => tokio::select! {
                    () = self.claims.wake.notified() => true,
                    notice = receiver.recv() => match notice {
                        Ok(Notice::Cancel(run_id)) => {
                            self.hub.cancel(&run_id);
                            false
                        }
                        Ok(Notice::Queued) => {
                            self.claims.may_wait();
                            true
                        }
                        Ok(Notice::Events { .. }) => false,
                        // Missed notices: a cancel among them is found at the lease tick.
                        Err(RecvError::Lagged(_)) => {
                            self.claims.may_wait();
                            true
                        }
                        Err(RecvError::Closed) => {
                            notices = None;
                            false
                        }
                    },
                },
                None => {
                    self.claims.wake.notified().await;
                    true
                }
            };
            if claim && self.slots.available_permits() > 0 && self.claims.maybe_waiting.swap(false, Ordering::SeqCst) {
                // A claim that fills every free slot leaves word itself that more may wait.
                if let Err(err) = self.resume_unfinished().await {
                    tracing::warn!(error = %err, "could not claim queued runs; trying again at the lease tick");
                    self.claims.may_wait();
                }
            }
        }
    }

    /// A watch on `run_id`, for waiting on it when it is not in flight here. Make it
    /// before reading the store (see [`watch`]).
    pub fn watch(&self, run_id: &RunId, wake: Wake) -> RunWatch {
        RunWatch::new(run_id.clone(), wake, self.hub.departures(), self.store.notices())
    }

    /// How a started run ended, wherever it executed.
    pub async fn finished(&self, started: Started) -> Result<Finished, RunnerError> {
        match started.finished {
            Some(task) => task
                .await
                .map_err(|err| StoreError::Corrupt(format!("run {} task lost: {err}", started.run_id)).into()),
            None => self.wait_for_end(&started.run_id).await,
        }
    }

    /// Waits for a run to end (or to wait for an answer), on whichever instance executes
    /// it, and answers how it stands (its log is left in the store). At shutdown, answers at once with its status
    /// then, not ended.
    pub async fn wait_for_end(&self, run_id: &RunId) -> Result<Finished, RunnerError> {
        let mut watch = self.watch(run_id, Wake::OnEnd);
        loop {
            let run = self
                .store
                .run(run_id)
                .await?
                .ok_or_else(|| RunnerError::RunNotFound(run_id.clone()))?;
            // A run waiting for an answer stands still until someone gives it.
            if run.status.is_terminal() || run.status == RunStatus::Waiting || self.shutdown.is_cancelled() {
                let state = match run.status {
                    RunStatus::Waiting => current_state(self.store.as_ref(), &run).await?,
                    _ => serde_json::value::RawValue::from_string(run.final_state.unwrap_or_else(|| "{}".to_owned()))
                        .map_err(|err| StoreError::Corrupt(format!("run {run_id} final state: {err}")))?,
                };
                return Ok(Finished {
                    status: run.status,
                    state,
                    error: run.error,
                    log: None,
                });
            }
            tokio::select! {
                () = watch.changed() => {}
                () = self.shutdown.cancelled() => {}
            }
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
            match self.store.cancels_for(&self.owner).await {
                Ok(asked) => {
                    for run_id in asked {
                        self.hub.cancel(&run_id);
                    }
                }
                Err(err) => tracing::warn!(error = %err, "could not read cancel requests; trying again"),
            }
            match self.expire_questions().await {
                Ok(0) => {}
                Ok(queued) => tracing::info!(queued, "questions timed out; their runs go on"),
                Err(err) => tracing::warn!(error = %err, "could not time out questions; trying again"),
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

    /// Stores a new run and starts it in the background.
    pub async fn start_run(&self, request: StartRun) -> Result<Started, RunnerError> {
        if self.shutdown.is_cancelled() {
            return Err(RunnerError::ShuttingDown);
        }
        let graph = self.visible_graph(&request.graph_id, &request.by.access()).await?;
        let max_steps = match request.max_steps {
            None => graph.max_steps(),
            Some(n) => parse_max_steps(&n.into()).map_err(|_| RunnerError::InvalidMaxSteps)?,
        };
        // A free slot is taken here, so a run stored `running` never waits for one.
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            return self.enqueue(request, &graph, max_steps).await;
        };
        let run_id = RunId::generate();
        let first = request.start_at.unwrap_or(graph.start());
        let start = graph.node(first).name.clone();
        let initial_state = state_text(&request.initial_state);
        let mut sink = self.sink(run_id.clone(), RunStatus::Queued, 1, None, initial_state.len());
        let branch = match &request.frontier {
            Some(frontier) => frontier.ready.front().map(|at| at.branch.clone()),
            None => graph.is_parallel().then(|| "0".to_owned()),
        };
        // Stored with its start and its first node's, in one commit with the run.
        let then = sink.open(
            &started_event(&run_id, 2, false),
            NodeStart {
                step: 1,
                node: &start,
                attempt: 1,
                branch: branch.as_deref(),
            },
        )?;
        let new_run = NewRun {
            id: run_id.clone(),
            owner: Some(self.owner.clone()),
            lease_until: Some(self.leases.until_from_now()),
            event: queued_event(&run_id, &request.graph_id)?,
            then,
            graph_id: request.graph_id.clone(),
            status: sink.status,
            initial_state,
            next_node: start,
            frontier: frontier_text(request.frontier.as_ref())?,
            max_steps,
            created_at: now_millis(),
            created_by: request.by.created_by(),
            forked_from: request.forked_from.clone(),
        };
        // All or nothing: storing the run and starting its task happen in a task of their
        // own, which finishes even if the request that asked for them is dropped midway,
        // so a stored run always has a task executing it.
        let runner = self.clone();
        let graph_id = request.graph_id;
        let spawned_graph = graph_id.clone();
        let finished = tokio::spawn(async move {
            runner.store.insert_run(new_run).await?;
            let checkpoint = Checkpoint {
                next: Some(first),
                frontier: request.frontier,
                ..Checkpoint::start(&graph, request.initial_state)
            };
            Ok::<_, StoreError>(runner.spawn(sink, (spawned_graph, graph), checkpoint, max_steps, Some(slot)))
        })
        .await
        .map_err(|err| StoreError::Corrupt(format!("the run could not be started: {err}")))?;
        let finished = match finished {
            Ok(finished) => finished,
            Err(err) => return Err(self.insert_failed(&graph_id, err).await),
        };
        crate::meters::run_started(&self.metric_label(&graph_id));
        Ok(Started {
            run_id,
            finished: Some(finished),
        })
    }

    /// Stores a run `queued`, with no owner, for the first instance with a free slot to
    /// claim; refused when `max_queued` runs wait already.
    async fn enqueue(&self, request: StartRun, graph: &Graph, max_steps: u32) -> Result<Started, RunnerError> {
        let waiting = usize::try_from(self.store.waiting_runs().await?).unwrap_or(usize::MAX);
        if waiting >= self.limits.max_queued {
            return Err(RunnerError::QueueFull {
                running: self.limits.max_running,
                queued: waiting,
            });
        }
        let run_id = RunId::generate();
        // One write: stored whole, or not at all.
        let graph_id = request.graph_id.clone();
        let inserted = self
            .store
            .insert_run(NewRun {
                id: run_id.clone(),
                owner: None,
                lease_until: None,
                event: queued_event(&run_id, &request.graph_id)?,
                then: Vec::new(),
                graph_id: request.graph_id,
                status: RunStatus::Queued,
                initial_state: state_text(&request.initial_state),
                next_node: graph.node(request.start_at.unwrap_or(graph.start())).name.clone(),
                frontier: frontier_text(request.frontier.as_ref())?,
                max_steps,
                created_at: now_millis(),
                created_by: request.by.created_by(),
                forked_from: request.forked_from,
            })
            .await;
        if let Err(err) = inserted {
            return Err(self.insert_failed(&graph_id, err).await);
        }
        crate::meters::run_started(&self.metric_label(&graph_id));
        // A slot may have freed up meanwhile.
        self.claims.queued();
        Ok(Started { run_id, finished: None })
    }

    /// Why a run of `graph_id` could not be stored: its graph was deleted (through another
    /// instance, while this one still had it parsed), or `err`.
    async fn insert_failed(&self, graph_id: &GraphId, err: StoreError) -> RunnerError {
        if let Ok(None) = self.store.graph(graph_id).await {
            self.forget_graph(graph_id);
            return RunnerError::GraphNotFound(graph_id.clone());
        }
        err.into()
    }

    /// Claims the runs whose lease has expired (a stop or a crash interrupted them), as
    /// many as there are free slots here (a busy instance leaves them to the others), and
    /// starts each again from its last checkpoint. Answers how many were resumed.
    pub async fn resume_unfinished(&self) -> Result<usize, RunnerError> {
        if self.shutdown.is_cancelled() {
            return Ok(0);
        }
        let free = u32::try_from(self.slots.available_permits()).unwrap_or(u32::MAX);
        if free == 0 {
            // Runs may wait: the next slot freed looks.
            self.claims.may_wait();
            return Ok(0);
        }
        let runs = self
            .store
            .claim_expired(&self.owner, now_millis(), self.leases.until_from_now(), free)
            .await?;
        let count = runs.len();
        if u32::try_from(count).unwrap_or(u32::MAX) >= free {
            // Every free slot filled: more may wait, for the next slot freed (not only for
            // the next lease tick, or a notice).
            self.claims.may_wait();
        }
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
            .is_some_and(|event| matches!(event.kind, EventKind::NodeStarted | EventKind::NodeFailed))
            .then_some(run.step_count + 1);
        let frontier = match (&run.frontier, graph.is_parallel()) {
            (Some(text), true) => {
                let mut frontier: crate::engine::parallel::Frontier = serde_json::from_str(text)
                    .map_err(|err| StoreError::Corrupt(format!("run {} frontier: {err}", run.id)))?;
                if let Some(missing) = frontier.nodes().find(|node| graph.find(node).is_none()) {
                    let why = format!("run {} frontier names missing node `{missing}`", run.id);
                    return Err(StoreError::Corrupt(why).into());
                }
                map_outputs(self.store.as_ref(), &run.id, &mut frontier).await?;
                Some(frontier)
            }
            _ => None,
        };
        let checkpoint = Checkpoint {
            state,
            next,
            steps: run.step_count,
            answers: self.answers_for(&run).await?,
            frontier,
        };
        // A claimed run was handed back to `queued`; its first step is a snapshot, and its
        // earlier log lines are in the store only.
        let run_id = run.id.clone();
        let mut sink = self.sink(run.id, RunStatus::Queued, run.last_seq, announced, 0);
        if run.last_seq > 1 {
            // Its earlier log lines are in the store only.
            sink.log = None;
        }
        if run.cancel_requested {
            // Asked to stop while no instance held it: it ends `cancelled` without waiting
            // for a slot or running a node.
            self.hub.cancel(&run_id);
        }
        drop(self.spawn(sink, (run.graph_id, graph), checkpoint, run.max_steps, None));
        Ok(())
    }

    /// The sink that records a run, registered as live here.
    fn sink(
        &self,
        run_id: RunId,
        status: RunStatus,
        last_seq: u64,
        announced: Option<u64>,
        stored_state_bytes: usize,
    ) -> RunSink {
        RunSink {
            publisher: self.hub.register(&run_id),
            run_id,
            owner: self.owner.clone(),
            status,
            store: Arc::clone(&self.store),
            seq: last_seq,
            announced,
            opened: false,
            held: Vec::new(),
            shutdown: self.shutdown.clone(),
            snapshot_bytes: stored_state_bytes,
            unsnapshotted: 0,
            span: tracing::Span::none(),
            log: Some(Vec::new()),
            log_bytes: 0,
        }
    }

    /// Executes a run recorded by `sink` in the background: at once in `slot`, or once a
    /// slot is free.
    fn spawn(
        &self,
        mut sink: RunSink,
        (graph_id, graph): (GraphId, Arc<Graph>),
        checkpoint: Checkpoint,
        max_steps: u32,
        slot: Option<OwnedSemaphorePermit>,
    ) -> tokio::task::JoinHandle<Finished> {
        let slots = Arc::clone(&self.slots);
        let claims = self.claims.clone();
        let shutdown = self.shutdown.clone();
        let bounds = Bounds {
            max_steps,
            max_state_bytes: self.limits.max_state_bytes,
        };
        let label = self.metric_label(&graph_id);
        // Every node's span is a child of the run's, which carries its id.
        sink.span = tracing::info_span!("run", run_id = %sink.run_id, graph_id = %graph_id);
        let run = async move {
            let run_id = sink.run_id.clone();
            let permit = match slot {
                Some(slot) => Some(slot),
                None => {
                    // Wait for a slot, unless the run is cancelled (or the server stops) meanwhile.
                    let slot = tokio::select! {
                        biased;
                        () = sink.publisher.cancelled() => Ok(None),
                        () = shutdown.cancelled() => Err(()),
                        slot = slots.acquire_owned() => Ok(slot.ok()),
                    };
                    let Ok(slot) = slot else {
                        return sink.suspend();
                    };
                    let Some(slot) = slot else {
                        let end = RunEnd {
                            status: RunStatus::Cancelled,
                            state: checkpoint.state,
                            steps: checkpoint.steps,
                            error: None,
                        };
                        return sink.finish(end).await;
                    };
                    // Written with the first node's start, in one commit.
                    let resumed = sink.seq > 1;
                    if let Err(err) = sink.hold(&started_event(&run_id, sink.seq + 1, resumed), &[], RunEffect::Started)
                    {
                        tracing::error!(%run_id, error = %err, "run stopped: its start cannot be recorded");
                        return sink.abandon("the run's start could not be recorded").await;
                    }
                    sink.status = RunStatus::Running;
                    Some(slot)
                }
            };
            let _slot = Slot { permit, claims };
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
        };
        self.tasks.spawn(async move {
            let finished = run.await;
            if finished.status.is_terminal() {
                crate::meters::run_ended(&label, finished.status);
            }
            finished
        })
    }
}

/// Reads back the updates of the map elements done before a restart, each from its own
/// step event (the checkpoint keeps only which are done).
async fn map_outputs(
    store: &dyn Store,
    run_id: &RunId,
    frontier: &mut crate::engine::parallel::Frontier,
) -> Result<(), StoreError> {
    #[derive(serde::Deserialize)]
    struct ItemStep {
        node: String,
        step: u64,
        branch: Option<String>,
        output: Option<State>,
    }
    if frontier.maps.is_empty() {
        return Ok(());
    }
    let mut pages = EventPages::after(store, run_id, 0);
    while let Some(page) = pages.next().await? {
        for event in page.iter().filter(|event| event.kind == EventKind::Step) {
            let step: ItemStep = serde_json::from_str(&event.event)
                .map_err(|err| StoreError::Corrupt(format!("run {run_id} step: {err}")))?;
            let (Some(branch), Some(output)) = (step.branch, step.output) else {
                continue;
            };
            for map in &mut frontier.maps {
                let index = map.index_of(&branch).filter(|&index| map.is_done(index));
                if let (true, Some(index)) = (map.node == step.node && step.step >= map.first_step, index) {
                    map.outputs.insert(index, output.clone());
                }
            }
        }
    }
    for map in &frontier.maps {
        let done: usize = map.done.iter().map(|[start, end]| end - start).sum();
        if map.outputs.len() != done {
            return Err(StoreError::Corrupt(format!(
                "run {run_id}: {} of the {done} elements done by map {} are recorded",
                map.outputs.len(),
                map.id
            )));
        }
    }
    Ok(())
}

/// Where a new run's branches start, as stored.
fn frontier_text(frontier: Option<&crate::engine::parallel::Frontier>) -> Result<Option<String>, StoreError> {
    frontier
        .map(serde_json::to_string)
        .transpose()
        .map_err(|err| StoreError::Corrupt(err.to_string()))
}

/// A run's `run_queued` event (its first), as stored.
fn queued_event(run_id: &RunId, graph_id: &GraphId) -> Result<String, StoreError> {
    let event: RunEvent = RunEvent::RunQueued(RunQueuedEvent {
        run_id: run_id.to_string(),
        seq: 1,
        graph_id: graph_id.to_string(),
    });
    serde_json::to_string(&event).map_err(|err| StoreError::Corrupt(err.to_string()))
}

/// A run's `run_started` event, numbered `seq`.
fn started_event(run_id: &RunId, seq: u64, resumed: bool) -> RunEvent {
    RunEvent::RunStarted(RunStartedEvent {
        run_id: run_id.to_string(),
        seq,
        resumed,
    })
}

/// A state as JSON text, serialized in place (no copy of the state is made).
fn state_text(state: &State) -> String {
    // Cannot fail: the keys are strings and a `Value` holds no non-finite number.
    serde_json::to_string(state).unwrap_or_else(|_| "{}".to_owned())
}
