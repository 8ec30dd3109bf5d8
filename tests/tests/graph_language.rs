//! Graph language version 2 through the API: conditional edges, script nodes and their
//! limits, and validation that reports every mistake at once.

use serde_json::{json, Value};
use weft_tests::spawn_app;

/// Nodes executed, in order, read from the log's `[RUNNING]` lines.
fn path_taken(body: &Value) -> Vec<String> {
    body["log"]
        .as_array()
        .expect("the log is a list")
        .iter()
        .filter_map(|line| line.as_str()?.strip_prefix("[RUNNING] "))
        .map(str::to_owned)
        .collect()
}

/// Scores a ticket with a script, then branches three ways on the score.
fn triage() -> Value {
    json!({
        "name": "triage",
        "description": "Scores a ticket, then pages, queues or closes it.",
        "start": "score",
        "max_steps": 10,
        "nodes": [
            {"id": "score", "tool": "script", "config": {
                "script": "let words = state.text.split(\" \"); print(`${words.len()} words`); #{score: if state.text.contains(\"down\") { 9 } else { words.len() }}"
            }},
            {"id": "page", "tool": "increment", "config": {"key": "pages"}},
            {"id": "queue", "tool": "increment", "config": {"key": "queued"}},
            {"id": "close", "tool": "noop"}
        ],
        "edges": [
            {"from": "score", "branches": [
                {"when": "state.score >= 8", "to": "page"},
                {"when": "state.score >= 3", "to": "queue"}
            ], "default": "close"},
            {"from": "page", "to": null},
            {"from": "queue", "to": null}
        ]
    })
}

#[tokio::test]
async fn a_conditional_graph_takes_each_branch_on_the_right_input() {
    let app = spawn_app().await;
    let (status, created) = app.post("/graph/create", &triage()).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["warnings"], json!([]));
    let graph = created["graph_id"].as_str().unwrap();

    let down = app.run_and_wait(graph, json!({"text": "site is down"})).await;
    assert_eq!(down["status"], "completed");
    assert_eq!(path_taken(&down), ["score", "page"]);
    assert_eq!(down["state"], json!({"text": "site is down", "score": 9, "pages": 1}));
    assert!(
        down["log"].as_array().unwrap().contains(&json!("score: 3 words")),
        "{down}"
    );

    let wordy = app.run_and_wait(graph, json!({"text": "please fix the footer"})).await;
    assert_eq!(path_taken(&wordy), ["score", "queue"]);
    assert_eq!(wordy["state"]["score"], 4);
    assert_eq!(wordy["state"]["queued"], 1);

    let short = app.run_and_wait(graph, json!({"text": "thanks"})).await;
    assert_eq!(path_taken(&short), ["score", "close"]);
    assert_eq!(short["state"], json!({"text": "thanks", "score": 1}));

    // The stored graph keeps its name and description, and draws the branches.
    let (_, detail) = app.get(&format!("/graphs/{graph}")).await;
    assert_eq!(detail["name"], "triage");
    assert_eq!(
        detail["description"],
        "Scores a ticket, then pages, queues or closes it."
    );
    let branches: Vec<(&str, &str)> = detail["view"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|edge| edge["kind"] == "branch")
        .map(|edge| (edge["to"].as_str().unwrap(), edge["label"].as_str().unwrap()))
        .collect();
    assert_eq!(
        branches,
        [
            ("page", "state.score >= 8"),
            ("queue", "state.score >= 3"),
            ("close", "else")
        ]
    );
}

#[tokio::test]
async fn a_failing_condition_fails_the_run_and_says_which() {
    let app = spawn_app().await;
    let graph = app.create_graph(triage()).await;
    // `text` is a number: the script's `split` does not exist for it.
    let body = app.run_and_wait(&graph, json!({"text": 5})).await;
    assert_eq!(body["status"], "failed");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("node `score` failed: Function not found: split (i64, "),
        "{body}"
    );

    let spec = json!({
        "nodes": [{"id": "a", "tool": "noop"}, {"id": "b", "tool": "noop"}],
        "edges": [{"from": "a", "branches": [{"when": "state.level", "to": "b"}], "default": null}]
    });
    let graph = app.create_graph(spec).await;
    let body = app.run_and_wait(&graph, json!({"level": "high"})).await;
    assert_eq!(body["status"], "failed");
    assert_eq!(
        body["error"],
        "the edge from `a` could not choose: branch 0 (`state.level`) gave a value of type string, not true or false"
    );
    assert_eq!(path_taken(&body), ["a"]);
}

#[tokio::test]
async fn a_script_updates_state_and_a_runaway_script_is_stopped_by_its_limits() {
    let app = spawn_app().await;
    let spec = json!({
        "nodes": [
            {"id": "stats", "tool": "script", "config": {"script": "
                let total = 0;
                for n in state.numbers { total += n; }
                #{total: total, mean: total / state.numbers.len(), count: state.numbers.len()}
            "}}
        ]
    });
    let graph = app.create_graph(spec).await;
    let body = app.run_and_wait(&graph, json!({"numbers": [3, 4, 8]})).await;
    assert_eq!(body["status"], "completed");
    assert_eq!(
        body["state"],
        json!({"numbers": [3, 4, 8], "total": 15, "mean": 5, "count": 3})
    );

    let spin = |config: Value| json!({"nodes": [{"id": "spin", "tool": "script", "config": config}]});
    let by_operations = app
        .create_graph(spin(
            json!({"script": "let n = 0; loop { n += 1; }", "max_operations": 20000}),
        ))
        .await;
    let body = app.run_and_wait(&by_operations, json!({})).await;
    assert_eq!(body["status"], "failed");
    assert_eq!(
        body["error"],
        "node `spin` failed: stopped: operation limit of 20000 reached"
    );

    let by_time = app
        .create_graph(spin(
            json!({"script": "let n = 0; loop { n += 1; }", "time_limit_ms": 50}),
        ))
        .await;
    let body = app.run_and_wait(&by_time, json!({})).await;
    assert_eq!(body["status"], "failed");
    assert_eq!(body["error"], "node `spin` failed: stopped: time limit reached");

    // The server is still answering after both, and lists the script tool's config.
    let (status, tools) = app.get("/tools").await;
    assert_eq!(status, 200);
    let script = tools
        .as_array()
        .unwrap()
        .iter()
        .find(|tool| tool["name"] == "script")
        .expect("the script tool is listed");
    let schema = &script["config_schema"];
    assert_eq!(schema["required"], json!(["script"]));
    assert_eq!(schema["properties"]["max_operations"]["maximum"], 10_000_000);
    assert_eq!(schema["additionalProperties"], false);
}

#[tokio::test]
async fn a_spec_with_five_mistakes_gets_five_precise_errors_in_one_answer() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/graph/create",
            &json!({
                "name": "broken",
                "start": "fetch",
                "nodes": [
                    {"id": "fetch", "tool": "download"},
                    {"id": "nap", "tool": "sleep", "config": {"ms": 120000}},
                    {"id": "tidy", "tool": "script", "config": {"script": "#{clean: state.rows.filter(|r| r.ok}"}}
                ],
                "edges": [
                    {"from": "fetch", "branches": [{"when": "state.size >", "to": "nap"}], "default": "tidy"},
                    {"from": "nap", "to": "publish"}
                ]
            }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "invalid_graph");
    let errors: Vec<(&str, &str)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap(), e["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        [
            ("/nodes/0/tool", "`download` is not a registered tool (GET /tools lists them)"),
            ("/nodes/1/config/ms", "bad config for `sleep`: must be at most 60000"),
            (
                "/nodes/2/config/script",
                "bad config for `script`: does not compile: Expecting ',' to separate the arguments to function call 'filter' (line 1, position 36)"
            ),
            ("/edges/0/branches/0/when", "does not compile: Script is incomplete (line 1, position 13)"),
            ("/edges/1/to", "edge to `publish`, which is not a node"),
        ]
    );
}
