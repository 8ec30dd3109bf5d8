//! The Postgres store: one database shared by any number of Weft instances.
//!
//! The same [`Store`] as SQLite, with the same semantics:
//!
//! - **Group commits.** Writes queue for a few writer tasks; each takes every write
//!   waiting (up to [`MAX_BATCH`]) and commits them in one transaction, so under load
//!   many runs' events share one commit (and one `fsync` on the server).
//! - **Conditional transitions.** Every write is conditional on the run's owner and
//!   status; the check takes the run's row lock, so it cannot interleave with another
//!   instance claiming the run.
//! - **Claims.** An instance claims expired or ownerless runs with `FOR UPDATE SKIP
//!   LOCKED`: two instances claiming at once each get different runs, and neither waits.
//!
//! - **Notices.** Every instance `LISTEN`s on three channels, and hears what the others
//!   do as they do it (see [`Notice`]):
//!   - `weft_cancel`: a run's id, sent in the commit that sets its `cancel_requested`;
//!     the instance executing the run stops it.
//!   - `weft_queued`: a run waits to be claimed; an instance with a free slot claims it.
//!   - `weft_events`: lines of `<run id> <seq> <ended>`, sent after each commit of
//!     events; a stream or a `wait: true` request on another instance reads them from the
//!     store. They go out after the commit, from one notifier task: a `NOTIFY` inside the
//!     commit would make every commit take Postgres's one notify lock, in turn.
//!
//!   A notice is only a wake-up: one lost (an instance dies between its commit and its
//!   notice) costs a wait until the listener's own slow poll, never an event.
//!
//! Migrations are sqlx's, under `migrations/postgres`; sqlx holds an advisory lock while
//! it applies them, so instances starting together migrate once.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::{
    postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow},
    Postgres, Row, Transaction,
};
use tokio::sync::{mpsc, oneshot, Mutex};
use weft_app::wire::{EventKind, RunStatus};

use super::{
    as_i64, count, final_state_of, fork_from_row, now_millis, Deleted, EventRecord, GraphListing, Job, Millis, NewRun,
    Notice, Resolution, Resolved, RunEffect, RunFilter, Store, StoreError, StoredEvent, StoredGraph, StoredInterrupt,
    StoredRun, StoredToken, Write,
};
use crate::ids::{GraphId, OwnerId, RunId};

/// The most writes one commit takes.
pub const MAX_BATCH: usize = 256;
/// Writes waiting for the writers at most; callers beyond it wait for room.
const QUEUE: usize = 4_096;
/// Writer tasks: commits in flight at once (each on a connection of its own).
const WRITERS: usize = 4;
/// Connections in the pool: the writers' and the reads'.
const CONNECTIONS: u32 = 12;

/// The channel cancels are announced on.
const CANCEL_CHANNEL: &str = "weft_cancel";
/// The channel runs waiting to be claimed are announced on.
const QUEUED_CHANNEL: &str = "weft_queued";
/// The channel committed events are announced on.
const EVENTS_CHANNEL: &str = "weft_events";
/// A `NOTIFY` payload's size at most (Postgres allows a little under 8000 bytes).
const PAYLOAD: usize = 7_000;
/// Notices heard and not yet read that an instance keeps, per listener; one that falls
/// further behind asks the store instead.
const NOTICES: usize = 4_096;

/// The Postgres [`Store`].
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    writes: mpsc::Sender<Job>,
    notices: tokio::sync::broadcast::Sender<Notice>,
}

impl PgStore {
    /// Connects to the database `url` names (`postgres://…`) and brings its schema up to
    /// date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(PgConnectOptions::from_str(url)?).await
    }

    /// Connects with `options` and brings the schema up to date.
    pub async fn open_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(CONNECTIONS)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|err| StoreError::Migration(err.to_string()))?;
        let (writes, queue) = mpsc::channel(QUEUE);
        let queue = std::sync::Arc::new(Mutex::new(queue));
        let (outgoing, told) = mpsc::channel(QUEUE);
        for _ in 0..WRITERS {
            tokio::spawn(write_loop(
                pool.clone(),
                std::sync::Arc::clone(&queue),
                outgoing.clone(),
            ));
        }
        tokio::spawn(notify_loop(pool.clone(), told));
        let (notices, _) = tokio::sync::broadcast::channel(NOTICES);
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
        listener
            .listen_all([CANCEL_CHANNEL, QUEUED_CHANNEL, EVENTS_CHANNEL])
            .await?;
        tokio::spawn(listen(listener, notices.downgrade()));
        Ok(Self { pool, writes, notices })
    }

    /// The connection pool, for what the store does not cover (the tests' clean-up).
    pub fn pool(&self) -> &PgPool {
        &self.pool
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

/// Commits queued writes in batches until every sender is gone. Several of these share
/// one queue: the one holding it takes a batch, lets go, and commits. What each commit
/// wrote is passed to the notifier, to tell the other instances.
async fn write_loop(
    pool: PgPool,
    queue: std::sync::Arc<Mutex<mpsc::Receiver<Job>>>,
    outgoing: mpsc::Sender<Vec<Notice>>,
) {
    loop {
        let batch = {
            let mut queue = queue.lock().await;
            let Some(job) = queue.recv().await else { return };
            let mut batch = vec![job];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            batch
        };
        let mut committed = Vec::with_capacity(batch.len());
        match commit(&pool, &batch).await {
            Ok(()) => {
                for job in batch {
                    committed.extend(notice_of(&job.write));
                    let _ = job.done.send(Ok(()));
                }
            }
            Err(err) => {
                // One bad write must not fail its neighbours: retry each on its own.
                tracing::warn!(error = %err, size = batch.len(), "batch commit failed; retrying one by one");
                for job in batch {
                    let result = commit(&pool, std::slice::from_ref(&job)).await;
                    match &result {
                        Ok(()) => committed.extend(notice_of(&job.write)),
                        Err(err) => tracing::error!(error = %err, "write failed"),
                    }
                    let _ = job.done.send(result);
                }
            }
        }
        // Full: the notifier is behind, and the listeners' polls find what it drops.
        if !committed.is_empty() {
            let _ = outgoing.try_send(committed);
        }
    }
}

/// What the other instances are told of a committed write.
fn notice_of(write: &Write) -> Vec<Notice> {
    let events = |run_id: &RunId, last: Option<&EventRecord>, first: u64| Notice::Events {
        run_id: run_id.clone(),
        seq: last.map_or(first, |event| event.seq),
        ended: last.is_some_and(|event| event.kind == EventKind::End),
    };
    match write {
        Write::Graph(_) => Vec::new(),
        Write::Run(run) => {
            let mut notices = vec![events(&run.id, run.then.last(), 1)];
            if run.owner.is_none() {
                notices.push(Notice::Queued);
            }
            notices
        }
        Write::Event(event) => vec![events(&event.run_id, Some(event), event.seq)],
        Write::Events(list) => list
            .last()
            .map(|last| vec![events(&last.run_id, Some(last), last.seq)])
            .unwrap_or_default(),
    }
}

/// Sends the notices of committed writes, as few `NOTIFY`s as fit them, until the writers
/// are gone.
async fn notify_loop(pool: PgPool, mut told: mpsc::Receiver<Vec<Notice>>) {
    while let Some(mut notices) = told.recv().await {
        while let Ok(more) = told.try_recv() {
            notices.extend(more);
        }
        if let Err(err) = notify(&pool, &notices).await {
            tracing::warn!(error = %err, "could not send notices; the listeners' polls find what they say");
        }
    }
}

async fn notify(pool: &PgPool, notices: &[Notice]) -> Result<(), sqlx::Error> {
    let mut payloads = vec![String::new()];
    let mut queued = false;
    for notice in notices {
        match notice {
            Notice::Events { run_id, seq, ended } => {
                let line = format!("{run_id} {seq} {}", u8::from(*ended));
                let payload = payloads.last_mut().filter(|p| p.len() + line.len() < PAYLOAD);
                match payload {
                    Some(payload) => {
                        if !payload.is_empty() {
                            payload.push('\n');
                        }
                        payload.push_str(&line);
                    }
                    None => payloads.push(line),
                }
            }
            Notice::Queued => queued = true,
            Notice::Cancel(_) => {}
        }
    }
    payloads.retain(|payload| !payload.is_empty());
    if !payloads.is_empty() {
        // One statement: one round trip, one (tiny) transaction.
        sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
            .bind(EVENTS_CHANNEL)
            .bind(&payloads)
            .execute(pool)
            .await?;
    }
    if queued {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(QUEUED_CHANNEL)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Passes on every notice heard, until the store is gone (it holds the only strong
/// sender). What is missed while the connection is down, the listeners' polls find.
async fn listen(mut listener: sqlx::postgres::PgListener, notices: tokio::sync::broadcast::WeakSender<Notice>) {
    loop {
        match listener.recv().await {
            Ok(notice) => {
                let Some(notices) = notices.upgrade() else { return };
                let payload = notice.payload();
                // No receiver is no error: the notice is for no one here.
                match notice.channel() {
                    CANCEL_CHANNEL => drop(notices.send(Notice::Cancel(RunId::from(payload.to_owned())))),
                    QUEUED_CHANNEL => drop(notices.send(Notice::Queued)),
                    _ => {
                        for line in payload.lines() {
                            if let Some(notice) = events_notice(line) {
                                drop(notices.send(notice));
                            }
                        }
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "lost the notices; reconnecting");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// A `weft_events` line, `<run id> <seq> <ended>`.
fn events_notice(line: &str) -> Option<Notice> {
    let mut parts = line.split(' ');
    let (run_id, seq, ended) = (parts.next()?, parts.next()?.parse().ok()?, parts.next()?);
    Some(Notice::Events {
        run_id: RunId::from(run_id.to_owned()),
        seq,
        ended: ended == "1",
    })
}

async fn commit(pool: &PgPool, batch: &[Job]) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let mut tx = pool.begin().await?;
    for job in batch {
        apply(&mut tx, &job.write).await?;
    }
    tx.commit().await?;
    crate::meters::store_commit("postgres", batch.len(), started.elapsed());
    Ok(())
}

async fn apply(tx: &mut Transaction<'_, Postgres>, write: &Write) -> Result<(), StoreError> {
    match write {
        Write::Graph(graph) => {
            sqlx::query("INSERT INTO graphs (id, name, spec, created_at, created_by) VALUES ($1, $2, $3, $4, $5)")
                .bind(graph.id.as_str())
                .bind(&graph.name)
                .bind(&graph.spec)
                .bind(graph.created_at)
                .bind(&graph.created_by)
                .execute(&mut **tx)
                .await?;
        }
        Write::Run(run) => {
            sqlx::query(
                "INSERT INTO runs (id, graph_id, status, next_node, step_count, max_steps, created_at, updated_at, \
                 owner, lease_until, created_by, forked_from, forked_at_step, frontier) \
                 VALUES ($1, $2, $3, $4, 0, $5, $6, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(run.id.as_str())
            .bind(run.graph_id.as_str())
            .bind(run.status.as_str())
            .bind(&run.next_node)
            .bind(i64::from(run.max_steps))
            .bind(run.created_at)
            .bind(run.owner.as_ref().map(OwnerId::as_str))
            .bind(run.lease_until)
            .bind(&run.created_by)
            .bind(run.forked_from.as_ref().map(|fork| fork.run.as_str()))
            .bind(run.forked_from.as_ref().map(|fork| as_i64(fork.step)))
            .bind(&run.frontier)
            .execute(&mut **tx)
            .await?;
            sqlx::query("INSERT INTO run_inputs (run_id, initial_state) VALUES ($1, $2)")
                .bind(run.id.as_str())
                .bind(&run.initial_state)
                .execute(&mut **tx)
                .await?;
            insert_event(
                tx,
                &run.id,
                1,
                EventKind::RunQueued,
                None,
                "[]",
                &run.event,
                run.status,
                false,
            )
            .await?;
            for event in &run.then {
                apply_event(tx, event).await?;
            }
        }
        Write::Event(event) => apply_event(tx, event).await?,
        Write::Events(events) => {
            for event in events {
                apply_event(tx, event).await?;
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn insert_event(
    tx: &mut Transaction<'_, Postgres>,
    run_id: &RunId,
    seq: u64,
    kind: EventKind,
    node: Option<&str>,
    log: &str,
    event: &str,
    status: RunStatus,
    snapshot: bool,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO run_events (run_id, seq, kind, node, status, log, event, snapshot) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(run_id.as_str())
    .bind(as_i64(seq))
    .bind(kind.as_str())
    .bind(node.unwrap_or(""))
    .bind(status.as_str())
    .bind(log)
    .bind(event)
    .bind(snapshot)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn apply_event(tx: &mut Transaction<'_, Postgres>, event: &EventRecord) -> Result<(), StoreError> {
    let status = event.effect.status_after();
    let (run_id, owner, now) = (event.run_id.as_str(), event.owner.as_str(), now_millis());
    // Each effect is one conditional statement, on the owner and on the status the run
    // must be in, holding the run's row lock to the commit. No row: the run is not ours.
    let changed = match &event.effect {
        RunEffect::None => {
            sqlx::query("SELECT 1 FROM runs WHERE id = $1 AND owner = $2 AND status IN ('queued', 'running') FOR SHARE")
                .bind(run_id)
                .bind(owner)
                .fetch_optional(&mut **tx)
                .await?
                .is_some()
        }
        RunEffect::Started => {
            sqlx::query(
                "UPDATE runs SET status = 'running', updated_at = $1 WHERE id = $2 AND owner = $3 \
                 AND status IN ('queued', 'running')",
            )
            .bind(now)
            .bind(run_id)
            .bind(owner)
            .execute(&mut **tx)
            .await?
            .rows_affected()
                == 1
        }
        RunEffect::Checkpoint {
            step_count,
            next_node,
            frontier,
            usage,
        } => {
            let usage = usage.unwrap_or_default();
            sqlx::query(
                "UPDATE runs SET next_node = $1, step_count = $2, updated_at = $3, frontier = $6, \
                 prompt_tokens = prompt_tokens + $7, completion_tokens = completion_tokens + $8, \
                 cost_usd = cost_usd + $9 WHERE id = $4 AND owner = $5 AND status = 'running'",
            )
            .bind(next_node)
            .bind(as_i64(*step_count))
            .bind(now)
            .bind(run_id)
            .bind(owner)
            .bind(frontier)
            .bind(as_i64(usage.prompt_tokens))
            .bind(as_i64(usage.completion_tokens))
            .bind(usage.cost_usd.unwrap_or(0.0))
            .execute(&mut **tx)
            .await?
            .rows_affected()
                == 1
        }
        RunEffect::Waiting {
            step_count,
            next_node,
            frontier,
            interrupts,
        } => {
            let waiting = sqlx::query(
                "UPDATE runs SET status = 'waiting', next_node = $1, step_count = $2, owner = NULL, \
                 lease_until = NULL, updated_at = $3, frontier = $6 WHERE id = $4 AND owner = $5 \
                 AND status = 'running' AND NOT cancel_requested",
            )
            .bind(next_node)
            .bind(as_i64(*step_count))
            .bind(now)
            .bind(run_id)
            .bind(owner)
            .bind(frontier)
            .execute(&mut **tx)
            .await?
            .rows_affected()
                == 1;
            for interrupt in interrupts.iter().filter(|_| waiting) {
                sqlx::query(
                    "INSERT INTO run_interrupts (id, run_id, node, step, request, deadline, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&interrupt.id)
                .bind(run_id)
                .bind(&interrupt.node)
                .bind(as_i64(interrupt.step))
                .bind(&interrupt.request)
                .bind(interrupt.deadline)
                .bind(now)
                .execute(&mut **tx)
                .await?;
            }
            waiting
        }
        RunEffect::Ended {
            transition,
            steps,
            error,
        } => {
            sqlx::query(
                "UPDATE runs SET status = $1, step_count = $2, error = $3, next_node = NULL, updated_at = $4, \
                 finished_at = $4, lease_until = NULL WHERE id = $5 AND owner = $6 AND status = $7 \
                 AND (NOT cancel_requested OR $1 = 'cancelled')",
            )
            .bind(transition.to.as_str())
            .bind(as_i64(*steps))
            .bind(error)
            .bind(now)
            .bind(run_id)
            .bind(owner)
            .bind(transition.from.as_str())
            .execute(&mut **tx)
            .await?
            .rows_affected()
                == 1
        }
    };
    if !changed {
        // Ours, in the expected status, but asked to stop: it may only end cancelled.
        if let Some(from) = event.effect.refused_when_cancelled() {
            let asked =
                sqlx::query("SELECT 1 FROM runs WHERE id = $1 AND owner = $2 AND status = $3 AND cancel_requested")
                    .bind(run_id)
                    .bind(owner)
                    .bind(from.as_str())
                    .fetch_optional(&mut **tx)
                    .await?
                    .is_some();
            if asked {
                return Err(StoreError::CancelRequested(event.run_id.clone()));
            }
        }
        return Err(event.not_owned());
    }
    insert_event(
        tx,
        &event.run_id,
        event.seq,
        event.kind,
        event.node.as_deref(),
        &event.log,
        &event.event,
        status,
        event.snapshot,
    )
    .await
}

/// Deletes the runs `ids` name, their events and inputs first.
async fn delete_runs(tx: &mut Transaction<'_, Postgres>, ids: &[String]) -> Result<(), StoreError> {
    for statement in [
        "DELETE FROM run_events WHERE run_id = ANY($1)",
        "DELETE FROM run_interrupts WHERE run_id = ANY($1)",
        "DELETE FROM run_inputs WHERE run_id = ANY($1)",
        "DELETE FROM runs WHERE id = ANY($1)",
    ] {
        sqlx::query(statement).bind(ids).execute(&mut **tx).await?;
    }
    Ok(())
}

/// Resolves a pending question, and queues its run (telling every instance, at the
/// commit) when no other is pending.
async fn resolve(tx: &mut Transaction<'_, Postgres>, resolution: &Resolution) -> Result<Resolved, StoreError> {
    let run_id = resolution.run_id.as_str();
    // The run's row lock first: its status cannot change under the answer.
    let waiting = sqlx::query("SELECT 1 FROM runs WHERE id = $1 AND status = 'waiting' FOR UPDATE")
        .bind(run_id)
        .fetch_optional(&mut **tx)
        .await?
        .is_some();
    if !waiting {
        return Ok(Resolved::NotPending);
    }
    let answered = sqlx::query(
        "UPDATE run_interrupts SET resolved_at = $1, answer = $2, timed_out = $3, resolved_by = $4 \
         WHERE id = $5 AND run_id = $6 AND resolved_at IS NULL",
    )
    .bind(resolution.at)
    .bind(&resolution.answer)
    .bind(resolution.answer.is_none())
    .bind(&resolution.by)
    .bind(&resolution.interrupt_id)
    .bind(run_id)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if !answered {
        return Ok(Resolved::NotPending);
    }
    let pending = sqlx::query("SELECT 1 FROM run_interrupts WHERE run_id = $1 AND resolved_at IS NULL LIMIT 1")
        .bind(run_id)
        .fetch_optional(&mut **tx)
        .await?
        .is_some();
    if pending {
        return Ok(Resolved::StillWaiting);
    }
    sqlx::query(
        "UPDATE runs SET status = 'queued', owner = NULL, lease_until = NULL, updated_at = $1 \
         WHERE id = $2 AND status = 'waiting'",
    )
    .bind(resolution.at)
    .bind(run_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(QUEUED_CHANNEL)
        .execute(&mut **tx)
        .await?;
    Ok(Resolved::Queued)
}

fn interrupt_from_row(row: &PgRow) -> Result<StoredInterrupt, StoreError> {
    Ok(StoredInterrupt {
        id: row.try_get("id")?,
        run_id: RunId::from(row.try_get::<String, _>("run_id")?),
        node: row.try_get("node")?,
        step: count(row.try_get("step")?),
        request: row.try_get("request")?,
        deadline: row.try_get("deadline")?,
        created_at: row.try_get("created_at")?,
        resolved_at: row.try_get("resolved_at")?,
        answer: row.try_get("answer")?,
        timed_out: row.try_get("timed_out")?,
        resolved_by: row.try_get("resolved_by")?,
    })
}

const RUN_COLUMNS: &str = "id, graph_id, status, \
    (SELECT initial_state FROM run_inputs i WHERE i.run_id = runs.id) AS initial_state, next_node, frontier, step_count, prompt_tokens, completion_tokens, cost_usd, \
    max_steps, error, created_at, finished_at, cancel_requested, created_by, forked_from, forked_at_step, \
    (SELECT name FROM graphs g WHERE g.id = runs.graph_id) AS graph_name, \
    (SELECT COALESCE(MAX(seq), 0) FROM run_events e WHERE e.run_id = runs.id) AS last_seq, \
    (SELECT event FROM run_events e WHERE e.run_id = runs.id AND runs.finished_at IS NOT NULL \
     AND e.kind = 'end' ORDER BY seq DESC LIMIT 1) AS end_event";

fn run_from_row(row: &PgRow) -> Result<StoredRun, StoreError> {
    let status: String = row.try_get("status")?;
    let status = RunStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("run status `{status}`")))?;
    let end: Option<String> = row.try_get("end_event")?;
    Ok(StoredRun {
        id: RunId::from(row.try_get::<String, _>("id")?),
        graph_id: GraphId::from(row.try_get::<String, _>("graph_id")?),
        graph_name: row.try_get("graph_name")?,
        status,
        initial_state: row.try_get("initial_state")?,
        final_state: end.as_deref().map(final_state_of).transpose()?,
        next_node: row.try_get("next_node")?,
        frontier: row.try_get("frontier")?,
        step_count: count(row.try_get("step_count")?),
        last_seq: count(row.try_get("last_seq")?),
        max_steps: u32::try_from(row.try_get::<i64, _>("max_steps")?).unwrap_or(0),
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
        cancel_requested: row.try_get("cancel_requested")?,
        created_by: row.try_get("created_by")?,
        forked_from: fork_from_row(row.try_get("forked_from")?, row.try_get("forked_at_step")?),
        usage: super::usage_from_row(
            row.try_get("prompt_tokens")?,
            row.try_get("completion_tokens")?,
            row.try_get("cost_usd")?,
        ),
    })
}

const TOKEN_COLUMNS: &str = "id, name, secret_hash, admin, read_only, created_at, revoked_at";

fn token_from_row(row: &PgRow) -> Result<StoredToken, StoreError> {
    Ok(StoredToken {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        secret_hash: row.try_get("secret_hash")?,
        admin: row.try_get("admin")?,
        read_only: row.try_get("read_only")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn event_from_row(row: &PgRow) -> Result<StoredEvent, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(StoredEvent {
        seq: count(row.try_get("seq")?),
        kind: EventKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("event type `{kind}`")))?,
        event: row.try_get("event")?,
    })
}

#[async_trait]
impl Store for PgStore {
    async fn insert_graph(&self, graph: StoredGraph) -> Result<(), StoreError> {
        self.write(Write::Graph(graph)).await
    }

    async fn graph(&self, id: &GraphId) -> Result<Option<StoredGraph>, StoreError> {
        let row = sqlx::query("SELECT id, name, spec, created_at, created_by FROM graphs WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(StoredGraph {
                id: GraphId::from(row.try_get::<String, _>("id")?),
                name: row.try_get("name")?,
                spec: row.try_get("spec")?,
                created_at: row.try_get("created_at")?,
                created_by: row.try_get("created_by")?,
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
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn run_log(&self, id: &RunId) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT log FROM run_events WHERE run_id = $1 ORDER BY seq")
            .bind(id.as_str())
            .fetch_all(&self.pool)
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
            sqlx::query("SELECT seq, kind, event FROM run_events WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
                .bind(id.as_str())
                .bind(as_i64(after_seq))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn latest_snapshot(&self, id: &RunId, at_most: u64) -> Result<Option<StoredEvent>, StoreError> {
        let row = sqlx::query(
            "SELECT seq, kind, event FROM run_events WHERE run_id = $1 AND snapshot AND seq <= $2 \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(id.as_str())
        .bind(as_i64(at_most))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<StoredRun>, StoreError> {
        // Ids are UUID v7: ordering by id is ordering by creation, and a cursor is an id.
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE ($1::text IS NULL OR graph_id = $1) \
             AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR id < $3) \
             AND ($5::text IS NULL OR created_by = $5) AND ($6::bigint IS NULL OR created_at >= $6) \
             AND ($7::bigint IS NULL OR created_at < $7) ORDER BY id DESC LIMIT $4"
        ))
        .bind(filter.graph_id.as_ref().map(GraphId::as_str))
        .bind(filter.status.map(RunStatus::as_str))
        .bind(filter.before.as_ref().map(RunId::as_str))
        .bind(i64::from(filter.limit))
        .bind(&filter.created_by)
        .bind(filter.created_since)
        .bind(filter.created_until)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn list_graphs(
        &self,
        before: Option<&GraphId>,
        created_by: Option<&str>,
        limit: u32,
    ) -> Result<Vec<GraphListing>, StoreError> {
        // A spec's `nodes` is an array (version 2) or an object (the prototype's form).
        let rows = sqlx::query(
            "SELECT id, name, created_at, \
             CASE jsonb_typeof(spec::jsonb -> 'nodes') \
               WHEN 'array' THEN jsonb_array_length(spec::jsonb -> 'nodes') \
               WHEN 'object' THEN (SELECT COUNT(*) FROM jsonb_object_keys(spec::jsonb -> 'nodes'))::int \
               ELSE 0 END::bigint AS nodes \
             FROM graphs WHERE ($1::text IS NULL OR id < $1) AND ($3::text IS NULL OR created_by = $3) \
             ORDER BY id DESC LIMIT $2",
        )
        .bind(before.map(GraphId::as_str))
        .bind(i64::from(limit))
        .bind(created_by)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(GraphListing {
                    id: GraphId::from(row.try_get::<String, _>("id")?),
                    name: row.try_get("name")?,
                    nodes: count(row.try_get("nodes")?),
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn insert_token(&self, token: StoredToken) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO api_tokens (id, name, secret_hash, admin, read_only, created_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&token.id)
        .bind(&token.name)
        .bind(&token.secret_hash)
        .bind(token.admin)
        .bind(token.read_only)
        .bind(token.created_at)
        .bind(token.revoked_at)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn token(&self, id: &str) -> Result<Option<StoredToken>, StoreError> {
        let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn tokens(&self) -> Result<Vec<StoredToken>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(&self, name: &str, at: Millis) -> Result<bool, StoreError> {
        let revoked = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
            .bind(at)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(revoked.rows_affected() > 0)
    }

    async fn forks_of(&self, id: &RunId, created_by: Option<&str>) -> Result<Vec<RunId>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM runs WHERE forked_from = $1 AND ($2::text IS NULL OR created_by = $2) ORDER BY id",
        )
        .bind(id.as_str())
        .bind(created_by)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(RunId::from(row.try_get::<String, _>("id")?)))
            .collect()
    }

    async fn has_tokens(&self) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 FROM api_tokens LIMIT 1")
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    async fn claim_expired(
        &self,
        owner: &OwnerId,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<StoredRun>, StoreError> {
        // SKIP LOCKED: instances claiming at once each take other runs, and none waits.
        let claimed = sqlx::query(
            "WITH claimable AS ( \
               SELECT id FROM runs WHERE status IN ('queued', 'running') \
               AND (owner IS NULL OR lease_until IS NULL OR lease_until < $3) \
               ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) \
             UPDATE runs SET owner = $1, lease_until = $2, status = 'queued', updated_at = $3 \
             FROM claimable WHERE runs.id = claimable.id RETURNING runs.id",
        )
        .bind(owner.as_str())
        .bind(lease_until)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let ids: Vec<String> = claimed
            .iter()
            .map(|row| row.try_get::<String, _>("id"))
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Read back in one round trip, not one per run.
        let rows = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ANY($1)"))
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
        let mut runs = rows.iter().map(run_from_row).collect::<Result<Vec<_>, _>>()?;
        runs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(runs)
    }

    async fn claim_run(
        &self,
        id: &RunId,
        owner: &OwnerId,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Option<StoredRun>, StoreError> {
        // The row lock makes it one claim: a second claimer waits, then finds it owned.
        let claimed = sqlx::query(
            "UPDATE runs SET owner = $1, lease_until = $2, status = 'queued', updated_at = $3 \
             WHERE id = $4 AND status IN ('queued', 'running', 'waiting') \
             AND (owner IS NULL OR lease_until IS NULL OR lease_until < $3)",
        )
        .bind(owner.as_str())
        .bind(lease_until)
        .bind(now)
        .bind(id.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if claimed {
            self.run(id).await
        } else {
            Ok(None)
        }
    }

    async fn waiting_runs(&self) -> Result<u64, StoreError> {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE status = 'queued' AND lease_until IS NULL AND owner IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(count(waiting))
    }

    async fn renew_leases(&self, owner: &OwnerId, lease_until: Millis) -> Result<u64, StoreError> {
        let done = sqlx::query("UPDATE runs SET lease_until = $1 WHERE owner = $2 AND status IN ('queued', 'running')")
            .bind(lease_until)
            .bind(owner.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn request_cancel(&self, id: &RunId) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let asked = sqlx::query(
            "UPDATE runs SET cancel_requested = TRUE WHERE id = $1 AND status IN ('queued', 'running', 'waiting')",
        )
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if asked {
            // Delivered at the commit, to every instance listening.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CANCEL_CHANNEL)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(asked)
    }

    async fn cancels_for(&self, owner: &OwnerId) -> Result<Vec<RunId>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM runs WHERE status IN ('queued', 'running') AND owner = $1 AND cancel_requested",
        )
        .bind(owner.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(RunId::from(row.try_get::<String, _>("id")?)))
            .collect()
    }

    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<Notice>> {
        Some(self.notices.subscribe())
    }

    async fn interrupts(&self, run_id: &RunId) -> Result<Vec<StoredInterrupt>, StoreError> {
        let rows = sqlx::query("SELECT * FROM run_interrupts WHERE run_id = $1 ORDER BY step, created_at")
            .bind(run_id.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(interrupt_from_row).collect()
    }

    async fn resolve_interrupt(&self, resolution: Resolution) -> Result<Resolved, StoreError> {
        let mut tx = self.pool.begin().await?;
        let resolved = resolve(&mut tx, &resolution).await?;
        tx.commit().await?;
        Ok(resolved)
    }

    async fn expire_interrupts(&self, now: Millis, limit: u32) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        // SKIP LOCKED: instances expiring at once each take other questions.
        let due = sqlx::query(
            "SELECT id, run_id FROM run_interrupts WHERE resolved_at IS NULL AND deadline IS NOT NULL \
             AND deadline < $1 ORDER BY deadline LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut queued = 0;
        for row in due {
            let resolution = Resolution {
                run_id: RunId::from(row.try_get::<String, _>("run_id")?),
                interrupt_id: row.try_get("id")?,
                answer: None,
                by: None,
                at: now,
            };
            if resolve(&mut tx, &resolution).await? == Resolved::Queued {
                queued += 1;
            }
        }
        tx.commit().await?;
        Ok(queued)
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn delete_run(&self, id: &RunId) -> Result<Deleted, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The row lock holds the run where it stands until the commit.
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM runs WHERE id = $1 FOR UPDATE")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let deleted = match status.as_deref().map(RunStatus::parse) {
            None => Deleted::NotFound,
            Some(Some(status)) if status.is_terminal() => {
                delete_runs(&mut tx, &[id.as_str().to_owned()]).await?;
                Deleted::Done
            }
            Some(_) => Deleted::Live,
        };
        tx.commit().await?;
        Ok(deleted)
    }

    async fn delete_graph(&self, id: &GraphId) -> Result<Deleted, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Locked, the graph takes no new run (its insert waits on the lock, then finds no
        // graph) until the commit.
        let exists = sqlx::query("SELECT 1 FROM graphs WHERE id = $1 FOR UPDATE")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        let live = sqlx::query(
            "SELECT 1 FROM runs WHERE graph_id = $1 AND status IN ('queued', 'running', 'waiting') LIMIT 1",
        )
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        let deleted = if !exists {
            Deleted::NotFound
        } else if live {
            Deleted::Live
        } else {
            let runs: Vec<String> = sqlx::query_scalar("SELECT id FROM runs WHERE graph_id = $1")
                .bind(id.as_str())
                .fetch_all(&mut *tx)
                .await?;
            delete_runs(&mut tx, &runs).await?;
            sqlx::query("DELETE FROM graphs WHERE id = $1")
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
            Deleted::Done
        };
        tx.commit().await?;
        Ok(deleted)
    }

    async fn purge_ended(&self, finished_before: Millis, limit: u32) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE finished_at < $1 AND status IN ('completed', 'failed', 'cancelled') \
             ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(finished_before)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        delete_runs(&mut tx, &ids).await?;
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    async fn release_runs(&self, owner: &OwnerId) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'queued', owner = NULL, lease_until = NULL, updated_at = $1 \
             WHERE owner = $2 AND status IN ('queued', 'running')",
        )
        .bind(now_millis())
        .bind(owner.as_str())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() > 0 {
            // For the instances still up to claim at once.
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(QUEUED_CHANNEL)
                .execute(&self.pool)
                .await?;
        }
        Ok(done.rows_affected())
    }
}
