//! Persistence: graphs, runs with their checkpoints, and every executed step.
//!
//! [`Store`] is what the rest of the server sees; [`sqlite::SqliteStore`] is the embedded
//! default, and [`postgres::PgStore`] the one many instances share. One conformance suite
//! (`conformance`, in the tests) holds both to the same behaviour. A step is written together with the run's checkpoint (next node, step count)
//! in one transaction, so after a crash a run resumes from exactly its last recorded step.
//!
//! JSON travels through the store as text: the state is serialized once per step by the
//! server and stored as the very event text clients receive.

#[cfg(test)]
mod conformance;
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use weft_app::wire::{EventKind, RunStatus};

use crate::{
    ids::{GraphId, OwnerId, RunId},
    lifecycle::Transition,
};

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed; the details are for the server's log only.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Postgres failed; the details are for the server's log only.
    #[error("database error: {0}")]
    Postgres(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Stored data is not what this version of Weft wrote.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The writer task has stopped (the server is shutting down).
    #[error("the store is closed")]
    Closed,
    /// The run was asked to stop (through another instance): it can only end `cancelled`.
    #[error("run {0} was asked to stop: it ends cancelled")]
    CancelRequested(RunId),
    /// A write was conditional on the run's owner and status, and the run is no longer
    /// this owner's in that status: another instance claimed it, or it moved on.
    #[error("run {run} is not {owner}'s in status {}", .expected.as_str())]
    NotOwned {
        /// The run.
        run: RunId,
        /// The owner the write expected.
        owner: OwnerId,
        /// The status the write expected.
        expected: RunStatus,
    },
}

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A graph as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGraph {
    /// Its id.
    pub id: GraphId,
    /// Its name, when it has one.
    pub name: Option<String>,
    /// Its spec, as JSON text.
    pub spec: String,
    /// When it was created.
    pub created_at: Millis,
    /// The principal that created it; `None` while Weft ran open.
    pub created_by: Option<String>,
}

/// A run about to start.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Its id.
    pub id: RunId,
    /// The instance that will execute it; `None` queues it for whichever instance has a
    /// free slot first to claim (this one included).
    pub owner: Option<OwnerId>,
    /// Until when its owner holds it without renewing.
    pub lease_until: Option<Millis>,
    /// The graph it runs.
    pub graph_id: GraphId,
    /// `Queued` or `Running`.
    pub status: RunStatus,
    /// The initial state, as JSON text.
    pub initial_state: String,
    /// The first node.
    pub next_node: String,
    /// Where its branches start, JSON, when a parallel run starts with several.
    pub frontier: Option<String>,
    /// The `run_queued` event (event 1), JSON text.
    pub event: String,
    /// The events after it written in the same commit: a run admitted straight into a
    /// free slot is stored with its start and its first node's start.
    pub then: Vec<EventRecord>,
    /// Its step limit.
    pub max_steps: u32,
    /// When it was accepted.
    pub created_at: Millis,
    /// The principal that started it; `None` while Weft ran open.
    pub created_by: Option<String>,
    /// The run and step it was forked from, if it was.
    pub forked_from: Option<ForkedFrom>,
}

/// Where a forked run started: its parent run, and the step whose state it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkedFrom {
    /// The parent run.
    pub run: RunId,
    /// The parent's step (0: its initial state).
    pub step: u64,
}

/// What an event does to its run's record, in the same transaction as the event.
///
/// Every effect is conditional on the run being its owner's, and a status change also on
/// the run being in the status the move starts from ([`Transition`]): otherwise the
/// event is refused with [`StoreError::NotOwned`].
#[derive(Debug, Clone)]
pub enum RunEffect {
    /// Nothing beyond counting the event.
    None,
    /// The run is now running: from `queued`, or confirmed for a run admitted straight
    /// into a free slot (stored `running` from the start).
    Started,
    /// A node finished: the checkpoint to resume from.
    Checkpoint {
        /// Steps executed so far.
        step_count: u64,
        /// The node to run next (`None`: the run ends).
        next_node: Option<String>,
        /// Where every branch stands, JSON, in a parallel graph.
        frontier: Option<String>,
        /// What the node's model calls used, added to the run's sums.
        usage: Option<weft_app::wire::Usage>,
    },
    /// The run waits, at `next_node`, for the answer to `interrupt`: from `running` to
    /// `waiting`, with no owner and no lease, and the question stored with it.
    Waiting {
        /// Steps executed so far (the interrupt node's is not among them yet).
        step_count: u64,
        /// The interrupt node, where the run goes on once answered.
        next_node: String,
        /// Where every branch stands, JSON, in a parallel graph.
        frontier: Option<String>,
        /// The questions, one per waiting branch.
        interrupts: Vec<NewInterrupt>,
    },
    /// The run ended. Its final state is the one its `end` event holds: it is stored once.
    Ended {
        /// From `running` (or `queued`) to `completed`, `failed` or `cancelled`.
        transition: Transition,
        /// Steps executed in all.
        steps: u64,
        /// Why it failed.
        error: Option<String>,
    },
}

/// A question a run asks at an `interrupt` node, stored as the run starts to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInterrupt {
    /// Its id.
    pub id: String,
    /// The node asking.
    pub node: String,
    /// The step the node is.
    pub step: u64,
    /// The question as the API shows it, JSON text.
    pub request: String,
    /// When it times out, if it does.
    pub deadline: Option<Millis>,
}

/// A question a run asked, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInterrupt {
    /// Its id.
    pub id: String,
    /// The run asking.
    pub run_id: RunId,
    /// The node asking.
    pub node: String,
    /// The step the node is.
    pub step: u64,
    /// The question as the API shows it, JSON text.
    pub request: String,
    /// When it times out, if it does.
    pub deadline: Option<Millis>,
    /// When it was asked.
    pub created_at: Millis,
    /// When it was answered or timed out; `None` while pending.
    pub resolved_at: Option<Millis>,
    /// The answer, JSON text; `None` while pending, or when it timed out.
    pub answer: Option<String>,
    /// Whether it timed out unanswered.
    pub timed_out: bool,
    /// The principal that answered it, when one did.
    pub resolved_by: Option<String>,
}

/// The answer to a pending question (or its timing out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The run.
    pub run_id: RunId,
    /// The question.
    pub interrupt_id: String,
    /// The answer, JSON text; `None`: it timed out.
    pub answer: Option<String>,
    /// The principal answering.
    pub by: Option<String>,
    /// When.
    pub at: Millis,
}

/// What [`Store::resolve_interrupt`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// Answered; it was the run's last pending question, so the run is `queued` again.
    Queued,
    /// Answered; the run waits on other questions still.
    StillWaiting,
    /// Nothing: the question is not pending (answered already, timed out, or the run
    /// is not waiting any more).
    NotPending,
}

/// One event of a run, to append.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// The run.
    pub run_id: RunId,
    /// The instance writing it, which must own the run.
    pub owner: OwnerId,
    /// The event's number in the run: one more than the last.
    pub seq: u64,
    /// The event's type.
    pub kind: EventKind,
    /// The node it is about, if any.
    pub node: Option<String>,
    /// The event's log lines, as a JSON array.
    pub log: String,
    /// The event as stored, JSON text: as streamed, except that a `step` event that is
    /// no snapshot holds `"state": null` (its state is rebuilt from its `update`).
    pub event: String,
    /// Whether it is a `step` event holding the whole state after it.
    pub snapshot: bool,
    /// What it does to the run's record.
    pub effect: RunEffect,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRun {
    /// Its id.
    pub id: RunId,
    /// The graph it runs.
    pub graph_id: GraphId,
    /// The graph's name, when it has one.
    pub graph_name: Option<String>,
    /// Where it stands.
    pub status: RunStatus,
    /// The initial state, JSON text.
    pub initial_state: String,
    /// The final state once ended, JSON text (its `end` event's `state`).
    pub final_state: Option<String>,
    /// The checkpoint's next node.
    pub next_node: Option<String>,
    /// The checkpoint's branches, JSON, in a parallel graph.
    pub frontier: Option<String>,
    /// Steps executed so far.
    pub step_count: u64,
    /// Events recorded so far (the number of the last one).
    pub last_seq: u64,
    /// Its step limit.
    pub max_steps: u32,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was accepted.
    pub created_at: Millis,
    /// When it ended.
    pub finished_at: Option<Millis>,
    /// Whether it was asked to stop.
    pub cancel_requested: bool,
    /// The principal that started it; `None` while Weft ran open.
    pub created_by: Option<String>,
    /// The run and step it was forked from, if it was.
    pub forked_from: Option<ForkedFrom>,
    /// What its model calls used, summed over its steps; `None` when it made none.
    pub usage: Option<weft_app::wire::Usage>,
}

/// Which runs to list: newest first, `limit` at most, older than `before` when given.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs of this graph.
    pub graph_id: Option<GraphId>,
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// Only runs this principal started.
    pub created_by: Option<String>,
    /// Only runs older than this one (the previous page's last run).
    pub before: Option<RunId>,
    /// Only runs created at or after this time.
    pub created_since: Option<Millis>,
    /// Only runs created before this time.
    pub created_until: Option<Millis>,
    /// The most runs to answer.
    pub limit: u32,
}

/// A recorded event, for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its number in the run.
    pub seq: u64,
    /// Its type.
    pub kind: EventKind,
    /// The event as streamed.
    pub event: String,
}

/// Where graphs and runs live.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Saves a new graph.
    async fn insert_graph(&self, graph: StoredGraph) -> Result<(), StoreError>;
    /// Reads a graph.
    async fn graph(&self, id: &GraphId) -> Result<Option<StoredGraph>, StoreError>;
    /// Saves a new run with its `run_queued` event; it is readable once this returns.
    async fn insert_run(&self, run: NewRun) -> Result<(), StoreError>;
    /// Appends an event and applies its effect to the run, atomically; durable once this
    /// returns.
    async fn append_event(&self, event: EventRecord) -> Result<(), StoreError>;
    /// Appends events in order and applies their effects, all in one transaction: all of
    /// them are durable once this returns, or none is. A run's last step and its ending
    /// are written this way, so no crash can leave the one without the other.
    async fn append_events(&self, events: Vec<EventRecord>) -> Result<(), StoreError>;
    /// Reads a run.
    async fn run(&self, id: &RunId) -> Result<Option<StoredRun>, StoreError>;
    /// Every log line of a run, in order.
    async fn run_log(&self, id: &RunId) -> Result<Vec<String>, StoreError>;
    /// Up to `limit` events of a run after `after_seq`, in order.
    async fn events_after(&self, id: &RunId, after_seq: u64, limit: u32) -> Result<Vec<StoredEvent>, StoreError>;
    /// The latest `step` event holding the whole state (a snapshot) numbered `at_most` or
    /// lower.
    async fn latest_snapshot(&self, id: &RunId, at_most: u64) -> Result<Option<StoredEvent>, StoreError>;
    /// Runs matching `filter`, newest first.
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<StoredRun>, StoreError>;
    /// Claims for `owner`, until `lease_until`, up to `limit` runs not ended whose lease
    /// expired before `now` (or that have no owner), oldest first, each handed back to
    /// `queued`: the runs an instance that stopped or died left behind. Two instances
    /// claiming at once never claim the same run. Answers the claimed runs, oldest first.
    async fn claim_expired(
        &self,
        owner: &OwnerId,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<StoredRun>, StoreError>;
    /// Extends to `lease_until` the lease of every run `owner` holds that has not ended.
    /// Answers how many it holds.
    async fn renew_leases(&self, owner: &OwnerId, lease_until: Millis) -> Result<u64, StoreError>;
    /// Hands back every run `owner` holds that has not ended: `queued`, with an expired
    /// lease, for the next instance to claim at once. Answers how many.
    async fn release_runs(&self, owner: &OwnerId) -> Result<u64, StoreError>;
    /// A page of graphs, newest first, older than `before` when given, only those
    /// `created_by` created when given.
    async fn list_graphs(
        &self,
        before: Option<&GraphId>,
        created_by: Option<&str>,
        limit: u32,
    ) -> Result<Vec<GraphListing>, StoreError>;
    /// Asks a run that has not ended to stop, wherever it executes: from now on it can
    /// only end `cancelled`. Answers whether it had not ended.
    async fn request_cancel(&self, id: &RunId) -> Result<bool, StoreError>;
    /// The runs `owner` holds that were asked to stop.
    async fn cancels_for(&self, owner: &OwnerId) -> Result<Vec<RunId>, StoreError>;
    /// Claims for `owner`, until `lease_until`, the one run `id` if no instance holds it
    /// (it has no owner, or its lease expired before `now`) and it has not ended, handed
    /// back to `queued`. Answers it, or `None` when it is not there to claim.
    async fn claim_run(
        &self,
        id: &RunId,
        owner: &OwnerId,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Option<StoredRun>, StoreError>;
    /// How many runs wait, `queued` with no owner, for an instance to claim them.
    async fn waiting_runs(&self) -> Result<u64, StoreError>;
    /// What happens on other instances, as it happens, when the store can tell at once
    /// (Postgres: `LISTEN`); `None` when instances find out by asking the store: at
    /// their lease tick (claims, cancels) or by polling (streams).
    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<Notice>> {
        None
    }
    /// Deletes an ended run with its events. Answers [`Deleted::Live`] (and deletes
    /// nothing) for a run that has not ended.
    async fn delete_run(&self, id: &RunId) -> Result<Deleted, StoreError>;
    /// Deletes a graph with its runs, when none of them is live; answers
    /// [`Deleted::Live`] (and deletes nothing) otherwise.
    async fn delete_graph(&self, id: &GraphId) -> Result<Deleted, StoreError>;
    /// Deletes up to `limit` runs that ended before `finished_before`, oldest first, with
    /// their events. Answers how many.
    async fn purge_ended(&self, finished_before: Millis, limit: u32) -> Result<u64, StoreError>;
    /// Saves a new API token. Answers `false` (and saves nothing) when a token not
    /// revoked already has its name.
    async fn insert_token(&self, token: StoredToken) -> Result<bool, StoreError>;
    /// The token with this id, revoked or not.
    async fn token(&self, id: &str) -> Result<Option<StoredToken>, StoreError>;
    /// Every token, revoked ones included, oldest first.
    async fn tokens(&self) -> Result<Vec<StoredToken>, StoreError>;
    /// Revokes the token named `name` at `at`. Answers whether there was one not revoked.
    async fn revoke_token(&self, name: &str, at: Millis) -> Result<bool, StoreError>;
    /// Whether any token was ever created: from then on every request needs one.
    async fn has_tokens(&self) -> Result<bool, StoreError>;
    /// The runs forked from `id`, oldest first, only those `created_by` started when given.
    async fn forks_of(&self, id: &RunId, created_by: Option<&str>) -> Result<Vec<RunId>, StoreError>;
    /// Every question the run asked, in step order.
    async fn interrupts(&self, run_id: &RunId) -> Result<Vec<StoredInterrupt>, StoreError>;
    /// Resolves a pending question of a `waiting` run, and hands the run back (`queued`,
    /// no owner) when it was the last one pending: one transaction, conditional on the
    /// question being pending, so two answers never both land.
    async fn resolve_interrupt(&self, resolution: Resolution) -> Result<Resolved, StoreError>;
    /// Resolves as timed out up to `limit` pending questions whose deadline is before
    /// `now`, each as [`Store::resolve_interrupt`] would. Answers how many runs it queued.
    async fn expire_interrupts(&self, now: Millis, limit: u32) -> Result<u64, StoreError>;
    /// Which store this is: `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;
    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// An API token as stored: its secret only as a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// Its public part, which finds it.
    pub id: String,
    /// The principal it speaks for.
    pub name: String,
    /// The SHA-256 of its secret part, hex.
    pub secret_hash: String,
    /// Whether it sees and may do everything.
    pub admin: bool,
    /// Whether it may only read.
    pub read_only: bool,
    /// When it was created.
    pub created_at: Millis,
    /// When it was revoked.
    pub revoked_at: Option<Millis>,
}

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// It is gone.
    Done,
    /// There was no such thing.
    NotFound,
    /// It (or one of its runs) has not ended: nothing was deleted.
    Live,
}

/// Something that happened, told to every instance (see [`Store::notices`]). A notice
/// may be lost (a connection drops, an instance dies between its commit and its notice):
/// each one only saves a wait, and whoever listens also asks the store now and then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A run was asked to stop.
    Cancel(RunId),
    /// A run was queued (or handed back) for any instance to claim.
    Queued,
    /// A run's events up to `seq` are committed; `ended` when the last is its `end`.
    Events {
        /// The run.
        run_id: RunId,
        /// Its latest event.
        seq: u64,
        /// Whether the run has ended.
        ended: bool,
    },
}

/// A write waiting for its store's group commit, and who waits for it.
pub(crate) struct Job {
    pub(crate) write: Write,
    pub(crate) done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

/// What a store writes in one transaction, with others.
pub(crate) enum Write {
    Graph(StoredGraph),
    Run(NewRun),
    Event(EventRecord),
    /// Several events of one run, all or none.
    Events(Vec<EventRecord>),
}

impl RunEffect {
    /// The status the run has after it.
    pub(crate) fn status_after(&self) -> RunStatus {
        match self {
            RunEffect::Ended { transition, .. } => transition.to,
            RunEffect::Waiting { .. } => RunStatus::Waiting,
            _ => RunStatus::Running,
        }
    }
}

impl RunEffect {
    /// The status an effect that a cancel request refuses moves from: a run asked to stop
    /// may neither end other than `cancelled`, nor start to wait.
    pub(crate) fn refused_when_cancelled(&self) -> Option<RunStatus> {
        match self {
            RunEffect::Ended { transition, .. } if transition.to != RunStatus::Cancelled => Some(transition.from),
            RunEffect::Waiting { .. } => Some(RunStatus::Running),
            _ => None,
        }
    }
}

impl EventRecord {
    /// The refusal of this event: its run is not its owner's in the status it expects.
    pub(crate) fn not_owned(&self) -> StoreError {
        let expected = match &self.effect {
            RunEffect::Started => RunStatus::Queued,
            RunEffect::Ended { transition, .. } => transition.from,
            _ => RunStatus::Running,
        };
        StoreError::NotOwned {
            run: self.run_id.clone(),
            owner: self.owner.clone(),
            expected,
        }
    }
}

/// A run's parent, from its `forked_from` and `forked_at_step` columns.
pub(crate) fn fork_from_row(run: Option<String>, step: Option<i64>) -> Option<ForkedFrom> {
    Some(ForkedFrom {
        run: RunId::from(run?),
        step: count(step.unwrap_or(0)),
    })
}

/// A run's usage from its sum columns: `None` when it used no tokens.
pub(crate) fn usage_from_row(prompt: i64, completion: i64, cost: f64) -> Option<weft_app::wire::Usage> {
    (prompt > 0 || completion > 0).then(|| weft_app::wire::Usage {
        prompt_tokens: count(prompt),
        completion_tokens: count(completion),
        cost_usd: (cost > 0.0).then_some(cost),
    })
}

/// A count as the databases store it.
pub(crate) fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored count (never negative).
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The state an `end` event holds, as written.
#[derive(serde::Deserialize)]
struct EndState<'a> {
    #[serde(borrow)]
    state: &'a serde_json::value::RawValue,
}

/// A run's final state, from its `end` event (JSON text): the state exactly as written.
pub(crate) fn final_state_of(end_event: &str) -> Result<String, StoreError> {
    let end: EndState<'_> =
        serde_json::from_str(end_event).map_err(|err| StoreError::Corrupt(format!("end event: {err}")))?;
    Ok(end.state.get().to_owned())
}

/// A graph in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphListing {
    /// Its id.
    pub id: GraphId,
    /// Its name, when it has one.
    pub name: Option<String>,
    /// How many nodes its spec has.
    pub nodes: u64,
    /// When it was created.
    pub created_at: Millis,
}
