//! Fork and replay: a new run from the state after any step of another (a pass inside a
//! loop included), with a merge patch, on the same graph or a fixed one.

use serde_json::{json, Value};
use weft_tests::{spawn_app, TestApp};

/// Counts up to `state.limit`, one `count` node per pass of the loop.
fn counting_loop() -> Value {
    json!({
        "name": "count to the limit",
        "start": "count",
        "max_steps": 50,
        "nodes": [{"id": "count", "tool": "increment"}],
        "edges": [{"from": "count", "branches": [{"when": "state.count < state.limit", "to": "count"}], "default": null}]
    })
}

/// `prep` then `check`, which runs `check_tool`.
fn prep_then_check(check_tool: &str) -> Value {
    json!({
        "start": "prep",
        "nodes": [
            {"id": "prep", "tool": "increment"},
            {"id": "check", "tool": check_tool}
        ],
        "edges": [{"from": "prep", "to": "check"}, {"from": "check", "to": null}]
    })
}

async fn fork(app: &TestApp, run: &str, body: Value) -> (u16, Value) {
    app.post(&format!("/runs/{run}/fork"), &body).await
}

#[tokio::test]
async fn a_fork_at_a_step_inside_a_loop_with_a_patch_ends_with_the_patched_outcome() {
    let app = spawn_app().await;
    let graph = app.create_graph(counting_loop()).await;
    let parent = app.run_and_wait(&graph, json!({"count": 0, "limit": 5})).await;
    assert_eq!(parent["state"], json!({"count": 5, "limit": 5}));
    let parent_id = parent["run_id"].as_str().expect("run_id");

    // After the second pass the count is 2; with the limit raised, the loop goes on to 8.
    let (status, started) = fork(&app, parent_id, json!({"from_step": 2, "state_patch": {"limit": 8}})).await;
    assert_eq!(status, 200, "{started}");
    let child = started["run_id"].as_str().expect("run_id");
    let ended = app.wait_for_end(child).await;
    assert_eq!(ended["status"], "completed");
    assert_eq!(ended["state"], json!({"count": 8, "limit": 8}));
    assert_eq!(ended["steps"], 6);
    assert_eq!(ended["forked_from"], json!({"run_id": parent_id, "step": 2}));

    // A patch that removes a key and adds one; the loop ends at once after the pass.
    let (status, started) = fork(
        &app,
        parent_id,
        json!({"from_step": 4, "state_patch": {"limit": 5, "note": "again"}}),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    let second = started["run_id"].as_str().expect("run_id");
    let ended = app.wait_for_end(second).await;
    assert_eq!(ended["state"], json!({"count": 5, "limit": 5, "note": "again"}));
    assert_eq!(ended["steps"], 1);

    // The parent lists its forks, oldest first.
    let (_, detail) = app.get(&format!("/runs/{parent_id}")).await;
    assert_eq!(detail["forks"], json!([child, second]));
    assert!(detail["run"].get("forked_from").is_none());

    // From step 0: the initial state, patched, from the start node.
    let (_, started) = fork(&app, parent_id, json!({"from_step": 0, "state_patch": {"count": 3}})).await;
    let ended = app.wait_for_end(started["run_id"].as_str().expect("run_id")).await;
    assert_eq!(ended["state"], json!({"count": 5, "limit": 5}));
    assert_eq!(ended["steps"], 2);
}

#[tokio::test]
async fn a_fork_of_a_failed_run_onto_a_fixed_graph_completes() {
    let app = spawn_app().await;
    let broken = app.create_graph(prep_then_check("fail")).await;
    let failed = app.run_and_wait(&broken, json!({"count": 1})).await;
    assert_eq!(failed["status"], "failed");
    let failed_id = failed["run_id"].as_str().expect("run_id");

    // The fixed graph has the same `prep`; from the step before the failure, `check`
    // runs again, fixed.
    let fixed = app.create_graph(prep_then_check("increment")).await;
    let (status, started) = fork(&app, failed_id, json!({"from_step": 1, "graph_id": fixed})).await;
    assert_eq!(status, 200, "{started}");
    let ended = app.wait_for_end(started["run_id"].as_str().expect("run_id")).await;
    assert_eq!(ended["status"], "completed");
    assert_eq!(ended["graph_id"], fixed.as_str());
    assert_eq!(ended["state"], json!({"count": 3}));
    assert_eq!(ended["steps"], 1);
}

#[tokio::test]
async fn a_fork_that_cannot_start_says_why() {
    let app = spawn_app().await;
    let graph = app.create_graph(prep_then_check("increment")).await;
    let run = app.run_and_wait(&graph, json!({})).await;
    let run_id = run["run_id"].as_str().expect("run_id");

    let (status, body) = fork(&app, run_id, json!({"from_step": 9})).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("invalid_fork")), "{body}");
    assert_eq!(
        body["detail"],
        format!("run `{run_id}` has 2 step(s); there is no step 9")
    );
    // The last step's node leads nowhere: nothing would run.
    let (status, body) = fork(&app, run_id, json!({"from_step": 2})).await;
    assert_eq!(status, 422);
    assert_eq!(
        body["detail"],
        "nothing follows step 2: the fork would end before it began"
    );
    // A graph without the step's node cannot take over.
    let other = app
        .create_graph(json!({"nodes": {"solo": "noop"}, "edges": {"solo": null}}))
        .await;
    let (status, body) = fork(&app, run_id, json!({"from_step": 1, "graph_id": other})).await;
    assert_eq!(status, 422);
    assert_eq!(
        body["detail"],
        format!("step 1 ran `prep`, which graph `{other}` has no node for")
    );
    let (status, body) = fork(&app, run_id, json!({"from_step": 1, "state_patch": [1]})).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("invalid_fork")));
    let (status, body) = fork(&app, "nope", json!({"from_step": 1})).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("run_not_found")));
    let (status, _) = fork(&app, run_id, json!({"from": 1})).await;
    assert_eq!(status, 422);
}
