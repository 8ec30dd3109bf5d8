//! The runner against a fault-injecting store: a test double of [`Store`] that delegates
//! to a real SQLite store, records every write, and fails writes on demand.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, Mutex, PoisonError,
};

use async_trait::async_trait;
use serde_json::{json, Value};
use weft_app::wire::{EventKind, RunStatus};

use super::{RunLimits, Runner, StartRun};
use crate::{
    auth::Principal,
    engine::{
        tool::{FnTool, Outcome},
        CpuPool, Registry,
    },
    ids::{GraphId, OwnerId, RunId},
    store::{
        sqlite::SqliteStore, Deleted, EventRecord, GraphListing, Millis, NewRun, RunFilter, Store, StoreError,
        StoredEvent, StoredGraph, StoredRun, StoredToken,
    },
    tools::builtin,
};

/// A store that fails the next `failures` event writes once an event numbered
/// `fail_from` or later is written, and records each event write's kinds (a new run's
/// `run_queued` event, always written with it, is left out).
struct FaultyStore {
    inner: SqliteStore,
    fail_from: u64,
    failures: AtomicUsize,
    writes: Mutex<Vec<Vec<(EventKind, u64)>>>,
}

impl FaultyStore {
    fn check(&self, events: &[EventRecord]) -> Result<(), StoreError> {
        self.writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(events.iter().map(|e| (e.kind, e.seq)).collect());
        let failing = events.iter().any(|e| e.seq >= self.fail_from)
            && self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1))
                .is_ok();
        if failing {
            return Err(StoreError::Corrupt("injected write failure".into()));
        }
        Ok(())
    }

    fn writes(&self) -> Vec<Vec<(EventKind, u64)>> {
        self.writes.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn insert_graph(&self, graph: StoredGraph) -> Result<(), StoreError> {
        self.inner.insert_graph(graph).await
    }
    async fn graph(&self, id: &GraphId) -> Result<Option<StoredGraph>, StoreError> {
        self.inner.graph(id).await
    }
    async fn insert_run(&self, run: NewRun) -> Result<(), StoreError> {
        if !run.then.is_empty() {
            self.check(&run.then)?;
        }
        self.inner.insert_run(run).await
    }
    async fn append_event(&self, event: EventRecord) -> Result<(), StoreError> {
        self.check(std::slice::from_ref(&event))?;
        self.inner.append_event(event).await
    }
    async fn append_events(&self, events: Vec<EventRecord>) -> Result<(), StoreError> {
        self.check(&events)?;
        self.inner.append_events(events).await
    }
    async fn run(&self, id: &RunId) -> Result<Option<StoredRun>, StoreError> {
        self.inner.run(id).await
    }
    async fn run_log(&self, id: &RunId) -> Result<Vec<String>, StoreError> {
        self.inner.run_log(id).await
    }
    async fn events_after(&self, id: &RunId, after_seq: u64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.events_after(id, after_seq, limit).await
    }
    async fn latest_snapshot(&self, id: &RunId, at_most: u64) -> Result<Option<StoredEvent>, StoreError> {
        self.inner.latest_snapshot(id, at_most).await
    }
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<StoredRun>, StoreError> {
        self.inner.list_runs(filter).await
    }
    async fn claim_expired(
        &self,
        owner: &OwnerId,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<StoredRun>, StoreError> {
        self.inner.claim_expired(owner, now, lease_until, limit).await
    }
    async fn claim_run(
        &self,
        id: &RunId,
        owner: &OwnerId,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Option<StoredRun>, StoreError> {
        self.inner.claim_run(id, owner, now, lease_until).await
    }
    async fn waiting_runs(&self) -> Result<u64, StoreError> {
        self.inner.waiting_runs().await
    }
    async fn request_cancel(&self, id: &RunId) -> Result<bool, StoreError> {
        self.inner.request_cancel(id).await
    }
    async fn cancels_for(&self, owner: &OwnerId) -> Result<Vec<RunId>, StoreError> {
        self.inner.cancels_for(owner).await
    }
    async fn delete_run(&self, id: &RunId) -> Result<Deleted, StoreError> {
        self.inner.delete_run(id).await
    }
    async fn delete_graph(&self, id: &GraphId) -> Result<Deleted, StoreError> {
        self.inner.delete_graph(id).await
    }
    async fn purge_ended(&self, finished_before: Millis, limit: u32) -> Result<u64, StoreError> {
        self.inner.purge_ended(finished_before, limit).await
    }
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn renew_leases(&self, owner: &OwnerId, lease_until: Millis) -> Result<u64, StoreError> {
        self.inner.renew_leases(owner, lease_until).await
    }
    async fn release_runs(&self, owner: &OwnerId) -> Result<u64, StoreError> {
        self.inner.release_runs(owner).await
    }
    async fn list_graphs(
        &self,
        before: Option<&GraphId>,
        created_by: Option<&str>,
        limit: u32,
    ) -> Result<Vec<GraphListing>, StoreError> {
        self.inner.list_graphs(before, created_by, limit).await
    }
    async fn insert_token(&self, token: StoredToken) -> Result<bool, StoreError> {
        self.inner.insert_token(token).await
    }
    async fn token(&self, id: &str) -> Result<Option<StoredToken>, StoreError> {
        self.inner.token(id).await
    }
    async fn tokens(&self) -> Result<Vec<StoredToken>, StoreError> {
        self.inner.tokens().await
    }
    async fn revoke_token(&self, name: &str, at: Millis) -> Result<bool, StoreError> {
        self.inner.revoke_token(name, at).await
    }
    async fn has_tokens(&self) -> Result<bool, StoreError> {
        self.inner.has_tokens().await
    }
    async fn forks_of(&self, id: &RunId, created_by: Option<&str>) -> Result<Vec<RunId>, StoreError> {
        self.inner.forks_of(id, created_by).await
    }
    async fn interrupts(&self, run_id: &RunId) -> Result<Vec<crate::store::StoredInterrupt>, StoreError> {
        self.inner.interrupts(run_id).await
    }
    async fn resolve_interrupt(
        &self,
        resolution: crate::store::Resolution,
    ) -> Result<crate::store::Resolved, StoreError> {
        self.inner.resolve_interrupt(resolution).await
    }
    async fn expire_interrupts(&self, now: crate::store::Millis, limit: u32) -> Result<u64, StoreError> {
        self.inner.expire_interrupts(now, limit).await
    }
}

/// A runner over a faulty store that fails `failures` writes from event `fail_from` on,
/// with the building-block tools and `panic`, a tool that panics on the runtime.
async fn runner(fail_from: u64, failures: usize) -> (tempfile::TempDir, Arc<FaultyStore>, Runner) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyStore {
        inner: SqliteStore::open(&dir.path().join("weft.db")).await.unwrap(),
        fail_from,
        failures: AtomicUsize::new(failures),
        writes: Mutex::default(),
    });
    let mut registry = Registry::new();
    builtin::register(&mut registry);
    registry.register(
        "panic",
        FnTool::inline("panics", |_, _| -> Result<Outcome, _> { panic!("boom") }),
    );
    registry.register(
        "chatty",
        FnTool::inline("writes a 40 KiB log line", |_, _| {
            Ok::<_, crate::engine::tool::ToolError>(Outcome::default().note("x".repeat(40 * 1024)))
        }),
    );
    let runner = Runner::new(store.clone(), registry, CpuPool::new(1), RunLimits::default());
    (dir, store, runner)
}

async fn run(runner: &Runner, spec: Value) -> (RunId, super::Finished) {
    let (graph_id, _) = runner.create_graph(&spec, &Principal::open()).await.unwrap();
    let started = runner
        .start_run(StartRun {
            graph_id,
            initial_state: serde_json::Map::new(),
            max_steps: None,
            by: Principal::open(),
            start_at: None,
            frontier: None,
            forked_from: None,
        })
        .await
        .unwrap();
    let run_id = started.run_id.clone();
    let finished = runner.finished(started).await.unwrap();
    (run_id, finished)
}

fn two_steps(second: &str) -> Value {
    json!({
        "nodes": [{"id": "count", "tool": "increment"}, {"id": "last", "tool": second}],
        "edges": [{"from": "count", "to": "last"}]
    })
}

#[tokio::test]
async fn a_store_that_fails_mid_run_leaves_the_run_failed_with_the_reason_once_it_recovers() {
    // Events: 1 queued, 2 started, 3 node started, 4 step (count), 5 node started, ...
    // Writing event 4 fails, and so do the next two writes: the first tries to end it.
    let (_dir, store, runner) = runner(4, 3).await;
    let (run_id, finished) = run(&runner, two_steps("noop")).await;
    assert_eq!(finished.status, RunStatus::Failed);
    let stored = runner.store().run(&run_id).await.unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Failed);
    assert_eq!(stored.error.as_deref(), Some("the run's steps could not be recorded"));
    // The failed step was never recorded: the run ended at its last checkpoint.
    assert_eq!((stored.step_count, stored.last_seq), (0, 4));
    assert_eq!(stored.final_state.as_deref(), Some("{}"));
    let ending = store
        .writes()
        .into_iter()
        .filter(|w| w.iter().any(|(kind, _)| *kind == EventKind::End))
        .count();
    assert_eq!(ending, 3, "two failed tries to end the run, then the one that landed");
}

#[tokio::test]
async fn a_tool_that_panics_leaves_the_run_failed() {
    let (_dir, _store, runner) = runner(u64::MAX, 0).await;
    let (run_id, finished) = run(&runner, two_steps("panic")).await;
    assert_eq!(
        (finished.status, finished.error.as_deref()),
        (RunStatus::Failed, Some("the run crashed"))
    );
    let stored = runner.store().run(&run_id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.step_count), (RunStatus::Failed, 1));
    assert_eq!(stored.final_state.as_deref(), Some(r#"{"count":1}"#));
}

#[tokio::test]
async fn a_failing_last_step_is_written_with_the_failed_ending_in_one_write() {
    let (_dir, store, runner) = runner(u64::MAX, 0).await;
    let (run_id, finished) = run(&runner, two_steps("fail")).await;
    assert_eq!(finished.status, RunStatus::Failed);
    // 5 node started, 6 node failed, then the step and the end together.
    assert_eq!(
        store.writes().last().unwrap(),
        &vec![(EventKind::Step, 7), (EventKind::End, 8)]
    );
    let stored = runner.store().run(&run_id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.step_count), (RunStatus::Failed, 2));
    assert_eq!(
        stored.error.as_deref(),
        Some("node `last` failed: this node always fails")
    );
}

#[tokio::test]
async fn each_step_is_committed_with_the_next_nodes_start_and_the_last_with_the_end() {
    let (_dir, store, runner) = runner(u64::MAX, 0).await;
    let spec = json!({
        "nodes": [{"id": "a", "tool": "increment"}, {"id": "b", "tool": "increment"}, {"id": "c", "tool": "noop"}],
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}]
    });
    let (run_id, finished) = run(&runner, spec).await;
    assert_eq!(finished.status, RunStatus::Completed);
    // The run is stored with its start and its first node's (events 1 to 3), then each
    // step is committed with what follows it: one commit per step, no more.
    assert_eq!(
        store.writes(),
        vec![
            vec![(EventKind::RunStarted, 2), (EventKind::NodeStarted, 3)],
            vec![(EventKind::Step, 4), (EventKind::NodeStarted, 5)],
            vec![(EventKind::Step, 6), (EventKind::NodeStarted, 7)],
            vec![(EventKind::Step, 8), (EventKind::End, 9)],
        ]
    );
    let stored = runner.store().run(&run_id).await.unwrap().unwrap();
    assert_eq!((stored.step_count, stored.last_seq), (3, 9));
    assert_eq!(stored.final_state.as_deref(), Some(r#"{"count":2}"#));
}

#[tokio::test]
async fn a_short_log_is_answered_from_memory_and_a_long_one_from_the_store() {
    let (_dir, _store, runner) = runner(u64::MAX, 0).await;
    let (run_id, finished) = run(&runner, two_steps("noop")).await;
    assert_eq!(
        finished.log.as_deref(),
        Some(&["[RUNNING] count".to_owned(), "[RUNNING] last".to_owned()][..])
    );
    assert_eq!(finished.log.unwrap(), runner.store().run_log(&run_id).await.unwrap());

    // Two lines of 40 KiB go past what a run keeps in memory: the store has them all.
    let (run_id, finished) = run(
        &runner,
        json!({
            "nodes": [{"id": "a", "tool": "chatty"}, {"id": "b", "tool": "chatty"}],
            "edges": [{"from": "a", "to": "b"}]
        }),
    )
    .await;
    assert_eq!(finished.status, RunStatus::Completed);
    assert!(finished.log.is_none(), "an 80 KiB log was kept in memory");
    let log = runner.store().run_log(&run_id).await.unwrap();
    let sizes: Vec<usize> = log.iter().map(String::len).collect();
    assert_eq!(sizes, vec![11, 3 + 40 * 1024, 11, 3 + 40 * 1024]);
}
