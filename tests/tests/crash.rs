//! Durable execution: the server process is killed with SIGKILL while runs are in
//! flight, started again on the same database, and every run finishes with the state an
//! uninterrupted run reaches, each node recorded exactly once.

use std::{net::SocketAddr, path::Path, time::Duration};

use serde_json::{json, Map, Value};
use weft_tests::{event_types, step_nodes, ServerProcess, TestApp, TIMEOUT};

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
            "nodes": [
                {"id": "count", "tool": "increment"},
                {"id": "pause", "tool": "sleep", "config": {"ms": 300}},
                {"id": "boom", "tool": "fail", "config": {"message": "disk full"}}
            ],
            "edges": [{"from": "count", "to": "pause"}, {"from": "pause", "to": "boom"}]
        }))
        .await;
    // (`pause` lets the answer go out before the process aborts.)
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
    assert_eq!(body["steps"], 3);
    let (_, detail) = app.get(&format!("/runs/{run_id}")).await;
    assert_eq!(
        event_types(&detail),
        [
            "run_queued",
            "run_started",
            "node_started",
            "step",
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

#[tokio::test]
async fn sigterm_lets_nodes_finish_their_step_closes_streams_with_1012_and_runs_resume_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("weft.db");
    let binary = env!("CARGO_BIN_EXE_weft-server-under-test");
    let laps = 4;

    let first = ServerProcess::start_with_env(binary, &database, &[("WEFT_SHUTDOWN_GRACE_S", "5")]).await;
    let app = TestApp::connect(first.port);
    let graph = app.create_graph(slow_counter(laps, 400)).await;
    let mut runs = Vec::new();
    for _ in 0..5 {
        runs.push(app.start_run(&graph, json!({})).await);
    }
    // A client watching the first run: it reads until the server closes the socket.
    let url = format!("ws://127.0.0.1:{}/ws/{}", first.port, runs[0]);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let watcher = tokio::spawn(async move {
        use futures::StreamExt;
        let mut close = None;
        while let Some(Ok(message)) = socket.next().await {
            if let tokio_tungstenite::tungstenite::Message::Close(frame) = message {
                close = frame.map(|frame| u16::from(frame.code));
                break;
            }
        }
        close
    });
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    for run in &runs {
        while steps_of(&app, run).await < 2 {
            assert!(tokio::time::Instant::now() < deadline, "the runs did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // A client waiting for a run's end (`wait: true`) when the server stops.
    let waiting = {
        let client = app.client.clone();
        let url = format!("{}/graph/run", app.address);
        let body = json!({"graph_id": graph, "wait": true});
        tokio::spawn(async move { client.post(url).json(&body).send().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Each run is mid-pause (400 ms nodes): it finishes that step, then the process exits 0.
    let (status, took) = first.terminate().await.expect("the server exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(5), "it took {took:?}, past the 5 s grace");
    assert_eq!(
        watcher.await.unwrap(),
        Some(1012),
        "the stream closes with 1012 (service restart)"
    );
    // The waiting client is told the run goes on after the restart, and when to come back.
    let answer = waiting.await.unwrap().expect("an answer before the exit");
    assert_eq!(answer.status(), 503);
    assert_eq!(answer.headers()["retry-after"], "1");
    let answer: Value = answer.json().await.unwrap();
    let detail = answer["detail"].as_str().unwrap();
    assert!(detail.starts_with("the server is shutting down; run `"), "{detail}");
    runs.push(detail.split('`').nth(1).unwrap().to_owned());

    // After a restart every run ends as an uninterrupted one does, each step recorded once.
    let second = start(&database).await;
    let app = TestApp::connect(second.port);
    for run in &runs {
        let body = app.wait_for_end(run).await;
        assert_eq!(body["status"], "completed", "{body}");
        assert_eq!(body["state"], json!({"count": laps}));
        assert_eq!(body["steps"], 2 * laps as u64);
        let (_, detail) = app.get(&format!("/runs/{run}")).await;
        let nodes = step_nodes(&detail);
        let expected: Vec<String> = (0..laps)
            .flat_map(|i| [format!("count{i}"), format!("pause{i}")])
            .collect();
        assert_eq!(nodes, expected);
    }
    second.kill().await;
}
