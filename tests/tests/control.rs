//! Run control against the real server: cancelling runs, and a bounded pool of running
//! runs with a bounded queue in front of it.

use std::{net::SocketAddr, time::Duration};

use serde_json::{json, Value};
use weft_server::{
    config::Settings,
    runner::{Leases, RunLimits},
};
use weft_tests::{chain, spawn_app, spawn_app_on, TestApp, TIMEOUT};

/// `count` pauses of `ms` each, in a chain.
fn pauses(count: usize, ms: u64) -> Value {
    chain((0..count).map(|i| (format!("p{i}"), json!({"tool": "sleep", "config": {"ms": ms}}))))
}

async fn status_of(app: &TestApp, run_id: &str) -> Value {
    app.get(&format!("/graph/state/{run_id}")).await.1
}

async fn wait_for_steps(app: &TestApp, run_id: &str, steps: u64) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while status_of(app, run_id).await["steps"].as_u64().unwrap_or(0) < steps {
        assert!(tokio::time::Instant::now() < deadline, "run {run_id} stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn cancel_stops_a_run_at_its_next_safe_point() {
    let app = spawn_app().await;
    let graph = app.create_graph(pauses(50, 50)).await;
    let run_id = app.start_run(&graph, json!({"keep": "me"})).await;
    wait_for_steps(&app, &run_id, 2).await;

    let (status, body) = app.post(&format!("/runs/{run_id}/cancel"), &json!({})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"run_id": run_id, "cancel_requested": true}));

    let done = app.wait_for_end(&run_id).await;
    assert_eq!(done["status"], "cancelled");
    assert_eq!(done["state"], json!({"keep": "me"}));
    let steps = done["steps"].as_u64().unwrap();
    assert!((2..50).contains(&steps), "stopped after {steps} steps");

    let messages = app.stream(&run_id, "").await.unwrap();
    assert_eq!(messages.iter().filter(|m| m["type"] == "step").count() as u64, steps);
    assert_eq!(messages.last().unwrap()["status"], "cancelled");

    // Nothing left to cancel; unknown runs are 404.
    let (status, body) = app.post(&format!("/runs/{run_id}/cancel"), &json!({})).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("run_ended")));
    let (status, _) = app.post("/runs/nope/cancel", &json!({})).await;
    assert_eq!(status, 404);
}

/// Cancels `run_id` once it has an event of type `kind`; answers how long the run took to
/// end after the cancel was accepted.
async fn cancel_once(app: &TestApp, run_id: &str, kind: &str) -> Duration {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (_, detail) = app.get(&format!("/runs/{run_id}")).await;
        if detail["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["type"] == kind))
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no `{kind}` event");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let asked = std::time::Instant::now();
    let (status, body) = app.post(&format!("/runs/{run_id}/cancel"), &json!({})).await;
    assert_eq!(status, 202, "{body}");
    let done = app.wait_for_end(run_id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    asked.elapsed()
}

#[tokio::test]
async fn cancel_interrupts_a_retry_backoff_and_a_waiting_node_at_once() {
    let app = spawn_app().await;
    // A node that fails, then waits 5 s before its next attempt.
    let flaky = app
        .create_graph(json!({
            "nodes": [
                {"id": "count", "tool": "increment"},
                {"id": "flaky", "tool": "fail", "retry": {"attempts": 3, "backoff_ms": 5000}}
            ],
            "edges": [{"from": "count", "to": "flaky"}]
        }))
        .await;
    let run_id = app.start_run(&flaky, json!({})).await;
    let took = cancel_once(&app, &run_id, "node_failed").await;
    assert!(
        took < Duration::from_secs(1),
        "ended {took:?} after the cancel, in a 5 s backoff"
    );
    let (_, state) = app.get(&format!("/graph/state/{run_id}")).await;
    assert_eq!(
        (state["state"].clone(), state["steps"].as_u64()),
        (json!({"count": 1}), Some(1))
    );

    // A node in a 60 s pause is dropped mid-pause.
    let sleepy = app.create_graph(pauses(1, 60_000)).await;
    let run_id = app.start_run(&sleepy, json!({})).await;
    let took = cancel_once(&app, &run_id, "node_started").await;
    assert!(
        took < Duration::from_secs(1),
        "ended {took:?} after the cancel, in a 60 s pause"
    );
    let messages = app.stream(&run_id, "").await.unwrap();
    assert_eq!(
        messages.iter().filter(|m| m["type"] == "step").count(),
        0,
        "the pause never finished"
    );
    assert_eq!(messages.last().unwrap()["status"], "cancelled");
}

#[tokio::test]
async fn a_node_that_would_grow_the_state_past_its_limit_fails_the_run_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(SocketAddr::from(([127, 0, 0, 1], 0)), "");
    settings.limits.max_state_bytes = 10_000;
    let app = spawn_app_on(dir.path().join("weft.db"), settings).await;
    let graph = app
        .create_graph(json!({
            "nodes": [
                {"id": "small", "tool": "script", "config": {"script": "#{note: \"hello\"}"}},
                {"id": "grow", "tool": "script", "config": {"script": "let s = \"\"; for i in 0..1000 { s += \"0123456789abcdefghij\"; } #{blob: s}"}}
            ],
            "edges": [{"from": "small", "to": "grow"}]
        }))
        .await;
    let body = app.run_and_wait(&graph, json!({})).await;
    assert_eq!(body["status"], "failed");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("node `grow` would grow the state to ") && error.ends_with("bytes, over the limit of 10000"),
        "{error}"
    );
    // The update was not applied: the state is what the run had before that node.
    assert_eq!(body["state"], json!({"note": "hello"}));
    let (_, stored) = app
        .get(&format!("/graph/state/{}", body["run_id"].as_str().unwrap()))
        .await;
    assert_eq!(
        (stored["status"].as_str(), stored["steps"].as_u64()),
        (Some("failed"), Some(2))
    );
}

#[tokio::test]
async fn a_full_queue_answers_503_and_queued_runs_wait_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(SocketAddr::from(([127, 0, 0, 1], 0)), "");
    settings.limits = RunLimits {
        max_running: 1,
        max_queued: 1,
        ..RunLimits::default()
    };
    let app = spawn_app_on(dir.path().join("weft.db"), settings).await;
    let slow = app.create_graph(pauses(200, 50)).await;
    let quick = app.create_graph(pauses(1, 1)).await;

    let running = app.start_run(&slow, json!({})).await;
    wait_for_steps(&app, &running, 1).await;
    let queued = app.start_run(&quick, json!({})).await;
    assert_eq!(status_of(&app, &queued).await["status"], "queued");

    let response = app
        .client
        .post(format!("{}/graph/run", app.address))
        .json(&json!({"graph_id": quick}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "at_capacity");

    // Cancelling a queued run ends it at once, without running a node.
    let (status, _) = app.post(&format!("/runs/{queued}/cancel"), &json!({})).await;
    assert_eq!(status, 202);
    let done = app.wait_for_end(&queued).await;
    assert_eq!(
        (done["status"].as_str(), done["steps"].as_u64()),
        (Some("cancelled"), Some(0))
    );

    // Room again: the next run queues behind the slow one, and runs once it is gone.
    let next = app.start_run(&quick, json!({})).await;
    assert_eq!(status_of(&app, &next).await["status"], "queued");
    app.post(&format!("/runs/{running}/cancel"), &json!({})).await;
    assert_eq!(app.wait_for_end(&running).await["status"], "cancelled");
    let done = app.wait_for_end(&next).await;
    assert_eq!(
        (done["status"].as_str(), done["steps"].as_u64()),
        (Some("completed"), Some(1))
    );
}

#[tokio::test]
async fn a_node_over_its_timeout_is_retried_then_fails_the_run() {
    let app = spawn_app().await;
    let graph = app
        .create_graph(json!({
            "nodes": {
                "count": {"tool": "increment"},
                "stuck": {"tool": "sleep", "config": {"ms": 10000}, "timeout_ms": 30, "retry": {"attempts": 3, "backoff_ms": 5}}
            },
            "edges": {"count": "stuck"}
        }))
        .await;
    let body = app.run_and_wait(&graph, json!({})).await;
    assert_eq!(body["status"], "failed");
    assert_eq!(
        body["error"],
        "node `stuck` failed after 3 attempts: timed out after 30 ms"
    );
    assert_eq!(
        body["log"],
        json!([
            "[RUNNING] count",
            "[RUNNING] stuck",
            "stuck: attempt 1 failed: timed out after 30 ms; retrying in 5 ms",
            "stuck: attempt 2 failed: timed out after 30 ms; retrying in 10 ms",
            "[FAILED] node `stuck` failed after 3 attempts: timed out after 30 ms"
        ])
    );
    assert_eq!(body["state"], json!({"count": 1}));

    // Each failed attempt is an event of its own, saying whether another follows.
    let messages = app.stream(body["run_id"].as_str().unwrap(), "").await.unwrap();
    let failures: Vec<(u64, Option<u64>)> = messages
        .iter()
        .filter(|m| m["type"] == "node_failed")
        .map(|m| (m["attempt"].as_u64().unwrap(), m["retry_in_ms"].as_u64()))
        .collect();
    assert_eq!(failures, [(1, Some(5)), (2, Some(10)), (3, None)]);
    let attempts: Vec<u64> = messages
        .iter()
        .filter(|m| m["type"] == "node_started" && m["node"] == "stuck")
        .map(|m| m["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3]);

    let (status, body) = app
        .post(
            "/graph/create",
            &json!({"nodes": {"noop": {"timeout_ms": -1, "retry": {"attempts": 0}}}, "edges": {"noop": null}}),
        )
        .await;
    assert_eq!(status, 422);
    let paths: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/nodes/noop/timeout_ms", "/nodes/noop/retry/attempts"]);
}

#[tokio::test]
async fn runs_left_queued_by_a_stop_run_one_after_another_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("weft.db");
    let mut settings = Settings::new(SocketAddr::from(([127, 0, 0, 1], 0)), "");
    settings.limits = RunLimits {
        max_running: 1,
        ..RunLimits::default()
    };
    let app = spawn_app_on(database.clone(), settings.clone()).await;
    let slow = app.create_graph(pauses(1, 300)).await;
    let quick = app.create_graph(pauses(1, 1)).await;
    let first = app.start_run(&slow, json!({})).await;
    let mut queued = Vec::new();
    for _ in 0..3 {
        queued.push(app.start_run(&quick, json!({})).await);
    }
    app.stop().await;

    // After the restart, the lease tick (and so its claims) is a minute away: each run
    // must be claimed as the one before it frees the only slot.
    settings.leases = Leases {
        duration: Duration::from_secs(120),
        renew_every: Duration::from_secs(60),
    };
    let app = spawn_app_on(database, settings).await;
    for run in std::iter::once(&first).chain(&queued) {
        let done = app.wait_for_end(run).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
}
