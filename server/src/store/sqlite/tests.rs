//! The SQLite store's tests.

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
