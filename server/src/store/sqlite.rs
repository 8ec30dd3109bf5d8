//! The embedded SQLite store: one database file, WAL mode, group commits, one driver
//! (rusqlite).
//!
//! Writes go through one connection, and commit as a group: a caller queues its write,
//! then, if no one else is committing, takes the connection and commits every write
//! waiting (up to [`MAX_BATCH`] a transaction) with cached prepared statements, answering
//! each. Under load many runs' events share one commit; alone, an event commits at once,
//! on the caller's own thread, with no hand-over between threads (profiling showed the
//! hand-overs to a writer thread, and waking the callers back, costing more than SQLite's
//! own work). A commit never waits for a lock on the runtime: when another process holds
//! the database's write lock, the waiting moves to the blocking pool. Checkpoints (which
//! sync the database file) run on a thread of their own.
//!
//! Reads (and the one-statement lease updates) borrow one of a few other connections on
//! the blocking pool. No transaction is ever held while a node runs.
//!
//! `synchronous = NORMAL` in WAL mode keeps every committed step across a crash of the
//! process (`kill -9`); only a power loss can take back the last commits.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc::{sync_channel, Receiver, SyncSender},
        Arc, Mutex, MutexGuard, PoisonError, TryLockError, Weak,
    },
    time::Duration,
};

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Row};
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use weft_app::wire::{EventKind, RunStatus};

use super::{
    now_millis, EventRecord, GraphListing, Millis, NewRun, RunEffect, RunFilter, Store, StoreError, StoredEvent,
    StoredGraph, StoredRun,
};
use crate::ids::{GraphId, OwnerId, RunId};
#[cfg(test)]
use crate::lifecycle::Transition;

/// The most writes one commit takes.
pub const MAX_BATCH: usize = 512;
/// Batches one caller commits at most before handing the rest to the blocking pool, so
/// that a runtime thread is never kept committing for others indefinitely.
const INLINE_BATCHES: usize = 4;
/// The log written between two checkpoints, about.
const CHECKPOINT_EVERY: usize = 16 << 20;
/// Idle read connections kept open at most.
const READERS: usize = 4;
/// How long a statement waits for another connection's (or process's) write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema's migrations, in order: each runs once, in a transaction of its own, and
/// the database's `user_version` records the last one applied.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_run_events.sql")),
    (3, include_str!("../../migrations/sqlite/0003_derive_last_seq.sql")),
    (4, include_str!("../../migrations/sqlite/0004_graph_names.sql")),
    (5, include_str!("../../migrations/sqlite/0005_run_leases.sql")),
    (6, include_str!("../../migrations/sqlite/0006_step_snapshots.sql")),
    (7, include_str!("../../migrations/sqlite/0007_run_inputs.sql")),
    (8, include_str!("../../migrations/sqlite/0008_fewer_indexes.sql")),
];

enum Write {
    Graph(StoredGraph),
    Run(NewRun),
    Event(EventRecord),
    /// Several events of one run, all or none.
    Events(Vec<EventRecord>),
}

struct Job {
    write: Write,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The SQLite [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    readers: Arc<Readers>,
    writer: Arc<Writer>,
}

/// The connection that writes, and the writes waiting for it.
struct Writer {
    conn: Mutex<rusqlite::Connection>,
    queue: Mutex<Vec<Job>>,
    /// Bytes written since the last checkpoint, about.
    unchecked: AtomicUsize,
    /// Wakes the checkpointer.
    checkpoint: SyncSender<()>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn is_busy(err: &StoreError) -> bool {
    matches!(err, StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, _))
        if matches!(failure.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

impl Writer {
    /// Commits the writes waiting, if no one else is. `wait`: on the blocking pool, where
    /// taking the connection, and the database's write lock, may wait.
    fn drain(self: &Arc<Self>, wait: bool) {
        loop {
            let mut conn = if wait {
                lock(&self.conn)
            } else {
                match self.conn.try_lock() {
                    Ok(conn) => conn,
                    Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                    // Whoever holds it commits what is queued before letting go.
                    Err(TryLockError::WouldBlock) => return,
                }
            };
            if wait {
                let _ = conn.busy_timeout(BUSY_TIMEOUT);
            }
            let mut rounds = 0;
            let outcome = loop {
                let batch: Vec<Job> = {
                    let mut queue = lock(&self.queue);
                    let n = queue.len().min(MAX_BATCH);
                    queue.drain(..n).collect()
                };
                if batch.is_empty() {
                    break Ok(());
                }
                if !wait && rounds == INLINE_BATCHES {
                    break Err(batch);
                }
                rounds += 1;
                if let Err(left) = self.commit_batch(&mut conn, batch, wait) {
                    break Err(left);
                }
            };
            if wait {
                let _ = conn.busy_timeout(Duration::ZERO);
            }
            drop(conn);
            if let Err(left) = outcome {
                // Busy, or enough done here: the rest is committed on the blocking pool.
                lock(&self.queue).splice(0..0, left);
                let writer = Arc::clone(self);
                tokio::task::spawn_blocking(move || writer.drain(true));
                return;
            }
            // A write queued while the connection was being let go is committed by its
            // caller, or here.
            if lock(&self.queue).is_empty() {
                return;
            }
        }
    }

    /// Commits `batch` and answers each write. Answers the writes left when the database
    /// is busy (another process writes) and `wait` is off.
    fn commit_batch(&self, conn: &mut rusqlite::Connection, batch: Vec<Job>, wait: bool) -> Result<(), Vec<Job>> {
        let bytes: usize = batch.iter().map(|job| job.write.bytes()).sum();
        match commit(conn, &batch) {
            Ok(()) => {
                for job in batch {
                    let _ = job.done.send(Ok(()));
                }
            }
            Err(err) if !wait && is_busy(&err) => return Err(batch),
            Err(err) => {
                // One bad write must not fail its neighbours: retry each on its own.
                tracing::warn!(error = %err, size = batch.len(), "batch commit failed; retrying one by one");
                let mut jobs = batch.into_iter();
                while let Some(job) = jobs.next() {
                    let result = commit(conn, std::slice::from_ref(&job));
                    match result {
                        Err(err) if !wait && is_busy(&err) => return Err(std::iter::once(job).chain(jobs).collect()),
                        Err(err) => {
                            tracing::error!(error = %err, "write failed");
                            let _ = job.done.send(Err(err));
                        }
                        Ok(()) => {
                            let _ = job.done.send(Ok(()));
                        }
                    }
                }
            }
        }
        if self.unchecked.fetch_add(bytes, Ordering::Relaxed) + bytes >= CHECKPOINT_EVERY {
            let _ = self.checkpoint.try_send(());
        }
        Ok(())
    }
}

/// Checkpoints the log whenever woken, until the store is gone. It holds the connection
/// meanwhile, so no commit appends to the log as it is copied: every page is copied, and
/// the next commit starts the log over rather than growing it.
fn checkpoint_loop(writer: Weak<Writer>, wake: Receiver<()>) {
    while wake.recv().is_ok() {
        let Some(writer) = writer.upgrade() else { return };
        {
            let conn = lock(&writer.conn);
            writer.unchecked.store(0, Ordering::Relaxed);
            if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %err, "checkpoint failed");
            }
        }
        // What queued meanwhile.
        writer.drain(true);
    }
}

/// Connections for reads, each lent to one blocking task at a time.
#[derive(Debug)]
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

/// Opens a connection to the database at `path` with the settings every connection here
/// uses.
fn connect(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Brings the schema up to date, one migration per transaction. The version is read
/// inside each transaction, under the write lock, so two processes opening the same new
/// file never apply a migration twice.
fn migrate(conn: &mut rusqlite::Connection) -> Result<(), StoreError> {
    let newest = MIGRATIONS.last().map_or(0, |(version, _)| *version);
    loop {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version == 0 {
            // Weft before 2026-11-30 migrated with sqlx, which kept its own table.
            let by_sqlx: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
                [],
                |row| row.get(0),
            )?;
            if by_sqlx {
                version = tx.query_row(
                    "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
                    [],
                    |row| row.get(0),
                )?;
            }
        }
        if version > newest {
            return Err(StoreError::Migration(format!(
                "the database's schema is version {version}, newer than this Weft's ({newest})"
            )));
        }
        let Some((next, sql)) = MIGRATIONS.iter().find(|(v, _)| *v > version) else {
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()?;
            return Ok(());
        };
        tx.execute_batch(sql)
            .map_err(|err| StoreError::Migration(format!("migration {next}: {err}")))?;
        tx.pragma_update(None, "user_version", next)?;
        tx.commit()?;
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(path))
            .await
            .map_err(|err| StoreError::Corrupt(format!("could not open the database: {err}")))?
    }

    /// Opens the database a `sqlite:` URL names (`sqlite:weft.db`, `sqlite://weft.db`);
    /// options after `?` are not read.
    pub async fn open_url(url: &str) -> Result<Self, StoreError> {
        let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
        let path = path.split('?').next().unwrap_or_default();
        Self::open(Path::new(path)).await
    }

    fn open_blocking(path: PathBuf) -> Result<Self, StoreError> {
        let mut writer = connect(&path)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        migrate(&mut writer)?;
        // Commits on the runtime never wait for the lock (see `Writer::drain`).
        writer.busy_timeout(Duration::ZERO)?;
        // The checkpointer copies the log every `CHECKPOINT_EVERY` bytes or so, off the
        // runtime; this is a backstop, should it fall behind.
        writer.pragma_update(None, "wal_autocheckpoint", 20_000)?;
        let (checkpoint, wake) = sync_channel(1);
        let writer = Arc::new(Writer {
            conn: Mutex::new(writer),
            queue: Mutex::default(),
            unchecked: AtomicUsize::new(0),
            checkpoint,
        });
        let weak = Arc::downgrade(&writer);
        std::thread::Builder::new()
            .name("weft-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(weak, wake))
            .map_err(|err| StoreError::Corrupt(format!("could not start the checkpoint thread: {err}")))?;
        Ok(Self {
            readers: Arc::new(Readers {
                path,
                idle: Mutex::default(),
            }),
            writer,
        })
    }

    /// Runs `query` on a read connection, on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let idle = readers.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let conn = match idle {
                Some(conn) => conn,
                None => connect(&readers.path)?,
            };
            let result = query(&conn);
            let mut idle = readers.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < READERS {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|err| StoreError::Corrupt(format!("a read stopped: {err}")))?
    }

    async fn write(&self, write: Write) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        lock(&self.writer.queue).push(Job { write, done });
        self.writer.drain(false);
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

impl Write {
    /// About how many bytes committing it appends to the log.
    fn bytes(&self) -> usize {
        const PAGES: usize = 2 * 4096;
        let event = |e: &EventRecord| PAGES + e.event.len() + e.log.len();
        match self {
            Write::Graph(graph) => PAGES + graph.spec.len(),
            Write::Run(run) => PAGES + run.initial_state.len() + run.then.iter().map(event).sum::<usize>(),
            Write::Event(e) => event(e),
            Write::Events(events) => events.iter().map(event).sum(),
        }
    }
}

fn commit(conn: &mut rusqlite::Connection, batch: &[Job]) -> Result<(), StoreError> {
    // IMMEDIATE: take the write lock first (waiting for it under the busy timeout), so a
    // transaction that reads before it writes never fails to upgrade when another
    // connection or process wrote in between.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for job in batch {
        apply(&tx, &job.write)?;
    }
    tx.commit()?;
    Ok(())
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn apply(conn: &rusqlite::Connection, write: &Write) -> Result<(), StoreError> {
    match write {
        Write::Graph(graph) => {
            conn.prepare_cached("INSERT INTO graphs (id, name, spec, created_at) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![graph.id.as_str(), graph.name, graph.spec, graph.created_at])?;
        }
        Write::Run(run) => {
            conn.prepare_cached(
                "INSERT INTO runs (id, graph_id, status, next_node, step_count, max_steps, \
                 created_at, updated_at, owner, lease_until) VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?6, ?7, ?8)",
            )?
            .execute(params![
                run.id.as_str(),
                run.graph_id.as_str(),
                run.status.as_str(),
                run.next_node,
                i64::from(run.max_steps),
                run.created_at,
                run.owner.as_str(),
                run.lease_until
            ])?;
            conn.prepare_cached("INSERT INTO run_inputs (run_id, initial_state) VALUES (?1, ?2)")?
                .execute(params![run.id.as_str(), run.initial_state])?;
            insert_event(
                conn,
                &run.id,
                1,
                EventKind::RunQueued.as_str(),
                None,
                "[]",
                &run.event,
                run.status,
                false,
            )?;
            for event in &run.then {
                apply_event(conn, event)?;
            }
        }
        Write::Event(event) => apply_event(conn, event)?,
        Write::Events(events) => {
            for event in events {
                apply_event(conn, event)?;
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn insert_event(
    conn: &rusqlite::Connection,
    run_id: &RunId,
    seq: u64,
    kind: &str,
    node: Option<&str>,
    log: &str,
    event: &str,
    status: RunStatus,
    snapshot: bool,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO run_events (run_id, seq, kind, node, status, log, event, snapshot) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        run_id.as_str(),
        as_i64(seq),
        kind,
        node.unwrap_or(""),
        status.as_str(),
        log,
        event,
        snapshot
    ])?;
    Ok(())
}

fn apply_event(conn: &rusqlite::Connection, event: &EventRecord) -> Result<(), StoreError> {
    let status = match &event.effect {
        RunEffect::Ended { transition, .. } => transition.to,
        _ => RunStatus::Running,
    };
    let (run_id, owner, now) = (event.run_id.as_str(), event.owner.as_str(), now_millis());
    let not_owned = |expected| StoreError::NotOwned {
        run: event.run_id.clone(),
        owner: event.owner.clone(),
        expected,
    };
    // Each effect is one conditional statement: on the owner, and on the status the
    // run must be in. No row changed means the run is not ours (or not there) any more.
    let changed = match &event.effect {
        RunEffect::None => conn
            .prepare_cached("SELECT 1 FROM runs WHERE id = ?1 AND owner = ?2 AND status IN ('queued', 'running')")?
            .exists(params![run_id, owner])?,
        RunEffect::Started => {
            // A run admitted straight into a free slot was stored `running` already.
            conn.prepare_cached(
                "UPDATE runs SET status = 'running', updated_at = ?1 WHERE id = ?2 AND owner = ?3 \
                 AND status IN ('queued', 'running')",
            )?
            .execute(params![now, run_id, owner])?
                == 1
        }
        RunEffect::Checkpoint { step_count, next_node } => {
            conn.prepare_cached(
                "UPDATE runs SET next_node = ?1, step_count = ?2, updated_at = ?3 WHERE id = ?4 AND owner = ?5 \
                 AND status = 'running'",
            )?
            .execute(params![next_node, as_i64(*step_count), now, run_id, owner])?
                == 1
        }
        RunEffect::Ended {
            transition,
            steps,
            error,
        } => {
            conn.prepare_cached(
                "UPDATE runs SET status = ?1, step_count = ?2, error = ?3, next_node = NULL, \
                 updated_at = ?4, finished_at = ?4, lease_until = NULL WHERE id = ?5 AND owner = ?6 AND status = ?7",
            )?
            .execute(params![
                transition.to.as_str(),
                as_i64(*steps),
                error,
                now,
                run_id,
                owner,
                transition.from.as_str()
            ])? == 1
        }
    };
    if !changed {
        let expected = match &event.effect {
            RunEffect::Started => RunStatus::Queued,
            RunEffect::Ended { transition, .. } => transition.from,
            _ => RunStatus::Running,
        };
        return Err(not_owned(expected));
    }
    insert_event(
        conn,
        &event.run_id,
        event.seq,
        event.kind.as_str(),
        event.node.as_deref(),
        &event.log,
        &event.event,
        status,
        event.snapshot,
    )?;
    Ok(())
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The state an `end` event holds, as written.
#[derive(serde::Deserialize)]
struct EndState<'a> {
    #[serde(borrow)]
    state: &'a RawValue,
}

fn run_from_row(row: &Row<'_>) -> Result<StoredRun, StoreError> {
    let status: String = row.get("status")?;
    let status = RunStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("run status `{status}`")))?;
    // An ended run's final state is its `end` event's (runs ended before 2026-11-30 also
    // kept a copy in their row).
    let mut final_state: Option<String> = row.get("final_state")?;
    if final_state.is_none() && status.is_terminal() {
        let end: Option<String> = row.get("end_event")?;
        if let Some(end) = end {
            let end: EndState<'_> =
                serde_json::from_str(&end).map_err(|err| StoreError::Corrupt(format!("end event: {err}")))?;
            final_state = Some(end.state.get().to_owned());
        }
    }
    Ok(StoredRun {
        id: RunId::from(row.get::<_, String>("id")?),
        graph_id: GraphId::from(row.get::<_, String>("graph_id")?),
        graph_name: row.get("graph_name")?,
        status,
        initial_state: row.get("initial_state")?,
        final_state,
        next_node: row.get("next_node")?,
        step_count: count(row.get("step_count")?),
        last_seq: count(row.get("last_seq")?),
        max_steps: u32::try_from(row.get::<_, i64>("max_steps")?).unwrap_or(0),
        error: row.get("error")?,
        created_at: row.get("created_at")?,
        finished_at: row.get("finished_at")?,
    })
}

fn event_from_row(row: &Row<'_>) -> Result<StoredEvent, StoreError> {
    let kind: String = row.get("kind")?;
    Ok(StoredEvent {
        seq: count(row.get("seq")?),
        kind: EventKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("event type `{kind}`")))?,
        event: row.get("event")?,
    })
}

const RUN_COLUMNS: &str = "id, graph_id, status, \
                           (SELECT initial_state FROM run_inputs i WHERE i.run_id = runs.id) AS initial_state, final_state, next_node, step_count, max_steps, \
                           error, created_at, finished_at, \
                           (SELECT name FROM graphs g WHERE g.id = runs.graph_id) AS graph_name, \
                           (SELECT COALESCE(MAX(seq), 0) FROM run_events e WHERE e.run_id = runs.id) AS last_seq, \
                           (SELECT event FROM run_events e WHERE e.run_id = runs.id AND runs.finished_at IS NOT NULL \
                            AND e.kind = 'end' ORDER BY seq DESC LIMIT 1) AS end_event";

/// The rows `sql` selects with `params`, each mapped by `map`.
fn rows<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(row)?);
    }
    Ok(out)
}

fn run_by_id(conn: &rusqlite::Connection, id: &str) -> Result<Option<StoredRun>, StoreError> {
    Ok(rows(
        conn,
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
        [id],
        run_from_row,
    )?
    .into_iter()
    .next())
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_graph(&self, graph: StoredGraph) -> Result<(), StoreError> {
        self.write(Write::Graph(graph)).await
    }

    async fn graph(&self, id: &GraphId) -> Result<Option<StoredGraph>, StoreError> {
        let id = id.as_str().to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT id, name, spec, created_at FROM graphs WHERE id = ?1")?
                .query_row([id], |row| {
                    Ok(StoredGraph {
                        id: GraphId::from(row.get::<_, String>("id")?),
                        name: row.get("name")?,
                        spec: row.get("spec")?,
                        created_at: row.get("created_at")?,
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn insert_run(&self, run: NewRun) -> Result<(), StoreError> {
        self.write(Write::Run(run)).await
    }

    async fn append_events(&self, events: Vec<EventRecord>) -> Result<(), StoreError> {
        self.write(Write::Events(events)).await
    }

    async fn append_event(&self, event: EventRecord) -> Result<(), StoreError> {
        self.write(Write::Event(event)).await
    }

    async fn run(&self, id: &RunId) -> Result<Option<StoredRun>, StoreError> {
        let id = id.as_str().to_owned();
        self.read(move |conn| run_by_id(conn, &id)).await
    }

    async fn run_log(&self, id: &RunId) -> Result<Vec<String>, StoreError> {
        let id = id.as_str().to_owned();
        self.read(move |conn| {
            let chunks = rows(
                conn,
                "SELECT log FROM run_events WHERE run_id = ?1 ORDER BY seq",
                [id],
                |row| Ok(row.get::<_, String>("log")?),
            )?;
            let mut log = Vec::with_capacity(chunks.len());
            for lines in chunks {
                let lines: Vec<String> =
                    serde_json::from_str(&lines).map_err(|err| StoreError::Corrupt(format!("step log: {err}")))?;
                log.extend(lines);
            }
            Ok(log)
        })
        .await
    }

    async fn events_after(&self, id: &RunId, after_seq: u64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let id = id.as_str().to_owned();
        self.read(move |conn| {
            rows(
                conn,
                "SELECT seq, kind, event FROM run_events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                params![id, as_i64(after_seq), i64::from(limit)],
                event_from_row,
            )
        })
        .await
    }

    async fn latest_snapshot(&self, id: &RunId, at_most: u64) -> Result<Option<StoredEvent>, StoreError> {
        let id = id.as_str().to_owned();
        self.read(move |conn| {
            Ok(rows(
                conn,
                "SELECT seq, kind, event FROM run_events WHERE run_id = ?1 AND snapshot = 1 AND seq <= ?2 \
                 ORDER BY seq DESC LIMIT 1",
                params![id, as_i64(at_most)],
                event_from_row,
            )?
            .into_iter()
            .next())
        })
        .await
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<StoredRun>, StoreError> {
        let filter = filter.clone();
        self.read(move |conn| {
            // Ids are UUID v7: ordering by id is ordering by creation, and a cursor is an id.
            rows(
                conn,
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR graph_id = ?1) AND (?2 IS NULL OR status = ?2) \
                     AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
                ),
                params![
                    filter.graph_id.as_ref().map(GraphId::as_str),
                    filter.status.map(RunStatus::as_str),
                    filter.before.as_ref().map(RunId::as_str),
                    i64::from(filter.limit)
                ],
                run_from_row,
            )
        })
        .await
    }

    async fn list_graphs(&self, before: Option<&GraphId>, limit: u32) -> Result<Vec<GraphListing>, StoreError> {
        let before = before.map(|id| id.as_str().to_owned());
        self.read(move |conn| {
            // Ids are UUID v7, so id order is creation order and an id is a cursor.
            rows(
                conn,
                "SELECT id, name, created_at, \
                 (SELECT COUNT(*) FROM json_each(graphs.spec, '$.nodes')) AS nodes \
                 FROM graphs WHERE (?1 IS NULL OR id < ?1) ORDER BY id DESC LIMIT ?2",
                params![before, i64::from(limit)],
                |row| {
                    Ok(GraphListing {
                        id: GraphId::from(row.get::<_, String>("id")?),
                        name: row.get("name")?,
                        nodes: count(row.get("nodes")?),
                        created_at: row.get("created_at")?,
                    })
                },
            )
        })
        .await
    }

    async fn claim_expired(
        &self,
        owner: &OwnerId,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<StoredRun>, StoreError> {
        let owner = owner.as_str().to_owned();
        self.read(move |conn| {
            // One statement: each expired run is claimed by exactly one instance.
            let claimed = rows(
                conn,
                "UPDATE runs SET owner = ?1, lease_until = ?2, status = 'queued', updated_at = ?3 \
                 WHERE status IN ('queued', 'running') AND (owner IS NULL OR lease_until IS NULL OR lease_until < ?3) \
                 RETURNING id",
                params![owner, lease_until, now],
                |row| Ok(row.get::<_, String>("id")?),
            )?;
            let mut runs = Vec::with_capacity(claimed.len());
            for id in claimed {
                runs.extend(run_by_id(conn, &id)?);
            }
            runs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            Ok(runs)
        })
        .await
    }

    async fn renew_leases(&self, owner: &OwnerId, lease_until: Millis) -> Result<u64, StoreError> {
        let owner = owner.as_str().to_owned();
        self.read(move |conn| {
            let renewed = conn
                .prepare_cached(
                    "UPDATE runs SET lease_until = ?1 WHERE owner = ?2 AND status IN ('queued', 'running')",
                )?
                .execute(params![lease_until, owner])?;
            Ok(renewed as u64)
        })
        .await
    }

    async fn release_runs(&self, owner: &OwnerId) -> Result<u64, StoreError> {
        let owner = owner.as_str().to_owned();
        self.read(move |conn| {
            let released = conn
                .prepare_cached(
                    "UPDATE runs SET status = 'queued', owner = NULL, lease_until = NULL, updated_at = ?1 \
                     WHERE owner = ?2 AND status IN ('queued', 'running')",
                )?
                .execute(params![now_millis(), owner])?;
            Ok(released as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("weft.db")).await.unwrap();
        (dir, store)
    }

    /// The instance the tests write as.
    fn me() -> OwnerId {
        OwnerId::from("me".to_owned())
    }

    /// An ended run is never claimed, however late it is.
    async fn assert_never_claimed(store: &SqliteStore) {
        let claimed = store.claim_expired(&other(), i64::MAX, i64::MAX).await.unwrap();
        assert!(claimed.is_empty(), "an ended run was claimed: {claimed:?}");
    }

    /// Another instance.
    fn other() -> OwnerId {
        OwnerId::from("other".to_owned())
    }

    /// Stores an empty graph and answers its id.
    async fn a_graph(store: &SqliteStore) -> GraphId {
        let graph = GraphId::generate();
        store
            .insert_graph(StoredGraph {
                name: None,
                id: graph.clone(),
                spec: "{}".into(),
                created_at: 1,
            })
            .await
            .unwrap();
        graph
    }

    /// A fresh store holding one graph and one running run of it (event 1 written).
    async fn store_with_run() -> (tempfile::TempDir, SqliteStore, RunId) {
        let (dir, store) = store().await;
        let graph = a_graph(&store).await;
        let run = RunId::generate();
        store
            .insert_run(NewRun {
                id: run.clone(),
                owner: me(),
                lease_until: now_millis() + 60_000,
                graph_id: graph,
                status: RunStatus::Running,
                initial_state: r#"{"n":0}"#.into(),
                next_node: "a".into(),
                event: r#"{"type":"run_queued","seq":1}"#.into(),
                then: Vec::new(),
                max_steps: 100,
                created_at: 1,
            })
            .await
            .unwrap();
        (dir, store, run)
    }

    fn step(run: &RunId, seq: u64, step: u64, next: Option<&str>) -> EventRecord {
        EventRecord {
            run_id: run.clone(),
            owner: me(),
            seq,
            kind: EventKind::Step,
            node: Some("a".into()),
            log: format!(r#"["[RUNNING] a","step {step}"]"#),
            event: format!(r#"{{"seq":{seq}}}"#),
            snapshot: step.is_multiple_of(2),
            effect: RunEffect::Checkpoint {
                step_count: step,
                next_node: next.map(str::to_owned),
            },
        }
    }

    #[tokio::test]
    async fn appends_events_with_their_checkpoint_and_ends_runs() {
        let (_dir, store, run) = store_with_run().await;
        // Concurrent writes share commits and all land.
        let (one, two) = tokio::join!(
            store.append_event(step(&run, 2, 1, Some("b"))),
            store.append_event(step(&run, 3, 2, Some("a")))
        );
        one.unwrap();
        two.unwrap();

        let stored = store.run(&run).await.unwrap().unwrap();
        assert_eq!((stored.step_count, stored.last_seq), (2, 3));
        assert_eq!(stored.next_node.as_deref(), Some("a"));
        let far = now_millis() + 1_000_000;
        assert!(
            store
                .claim_expired(&other(), now_millis(), far)
                .await
                .unwrap()
                .is_empty(),
            "its owner's lease holds"
        );
        assert_eq!(
            store.run_log(&run).await.unwrap(),
            ["[RUNNING] a", "step 1", "[RUNNING] a", "step 2"]
        );
        let after_two = store.events_after(&run, 2, 10).await.unwrap();
        assert_eq!(
            after_two,
            vec![StoredEvent {
                seq: 3,
                kind: EventKind::Step,
                event: r#"{"seq":3}"#.into()
            }]
        );
        assert_eq!(
            store.events_after(&run, 0, 10).await.unwrap()[0].kind,
            EventKind::RunQueued
        );

        store
            .append_event(EventRecord {
                run_id: run.clone(),
                owner: me(),
                seq: 4,
                kind: EventKind::End,
                node: None,
                log: "[]".into(),
                event: r#"{"type":"end","seq":4,"state":{"n":2}}"#.into(),
                snapshot: false,
                effect: RunEffect::Ended {
                    transition: Transition::new(RunStatus::Running, RunStatus::Completed).unwrap(),
                    steps: 2,
                    error: None,
                },
            })
            .await
            .unwrap();
        // Step 2 (event 3) is the latest snapshot, whatever came after it; step 1 is none.
        assert_eq!(store.latest_snapshot(&run, 10).await.unwrap().unwrap().seq, 3);
        assert_eq!(store.latest_snapshot(&run, 2).await.unwrap(), None);
        let stored = store.run(&run).await.unwrap().unwrap();
        assert_eq!((stored.status, stored.last_seq), (RunStatus::Completed, 4));
        assert_eq!(stored.final_state.as_deref(), Some(r#"{"n":2}"#));
        assert_eq!(stored.next_node, None);
        assert!(stored.finished_at.is_some());
        assert_never_claimed(&store).await;
    }

    #[tokio::test]
    async fn a_bad_write_fails_alone() {
        let (_dir, store, run) = store_with_run().await;
        // An event for a run that does not exist is refused (no such run is ours); its
        // neighbour in the same commit lands, and a repeated sequence number fails alone.
        let ghost = RunId::generate();
        let (bad, good) = tokio::join!(
            store.append_event(step(&ghost, 2, 1, None)),
            store.append_event(step(&run, 2, 1, None))
        );
        assert!(matches!(bad, Err(StoreError::NotOwned { .. })), "{bad:?}");
        good.unwrap();
        assert!(
            store.append_event(step(&run, 2, 1, None)).await.is_err(),
            "a seq is written once"
        );
        assert_eq!(store.run(&run).await.unwrap().unwrap().step_count, 1);
    }

    fn end(run: &RunId, seq: u64, status: RunStatus) -> EventRecord {
        EventRecord {
            run_id: run.clone(),
            owner: me(),
            seq,
            kind: EventKind::End,
            node: None,
            log: "[]".into(),
            event: format!(r#"{{"type":"end","seq":{seq},"state":{{"n":1}}}}"#),
            snapshot: false,
            effect: RunEffect::Ended {
                transition: Transition::new(RunStatus::Running, status).unwrap(),
                steps: 1,
                error: Some("boom".into()),
            },
        }
    }

    #[tokio::test]
    async fn a_last_step_and_the_end_land_together_or_not_at_all() {
        let (_dir, store, run) = store_with_run().await;
        // The end repeats the step's sequence number: the pair fails, and neither lands.
        let clash = store
            .append_events(vec![step(&run, 2, 1, None), end(&run, 2, RunStatus::Failed)])
            .await;
        assert!(matches!(clash, Err(StoreError::Sqlite(_))));
        let stored = store.run(&run).await.unwrap().unwrap();
        assert_eq!(
            (stored.status, stored.step_count, stored.last_seq),
            (RunStatus::Running, 0, 1)
        );

        store
            .append_events(vec![step(&run, 2, 1, None), end(&run, 3, RunStatus::Failed)])
            .await
            .unwrap();
        let stored = store.run(&run).await.unwrap().unwrap();
        assert_eq!(
            (stored.status, stored.step_count, stored.last_seq),
            (RunStatus::Failed, 1, 3)
        );
        assert_eq!(stored.error.as_deref(), Some("boom"));
        assert_never_claimed(&store).await;
    }

    #[tokio::test]
    async fn a_run_passes_to_another_owner_only_once_its_lease_expires() {
        let (_dir, store, run) = store_with_run().await;
        let lease = store.run(&run).await.unwrap().unwrap();
        assert_eq!(lease.status, RunStatus::Running);
        let now = now_millis();
        assert!(store
            .claim_expired(&other(), now, now + 30_000)
            .await
            .unwrap()
            .is_empty());
        // Renewed, the lease outlives a moment that the first lease would not have.
        assert_eq!(store.renew_leases(&me(), now + 120_000).await.unwrap(), 1);
        assert!(store
            .claim_expired(&other(), now + 90_000, now + 120_000)
            .await
            .unwrap()
            .is_empty());

        // Past it, the other instance claims the run, handed back to `queued`.
        let claimed = store
            .claim_expired(&other(), now + 130_000, now + 160_000)
            .await
            .unwrap();
        assert_eq!(
            claimed.iter().map(|r| (&r.id, r.status)).collect::<Vec<_>>(),
            [(&run, RunStatus::Queued)]
        );
        // A second claim finds nothing: the run has one owner.
        assert!(store
            .claim_expired(&me(), now + 130_000, now + 160_000)
            .await
            .unwrap()
            .is_empty());
        // The old owner can write nothing more for it.
        let late = store.append_event(step(&run, 2, 1, Some("b"))).await;
        assert!(matches!(late, Err(StoreError::NotOwned { .. })), "{late:?}");
        assert_eq!(store.renew_leases(&me(), now + 200_000).await.unwrap(), 0);

        // Released, it is free to claim at once.
        assert_eq!(store.release_runs(&other()).await.unwrap(), 1);
        assert_eq!(store.claim_expired(&me(), now, now + 30_000).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_move_from_a_status_the_run_is_not_in_is_refused() {
        let (_dir, store, run) = store_with_run().await;
        // The run is running: ending it as if it were still queued is refused, unwritten.
        let mut wrong = end(&run, 2, RunStatus::Cancelled);
        wrong.effect = RunEffect::Ended {
            transition: Transition::new(RunStatus::Queued, RunStatus::Cancelled).unwrap(),
            steps: 0,
            error: None,
        };
        let refused = store.append_event(wrong).await;
        assert!(
            matches!(
                &refused,
                Err(StoreError::NotOwned {
                    expected: RunStatus::Queued,
                    ..
                })
            ),
            "{refused:?}"
        );
        let stored = store.run(&run).await.unwrap().unwrap();
        assert_eq!((stored.status, stored.last_seq), (RunStatus::Running, 1));
        // From the status it is in, the move lands; after it, nothing moves the run again.
        store.append_event(end(&run, 2, RunStatus::Cancelled)).await.unwrap();
        let again = store.append_event(end(&run, 3, RunStatus::Completed)).await;
        assert!(matches!(again, Err(StoreError::NotOwned { .. })));
        assert_eq!(store.run(&run).await.unwrap().unwrap().status, RunStatus::Cancelled);
    }

    #[tokio::test]
    async fn data_survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weft.db");
        let graph = GraphId::generate();
        {
            let store = SqliteStore::open(&path).await.unwrap();
            store
                .insert_graph(StoredGraph {
                    name: None,
                    id: graph.clone(),
                    spec: r#"{"x":1}"#.into(),
                    created_at: 5,
                })
                .await
                .unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let stored = store.graph(&graph).await.unwrap().unwrap();
        assert_eq!(stored.spec, r#"{"x":1}"#);
        assert_eq!(store.graph(&GraphId::generate()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_database_migrated_by_sqlx_is_taken_over_where_it_stands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weft.db");
        {
            // As Weft left it when sqlx migrated it: migrations 1 to 7, recorded in its table.
            let conn = rusqlite::Connection::open(&path).unwrap();
            for (_, sql) in &MIGRATIONS[..7] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(
                "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
                 installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, \
                 checksum BLOB NOT NULL, execution_time BIGINT NOT NULL);
                 INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                 VALUES (1, 'init', 1, x'00', 0), (2, '', 1, x'00', 0), (3, '', 1, x'00', 0), (4, '', 1, x'00', 0),
                        (5, '', 1, x'00', 0), (6, '', 1, x'00', 0), (7, '', 1, x'00', 0);
                 INSERT INTO graphs (id, spec, created_at, name) VALUES ('g', '{\"nodes\":{}}', 3, 'old');",
            )
            .unwrap();
        }
        // Running migration 1 again would fail (its tables exist): only 8 is applied.
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(
            store
                .graph(&GraphId::from("g".to_owned()))
                .await
                .unwrap()
                .unwrap()
                .name
                .as_deref(),
            Some("old")
        );
        let conn = rusqlite::Connection::open(&path).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0)).unwrap();
        assert_eq!(version, 8);
        let by_kind: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'run_events_by_kind'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(by_kind, 0, "migration 8 ran");
    }

    #[tokio::test]
    async fn two_processes_opening_a_new_file_at_once_migrate_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weft.db");
        let (one, two) = tokio::join!(SqliteStore::open(&path), SqliteStore::open(&path));
        let (one, two) = (one.unwrap(), two.unwrap());
        let graph = a_graph(&one).await;
        assert!(two.graph(&graph).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_database_newer_than_this_weft_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weft.db");
        drop(SqliteStore::open(&path).await.unwrap());
        rusqlite::Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let refused = SqliteStore::open(&path).await;
        assert!(
            matches!(&refused, Err(StoreError::Migration(why)) if why.contains("version 99")),
            "{refused:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_waits_off_the_runtime_while_another_process_holds_the_lock() {
        let (dir, store, run) = store_with_run().await;
        // Another connection (as another process would) takes the write lock for 300 ms.
        let mut other = rusqlite::Connection::open(dir.path().join("weft.db")).unwrap();
        let (locked, lock_taken) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let tx = other
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .unwrap();
            locked.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            tx.commit().unwrap();
        });
        lock_taken.recv().unwrap();
        let started = std::time::Instant::now();
        // The runtime stays free meanwhile: a timer fires on time while the write waits.
        let (written, ticked) = tokio::join!(store.append_event(step(&run, 2, 1, Some("a"))), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            started.elapsed()
        });
        written.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "the write did not wait for the lock"
        );
        assert!(
            ticked < Duration::from_millis(250),
            "the runtime was blocked: {ticked:?}"
        );
        holder.join().unwrap();
        assert_eq!(store.run(&run).await.unwrap().unwrap().step_count, 1);
    }
}
