//! Several server processes on one SQLite file: each run is executed by the one
//! instance that owns it, and an instance that starts later never runs again what a live
//! instance holds. Every node's execution is counted through a side effect (the
//! test-only `record` tool appends a line to a file) that the test reads.

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde_json::json;
use weft_tests::{step_nodes, ServerProcess, TestApp};

async fn start(database: &Path, record: &Path) -> ServerProcess {
    let record = record.to_str().expect("a UTF-8 path");
    ServerProcess::start_with_env(
        env!("CARGO_BIN_EXE_weft-server-under-test"),
        database,
        &[("WEFT_TEST_RECORD_FILE", record)],
    )
    .await
}

#[tokio::test]
async fn runs_started_through_two_processes_execute_each_node_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("weft.db");
    let record = dir.path().join("executions.txt");
    let (first, second) = (start(&database, &record).await, start(&database, &record).await);
    let apps = [TestApp::connect(first.port), TestApp::connect(second.port)];

    let graph = apps[0]
        .create_graph(json!({
            "nodes": [
                {"id": "a", "tool": "record", "config": {"mark": "a"}},
                {"id": "wait", "tool": "sleep", "config": {"ms": 150}},
                {"id": "b", "tool": "record", "config": {"mark": "b"}},
                {"id": "rest", "tool": "sleep", "config": {"ms": 150}},
                {"id": "c", "tool": "record", "config": {"mark": "c"}}
            ],
            "edges": [{"from": "a", "to": "wait"}, {"from": "wait", "to": "b"}, {"from": "b", "to": "rest"}, {"from": "rest", "to": "c"}]
        }))
        .await;
    let mut runs = Vec::new();
    for i in 0..50 {
        runs.push(apps[i % 2].start_run(&graph, json!({"token": format!("r{i}")})).await);
    }
    // A third process starts while the runs are in flight: it must claim none of them.
    let third = start(&database, &record).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    for (i, run) in runs.iter().enumerate() {
        let body = apps[(i + 1) % 2].wait_for_end(run).await;
        assert_eq!(body["status"], "completed", "{body}");
        assert_eq!(body["steps"], 5);
        assert_eq!(body["state"], json!({"token": format!("r{i}")}));
    }

    let lines = std::fs::read_to_string(&record).unwrap();
    let mut executions: BTreeMap<&str, usize> = BTreeMap::new();
    for line in lines.lines() {
        *executions.entry(line).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = (0..50)
        .flat_map(|i| ["a", "b", "c"].map(|mark| (format!("r{i} {mark}"), 1)))
        .collect();
    let executions: BTreeMap<String, usize> = executions.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    assert_eq!(executions, expected, "each node of each run executed exactly once");

    // Each run's events hold one step per node, whichever process answers.
    let (_, detail) = TestApp::connect(third.port).get(&format!("/runs/{}", runs[7])).await;
    let steps = step_nodes(&detail).len();
    assert_eq!(steps, 5);
    for process in [first, second, third] {
        process.kill().await;
    }
}
