//! The SQLite store's own tests: its file, its migrations, its lock. What every store
//! must do is in the conformance suite (`store::conformance`).

use super::*;
use crate::store::conformance::{a_graph, step, with_run};

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
                created_by: None,
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
    // Running migration 1 again would fail (its tables exist): only 8 and 9 are applied.
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
    assert_eq!(version, i64::try_from(MIGRATIONS.len()).unwrap());
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
async fn rebuilding_the_runs_table_keeps_every_run_with_its_events_and_references() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    {
        // As Weft left it before runs could wait: migrations 1 to 11, one run with events.
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        for (_, sql) in &MIGRATIONS[..11] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 11).unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(
            "INSERT INTO graphs (id, spec, created_at) VALUES ('g', '{}', 1);
             INSERT INTO runs (id, graph_id, status, next_node, step_count, max_steps, created_at, updated_at, owner, \
                               lease_until, created_by, forked_from, forked_at_step) \
             VALUES ('r', 'g', 'running', 'b', 1, 100, 2, 2, 'me', 99, 'alice', 'p', 3);
             INSERT INTO run_inputs (run_id, initial_state) VALUES ('r', '{\"n\":0}');
             INSERT INTO run_events (run_id, seq, kind, node, status, log, event, snapshot) \
             VALUES ('r', 1, 'run_queued', '', 'queued', '[]', '{}', 0), \
                    ('r', 2, 'step', 'a', 'running', '[\"x\"]', '{}', 1);",
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let run = store.run(&RunId::from("r".to_owned())).await.unwrap().unwrap();
    assert_eq!(
        (
            run.status,
            run.step_count,
            run.last_seq,
            run.next_node.as_deref(),
            run.created_by.as_deref()
        ),
        (RunStatus::Running, 1, 2, Some("b"), Some("alice"))
    );
    assert_eq!(run.initial_state, r#"{"n":0}"#);
    assert_eq!(
        run.forked_from.map(|fork| (fork.run.to_string(), fork.step)),
        Some(("p".into(), 3))
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    // The rebuilt table takes `waiting`, keeps its indexes, and is still referred to.
    conn.execute("UPDATE runs SET status = 'waiting' WHERE id = 'r'", [])
        .unwrap();
    let indexes: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'runs' AND sql IS NOT NULL",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 4);
    let orphan = conn.execute(
        "INSERT INTO run_events (run_id, seq, kind, node, status, log, event) VALUES ('ghost', 1, 'x', '', 'x', '[]', '{}')",
        [],
    );
    assert!(orphan.is_err(), "events still refer to runs");
    let foreign_keys: bool = conn.pragma_query_value(None, "foreign_keys", |row| row.get(0)).unwrap();
    assert!(foreign_keys);
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
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("weft.db")).await.unwrap();
    let run = with_run(&store).await;
    // Another connection (as another process would) takes the write lock for a second.
    let mut other = rusqlite::Connection::open(dir.path().join("weft.db")).unwrap();
    let (locked, lock_taken) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let tx = other
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        locked.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(1_000));
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
        started.elapsed() >= Duration::from_millis(900),
        "the write did not wait for the lock"
    );
    assert!(
        ticked < Duration::from_millis(800),
        "the runtime was blocked: {ticked:?}"
    );
    holder.join().unwrap();
    assert_eq!(store.run(&run).await.unwrap().unwrap().step_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_checkpointed_and_started_over_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    let run = with_run(store.as_ref()).await;
    // Four times the checkpoint interval, in eight bursts of four writers at once, each
    // event's text 64 KiB (a few pages of the log).
    let event_bytes = 64 * 1024;
    let per_burst = CHECKPOINT_EVERY / 2 / event_bytes;
    let (bursts, writers) = (8, 4);
    let mut seq = 1;
    for _ in 0..bursts {
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let (store, run) = (Arc::clone(&store), run.clone());
            let first = seq + 1;
            seq += (per_burst / writers) as u64;
            tasks.push(tokio::spawn(async move {
                for n in first..first + (per_burst / writers) as u64 {
                    let mut event = step(&run, n, 1, Some("a"));
                    event.effect = RunEffect::None;
                    event.event = format!("{{\"pad\":\"{}\"}}", "x".repeat(event_bytes));
                    store.append_event(event).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Written one after another by each writer, so every seq is there once.
    assert_eq!(store.events_after(&run, 0, u32::MAX).await.unwrap().len() as u64, seq);
    // The log was copied into the database and started over as it went: it never held
    // more than about two intervals' worth, though four were written.
    let wal = std::fs::metadata(dir.path().join("weft.db-wal")).unwrap().len();
    let written = bursts * per_burst * event_bytes;
    assert!(
        wal < 2 * CHECKPOINT_EVERY as u64,
        "the log grew to {wal} bytes for {written} written"
    );
}
