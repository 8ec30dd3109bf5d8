//! The embedded SQLite store: one database file, WAL mode, group commits.
//!
//! Reads go through a small sqlx pool. Writes go through one writer thread that owns one
//! rusqlite connection: it takes every write waiting in its queue (up to [`MAX_BATCH`]),
//! applies them with cached prepared statements in one transaction, then answers each
//! caller. Under load many runs' events share one commit and one hand-over between
//! threads (sqlx hands every statement to its worker thread, which profiling showed
//! costing far more than SQLite's own work); alone, an event still commits at once. No
//! transaction is ever held while a node runs.
//!
//! `synchronous = NORMAL` in WAL mode keeps every committed step across a crash of the
//! process (`kill -9`); only a power loss can take back the last commits.

use std::{path::Path, str::FromStr, time::Duration};

use async_trait::async_trait;
use rusqlite::params;
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous},
    ConnectOptions, Connection, Row,
};
use tokio::sync::{mpsc, oneshot};
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
/// Writes waiting for the writer at most; callers beyond it wait for room.
const QUEUE: usize = 4_096;

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
    reads: SqlitePool,
    writes: mpsc::Sender<Job>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(SqliteConnectOptions::new().filename(path)).await
    }

    /// Opens the database a `sqlite:` URL names.
    pub async fn open_url(url: &str) -> Result<Self, StoreError> {
        Self::open_with(SqliteConnectOptions::from_str(url)?).await
    }

    /// Opens the database `options` name, with the settings every connection here uses.
    async fn open_with(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let mut migrator = options.clone().connect().await?;
        sqlx::migrate!("./migrations/sqlite").run(&mut migrator).await?;
        migrator.close().await?;
        let reads = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        let writer = rusqlite::Connection::open(options.get_filename())?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        writer.pragma_update(None, "synchronous", "NORMAL")?;
        writer.pragma_update(None, "foreign_keys", "ON")?;
        writer.busy_timeout(Duration::from_secs(10))?;
        writer.set_prepared_statement_cache_capacity(32);
        let (writes, queue) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("weft-sqlite-writer".into())
            .spawn(move || write_loop(writer, queue))
            .map_err(|err| StoreError::Corrupt(format!("could not start the writer thread: {err}")))?;
        Ok(Self { reads, writes })
    }

    async fn write(&self, write: Write) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        self.writes
            .send(Job { write, done })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Commits queued writes in batches until every sender is gone. Runs on a thread of its
/// own: a batch costs one hand-over from the runtime, not one per statement.
fn write_loop(mut conn: rusqlite::Connection, mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(job) = queue.blocking_recv() {
        batch.push(job);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match commit(&mut conn, &batch) {
            Ok(()) => {
                for job in batch.drain(..) {
                    let _ = job.done.send(Ok(()));
                }
            }
            Err(err) => {
                // One bad write must not fail its neighbours: retry each on its own.
                tracing::warn!(error = %err, size = batch.len(), "batch commit failed; retrying one by one");
                for job in batch.drain(..) {
                    let result = commit(&mut conn, std::slice::from_ref(&job));
                    if let Err(err) = &result {
                        tracing::error!(error = %err, "write failed");
                    }
                    let _ = job.done.send(result);
                }
            }
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
            final_state,
            steps,
            error,
        } => {
            conn.prepare_cached(
                "UPDATE runs SET status = ?1, final_state = ?2, step_count = ?3, error = ?4, next_node = NULL, \
                 updated_at = ?5, finished_at = ?5, lease_until = NULL WHERE id = ?6 AND owner = ?7 AND status = ?8",
            )?
            .execute(params![
                transition.to.as_str(),
                final_state,
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

fn run_from_row(row: &SqliteRow) -> Result<StoredRun, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(StoredRun {
        id: RunId::from(row.try_get::<String, _>("id")?),
        graph_id: GraphId::from(row.try_get::<String, _>("graph_id")?),
        graph_name: row.try_get("graph_name")?,
        status: RunStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("run status `{status}`")))?,
        initial_state: row.try_get("initial_state")?,
        final_state: row.try_get("final_state")?,
        next_node: row.try_get("next_node")?,
        step_count: u64::try_from(row.try_get::<i64, _>("step_count")?).unwrap_or(0),
        last_seq: u64::try_from(row.try_get::<i64, _>("last_seq")?).unwrap_or(0),
        max_steps: u32::try_from(row.try_get::<i64, _>("max_steps")?).unwrap_or(0),
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn event_from_row(row: &SqliteRow) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        seq: u64::try_from(row.try_get::<i64, _>("seq")?).unwrap_or(0),
        kind: {
            let kind: String = row.try_get("kind")?;
            EventKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("event type `{kind}`")))?
        },
        event: row.try_get("event")?,
    })
}

const RUN_COLUMNS: &str = "id, graph_id, status, \
                           (SELECT initial_state FROM run_inputs i WHERE i.run_id = runs.id) AS initial_state, final_state, next_node, step_count, max_steps, \
                           error, created_at, finished_at, \
                           (SELECT name FROM graphs g WHERE g.id = runs.graph_id) AS graph_name, \
                           (SELECT COALESCE(MAX(seq), 0) FROM run_events e WHERE e.run_id = runs.id) AS last_seq";

#[async_trait]
impl Store for SqliteStore {
    async fn insert_graph(&self, graph: StoredGraph) -> Result<(), StoreError> {
        self.write(Write::Graph(graph)).await
    }

    async fn graph(&self, id: &GraphId) -> Result<Option<StoredGraph>, StoreError> {
        let row = sqlx::query("SELECT id, name, spec, created_at FROM graphs WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.reads)
            .await?;
        row.map(|row| {
            Ok(StoredGraph {
                id: GraphId::from(row.try_get::<String, _>("id")?),
                name: row.try_get("name")?,
                spec: row.try_get("spec")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .transpose()
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
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"))
            .bind(id.as_str())
            .fetch_optional(&self.reads)
            .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn run_log(&self, id: &RunId) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT log FROM run_events WHERE run_id = ? ORDER BY seq")
            .bind(id.as_str())
            .fetch_all(&self.reads)
            .await?;
        let mut log = Vec::with_capacity(rows.len());
        for row in rows {
            let lines: String = row.try_get("log")?;
            let lines: Vec<String> =
                serde_json::from_str(&lines).map_err(|err| StoreError::Corrupt(format!("step log: {err}")))?;
            log.extend(lines);
        }
        Ok(log)
    }

    async fn events_after(&self, id: &RunId, after_seq: u64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let rows =
            sqlx::query("SELECT seq, kind, event FROM run_events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?")
                .bind(id.as_str())
                .bind(as_i64(after_seq))
                .bind(i64::from(limit))
                .fetch_all(&self.reads)
                .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn latest_snapshot(&self, id: &RunId, at_most: u64) -> Result<Option<StoredEvent>, StoreError> {
        let row = sqlx::query(
            "SELECT seq, kind, event FROM run_events WHERE run_id = ? AND snapshot = 1 AND seq <= ? \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(id.as_str())
        .bind(as_i64(at_most))
        .fetch_optional(&self.reads)
        .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<StoredRun>, StoreError> {
        // Ids are UUID v7: ordering by id is ordering by creation, and a cursor is an id.
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR graph_id = ?1) AND (?2 IS NULL OR status = ?2) \
             AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
        ))
        .bind(filter.graph_id.as_ref().map(GraphId::as_str))
        .bind(filter.status.map(RunStatus::as_str))
        .bind(filter.before.as_ref().map(RunId::as_str))
        .bind(i64::from(filter.limit))
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn list_graphs(&self, before: Option<&GraphId>, limit: u32) -> Result<Vec<GraphListing>, StoreError> {
        // Ids are UUID v7, so id order is creation order and an id is a cursor.
        let rows = sqlx::query(
            "SELECT id, name, created_at, \
             (SELECT COUNT(*) FROM json_each(graphs.spec, '$.nodes')) AS nodes \
             FROM graphs WHERE (?1 IS NULL OR id < ?1) ORDER BY id DESC LIMIT ?2",
        )
        .bind(before.map(GraphId::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(GraphListing {
                    id: GraphId::from(row.try_get::<String, _>("id")?),
                    name: row.try_get("name")?,
                    nodes: u64::try_from(row.try_get::<i64, _>("nodes")?).unwrap_or(0),
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn claim_expired(
        &self,
        owner: &OwnerId,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<StoredRun>, StoreError> {
        let claimed = sqlx::query(
            "UPDATE runs SET owner = ?1, lease_until = ?2, status = 'queued', updated_at = ?3 \
             WHERE status IN ('queued', 'running') AND (owner IS NULL OR lease_until IS NULL OR lease_until < ?3) \
             RETURNING id",
        )
        .bind(owner.as_str())
        .bind(lease_until)
        .bind(now)
        .fetch_all(&self.reads)
        .await?;
        let mut runs = Vec::with_capacity(claimed.len());
        for row in claimed {
            let id = RunId::from(row.try_get::<String, _>("id")?);
            if let Some(run) = self.run(&id).await? {
                runs.push(run);
            }
        }
        runs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(runs)
    }

    async fn renew_leases(&self, owner: &OwnerId, lease_until: Millis) -> Result<u64, StoreError> {
        let done = sqlx::query("UPDATE runs SET lease_until = ?1 WHERE owner = ?2 AND status IN ('queued', 'running')")
            .bind(lease_until)
            .bind(owner.as_str())
            .execute(&self.reads)
            .await?;
        Ok(done.rows_affected())
    }

    async fn release_runs(&self, owner: &OwnerId) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'queued', owner = NULL, lease_until = NULL, updated_at = ?1 \
             WHERE owner = ?2 AND status IN ('queued', 'running')",
        )
        .bind(now_millis())
        .bind(owner.as_str())
        .execute(&self.reads)
        .await?;
        Ok(done.rows_affected())
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

    /// A fresh store holding one graph and one running run of it (event 1 written).
    async fn store_with_run() -> (tempfile::TempDir, SqliteStore, RunId) {
        let (dir, store) = store().await;
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
                event: r#"{"seq":4}"#.into(),
                snapshot: false,
                effect: RunEffect::Ended {
                    transition: Transition::new(RunStatus::Running, RunStatus::Completed).unwrap(),
                    final_state: r#"{"n":2}"#.into(),
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
            event: format!(r#"{{"seq":{seq}}}"#),
            snapshot: false,
            effect: RunEffect::Ended {
                transition: Transition::new(RunStatus::Running, status).unwrap(),
                final_state: r#"{"n":1}"#.into(),
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
        assert!(matches!(clash, Err(StoreError::Write(_))));
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
            final_state: "{}".into(),
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
}
