//! Durable execution: the server process is killed with SIGKILL while runs are in
//! flight, started again on the same database, and every run finishes with the state an
//! uninterrupted run reaches, each node recorded exactly once.

use std::{net::SocketAddr, path::Path, time::Duration};

use serde_json::{json, Map, Value};
use weft_tests::{ServerProcess, TestApp, TIMEOUT};

async fn start(database: &Path) -> ServerProcess {
    ServerProcess::start(
        env!("CARGO_BIN_EXE_weft-server-under-test"),
        database,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        None,
    )
    .await
}

/// `laps` times: count, then pause. 2 × `laps` steps, ending with `{"count": laps}`.
fn slow_counter(laps: usize, pause_ms: u64) -> Value {
    let mut nodes = Map::new();
    let mut edges = Map::new();
    for i in 0..laps {
        nodes.insert(format!("count{i}"), json!({"tool": "increment"}));
        nodes.insert(
            format!("pause{i}"),
            json!({"tool": "sleep", "config": {"ms": pause_ms}}),
        );
        edges.insert(format!("count{i}"), json!(format!("pause{i}")));
        if i + 1 < laps {
            edges.insert(format!("pause{i}"), json!(format!("count{}", i + 1)));
        }
    }
    json!({"nodes": nodes, "edges": edges})
}

async fn steps_of(app: &TestApp, run_id: &str) -> u64 {
    app.get(&format!("/graph/state/{run_id}")).await.1["steps"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn runs_killed_mid_flight_resume_and_finish_with_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("weft.db");
    let laps = 8;

    let first = start(&database).await;
    let app = TestApp::connect(first.port);
    let graph = app.create_graph(slow_counter(laps, 150)).await;
    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(app.start_run(&graph, json!({})).await);
    }
    // Let every run get a few steps in, but not finish.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    for run in &runs {
        while steps_of(&app, run).await < 3 {
            assert!(tokio::time::Instant::now() < deadline, "run {run} made no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let before: Vec<u64> = futures::future::join_all(runs.iter().map(|run| steps_of(&app, run))).await;
    assert!(
        before.iter().all(|steps| *steps < 2 * laps as u64),
        "runs ended before the kill: {before:?}"
    );
    first.kill().await;

    let second = start(&database).await;
    let app = TestApp::connect(second.port);
    let reference = app.run_and_wait(&graph, json!({})).await;
    assert_eq!(reference["state"], json!({"count": laps}));
    let expected_nodes: Vec<String> = (0..laps)
        .flat_map(|i| [format!("[RUNNING] count{i}"), format!("[RUNNING] pause{i}")])
        .collect();

    for (run, steps_before) in runs.iter().zip(before) {
        let done = app.wait_for_end(run).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["state"], reference["state"]);
        assert_eq!(done["steps"], 2 * laps);
        assert_eq!(
            done["log"],
            json!(expected_nodes),
            "each node recorded exactly once, in order"
        );
        assert!(steps_before >= 3);

        // The stream replays the run whole: no step lost or repeated across the crash.
        let messages = app.stream(run, "").await.unwrap();
        let steps: Vec<u64> = messages
            .iter()
            .filter(|m| m["type"] == "step")
            .map(|m| m["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, (1..=2 * laps as u64).collect::<Vec<_>>());
        let seqs: Vec<u64> = messages.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=messages.len() as u64).collect::<Vec<_>>(),
            "every event, once, in order"
        );
        let started: Vec<&serde_json::Value> = messages.iter().filter(|m| m["type"] == "run_started").collect();
        assert_eq!(started.len(), 2);
        assert_eq!(
            (started[0]["resumed"].as_bool(), started[1]["resumed"].as_bool()),
            (Some(false), Some(true))
        );
        assert_eq!(messages.last().unwrap()["state"], reference["state"]);
    }
    second.kill().await;
}

#[tokio::test]
async fn a_run_whose_last_step_fails_is_failed_after_a_crash_right_after_that_step() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("weft.db");
    let binary = env!("CARGO_BIN_EXE_weft-server-under-test");

    // The process aborts right after the commit that records the `boom` step.
    let first = ServerProcess::start_with_env(binary, &database, &[("WEFT_TEST_ABORT_AFTER_STEP", "boom")]).await;
    let app = TestApp::connect(first.port);
    let graph = app
        .create_graph(json!({
            "nodes": [{"id": "count", "tool": "increment"}, {"id": "boom", "tool": "fail", "config": {"message": "disk full"}}],
            "edges": [{"from": "count", "to": "boom"}]
        }))
        .await;
    let (status, started) = app.post("/graph/run", &json!({"graph_id": graph})).await;
    assert_eq!(status, 200);
    let run_id = started["run_id"].as_str().unwrap().to_owned();
    // The server is gone: its requests start failing.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while app.client.get(format!("{}/health", app.address)).send().await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the server did not abort");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().await;

    // After a restart the run is failed, never completed, and it has not run again.
    let second = start(&database).await;
    let app = TestApp::connect(second.port);
    let body = app.wait_for_end(&run_id).await;
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["error"], "node `boom` failed: disk full");
    assert_eq!(body["state"], json!({"count": 1}));
    assert_eq!(body["steps"], 2);
    let (_, detail) = app.get(&format!("/runs/{run_id}")).await;
    let kinds: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "run_queued",
            "run_started",
            "node_started",
            "step",
            "node_started",
            "node_failed",
            "step",
            "end"
        ]
    );
    second.kill().await;
}
