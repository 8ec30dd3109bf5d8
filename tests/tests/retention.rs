//! Deleting runs and graphs, and purging runs past the retention period.

use std::{net::SocketAddr, time::Duration};

use serde_json::{json, Value};
use weft_server::config::Settings;
use weft_tests::{chain, spawn_app, spawn_app_on, TIMEOUT};

/// A run that sits in one node for `ms`.
fn pause(ms: u64) -> Value {
    chain([("wait".to_owned(), json!({"tool": "sleep", "config": {"ms": ms}}))])
}

#[tokio::test]
async fn an_ended_run_is_deleted_whole_and_a_live_one_is_not() {
    let app = spawn_app().await;
    let graph = app.create_graph(pause(300)).await;
    let run = app.start_run(&graph, json!({})).await;

    let (status, body) = app.delete(&format!("/runs/{run}")).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("run_live")), "{body}");
    assert_eq!(app.wait_for_end(&run).await["status"], "completed");

    let (status, body) = app.delete(&format!("/runs/{run}")).await;
    assert_eq!((status, body), (204, Value::Null));
    assert_eq!(app.get(&format!("/runs/{run}")).await.0, 404);
    assert_eq!(app.get(&format!("/graph/state/{run}")).await.0, 404);
    let (_, page) = app.get(&format!("/runs?graph_id={graph}")).await;
    assert_eq!(page["runs"], json!([]));
    let messages = app.stream(&run, "").await.unwrap();
    assert_eq!(
        messages,
        [json!({"type": "error", "detail": format!("no run with id `{run}`")})]
    );
    let (status, body) = app.delete(&format!("/runs/{run}")).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("run_not_found")));
}

#[tokio::test]
async fn a_graph_is_deleted_with_its_runs_once_none_is_live() {
    let app = spawn_app().await;
    let graph = app.create_graph(pause(300)).await;
    let done = app.run_and_wait(&graph, json!({})).await["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let live = app.start_run(&graph, json!({})).await;

    let (status, body) = app.delete(&format!("/graphs/{graph}")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("graph_has_live_runs")),
        "{body}"
    );
    assert_eq!(app.get(&format!("/graphs/{graph}")).await.0, 200);
    app.wait_for_end(&live).await;

    assert_eq!(app.delete(&format!("/graphs/{graph}")).await.0, 204);
    assert_eq!(app.get(&format!("/graphs/{graph}")).await.0, 404);
    for run in [&done, &live] {
        assert_eq!(app.get(&format!("/runs/{run}")).await.0, 404);
    }
    // Gone from memory too: it runs no more.
    let (status, body) = app.post("/graph/run", &json!({"graph_id": graph})).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("graph_not_found")));
    assert_eq!(app.delete(&format!("/graphs/{graph}")).await.0, 404);
}

#[tokio::test]
async fn runs_past_the_retention_period_are_purged_and_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("weft.db");
    let settings = Settings::new(SocketAddr::from(([127, 0, 0, 1], 0)), "");
    let app = spawn_app_on(database.clone(), settings.clone()).await;
    let quick = app.create_graph(pause(1)).await;
    let ended = app.run_and_wait(&quick, json!({})).await["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.stop().await;

    // Kept for no time at all: the purge at start takes every ended run.
    let mut keeping_nothing = settings;
    keeping_nothing.retention = Some(Duration::ZERO);
    let app = spawn_app_on(database, keeping_nothing).await;
    let slow = app.create_graph(pause(2_000)).await;
    let live = app.start_run(&slow, json!({})).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while app.get(&format!("/runs/{ended}")).await.0 != 404 {
        assert!(tokio::time::Instant::now() < deadline, "the ended run was not purged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, state) = app.get(&format!("/graph/state/{live}")).await;
    assert_eq!(state["status"], "running");
}

#[tokio::test]
async fn a_graph_deleted_through_one_instance_is_not_run_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("weft.db");
    let settings = Settings::new(SocketAddr::from(([127, 0, 0, 1], 0)), "");
    let (one, other) = (
        spawn_app_on(database.clone(), settings.clone()).await,
        spawn_app_on(database, settings).await,
    );
    let graph = one.create_graph(pause(1)).await;
    // The other instance has run it, so it holds it parsed.
    assert_eq!(other.run_and_wait(&graph, json!({})).await["status"], "completed");
    assert_eq!(one.delete(&format!("/graphs/{graph}")).await.0, 204);
    let (status, body) = other.post("/graph/run", &json!({"graph_id": graph})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("graph_not_found")),
        "{body}"
    );
}
