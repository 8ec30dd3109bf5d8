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
use tokio::sync::oneshot;
use weft_app::wire::{EventKind, RunStatus};

use super::{
    as_i64, count, final_state_of, fork_from_row, now_millis, Deleted, EventRecord, GraphListing, Job, Millis, NewRun,
    Resolution, Resolved, RunEffect, RunFilter, Store, StoreError, StoredEvent, StoredGraph, StoredInterrupt,
    StoredRun, StoredToken, Write,
};
use crate::ids::{GraphId, OwnerId, RunId};

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
    (9, include_str!("../../migrations/sqlite/0009_cancel_requests.sql")),
    (10, include_str!("../../migrations/sqlite/0010_principals.sql")),
    (11, include_str!("../../migrations/sqlite/0011_forks.sql")),
    (12, include_str!("../../migrations/sqlite/0012_interrupts.sql")),
    (13, include_str!("../../migrations/sqlite/0013_frontiers.sql")),
    (14, include_str!("../../migrations/sqlite/0014_usage.sql")),
];

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
        let started = std::time::Instant::now();
        match commit(conn, &batch) {
            Ok(()) => {
                crate::meters::store_commit("sqlite", batch.len(), started.elapsed());
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

/// Checkpoints the log whenever woken, until the store is gone, on a connection of its
/// own. Two passes: the first copies the log as it stands while commits go on (they
/// append behind it); the second, holding the writer's connection, copies only what they
/// appended meanwhile, so the whole log is copied and the next commit starts it over
/// rather than growing it. Commits wait only for that short second pass. Should commits
/// outpace the copying, the writer's own automatic checkpoint (`wal_autocheckpoint`)
/// holds them back at about 80 MB of log.
fn checkpoint_loop(writer: Weak<Writer>, wake: Receiver<()>, conn: rusqlite::Connection) {
    let checkpoint = || {
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %err, "checkpoint failed");
        }
    };
    while wake.recv().is_ok() {
        let Some(writer) = writer.upgrade() else { return };
        writer.unchecked.store(0, Ordering::Relaxed);
        checkpoint();
        {
            let _writing = lock(&writer.conn);
            checkpoint();
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
///
/// Foreign keys are off while migrating (SQLite ignores the switch inside a transaction):
/// a migration that rebuilds a table others refer to drops it first. Each migration checks
/// every reference before it commits instead.
fn migrate(conn: &mut rusqlite::Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let migrated = migrate_each(conn);
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrated
}

fn migrate_each(conn: &mut rusqlite::Connection) -> Result<(), StoreError> {
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
        let dangling = tx.prepare("PRAGMA foreign_key_check")?.exists([])?;
        if dangling {
            return Err(StoreError::Migration(format!(
                "migration {next} would leave references to missing rows"
            )));
        }
        tx.pragma_update(None, "user_version", next)?;
        tx.commit()?;
    }
}

/// Runs `step` again while the database answers busy, for up to [`BUSY_TIMEOUT`].
fn retry_while_busy<T>(mut step: impl FnMut() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match step() {
            Err(err) if is_busy(&err) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
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
        // Switching a new file to WAL, and migrating it, can meet another process doing the
        // same; SQLite answers some of those clashes "busy" without waiting, so wait here.
        retry_while_busy(|| Ok(writer.pragma_update(None, "journal_mode", "WAL")?))?;
        retry_while_busy(|| migrate(&mut writer))?;
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
        let checkpointer = connect(&path)?;
        std::thread::Builder::new()
            .name("weft-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(weak, wake, checkpointer))
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

fn apply(conn: &rusqlite::Connection, write: &Write) -> Result<(), StoreError> {
    match write {
        Write::Graph(graph) => {
            conn.prepare_cached(
                "INSERT INTO graphs (id, name, spec, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                graph.id.as_str(),
                graph.name,
                graph.spec,
                graph.created_at,
                graph.created_by
            ])?;
        }
        Write::Run(run) => {
            conn.prepare_cached(
                "INSERT INTO runs (id, graph_id, status, next_node, step_count, max_steps, \
                 created_at, updated_at, owner, lease_until, created_by, forked_from, forked_at_step, frontier) \
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                run.id.as_str(),
                run.graph_id.as_str(),
                run.status.as_str(),
                run.next_node,
                i64::from(run.max_steps),
                run.created_at,
                run.owner.as_ref().map(OwnerId::as_str),
                run.lease_until,
                run.created_by,
                run.forked_from.as_ref().map(|fork| fork.run.as_str()),
                run.forked_from.as_ref().map(|fork| as_i64(fork.step)),
                run.frontier
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
    let status = event.effect.status_after();
    let (run_id, owner, now) = (event.run_id.as_str(), event.owner.as_str(), now_millis());
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
        RunEffect::Checkpoint {
            step_count,
            next_node,
            frontier,
            usage,
        } => {
            let usage = usage.unwrap_or_default();
            conn.prepare_cached(
                "UPDATE runs SET next_node = ?1, step_count = ?2, updated_at = ?3, frontier = ?6, \
                 prompt_tokens = prompt_tokens + ?7, completion_tokens = completion_tokens + ?8, \
                 cost_usd = cost_usd + ?9 WHERE id = ?4 AND owner = ?5 AND status = 'running'",
            )?
            .execute(params![
                next_node,
                as_i64(*step_count),
                now,
                run_id,
                owner,
                frontier,
                as_i64(usage.prompt_tokens),
                as_i64(usage.completion_tokens),
                usage.cost_usd.unwrap_or(0.0)
            ])? == 1
        }
        RunEffect::Waiting {
            step_count,
            next_node,
            frontier,
            interrupts,
        } => {
            let waiting = conn
                .prepare_cached(
                    "UPDATE runs SET status = 'waiting', next_node = ?1, step_count = ?2, owner = NULL, \
                     lease_until = NULL, updated_at = ?3, frontier = ?6 WHERE id = ?4 AND owner = ?5 \
                     AND status = 'running' AND cancel_requested = 0",
                )?
                .execute(params![next_node, as_i64(*step_count), now, run_id, owner, frontier])?
                == 1;
            for interrupt in interrupts.iter().filter(|_| waiting) {
                conn.prepare_cached(
                    "INSERT INTO run_interrupts (id, run_id, node, step, request, deadline, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    interrupt.id,
                    run_id,
                    interrupt.node,
                    as_i64(interrupt.step),
                    interrupt.request,
                    interrupt.deadline,
                    now
                ])?;
            }
            waiting
        }
        RunEffect::Ended {
            transition,
            steps,
            error,
        } => {
            conn.prepare_cached(
                "UPDATE runs SET status = ?1, step_count = ?2, error = ?3, next_node = NULL, \
                 updated_at = ?4, finished_at = ?4, lease_until = NULL WHERE id = ?5 AND owner = ?6 AND status = ?7 \
                 AND (cancel_requested = 0 OR ?1 = 'cancelled')",
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
        // Ours, in the expected status, but asked to stop: it may only end cancelled.
        if let Some(from) = event.effect.refused_when_cancelled() {
            let asked = conn
                .prepare_cached(
                    "SELECT 1 FROM runs WHERE id = ?1 AND owner = ?2 AND status = ?3 AND cancel_requested = 1",
                )?
                .exists(params![run_id, owner, from.as_str()])?;
            if asked {
                return Err(StoreError::CancelRequested(event.run_id.clone()));
            }
        }
        return Err(event.not_owned());
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

/// Resolves a pending question, and queues its run when no other is pending.
fn resolve(conn: &rusqlite::Connection, resolution: &Resolution) -> Result<Resolved, StoreError> {
    let run_id = resolution.run_id.as_str();
    let answered =
        conn.prepare_cached(
            "UPDATE run_interrupts SET resolved_at = ?1, answer = ?2, timed_out = ?3, resolved_by = ?4 \
             WHERE id = ?5 AND run_id = ?6 AND resolved_at IS NULL \
             AND EXISTS (SELECT 1 FROM runs WHERE id = ?6 AND status = 'waiting')",
        )?
        .execute(params![
            resolution.at,
            resolution.answer,
            resolution.answer.is_none(),
            resolution.by,
            resolution.interrupt_id,
            run_id
        ])? == 1;
    if !answered {
        return Ok(Resolved::NotPending);
    }
    let pending = conn
        .prepare_cached("SELECT 1 FROM run_interrupts WHERE run_id = ?1 AND resolved_at IS NULL")?
        .exists([run_id])?;
    if pending {
        return Ok(Resolved::StillWaiting);
    }
    conn.prepare_cached(
        "UPDATE runs SET status = 'queued', owner = NULL, lease_until = NULL, updated_at = ?1 \
         WHERE id = ?2 AND status = 'waiting'",
    )?
    .execute(params![resolution.at, run_id])?;
    Ok(Resolved::Queued)
}

fn interrupt_from_row(row: &Row<'_>) -> Result<StoredInterrupt, StoreError> {
    Ok(StoredInterrupt {
        id: row.get("id")?,
        run_id: RunId::from(row.get::<_, String>("run_id")?),
        node: row.get("node")?,
        step: count(row.get("step")?),
        request: row.get("request")?,
        deadline: row.get("deadline")?,
        created_at: row.get("created_at")?,
        resolved_at: row.get("resolved_at")?,
        answer: row.get("answer")?,
        timed_out: row.get("timed_out")?,
        resolved_by: row.get("resolved_by")?,
    })
}

fn run_from_row(row: &Row<'_>) -> Result<StoredRun, StoreError> {
    let status: String = row.get("status")?;
    let status = RunStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("run status `{status}`")))?;
    // An ended run's final state is its `end` event's (runs ended before 2026-11-30 also
    // kept a copy in their row).
    let mut final_state: Option<String> = row.get("final_state")?;
    if final_state.is_none() && status.is_terminal() {
        let end: Option<String> = row.get("end_event")?;
        final_state = end.as_deref().map(final_state_of).transpose()?;
    }
    Ok(StoredRun {
        id: RunId::from(row.get::<_, String>("id")?),
        graph_id: GraphId::from(row.get::<_, String>("graph_id")?),
        graph_name: row.get("graph_name")?,
        status,
        initial_state: row.get("initial_state")?,
        final_state,
        next_node: row.get("next_node")?,
        frontier: row.get("frontier")?,
        step_count: count(row.get("step_count")?),
        last_seq: count(row.get("last_seq")?),
        max_steps: u32::try_from(row.get::<_, i64>("max_steps")?).unwrap_or(0),
        error: row.get("error")?,
        created_at: row.get("created_at")?,
        finished_at: row.get("finished_at")?,
        cancel_requested: row.get("cancel_requested")?,
        created_by: row.get("created_by")?,
        forked_from: fork_from_row(row.get("forked_from")?, row.get("forked_at_step")?),
        usage: super::usage_from_row(
            row.get("prompt_tokens")?,
            row.get("completion_tokens")?,
            row.get("cost_usd")?,
        ),
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
                           (SELECT initial_state FROM run_inputs i WHERE i.run_id = runs.id) AS initial_state, final_state, next_node, frontier, step_count, max_steps, prompt_tokens, completion_tokens, cost_usd, \
                           error, created_at, finished_at, cancel_requested, created_by, forked_from, forked_at_step, \
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

/// Deletes the runs `condition` (on `runs`) picks, their events and inputs first; answers
/// how many runs.
fn delete_runs_where(
    conn: &rusqlite::Connection,
    condition: &str,
    params: impl rusqlite::Params + Copy,
) -> Result<u64, StoreError> {
    let ids = format!("SELECT id FROM runs WHERE {condition}");
    conn.prepare_cached(&format!("DELETE FROM run_events WHERE run_id IN ({ids})"))?
        .execute(params)?;
    conn.prepare_cached(&format!("DELETE FROM run_interrupts WHERE run_id IN ({ids})"))?
        .execute(params)?;
    conn.prepare_cached(&format!("DELETE FROM run_inputs WHERE run_id IN ({ids})"))?
        .execute(params)?;
    let runs = conn
        .prepare_cached(&format!("DELETE FROM runs WHERE {condition}"))?
        .execute(params)?;
    Ok(runs as u64)
}

const TOKEN_COLUMNS: &str = "id, name, secret_hash, admin, read_only, created_at, revoked_at";

fn token_from_row(row: &Row<'_>) -> Result<StoredToken, StoreError> {
    Ok(StoredToken {
        id: row.get("id")?,
        name: row.get("name")?,
        secret_hash: row.get("secret_hash")?,
        admin: row.get("admin")?,
        read_only: row.get("read_only")?,
        created_at: row.get("created_at")?,
        revoked_at: row.get("revoked_at")?,
    })
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
                .prepare_cached("SELECT id, name, spec, created_at, created_by FROM graphs WHERE id = ?1")?
                .query_row([id], |row| {
                    Ok(StoredGraph {
                        id: GraphId::from(row.get::<_, String>("id")?),
                        name: row.get("name")?,
                        spec: row.get("spec")?,
                        created_at: row.get("created_at")?,
                        created_by: row.get("created_by")?,
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
                     AND (?3 IS NULL OR id < ?3) AND (?5 IS NULL OR created_by = ?5) \
                     AND (?6 IS NULL OR created_at >= ?6) AND (?7 IS NULL OR created_at < ?7) ORDER BY id DESC LIMIT ?4"
                ),
                params![
                    filter.graph_id.as_ref().map(GraphId::as_str),
                    filter.status.map(RunStatus::as_str),
                    filter.before.as_ref().map(RunId::as_str),
                    i64::from(filter.limit),
                    filter.created_by,
                    filter.created_since,
                    filter.created_until
                ],
                run_from_row,
            )
        })
        .await
    }

    async fn list_graphs(
        &self,
        before: Option<&GraphId>,
        created_by: Option<&str>,
        limit: u32,
    ) -> Result<Vec<GraphListing>, StoreError> {
        let before = before.map(|id| id.as_str().to_owned());
        let created_by = created_by.map(str::to_owned);
        self.read(move |conn| {
            // Ids are UUID v7, so id order is creation order and an id is a cursor.
            rows(
                conn,
                "SELECT id, name, created_at, \
                 (SELECT COUNT(*) FROM json_each(graphs.spec, '$.nodes')) AS nodes \
                 FROM graphs WHERE (?1 IS NULL OR id < ?1) AND (?3 IS NULL OR created_by = ?3) \
                 ORDER BY id DESC LIMIT ?2",
                params![before, i64::from(limit), created_by],
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
        limit: u32,
    ) -> Result<Vec<StoredRun>, StoreError> {
        let owner = owner.as_str().to_owned();
        self.read(move |conn| {
            // One statement (SQLite has one writer at a time): each expired run is claimed
            // by exactly one instance.
            let claimed = rows(
                conn,
                "UPDATE runs SET owner = ?1, lease_until = ?2, status = 'queued', updated_at = ?3 \
                 WHERE id IN (SELECT id FROM runs WHERE status IN ('queued', 'running') \
                 AND (owner IS NULL OR lease_until IS NULL OR lease_until < ?3) ORDER BY id LIMIT ?4) \
                 RETURNING id",
                params![owner, lease_until, now, i64::from(limit)],
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

    async fn claim_run(
        &self,
        id: &RunId,
        owner: &OwnerId,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Option<StoredRun>, StoreError> {
        let (id, owner) = (id.as_str().to_owned(), owner.as_str().to_owned());
        self.read(move |conn| {
            let claimed = conn
                .prepare_cached(
                    "UPDATE runs SET owner = ?1, lease_until = ?2, status = 'queued', updated_at = ?3 \
                     WHERE id = ?4 AND status IN ('queued', 'running', 'waiting') \
                     AND (owner IS NULL OR lease_until IS NULL OR lease_until < ?3)",
                )?
                .execute(params![owner, lease_until, now, id])?;
            if claimed == 1 {
                run_by_id(conn, &id)
            } else {
                Ok(None)
            }
        })
        .await
    }

    async fn waiting_runs(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            let waiting: i64 = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM runs WHERE status = 'queued' AND lease_until IS NULL AND owner IS NULL",
                )?
                .query_row([], |row| row.get(0))?;
            Ok(count(waiting))
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

    async fn request_cancel(&self, id: &RunId) -> Result<bool, StoreError> {
        let id = id.as_str().to_owned();
        self.read(move |conn| {
            let asked = conn
                .prepare_cached(
                    "UPDATE runs SET cancel_requested = 1 WHERE id = ?1 AND status IN ('queued', 'running', 'waiting')",
                )?
                .execute([id])?;
            Ok(asked == 1)
        })
        .await
    }

    async fn cancels_for(&self, owner: &OwnerId) -> Result<Vec<RunId>, StoreError> {
        let owner = owner.as_str().to_owned();
        self.read(move |conn| {
            rows(
                conn,
                "SELECT id FROM runs WHERE status IN ('queued', 'running') AND owner = ?1 AND cancel_requested = 1",
                [owner],
                |row| Ok(RunId::from(row.get::<_, String>("id")?)),
            )
        })
        .await
    }

    async fn interrupts(&self, run_id: &RunId) -> Result<Vec<StoredInterrupt>, StoreError> {
        let run_id = run_id.as_str().to_owned();
        self.read(move |conn| {
            rows(
                conn,
                "SELECT * FROM run_interrupts WHERE run_id = ?1 ORDER BY step, created_at",
                [&run_id],
                interrupt_from_row,
            )
        })
        .await
    }

    async fn resolve_interrupt(&self, resolution: Resolution) -> Result<Resolved, StoreError> {
        self.read(move |conn| {
            let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
            let resolved = resolve(&tx, &resolution)?;
            tx.commit()?;
            Ok(resolved)
        })
        .await
    }

    async fn expire_interrupts(&self, now: Millis, limit: u32) -> Result<u64, StoreError> {
        self.read(move |conn| {
            let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
            let due = rows(
                &tx,
                "SELECT id, run_id FROM run_interrupts WHERE resolved_at IS NULL AND deadline IS NOT NULL \
                 AND deadline < ?1 ORDER BY deadline LIMIT ?2",
                params![now, limit],
                |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
            )?;
            let mut queued = 0;
            for (interrupt_id, run_id) in due {
                let resolution = Resolution {
                    run_id: RunId::from(run_id),
                    interrupt_id,
                    answer: None,
                    by: None,
                    at: now,
                };
                if resolve(&tx, &resolution)? == Resolved::Queued {
                    queued += 1;
                }
            }
            tx.commit()?;
            Ok(queued)
        })
        .await
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    async fn delete_run(&self, id: &RunId) -> Result<Deleted, StoreError> {
        let id = id.as_str().to_owned();
        self.read(move |conn| {
            // Holding the write lock from the start: what is read is what is deleted.
            let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
            let status: Option<String> = tx
                .prepare_cached("SELECT status FROM runs WHERE id = ?1")?
                .query_row([&id], |row| row.get(0))
                .optional()?;
            let deleted = match status.as_deref().map(RunStatus::parse) {
                None => Deleted::NotFound,
                Some(Some(status)) if status.is_terminal() => {
                    delete_runs_where(&tx, "id = ?1", [&id])?;
                    Deleted::Done
                }
                Some(_) => Deleted::Live,
            };
            tx.commit()?;
            Ok(deleted)
        })
        .await
    }

    async fn delete_graph(&self, id: &GraphId) -> Result<Deleted, StoreError> {
        let id = id.as_str().to_owned();
        self.read(move |conn| {
            let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
            let exists = tx.prepare_cached("SELECT 1 FROM graphs WHERE id = ?1")?.exists([&id])?;
            let live = tx
                .prepare_cached(
                    "SELECT 1 FROM runs WHERE graph_id = ?1 AND status IN ('queued', 'running', 'waiting')",
                )?
                .exists([&id])?;
            let deleted = if !exists {
                Deleted::NotFound
            } else if live {
                Deleted::Live
            } else {
                delete_runs_where(&tx, "graph_id = ?1", [&id])?;
                tx.prepare_cached("DELETE FROM graphs WHERE id = ?1")?.execute([&id])?;
                Deleted::Done
            };
            tx.commit()?;
            Ok(deleted)
        })
        .await
    }

    async fn purge_ended(&self, finished_before: Millis, limit: u32) -> Result<u64, StoreError> {
        self.read(move |conn| {
            let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
            let purged = delete_runs_where(
                &tx,
                "id IN (SELECT id FROM runs WHERE finished_at < ?1 \
                 AND status IN ('completed', 'failed', 'cancelled') ORDER BY finished_at LIMIT ?2)",
                params![finished_before, i64::from(limit)],
            )?;
            tx.commit()?;
            Ok(purged)
        })
        .await
    }

    async fn insert_token(&self, token: StoredToken) -> Result<bool, StoreError> {
        self.read(move |conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO api_tokens (id, name, secret_hash, admin, read_only, created_at, revoked_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                )?
                .execute(params![
                    token.id,
                    token.name,
                    token.secret_hash,
                    token.admin,
                    token.read_only,
                    token.created_at,
                    token.revoked_at
                ])?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn token(&self, id: &str) -> Result<Option<StoredToken>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| {
            Ok(rows(
                conn,
                &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"),
                [id],
                token_from_row,
            )?
            .into_iter()
            .next())
        })
        .await
    }

    async fn tokens(&self) -> Result<Vec<StoredToken>, StoreError> {
        self.read(move |conn| {
            rows(
                conn,
                &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, name"),
                [],
                token_from_row,
            )
        })
        .await
    }

    async fn revoke_token(&self, name: &str, at: Millis) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.read(move |conn| {
            let revoked = conn
                .prepare_cached("UPDATE api_tokens SET revoked_at = ?1 WHERE name = ?2 AND revoked_at IS NULL")?
                .execute(params![at, name])?;
            Ok(revoked > 0)
        })
        .await
    }

    async fn forks_of(&self, id: &RunId, created_by: Option<&str>) -> Result<Vec<RunId>, StoreError> {
        let id = id.as_str().to_owned();
        let created_by = created_by.map(str::to_owned);
        self.read(move |conn| {
            rows(
                conn,
                "SELECT id FROM runs WHERE forked_from = ?1 AND (?2 IS NULL OR created_by = ?2) ORDER BY id",
                params![id, created_by],
                |row| Ok(RunId::from(row.get::<_, String>("id")?)),
            )
        })
        .await
    }

    async fn has_tokens(&self) -> Result<bool, StoreError> {
        self.read(|conn| Ok(conn.prepare_cached("SELECT 1 FROM api_tokens LIMIT 1")?.exists([])?))
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
mod tests;
