//! Reviews of large inputs: a 10 MB file of comment-heavy functions finishes with its
//! exact results.

use serde_json::{json, Value};
use weft_tests::{comment_heavy_python, spawn_app};

#[tokio::test]
async fn a_10_mb_file_of_comment_heavy_functions_is_reviewed_exactly() {
    let app = spawn_app().await;
    let graph = app.create_graph(json!({"preset": "code_review"})).await;
    let code = comment_heavy_python(10, 10_900, "");
    assert!(code.len() > 10_000_000, "{} bytes", code.len());
    let body = app.run_and_wait(&graph, json!({"code": code})).await;
    assert_eq!(body["status"], "completed", "{}", body["error"]);
    let state = &body["state"];
    let names: Vec<String> = (0..10).map(|f| format!("f{f}")).collect();
    assert_eq!(state["functions"], json!(names));
    let ones: serde_json::Map<String, Value> = names.iter().map(|n| (n.clone(), json!(1))).collect();
    assert_eq!(state["complexities"], Value::Object(ones));
    assert_eq!(state["issues"], json!([]));
    assert_eq!(state["issues_count"], 0);
    assert_eq!(state["quality_score"], 100);
    let ends: Vec<u64> = state["function_details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["end_line"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=10).map(|f| f * 10_903 - 1).collect();
    assert_eq!(ends, expected);
}
