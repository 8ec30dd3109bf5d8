//! Data outlives the server: stop it, start another on the same database file, and
//! earlier graphs and runs are all there.

use std::net::SocketAddr;

use serde_json::json;
use weft_server::config::Settings;
use weft_tests::{spawn_app, spawn_app_on};

#[tokio::test]
async fn runs_and_graphs_survive_a_restart() {
    let mut first = spawn_app().await;
    let dir = first.keep_dir();
    let database = first.database.clone();
    let graph = first.create_graph(json!({"preset": "code_review"})).await;
    let done = first
        .run_and_wait(&graph, json!({"code": "def f():\n    return 1  \n"}))
        .await;
    let run_id = done["run_id"].as_str().unwrap().to_owned();
    let (_, before) = first.get(&format!("/graph/state/{run_id}")).await;
    first.stop().await;

    let second = spawn_app_on(database, Settings::new(SocketAddr::from(([127, 0, 0, 1], 0)), "")).await;
    let (status, after) = second.get(&format!("/graph/state/{run_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(after, before);
    assert_eq!(after["status"], "completed");
    assert_eq!(after["state"], done["state"]);
    assert_eq!(after["log"], done["log"]);

    // The stored graph runs again after the restart, and the stream replays from disk.
    let again = second.run_and_wait(&graph, json!({"code": "x = 1\n"})).await;
    assert_eq!(again["status"], "completed");
    let messages = second.stream(&run_id, "").await.unwrap();
    assert_eq!(
        messages.iter().filter(|m| m["type"] == "step").count(),
        done["log"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l.as_str().unwrap().starts_with("[RUNNING]"))
            .count()
    );
    drop(dir);
}
