//! The `llm` node against a fake OpenAI-compatible server on port 0 (axum, answering
//! with server-sent events split into small chunks, as a real API streams): the request
//! it sends, the answer streamed into the state, a 429 with `Retry-After` tried again, a
//! structured answer that does not match asked again once then failed, and the API key
//! nowhere in the database or the log.

use std::{path::Path, time::Instant};

use serde_json::{json, Value};
use weft_tests::{
    fake_llm::{fake, Reply},
    ServerProcess, TestApp,
};

const KEY: &str = "sk-test-SECRET-4242";

async fn server(database: &Path, base_url: &str) -> ServerProcess {
    ServerProcess::start_with_env(
        env!("CARGO_BIN_EXE_weft-server-under-test"),
        database,
        &[("WEFT_LLM_BASE_URL", base_url), ("WEFT_LLM_API_KEY", KEY)],
    )
    .await
}

fn reviewer(extra: Value) -> Value {
    let mut config = json!({
        "model": "m1",
        "system": "You review {{ language }}.",
        "prompt": "Review:\n{{ code }}",
        "output_key": "review"
    });
    if let (Value::Object(config), Value::Object(extra)) = (&mut config, extra) {
        config.extend(extra);
    }
    json!({"start": "ask", "nodes": [{"id": "ask", "tool": "llm", "config": config}], "edges": []})
}

#[tokio::test]
async fn the_templates_go_out_and_the_streamed_answer_comes_into_the_state_with_no_key_left_behind() {
    let (fake, base) = fake(vec![Reply::stream(&["Looks ", "fine", "."])]).await;
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("weft.db");
    let weft = server(&database, &base).await;
    let app = TestApp::connect(weft.port);
    let graph = app.create_graph(reviewer(json!({"temperature": 0.2}))).await;
    let done = app
        .run_and_wait(&graph, json!({"language": "python", "code": "x = 1"}))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["state"]["review"], "Looks fine.");
    assert!(
        done["log"]
            .as_array()
            .unwrap()
            .contains(&json!("ask: m1: 12 prompt + 3 completion tokens")),
        "{done}"
    );
    {
        let received = fake.received.lock().unwrap();
        assert_eq!(received.len(), 1);
        let body = &received[0].body;
        assert_eq!(
            body["messages"],
            json!([
                {"role": "system", "content": "You review python."},
                {"role": "user", "content": "Review:\nx = 1"}
            ])
        );
        assert_eq!(
            (&body["model"], &body["stream"], &body["temperature"]),
            (&json!("m1"), &json!(true), &json!(0.2))
        );
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert!(body.get("response_format").is_none());
        assert_eq!(
            received[0].authorization.as_deref(),
            Some(format!("Bearer {KEY}").as_str())
        );
    }
    weft.terminate().await;
    // The key is in the environment only: not in the database, not in the log.
    let weft = server(&database, &base).await;
    let log = weft.log().join("\n");
    weft.terminate().await;
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        assert!(!bytes.windows(KEY.len()).any(|window| window == KEY.as_bytes()));
    }
    assert!(!log.is_empty() && !log.contains(KEY));
}

#[tokio::test]
async fn a_429_with_retry_after_is_tried_again_after_it() {
    let (fake, base) = fake(vec![Reply::Status(429, Some("1")), Reply::stream(&["ok"])]).await;
    let dir = tempfile::tempdir().unwrap();
    let weft = server(&dir.path().join("weft.db"), &base).await;
    let app = TestApp::connect(weft.port);
    let graph = app.create_graph(reviewer(json!({}))).await;
    let done = app
        .run_and_wait(&graph, json!({"language": "rust", "code": "fn f() {}"}))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["state"]["review"], "ok");
    let (calls, waited) = {
        let received = fake.received.lock().unwrap();
        (received.len(), received[1].at - received[0].at)
    };
    assert_eq!(calls, 2);
    assert!(waited.as_millis() >= 1_000, "tried again after {waited:?}");
    weft.terminate().await;
}

#[tokio::test]
async fn a_structured_answer_that_does_not_match_is_asked_again_once_then_fails() {
    let schema = json!({"type": "object", "required": ["verdict"], "properties": {"verdict": {"enum": ["ok", "bad"]}}});
    let (fake, base) = fake(vec![
        Reply::stream(&["not ", "json"]),
        Reply::stream(&[r#"{"verdict": "#, "3}"]),
        Reply::stream(&["maybe"]),
        Reply::stream(&[r#"{"verdict": "ok"}"#]),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let weft = server(&dir.path().join("weft.db"), &base).await;
    let app = TestApp::connect(weft.port);
    let graph = app.create_graph(reviewer(json!({"json_schema": schema}))).await;
    let input = json!({"language": "go", "code": "x := 1"});
    let failed = app.run_and_wait(&graph, input.clone()).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.starts_with("node `ask` failed: the model's answer did not match `json_schema` twice; last: /verdict:"),
        "{error}"
    );
    {
        let received = fake.received.lock().unwrap();
        assert_eq!(received.len(), 2);
        assert_eq!(
            received[0].body["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}})
        );
        let again = received[1].body["messages"].as_array().unwrap();
        assert_eq!(again.len(), 4);
        assert_eq!(again[2], json!({"role": "assistant", "content": "not json"}));
        assert!(again[3]["content"]
            .as_str()
            .unwrap()
            .starts_with("Your answer did not match the required JSON Schema: not JSON"));
    }
    // Asked again, the model gets it right: the answer is JSON in the state.
    let done = app.run_and_wait(&graph, input).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["state"]["review"], json!({"verdict": "ok"}));
    weft.terminate().await;
}

#[tokio::test]
async fn after_a_kill_the_finished_llm_step_is_not_called_again() {
    // Paced, so the server answers the start of the run before the hook kills it.
    let (fake, base) = fake(vec![Reply::paced(&["kept"])]).await;
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("weft.db");
    // The server dies right after the `ask` step is committed.
    let first = ServerProcess::start_with_env(
        env!("CARGO_BIN_EXE_weft-server-under-test"),
        &database,
        &[
            ("WEFT_LLM_BASE_URL", &base),
            ("WEFT_LLM_API_KEY", KEY),
            ("WEFT_TEST_ABORT_AFTER_STEP", "ask"),
        ],
    )
    .await;
    let app = TestApp::connect(first.port);
    let mut graph = reviewer(json!({}));
    graph["nodes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "after", "tool": "increment", "config": {"key": "after"}}));
    graph["edges"] = json!([{"from": "ask", "to": "after"}]);
    let graph = app.create_graph(graph).await;
    let run_id = app.start_run(&graph, json!({"language": "c", "code": "int x;"})).await;
    assert!(!first.exited().await.expect("the hook aborts the server").success());

    let second = server(&database, &base).await;
    let app = TestApp::connect(second.port);
    let done = app.until_ended(&run_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["state"]["review"], "kept");
    assert_eq!(done["state"]["after"], 1);
    assert_eq!(fake.received.lock().unwrap().len(), 1, "the model was asked once");
    second.terminate().await;
}

#[tokio::test]
async fn a_cancel_during_a_slow_stream_ends_the_run_and_hangs_up_on_the_provider() {
    let (fake, base) = fake(vec![Reply::Slow]).await;
    let dir = tempfile::tempdir().unwrap();
    let weft = server(&dir.path().join("weft.db"), &base).await;
    let app = TestApp::connect(weft.port);
    let graph = app.create_graph(reviewer(json!({}))).await;
    let run_id = app.start_run(&graph, json!({"language": "c", "code": "int x;"})).await;
    let deadline = tokio::time::Instant::now() + weft_tests::TIMEOUT;
    while fake.received.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the model was never called");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Some words in, with 10 s of stream to go.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!fake.hung_up.load(std::sync::atomic::Ordering::SeqCst));
    let asked = Instant::now();
    let (status, _) = app.post(&format!("/runs/{run_id}/cancel"), &json!({})).await;
    assert_eq!(status, 202);
    let ended = loop {
        let (_, state) = app.get(&format!("/graph/state/{run_id}")).await;
        if state["status"] != "running" {
            break state;
        }
        assert!(asked.elapsed().as_secs() < 5, "still running: {state}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert!(ended["state"].get("review").is_none(), "the half answer is not kept");
    // The provider sees the connection close, long before its 10 s stream would end.
    while !fake.hung_up.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(asked.elapsed().as_secs() < 5, "the request was not aborted");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let took = asked.elapsed();
    assert!(took.as_millis() < 2_000, "took {took:?}");
    weft.terminate().await;
}

#[tokio::test]
async fn tokens_reach_the_run_stream_in_order_and_add_up_to_the_stored_text() {
    let (_fake, base) = fake(vec![Reply::paced(&["Short", " and", " clear", "."])]).await;
    let dir = tempfile::tempdir().unwrap();
    let weft = server(&dir.path().join("weft.db"), &base).await;
    let app = TestApp::connect(weft.port);
    let graph = app.create_graph(reviewer(json!({}))).await;
    let run_id = app.start_run(&graph, json!({"language": "c", "code": "int x;"})).await;
    let messages = app.stream(&run_id, "").await.unwrap();
    let tokens: Vec<&str> = messages
        .iter()
        .filter(|m| m["type"] == "token")
        .map(|m| {
            assert_eq!((&m["node"], &m["step"]), (&json!("ask"), &json!(1)));
            assert!(m.get("seq").is_none(), "a token is not stored: {m}");
            m["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(tokens, ["Short", " and", " clear", "."]);
    let step = messages.iter().position(|m| m["type"] == "step").unwrap();
    let last_token = messages.iter().rposition(|m| m["type"] == "token").unwrap();
    assert!(last_token < step, "the tokens come before the step");
    assert_eq!(messages[step]["state"]["review"], tokens.concat());
    // Stored: the step, with the whole text; no token.
    let (_, detail) = app.get(&format!("/runs/{run_id}")).await;
    let stored: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert!(!stored.contains(&"token"), "{stored:?}");
    weft.terminate().await;
}

#[tokio::test]
async fn a_client_that_connects_mid_answer_gets_the_answer_so_far_then_the_rest_once() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let pieces = ["One", " two", " three", " four", " five", " six", " seven", " eight"];
    let (_fake, base) = fake(vec![Reply::paced(&pieces)]).await;
    let dir = tempfile::tempdir().unwrap();
    let weft = server(&dir.path().join("weft.db"), &base).await;
    let app = TestApp::connect(weft.port);
    let graph = app.create_graph(reviewer(json!({}))).await;
    let run_id = app.start_run(&graph, json!({"language": "c", "code": "int x;"})).await;
    // A first client, there from the start, reads tokens as they come.
    let (mut first, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws/{run_id}", weft.port))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let message = tokio::time::timeout(weft_tests::TIMEOUT, first.next())
            .await
            .expect("no token came")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            let event: Value = serde_json::from_str(&text).unwrap();
            if event["type"] == "token" {
                seen.push(event["text"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(seen, ["One", " two"]);
    // A second client, two pieces in: the answer so far comes first, whole, then the rest.
    let messages = app.stream(&run_id, "").await.unwrap();
    let tokens: Vec<&str> = messages
        .iter()
        .filter(|m| m["type"] == "token")
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert!(
        tokens[0].starts_with("One two") && pieces.concat().starts_with(tokens[0]),
        "{tokens:?}"
    );
    assert!(tokens.len() < pieces.len(), "the start came as one message: {tokens:?}");
    assert_eq!(tokens.concat(), pieces.concat(), "every piece once");
    let first_token = messages.iter().position(|m| m["type"] == "token").unwrap();
    let step = messages.iter().position(|m| m["type"] == "step").unwrap();
    assert!(first_token < step);
    assert_eq!(messages[step]["state"]["review"], pieces.concat());
    // Once the step is written, a new client reads the answer there: no token.
    let after = app.stream(&run_id, "").await.unwrap();
    assert!(after.iter().all(|m| m["type"] != "token"), "{after:?}");
    weft.terminate().await;
}

#[tokio::test]
async fn tokens_and_cost_are_kept_per_step_and_summed_per_run() {
    let (_fake, base) = fake(vec![Reply::stream(&["a", "b", "c"]), Reply::stream(&["d"])]).await;
    let dir = tempfile::tempdir().unwrap();
    // $1,000 and $2,000 per million tokens: 12 prompt and 3 completion tokens cost $0.018.
    let weft = ServerProcess::start_with_env(
        env!("CARGO_BIN_EXE_weft-server-under-test"),
        &dir.path().join("weft.db"),
        &[
            ("WEFT_LLM_BASE_URL", &base),
            ("WEFT_LLM_API_KEY", KEY),
            ("WEFT_LLM_PRICES", "m1=1000:2000"),
        ],
    )
    .await;
    let app = TestApp::connect(weft.port);
    let mut graph = reviewer(json!({}));
    let second = json!({"id": "again", "tool": "llm", "config": {"model": "m1", "prompt": "More on {{ review }}", "output_key": "more"}});
    graph["nodes"].as_array_mut().unwrap().push(second);
    graph["edges"] = json!([{"from": "ask", "to": "again"}]);
    let graph = app.create_graph(graph).await;
    let done = app
        .run_and_wait(&graph, json!({"language": "c", "code": "int x;"}))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        (&done["state"]["review"], &done["state"]["more"]),
        (&json!("abc"), &json!("d"))
    );
    let run_id = done["run_id"].as_str().unwrap();
    let (_, detail) = app.get(&format!("/runs/{run_id}")).await;
    let usages: Vec<&Value> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == "step")
        .map(|event| &event["usage"])
        .collect();
    assert_eq!(
        usages,
        [
            &json!({"prompt_tokens": 12, "completion_tokens": 3, "cost_usd": 0.018}),
            &json!({"prompt_tokens": 12, "completion_tokens": 1, "cost_usd": 0.014})
        ]
    );
    let (_, state) = app.get(&format!("/graph/state/{run_id}")).await;
    assert_eq!(
        (&state["usage"]["prompt_tokens"], &state["usage"]["completion_tokens"]),
        (&json!(24), &json!(4))
    );
    assert!(
        (state["usage"]["cost_usd"].as_f64().unwrap() - 0.032).abs() < 1e-9,
        "{state}"
    );
    let (_, runs) = app.get("/runs").await;
    assert_eq!(runs["runs"][0]["usage"], state["usage"]);
    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"weft_llm_tokens_total{model="m1",kind="prompt"} 24"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"weft_llm_tokens_total{model="m1",kind="completion"} 4"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"weft_llm_cost_usd_total{model="m1"} 0.032"#),
        "{metrics}"
    );
    weft.terminate().await;
}

#[tokio::test]
async fn the_node_timeout_aborts_the_request_and_a_provider_takes_one_call_at_a_time_when_told() {
    let (fake, base) = fake(vec![Reply::Slow]).await;
    let dir = tempfile::tempdir().unwrap();
    let weft = server(&dir.path().join("weft.db"), &base).await;
    let app = TestApp::connect(weft.port);
    let mut graph = reviewer(json!({}));
    graph["nodes"][0]["timeout_ms"] = json!(500);
    let graph = app.create_graph(graph).await;
    let failed = app
        .run_and_wait(&graph, json!({"language": "c", "code": "int x;"}))
        .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"], "node `ask` failed: timed out after 500 ms");
    let asked = Instant::now();
    while !fake.hung_up.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(asked.elapsed().as_secs() < 5, "the request was not aborted");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    weft.terminate().await;

    // One call at a time: the second run's call waits for the first's to end.
    let (paced, paced_base) = self::fake(vec![Reply::paced(&["a", "b", "c"]), Reply::paced(&["d"])]).await;
    let weft = ServerProcess::start_with_env(
        env!("CARGO_BIN_EXE_weft-server-under-test"),
        &dir.path().join("other.db"),
        &[("WEFT_LLM_BASE_URL", &paced_base), ("WEFT_LLM_MAX_CONCURRENT", "1")],
    )
    .await;
    let app = TestApp::connect(weft.port);
    let graph = app.create_graph(reviewer(json!({}))).await;
    let input = json!({"language": "c", "code": "int x;"});
    let (first, second) = tokio::join!(app.run_and_wait(&graph, input.clone()), app.run_and_wait(&graph, input));
    assert_eq!(
        (&first["status"], &second["status"]),
        (&json!("completed"), &json!("completed"))
    );
    let (calls, gap, authorization) = {
        let received = paced.received.lock().unwrap();
        (
            received.len(),
            received[1].at - received[0].at,
            received[0].authorization.clone(),
        )
    };
    assert_eq!(calls, 2);
    assert!(
        gap.as_millis() >= 400,
        "the second call came {gap:?} after the first, while it streamed"
    );
    assert_eq!(authorization, None, "no key configured, none sent");
    weft.terminate().await;
}

/// The line a server with no provider gives for the LLM review, and its `llm` nodes.
const HOW_TO_CONFIGURE: &str =
    "no LLM provider is configured: set WEFT_LLM_BASE_URL (and WEFT_LLM_API_KEY, WEFT_LLM_MODEL)";

#[tokio::test]
async fn without_a_provider_the_llm_review_is_listed_disabled_and_refused_saying_what_to_set() {
    let app = weft_tests::spawn_app().await;
    let (status, presets) = app.get("/presets").await;
    assert_eq!(status, 200);
    let listed = |name: &str| {
        presets
            .as_array()
            .unwrap()
            .iter()
            .find(|preset| preset["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no preset {name}: {presets}"))
    };
    let llm = listed("code_review_llm");
    assert_eq!(llm["title"], "Code Review (LLM)");
    assert_eq!(llm["unavailable"], HOW_TO_CONFIGURE);
    assert_eq!(
        llm["nodes"],
        json!(["extract", "complexity", "detect", "review", "assess_review"])
    );
    assert!(listed("code_review").get("unavailable").is_none());

    let (status, refused) = app.post("/graph/create", &json!({"preset": "code_review_llm"})).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["code"], "preset_unavailable");
    assert_eq!(refused["detail"], HOW_TO_CONFIGURE);
    assert_eq!(
        refused["errors"],
        json!([{"path": "/preset", "message": HOW_TO_CONFIGURE}])
    );
    // A graph of one's own with an `llm` node is refused the same way, at the node.
    let (status, refused) = app.post("/graph/create", &reviewer(json!({}))).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["code"], "invalid_graph");
    assert_eq!(
        refused["errors"],
        json!([{"path": "/nodes/0", "message": HOW_TO_CONFIGURE}])
    );
    let (_, graphs) = app.get("/graphs").await;
    assert_eq!(graphs["graphs"], json!([]), "nothing stored");
}

const TODO_CODE: &str = "def f(x):\n    # TODO: handle None\n    return x * 2\n";
const FIXED_CODE: &str = "def f(x):\n    if x is None:\n        return 0\n    return x * 2\n";

/// A structured review as the model answers it: these suggestions, the whole revised
/// code, and a summary.
fn review_answer(suggestions: Value, revised: &str, summary: &str) -> String {
    json!({"suggestions": suggestions, "revised_code": revised, "summary": summary}).to_string()
}

/// The steps an ended run took.
async fn steps(app: &TestApp, done: &Value) -> u64 {
    let (_, snapshot) = app
        .get(&format!("/graph/state/{}", done["run_id"].as_str().unwrap_or_default()))
        .await;
    snapshot["steps"].as_u64().expect("a step count")
}

/// A server calling the model at `base`, and its LLM review of [`TODO_CODE`] to a
/// threshold of 100, completed.
async fn review_of_todo_code(base: &str) -> (ServerProcess, TestApp, Value, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a directory");
    let weft = ServerProcess::start_with_env(
        env!("CARGO_BIN_EXE_weft-server-under-test"),
        &dir.path().join("weft.db"),
        &[
            ("WEFT_LLM_BASE_URL", base),
            ("WEFT_LLM_API_KEY", KEY),
            ("WEFT_LLM_MODEL", "m1"),
        ],
    )
    .await;
    let app = TestApp::connect(weft.port);
    let graph = app.create_graph(json!({"preset": "code_review_llm"})).await;
    let done = app
        .run_and_wait(&graph, json!({"code": TODO_CODE, "threshold": 100}))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    (weft, app, done, dir)
}

#[tokio::test]
async fn the_llm_review_takes_the_models_suggestions_and_revision_and_measures_it_again() {
    let suggestions = json!([
        {"line": 2, "type": "todo/fixme", "suggestion": "Handle None before doubling."},
        {"line": 1, "type": "naming", "suggestion": "Name `x` for what it holds."}
    ]);
    let (fake, base) = fake(vec![
        Reply::pieces(
            &review_answer(suggestions.clone(), FIXED_CODE, "Handled None."),
            16,
            false,
        ),
        Reply::pieces(&review_answer(json!([]), FIXED_CODE, "Nothing more."), 16, false),
    ])
    .await;
    let (weft, app, done, _dir) = review_of_todo_code(&base).await;
    let state = &done["state"];
    // The original's results: the rule-based issue and score, the model's suggestions.
    assert_eq!(state["issues_count"], 1);
    assert_eq!(state["issues"][0]["type"], "todo/fixme");
    assert_eq!(state["quality_score"], 98);
    assert_eq!(state["suggestions"], suggestions);
    // Under 100, so the model's code became pass 1, measured again: clean, so it ends.
    assert_eq!(state["code"], TODO_CODE, "the submitted code is never modified");
    assert_eq!(state["revised_code"], FIXED_CODE);
    let revision = &state["revisions"][0];
    assert_eq!(
        (&revision["pass"], &revision["by"], &revision["summary"]),
        (&json!(1), &json!("llm"), &json!("Handled None."))
    );
    assert_eq!(
        (
            &revision["issues_count"],
            &revision["quality_score"],
            &revision["suggestions"]
        ),
        (&json!(0), &json!(100), &json!([]))
    );
    assert_eq!(
        state["assessment"],
        json!({"verdict": "threshold_met", "quality_score": 100, "threshold": 100.0, "passes": 1})
    );
    assert_eq!(steps(&app, &done).await, 9);

    {
        let received = fake.received.lock().unwrap();
        assert_eq!(received.len(), 2);
        let first = &received[0].body;
        assert_eq!(first["model"], "m1");
        assert_eq!(
            first["response_format"]["json_schema"]["schema"]["required"],
            json!(["suggestions", "revised_code", "summary"])
        );
        let system = first["messages"][0]["content"].as_str().unwrap();
        assert!(system.starts_with("You review python code."), "{system}");
        let prompt = first["messages"][1]["content"].as_str().unwrap();
        assert!(
            prompt.starts_with(&format!("The code, in python:\n\n```\n{TODO_CODE}\n```")),
            "{prompt}"
        );
        assert!(prompt.contains("\n- line 2, todo/fixme: "), "{prompt}");
        let again = received[1].body["messages"][1]["content"].as_str().unwrap();
        assert!(
            again.starts_with(&format!(
                "Your revision from the last pass, in python:\n\n```\n{FIXED_CODE}\n```"
            )),
            "{again}"
        );
        assert!(again.ends_with("Issues a linter finds in it:\n- none\n"), "{again}");
    }
    weft.terminate().await;
}

#[tokio::test]
async fn the_llm_review_ends_after_three_revisions_whatever_the_model_answers() {
    // Each answer changes the code but keeps a TODO: the score never reaches 100.
    let answers: Vec<Reply> = (1..=5)
        .map(|pass| {
            let revised = format!("def f(x):\n    # TODO: pass {pass}\n    return x * 2\n");
            Reply::pieces(&review_answer(json!([]), &revised, "Reworded."), 40, false)
        })
        .collect();
    let (fake, base) = fake(answers).await;
    let (weft, app, done, _dir) = review_of_todo_code(&base).await;
    assert_eq!(
        done["state"]["assessment"],
        json!({"verdict": "pass_limit", "quality_score": 98, "threshold": 100.0, "passes": 3})
    );
    assert_eq!(done["state"]["revisions"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        done["state"]["revised_code"],
        "def f(x):\n    # TODO: pass 3\n    return x * 2\n"
    );
    // The first pass, then three revisions: five nodes, then four a pass.
    assert_eq!(steps(&app, &done).await, 5 + 3 * 4);
    assert_eq!(
        fake.received.lock().unwrap().len(),
        4,
        "the fifth answer is never asked for"
    );
    weft.terminate().await;
}
