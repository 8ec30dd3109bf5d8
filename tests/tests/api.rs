//! The REST API against the real server: the prototype's contract, and every kind of
//! bad request answered with a JSON error.

use serde_json::{json, Value};
use weft_tests::{counter_chain, spawn_app};

const FIVE_TODOS: &str = "# TODO one\n# TODO two\n# TODO three\n# TODO four\n# TODO five\n";

fn running_lines(log: &Value) -> Vec<String> {
    log.as_array()
        .expect("the log is a list")
        .iter()
        .filter_map(Value::as_str)
        .filter(|line| line.starts_with("[RUNNING] "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn code_review_preset_runs_to_the_end_with_the_contract_keys() {
    let app = spawn_app().await;
    let graph = app.create_graph(json!({"preset": "code_review"})).await;
    let code = "def add(a, b):\n    # TODO: check types\n    return a + b\n\ndef neg(x):\n    return -x if x else 0\n";
    let body = app.run_and_wait(&graph, json!({"code": code})).await;

    assert_eq!(body["status"], "completed");
    assert!(body["run_id"].as_str().is_some_and(|id| !id.is_empty()));
    let state = &body["state"];
    assert_eq!(state["code"], code);
    assert_eq!(state["functions"], json!(["add", "neg"]));
    assert_eq!(state["complexities"], json!({"add": 1, "neg": 2}));
    assert_eq!(
        state["issues"],
        json!([{"line": 2, "type": "todo/fixme", "severity": "low", "text": "# TODO: check types",
                "message": "a note left to resolve"}])
    );
    assert_eq!(state["issues_count"], 1);
    assert_eq!(state["suggestions"][0]["line"], 2);
    assert_eq!(state["quality_score"], 98);
    assert_eq!(state["assessment"]["verdict"], "threshold_met");
    assert_eq!(
        running_lines(&body["log"]),
        [
            "[RUNNING] extract",
            "[RUNNING] complexity",
            "[RUNNING] detect",
            "[RUNNING] suggest",
            "[RUNNING] assess_loop"
        ]
    );
}

#[tokio::test]
async fn the_prototypes_endless_input_ends_with_a_clear_result() {
    let app = spawn_app().await;
    let graph = app.create_graph(json!({"preset": "code_review"})).await;
    // The prototype looped forever on more than two issues; at threshold 100 nothing can
    // reach the bar either, so the loop must stop on its own and say why.
    let body = app
        .run_and_wait(&graph, json!({"code": FIVE_TODOS, "threshold": 100}))
        .await;
    assert_eq!(body["status"], "completed");
    assert_eq!(body["state"]["issues_count"], 5);
    assert_eq!(body["state"]["quality_score"], 90);
    assert_eq!(body["state"]["assessment"]["verdict"], "no_further_fixes");
    assert_eq!(body["state"]["assessment"]["passes"], 0);
    assert_eq!(running_lines(&body["log"]).len(), 5);
}

#[tokio::test]
async fn a_background_run_is_queryable_at_once_and_ends_completed() {
    let app = spawn_app().await;
    let graph = app.create_graph(counter_chain(3)).await;
    let run_id = app.start_run(&graph, json!({"count": 10})).await;

    let (status, first) = app.get(&format!("/graph/state/{run_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(first["run_id"], run_id.as_str());
    assert!(
        ["running", "completed"].contains(&first["status"].as_str().unwrap()),
        "{first}"
    );

    let done = app.wait_for_end(&run_id).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["state"], json!({"count": 13}));
    assert_eq!(done["steps"], 3);
    assert_eq!(done["graph_id"], graph.as_str());
    assert_eq!(done["log"], json!(["[RUNNING] n0", "[RUNNING] n1", "[RUNNING] n2"]));
}

#[tokio::test]
async fn a_loop_without_exit_fails_at_the_step_limit_naming_the_loop() {
    let app = spawn_app().await;
    let graph = app
        .create_graph(json!({
            "nodes": {"start": {"tool": "noop"}, "ping": {"tool": "increment"}, "pong": {"tool": "noop"}},
            "edges": {"start": "ping", "ping": "pong", "pong": "ping"},
            "max_steps": 9
        }))
        .await;
    let body = app.run_and_wait(&graph, json!({})).await;
    assert_eq!(body["status"], "failed");
    assert_eq!(
        body["error"],
        "step limit of 9 reached; the run was cycling through ping → pong → ping"
    );
    assert_eq!(body["state"]["count"], 4);
    assert_eq!(running_lines(&body["log"]).len(), 9);

    // A run may lower the limit further.
    let (status, body) = app
        .post("/graph/run", &json!({"graph_id": graph, "wait": true, "max_steps": 3}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["error"],
        "step limit of 3 reached; the run was cycling through ping → pong → ping"
    );
}

#[tokio::test]
async fn a_failing_node_fails_the_run_and_says_why() {
    let app = spawn_app().await;
    let graph = app
        .create_graph(json!({"nodes": {"increment": {}, "fail": {"config": {"message": "disk full"}}}, "edges": {"increment": "fail"}}))
        .await;
    let body = app.run_and_wait(&graph, json!({})).await;
    assert_eq!(body["status"], "failed");
    assert_eq!(body["error"], "node `fail` failed: disk full");
    assert_eq!(body["state"], json!({"count": 1}));
    let (_, snapshot) = app
        .get(&format!("/graph/state/{}", body["run_id"].as_str().unwrap()))
        .await;
    assert_eq!(snapshot["status"], "failed");
    assert_eq!(snapshot["error"], "node `fail` failed: disk full");
}

#[tokio::test]
async fn a_tool_that_panics_fails_its_run_durably_with_the_last_checkpoint() {
    let app = spawn_app().await;
    let graph = app
        .create_graph(json!({
            "nodes": [{"id": "count", "tool": "increment"}, {"id": "boom", "tool": "panic"}],
            "edges": [{"from": "count", "to": "boom"}]
        }))
        .await;
    let body = app.run_and_wait(&graph, json!({})).await;
    assert_eq!(body["status"], "failed");
    assert_eq!(body["error"], "the run crashed");
    // Stored so: the run is not left `running`, and its state is its last checkpoint.
    let (_, stored) = app
        .get(&format!("/graph/state/{}", body["run_id"].as_str().unwrap()))
        .await;
    assert_eq!(stored["status"], "failed");
    assert_eq!(stored["error"], "the run crashed");
    assert_eq!(stored["state"], json!({"count": 1}));
    assert_eq!(stored["steps"], 1);
    assert_eq!(
        stored["log"].as_array().unwrap().last().unwrap(),
        "[FAILED] the run crashed"
    );
    let (status, health) = app.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["store"], json!({"kind": "sqlite", "ok": true}));
}

#[tokio::test]
async fn bad_code_review_input_fails_the_run_not_the_server() {
    let app = spawn_app().await;
    let graph = app.create_graph(json!({"preset": "code_review"})).await;
    let body = app.run_and_wait(&graph, json!({"code": 42})).await;
    assert_eq!(body["status"], "failed");
    assert_eq!(
        body["error"],
        "node `extract` failed: invalid input: `code` must be a string"
    );
}

#[tokio::test]
async fn unknown_ids_answer_404_with_a_json_detail() {
    let app = spawn_app().await;
    let (status, body) = app.post("/graph/run", &json!({"graph_id": "no-such-graph"})).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("graph_not_found")));
    assert_eq!(body["detail"], "no graph with id `no-such-graph`");
    let (status, body) = app.get("/graph/state/no-such-run").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("run_not_found")));
}

#[tokio::test]
async fn malformed_or_mistyped_bodies_answer_4xx_json() {
    let app = spawn_app().await;
    let (status, body) = app.post_raw("/graph/create", "application/json", "{\"nodes\": ").await;
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap().starts_with("malformed JSON"), "{body}");

    let (status, body) = app.post_raw("/graph/create", "text/plain", "{}").await;
    assert_eq!((status, body["code"].as_str()), (415, Some("unsupported_media_type")));

    let (status, body) = app.post("/graph/run", &json!({"graph_id": 7})).await;
    assert_eq!(status, 422);
    assert!(body["detail"].as_str().unwrap().contains("graph_id"), "{body}");

    let (status, _) = app
        .post("/graph/run", &json!({"graph_id": "g", "initial_state": [1]}))
        .await;
    assert_eq!(status, 422);
    let (status, _) = app.post("/graph/run", &json!({"graph_id": "g", "wait": "yes"})).await;
    assert_eq!(status, 422);

    let graph = app.create_graph(counter_chain(1)).await;
    let (status, body) = app
        .post("/graph/run", &json!({"graph_id": graph, "max_steps": 0}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["path"], "/max_steps");
}

#[tokio::test]
async fn invalid_graphs_answer_every_problem_with_its_path() {
    let app = spawn_app().await;
    let (status, body) = app.post("/graph/create", &json!({"edges": {}})).await;
    assert_eq!(status, 400);
    assert_eq!(body["detail"], "give either `preset` or both `nodes` and `edges`");

    // Version 2's empty node list is a problem in the spec.
    let (status, body) = app.post("/graph/create", &json!({"nodes": [], "edges": []})).await;
    assert_eq!(status, 422);
    assert_eq!(
        body["errors"],
        json!([{"path": "/nodes", "message": "a graph needs at least one node"}])
    );

    let (status, body) = app
        .post(
            "/graph/create",
            &json!({"nodes": {"extract": {}, "teleport": {}}, "edges": {"extract": "nowhere", "ghost": "extract"}}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["code"], "invalid_graph");
    assert_eq!(
        body["errors"],
        json!([
            {"path": "/nodes/teleport", "message": "`teleport` is not a registered tool (GET /tools lists them)"},
            {"path": "/edges/extract", "message": "edge to `nowhere`, which is not a node"},
            {"path": "/edges/ghost", "message": "edge from `ghost`, which is not a node"}
        ])
    );

    let (status, body) = app.post("/graph/create", &json!({"preset": "poetry"})).await;
    assert_eq!(status, 422);
    assert_eq!(
        body["detail"],
        "/preset: no preset named `poetry` (known: code_review, code_review_approval, code_review_llm, summarize, data_quality)"
    );

    let (status, _) = app.post("/graph/create", &json!([1, 2])).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn validate_answers_what_create_would_and_stores_nothing() {
    let app = spawn_app().await;
    let bodies = [
        // Problems in the spec, every one at its pointer.
        json!({"nodes": {"extract": {}, "teleport": {}}, "edges": {"extract": "nowhere", "ghost": "extract"}}),
        json!({"nodes": [{"id": "a", "tool": "noop", "config": {"x": 1}}, {"id": "b", "tool": "sleep"}], "edges": [{"from": "a", "to": "c"}]}),
        // Neither a preset nor a spec; a preset that does not exist; one that cannot run here.
        json!({"edges": {}}),
        json!({"preset": "poetry"}),
        json!({"preset": "code_review_llm"}),
        json!([1, 2]),
    ];
    for body in &bodies {
        let created = app.post("/graph/create", body).await;
        let validated = app.post("/graph/validate", body).await;
        assert!(created.0 >= 400, "{body}: {created:?}");
        assert_eq!(validated, created, "{body}");
    }
    // Valid graphs: 200, with the warnings create would give.
    let looped = json!({"nodes": {"a": "increment", "b": "increment"}, "edges": {"a": "b", "b": "a"}});
    let (status, validated) = app.post("/graph/validate", &looped).await;
    assert_eq!(status, 200);
    let (_, created) = app.post("/graph/create", &looped).await;
    assert!(!created["warnings"].as_array().unwrap().is_empty(), "{created}");
    assert_eq!(validated, json!({"warnings": created["warnings"]}));
    let (status, validated) = app.post("/graph/validate", &json!({"preset": "code_review"})).await;
    assert_eq!((status, validated), (200, json!({"warnings": []})));
    // Only the one create above stored a graph.
    let (_, graphs) = app.get("/graphs").await;
    assert_eq!(graphs["graphs"].as_array().map(Vec::len), Some(1), "{graphs}");
    assert_eq!(graphs["graphs"][0]["graph_id"], created["graph_id"]);
}

#[tokio::test]
async fn a_preset_s_input_is_checked_against_the_schema_presets_list() {
    let app = spawn_app().await;
    let (_, presets) = app.get("/presets").await;
    let summarize = presets
        .as_array()
        .unwrap()
        .iter()
        .find(|preset| preset["name"] == "summarize")
        .unwrap();
    assert_eq!(summarize["input_schema"]["required"], json!(["text"]));
    let check = async |initial_state: Value| {
        app.post(
            "/graph/validate",
            &json!({"preset": "summarize", "initial_state": initial_state}),
        )
        .await
    };
    let (status, answer) = check(json!({"text": 7, "max_chars": 5})).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["code"], "invalid_input");
    let mut paths: Vec<&str> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|problem| problem["path"].as_str())
        .collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/initial_state/max_chars", "/initial_state/text"]);
    let (status, answer) = check(summarize["example"].clone()).await;
    assert_eq!((status, answer), (200, json!({"warnings": []})));
    let (status, answer) = check(json!({})).await;
    assert_eq!(status, 422);
    assert_eq!(answer["errors"][0]["path"], "/initial_state");
}

#[tokio::test]
async fn oversized_bodies_answer_413() {
    let app = spawn_app().await;
    let huge = format!(
        "{{\"graph_id\": \"g\", \"initial_state\": {{\"code\": \"{}\"}}}}",
        "x".repeat(17 * 1024 * 1024)
    );
    let (status, body) = app.post_raw("/graph/run", "application/json", huge).await;
    assert_eq!((status, body["code"].as_str()), (413, Some("payload_too_large")));
}

#[tokio::test]
async fn tools_and_presets_are_listed() {
    let app = spawn_app().await;
    let (status, tools) = app.get("/tools").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for expected in [
        "assess_loop",
        "complexity",
        "detect",
        "extract",
        "fail",
        "increment",
        "noop",
        "sleep",
        "suggest",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    assert!(tools[0]["description"].as_str().is_some_and(|d| !d.is_empty()));
    let (_, presets) = app.get("/presets").await;
    assert_eq!(presets[0]["name"], "code_review");
    assert_eq!(
        presets[0]["nodes"],
        json!(["extract", "complexity", "detect", "suggest", "assess_loop"])
    );
}

#[tokio::test]
async fn node_order_in_the_spec_picks_the_start_node() {
    let app = spawn_app().await;
    let graph = app
        .create_graph(json!({"nodes": {"second": {"tool": "increment"}, "first": {"tool": "noop"}}, "edges": {"second": "first"}}))
        .await;
    let body = app.run_and_wait(&graph, json!({})).await;
    assert_eq!(body["log"], json!(["[RUNNING] second", "[RUNNING] first"]));
}

#[tokio::test]
async fn a_graph_is_read_back_with_its_name_spec_and_drawing() {
    let app = spawn_app().await;
    let (_, created) = app.post("/graph/create", &json!({"preset": "code_review"})).await;
    let graph_id = created["graph_id"].as_str().unwrap();

    let (status, graph) = app.get(&format!("/graphs/{graph_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(graph["name"], "code_review");
    assert_eq!(graph["spec"]["edges"]["extract"], "complexity");
    let nodes: Vec<&str> = graph["view"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["id"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["extract", "complexity", "detect", "suggest", "assess_loop"]);
    let jumps: Vec<(&str, &str)> = graph["view"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|edge| edge["kind"] == "jump")
        .map(|edge| (edge["from"].as_str().unwrap(), edge["to"].as_str().unwrap()))
        .collect();
    assert_eq!(jumps, [("assess_loop", "complexity")]);

    // Runs of it carry its name in the history.
    app.run_and_wait(graph_id, json!({"code": "def f():\n    return 1\n"}))
        .await;
    let (_, page) = app.get(&format!("/runs?graph_id={graph_id}")).await;
    assert_eq!(page["runs"][0]["graph_name"], "code_review");

    let (status, missing) = app.get("/graphs/no-such-graph").await;
    assert_eq!(status, 404);
    assert_eq!(missing["code"], "graph_not_found");
}

#[tokio::test]
async fn graphs_are_listed_newest_first_a_page_at_a_time() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for count in 1..=3 {
        ids.push(app.create_graph(counter_chain(count)).await);
    }
    let (_, preset) = app.post("/graph/create", &json!({"preset": "code_review"})).await;
    ids.push(preset["graph_id"].as_str().unwrap().to_owned());

    let (status, first) = app.get("/graphs?limit=3").await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = first["graphs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|graph| graph["graph_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [ids[3].as_str(), ids[2].as_str(), ids[1].as_str()]);
    assert_eq!(first["graphs"][0]["name"], "code_review");
    assert_eq!(first["graphs"][0]["nodes"], 5);
    assert_eq!(first["graphs"][1]["nodes"], 3);

    let before = first["next_before"].as_str().unwrap();
    let (_, second) = app.get(&format!("/graphs?limit=3&before={before}")).await;
    assert_eq!(second["graphs"].as_array().unwrap().len(), 1);
    assert_eq!(second["graphs"][0]["graph_id"], ids[0].as_str());
    assert!(second.get("next_before").is_none());

    let (status, bad) = app.get("/graphs?limit=0").await;
    assert_eq!(status, 422);
    assert_eq!(bad["errors"][0]["path"], "limit");
    let (status, _) = app.get("/graphs?sort=name").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn every_preset_runs_its_own_example_to_completion() {
    let app = spawn_app().await;
    let (_, presets) = app.get("/presets").await;
    let presets = presets.as_array().unwrap();
    let names: Vec<&str> = presets.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "code_review",
            "code_review_approval",
            "code_review_llm",
            "summarize",
            "data_quality"
        ]
    );
    for preset in presets {
        // With no LLM provider here, the LLM review is listed as such (tests/llm.rs runs it).
        if preset["name"] == "code_review_llm" {
            assert!(preset["unavailable"].is_string(), "{preset}");
            continue;
        }
        let (_, created) = app.post("/graph/create", &json!({"preset": preset["name"]})).await;
        let finished = app
            .run_and_wait(created["graph_id"].as_str().unwrap(), preset["example"].clone())
            .await;
        // The approval preset stops for a person's answer (its own tests give it).
        let expected = if preset["name"] == "code_review_approval" {
            "waiting"
        } else {
            "completed"
        };
        assert_eq!(finished["status"], expected, "{}: {finished}", preset["name"]);
        // The listed spec is the preset's graph: posted as a graph of one's own, it
        // runs the example to the same end.
        let own = app.create_graph(preset["spec"].clone()).await;
        let again = app.run_and_wait(&own, preset["example"].clone()).await;
        assert_eq!(again["state"], finished["state"], "{}", preset["name"]);
        assert_eq!(again["log"], finished["log"], "{}", preset["name"]);
    }
    // The summary of the example fits its limit, reached by dropping sentences.
    let (_, created) = app.post("/graph/create", &json!({"preset": "summarize"})).await;
    let example = presets[3]["example"].clone();
    let finished = app.run_and_wait(created["graph_id"].as_str().unwrap(), example).await;
    let state = &finished["state"];
    assert_eq!(state["verdict"], "within_limit");
    // Its three heaviest sentences (150 characters) lose the lightest of them to fit 100.
    assert_eq!(
        state["summary"],
        "Each run is stored as it goes. Every event of a run reaches every client that watches it."
    );
    assert_eq!(state["summary_chars"], 89);
    assert_eq!(state["refine_passes"], 1);
}
