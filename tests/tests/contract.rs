//! The prototype's clients, unchanged: the points of `shared/API.md` that Weft once
//! broke, each asserted with the exact value the prototype gave.

use serde_json::{json, Value};
use weft_tests::spawn_app;

#[tokio::test]
async fn every_issue_text_is_its_line_stripped_and_the_explanation_has_its_own_field() {
    let app = spawn_app().await;
    let graph = app.create_graph(json!({"preset": "code_review"})).await;
    let long = format!("    x = '{}'", "a".repeat(130));
    let code = format!("def f(x):\n{long}\n    # FIXME: later   \n    return x\n");
    let body = app.run_and_wait(&graph, json!({"code": code})).await;
    assert_eq!(body["status"], "completed");
    let issues = &body["state"]["issues"];
    assert_eq!(
        issues,
        &json!([
            {"line": 2, "type": "long-line", "severity": "low", "text": long.trim(),
             "message": "line is 140 characters long (limit 120)"},
            {"line": 3, "type": "todo/fixme", "severity": "low", "text": "# FIXME: later",
             "message": "a note left to resolve"},
            {"line": 3, "type": "trailing-whitespace", "severity": "low", "text": "# FIXME: later",
             "message": "whitespace at the end of the line"}
        ])
    );
}

#[tokio::test]
async fn a_prototype_form_graph_reads_missing_inputs_as_empty() {
    let app = spawn_app().await;
    let graph = app
        .create_graph(json!({"nodes": {"suggest": {}, "detect": {}}, "edges": {"suggest": "detect"}}))
        .await;
    let code = "# TODO: one\nx = 1\n";
    let body = app.run_and_wait(&graph, json!({"code": code})).await;
    assert_eq!(body["status"], "completed", "{body}");
    let state = &body["state"];
    // `suggest` ran first and scored an empty issue list, as the prototype's did.
    assert_eq!(state["suggestions"], json!([]));
    assert_eq!(state["quality_score"], 100);
    // Then `detect` found the issues.
    assert_eq!(state["issues_count"], 1);
    assert_eq!(state["issues"][0]["text"], "# TODO: one");
    let log: Vec<&str> = body["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(log[0], "[RUNNING] suggest");
    assert_eq!(log[1], "suggest: `issues` is missing: read as []");
    assert!(log.contains(&"[RUNNING] detect"), "{log:?}");
}

#[tokio::test]
async fn a_version_2_graph_stays_strict_about_missing_inputs() {
    let app = spawn_app().await;
    let graph = app
        .create_graph(json!({"nodes": [{"id": "suggest", "tool": "suggest"}], "edges": []}))
        .await;
    let body = app.run_and_wait(&graph, json!({"code": "x = 1\n"})).await;
    assert_eq!(body["status"], "failed");
    assert_eq!(
        body["error"],
        "node `suggest` failed: invalid input: `issues` is missing: run `detect` before `suggest`"
    );
}

#[tokio::test]
async fn empty_nodes_or_edges_count_as_missing() {
    let app = spawn_app().await;
    let (_, missing) = app.post("/graph/create", &json!({"nodes": {"extract": {}}})).await;
    for body in [
        json!({"nodes": {"extract": {}}, "edges": {}}),
        json!({"nodes": {}, "edges": {"extract": null}}),
        json!({"nodes": {}, "edges": {}}),
        json!({"nodes": {"extract": {}}, "edges": null}),
    ] {
        let (status, answer) = app.post("/graph/create", &body).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(answer["detail"], "give either `preset` or both `nodes` and `edges`");
        assert_eq!(answer, missing, "the same answer as for missing edges");
    }
}
