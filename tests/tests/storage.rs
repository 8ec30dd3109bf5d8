//! Storage per step is proportional to the step's update, not to the state: a run over a
//! large state stores each step's writes, with a full snapshot of the state only now and
//! then, and the stream still carries the whole state with every step.

use serde_json::json;
use weft_tests::spawn_app;

/// The database's size on disk: the file and its write-ahead log.
fn database_bytes(path: &std::path::Path) -> u64 {
    let size = |p: std::path::PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    let wal = path.with_extension("db-wal");
    size(path.to_path_buf()) + size(wal)
}

#[tokio::test]
async fn a_100_step_run_over_a_100_kb_state_stores_well_under_5_mb() {
    let app = spawn_app().await;
    let graph = app
        .create_graph(json!({
            "max_steps": 100,
            "nodes": [{"id": "count", "tool": "increment"}],
            "edges": [{"from": "count", "branches": [{"when": "state.count < 100", "to": "count"}], "default": null}]
        }))
        .await;
    let blob = "x".repeat(100_000);
    let before = database_bytes(&app.database);
    let body = app.run_and_wait(&graph, json!({"blob": blob})).await;
    assert_eq!(body["status"], "completed", "{}", body["error"]);
    assert_eq!(body["state"]["count"], 100);
    let grown = database_bytes(&app.database) - before;
    assert!(grown < 5_000_000, "the database grew by {grown} bytes");
    println!("database growth for 100 steps over a 100 KB state: {grown} bytes");

    // The stream still carries the whole state after every step, rebuilt from the store.
    let run_id = body["run_id"].as_str().unwrap();
    let messages = app.stream(run_id, "").await.unwrap();
    let steps: Vec<_> = messages.iter().filter(|m| m["type"] == "step").collect();
    assert_eq!(steps.len(), 100);
    for (i, step) in steps.iter().enumerate() {
        assert_eq!(step["state"], json!({"blob": blob, "count": i + 1}), "step {}", i + 1);
        assert_eq!(step["update"], json!({"count": i + 1}));
    }
    // From the middle, too.
    let tail = app
        .stream(run_id, &format!("?since={}", steps[57]["seq"]))
        .await
        .unwrap();
    let first_step = tail.iter().find(|m| m["type"] == "step").unwrap();
    assert_eq!(first_step["state"], json!({"blob": blob, "count": 59}));
    // And the run's detail, and its state.
    let (_, detail) = app.get(&format!("/runs/{run_id}")).await;
    let detailed: Vec<_> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "step")
        .collect();
    assert_eq!(detailed[99]["state"]["count"], 100);
    assert_eq!(detailed[41]["state"], json!({"blob": blob, "count": 42}));
}

#[tokio::test]
async fn a_code_review_s_steps_stream_their_rebuilt_states() {
    let app = spawn_app().await;
    let graph = app.create_graph(json!({"preset": "code_review"})).await;
    // About 40 lines with a few issues: five steps, one pass.
    let code: String = (0..8)
        .map(|i| format!("def f{i}(a, b):\n    # TODO: check {i}\n    if a > b:\n        return a\n    return b\n"))
        .collect();
    let before = database_bytes(&app.database);
    let body = app.run_and_wait(&graph, json!({"code": code})).await;
    assert_eq!(body["status"], "completed");
    assert_eq!(body["state"]["issues_count"], 8);
    // Mostly SQLite's page-sized WAL frames (a few 4 KiB pages a commit), printed for
    // docs/benchmarks.md.
    println!(
        "database growth for a 40-line Code Review: {} bytes",
        database_bytes(&app.database) - before
    );
    let run_id = body["run_id"].as_str().unwrap();
    let messages = app.stream(run_id, "").await.unwrap();
    let steps: Vec<_> = messages.iter().filter(|m| m["type"] == "step").collect();
    assert_eq!(steps.len(), 5);
    assert_eq!(
        steps[4]["state"], body["state"],
        "the last step's state, rebuilt, is the final state"
    );
    assert_eq!(steps[0]["state"]["functions"].as_array().map(Vec::len), Some(8));
    assert!(steps[0]["state"].get("issues").is_none(), "each step's own state");
}
