//! Human in the loop: a run that reaches an `interrupt` node waits (`waiting`, holding no
//! worker and no lease) through a `kill -9`, takes only an answer that matches its schema,
//! once, and goes on from that node; unanswered, it takes `on_timeout` or fails.

use std::{net::SocketAddr, path::Path, time::Duration};

use serde_json::{json, Value};
use weft_server::{config::Settings, runner::Leases};
use weft_tests::{event_types, spawn_app_on, step_nodes, ServerProcess, TestApp, TIMEOUT};

async fn start(database: &Path) -> ServerProcess {
    ServerProcess::start(
        env!("CARGO_BIN_EXE_weft-server-under-test"),
        database,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        None,
    )
    .await
}

/// `prepare` counts, `approve` asks, `after` counts again; when the question says so,
/// `approve` times out to `escalate`.
fn approval(question: Value) -> Value {
    let escalates = question.get("on_timeout").is_some();
    let mut graph = json!({
        "name": "approval",
        "start": "prepare",
        "nodes": [
            {"id": "prepare", "tool": "increment"},
            {"id": "approve", "tool": "interrupt", "config": question},
            {"id": "after", "tool": "increment"}
        ],
        "edges": [
            {"from": "prepare", "to": "approve"},
            {"from": "approve", "to": "after"},
            {"from": "after", "to": null}
        ]
    });
    if escalates {
        graph["nodes"]
            .as_array_mut()
            .expect("nodes")
            .push(json!({"id": "escalate", "tool": "increment", "config": {"key": "escalated"}}));
        graph["edges"]
            .as_array_mut()
            .expect("edges")
            .push(json!({"from": "escalate", "to": null}));
    }
    graph
}

fn ship_it() -> Value {
    json!({
        "prompt": "Ship it?",
        "key": "approval",
        "show": ["count"],
        "input_schema": {
            "type": "object",
            "required": ["approved"],
            "properties": {"approved": {"type": "boolean"}, "comment": {"type": "string"}},
            "additionalProperties": false
        }
    })
}

/// Polls the run until it is `waiting` (or ends), and answers its snapshot.
async fn until_it_waits(app: &TestApp, run_id: &str) -> Value {
    let state = app.wait_for_end(run_id).await;
    assert_eq!(state["status"], "waiting", "{state}");
    state
}

#[tokio::test]
async fn an_approval_waits_through_a_kill_takes_one_valid_answer_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("weft.db");
    let first = start(&database).await;
    let app = TestApp::connect(first.port);
    let graph = app.create_graph(approval(ship_it())).await;
    let run_id = app.start_run(&graph, json!({})).await;

    let waiting = until_it_waits(&app, &run_id).await;
    assert_eq!(waiting["steps"], 1, "the question's step is not taken yet");
    assert_eq!(waiting["state"], json!({"count": 1}));
    let question = &waiting["interrupts"][0];
    assert_eq!(waiting["interrupts"].as_array().unwrap().len(), 1);
    assert_eq!(
        (&question["node"], &question["step"], &question["prompt"]),
        (&json!("approve"), &json!(2), &json!("Ship it?"))
    );
    assert_eq!(question["context"], json!({"count": 1}));
    assert_eq!(question["input_schema"]["required"], json!(["approved"]));
    let interrupt_id = question["interrupt_id"].as_str().unwrap().to_owned();
    let (_, detail) = app.get(&format!("/runs/{run_id}")).await;
    assert_eq!(
        event_types(&detail),
        [
            "run_queued",
            "run_started",
            "node_started",
            "step",
            "node_started",
            "interrupted"
        ]
    );
    assert_eq!(detail["events"][5]["interrupt_id"], interrupt_id.as_str());

    // Killed while it waits; the next server finds it waiting, and no lease tick (they
    // come every 200 ms) claims it: it holds no lease to expire.
    first.kill().await;
    let second = start(&database).await;
    let app = TestApp::connect(second.port);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (_, after_kill) = app.get(&format!("/graph/state/{run_id}")).await;
    assert_eq!(after_kill["status"], "waiting");
    assert_eq!(after_kill["interrupts"][0]["interrupt_id"], interrupt_id.as_str());
    let (_, waiting_list) = app.get("/runs?status=waiting").await;
    let listed: Vec<&str> = waiting_list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [run_id.as_str()]);

    // An answer that does not match the schema: 422, naming each problem's place.
    let resume = format!("/runs/{run_id}/resume");
    let (status, bad) = app
        .post(
            &resume,
            &json!({"interrupt_id": interrupt_id, "input": {"approved": "yes", "comment": 3}}),
        )
        .await;
    assert_eq!(status, 422, "{bad}");
    assert_eq!(bad["code"], "invalid_input");
    let mut paths: Vec<&str> = bad["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|problem| problem["path"].as_str().unwrap())
        .collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/approved", "/comment"]);
    let (status, missing) = app
        .post(&resume, &json!({"interrupt_id": interrupt_id, "input": {}}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(missing["errors"][0]["path"], "");
    let (status, unknown) = app
        .post(&resume, &json!({"interrupt_id": "nope", "input": {"approved": true}}))
        .await;
    assert_eq!((status, unknown["code"].as_str()), (404, Some("interrupt_not_found")));
    assert_eq!(app.get(&format!("/graph/state/{run_id}")).await.1["status"], "waiting");

    // The right answer: the run goes on from the node's edge and completes.
    let answer = json!({"approved": true, "comment": "ship it"});
    let (status, resumed) = app
        .post(&resume, &json!({"interrupt_id": interrupt_id, "input": answer}))
        .await;
    assert_eq!(status, 202, "{resumed}");
    assert_eq!(resumed["status"], "queued");
    let done = app.until_ended(&run_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["state"], json!({"count": 2, "approval": answer}));
    assert_eq!(done["steps"], 3);
    assert!(done.get("interrupts").is_none());
    let (_, detail) = app.get(&format!("/runs/{run_id}")).await;
    assert_eq!(step_nodes(&detail), ["prepare", "approve", "after"], "each node once");
    let log: Vec<&str> = done["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(
        log,
        [
            "[RUNNING] prepare",
            "[RUNNING] approve",
            "[WAITING] approve: Ship it?",
            "[RUNNING] approve",
            "approve: answered",
            "[RUNNING] after"
        ]
    );

    // A question answers once.
    let (status, again) = app
        .post(
            &resume,
            &json!({"interrupt_id": interrupt_id, "input": {"approved": false}}),
        )
        .await;
    assert_eq!((status, again["code"].as_str()), (409, Some("interrupt_resolved")));
    second.terminate().await;
}

/// A server in this process whose leases tick every 100 ms (a question's timeout is
/// seen at a tick).
async fn quick_ticks() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut settings = Settings::new(SocketAddr::from(([127, 0, 0, 1], 0)), "");
    settings.leases = Leases {
        duration: Duration::from_millis(1_500),
        renew_every: Duration::from_millis(100),
    };
    (spawn_app_on(dir.path().join("weft.db"), settings).await, dir)
}

#[tokio::test]
async fn an_unanswered_question_takes_on_timeout_or_fails_the_run() {
    let (app, _dir) = quick_ticks().await;
    let mut escalating = ship_it();
    escalating["timeout_s"] = json!(1);
    escalating["on_timeout"] = json!("escalate");
    let graph = app.create_graph(approval(escalating)).await;
    let run_id = app.start_run(&graph, json!({})).await;
    let waiting = until_it_waits(&app, &run_id).await;
    let deadline = waiting["interrupts"][0]["deadline"].as_i64().unwrap();
    let asked_at = waiting["created_at"].as_i64().unwrap();
    assert!((1_000..3_000).contains(&(deadline - asked_at)), "{waiting}");

    let done = app.until_ended(&run_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["state"],
        json!({"count": 1, "escalated": 1}),
        "no answer was written"
    );
    let log: Vec<&str> = done["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        log.contains(&"approve: no answer within 1 s: going to `escalate`"),
        "{log:?}"
    );
    let (_, detail) = app.get(&format!("/runs/{run_id}")).await;
    assert_eq!(step_nodes(&detail), ["prepare", "approve", "escalate"]);
    // Too late to answer.
    let interrupt_id = waiting["interrupts"][0]["interrupt_id"].clone();
    let (status, _) = app
        .post(
            &format!("/runs/{run_id}/resume"),
            &json!({"interrupt_id": interrupt_id, "input": {"approved": true}}),
        )
        .await;
    assert_eq!(status, 409);

    let mut failing = ship_it();
    failing["timeout_s"] = json!(1);
    let graph = app.create_graph(approval(failing)).await;
    let run_id = app.start_run(&graph, json!({})).await;
    until_it_waits(&app, &run_id).await;
    let failed = app.until_ended(&run_id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"], "node `approve` failed: no answer within 1 s");
}

#[tokio::test]
async fn a_stream_follows_a_run_through_its_wait_and_a_cancel_ends_a_waiting_run() {
    let (app, _dir) = quick_ticks().await;
    let graph = app.create_graph(approval(ship_it())).await;
    let run_id = app.start_run(&graph, json!({})).await;
    let stream = {
        let (app, run_id) = (TestApp::connect(app.port), run_id.clone());
        tokio::spawn(async move { app.stream(&run_id, "").await })
    };
    let waiting = until_it_waits(&app, &run_id).await;
    // `wait: true` answers a run that waits, as it stands.
    let (status, answered_at_wait) = app
        .post(
            "/graph/run",
            &json!({"graph_id": graph, "initial_state": {"count": 10}, "wait": true}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (&answered_at_wait["status"], &answered_at_wait["state"]),
        (&json!("waiting"), &json!({"count": 11}))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stream.is_finished(), "the stream stays open while the run waits");
    let interrupt_id = waiting["interrupts"][0]["interrupt_id"].clone();
    let (status, _) = app
        .post(
            &format!("/runs/{run_id}/resume"),
            &json!({"interrupt_id": interrupt_id, "input": {"approved": false}}),
        )
        .await;
    assert_eq!(status, 202);
    let messages = tokio::time::timeout(TIMEOUT, stream).await.unwrap().unwrap().unwrap();
    let types: Vec<&str> = messages.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "run_queued",
            "run_started",
            "node_started",
            "step",
            "node_started",
            "interrupted",
            "run_started",
            "node_started",
            "step",
            "node_started",
            "step",
            "end"
        ]
    );
    let seqs: Vec<u64> = messages.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<u64>>(), "no gap, no repeat");
    assert_eq!(messages[11]["state"]["approval"], json!({"approved": false}));

    // A run cancelled while it waits ends `cancelled` at once, its question unanswerable.
    let waiting_run = answered_at_wait["run_id"].as_str().unwrap();
    let (status, _) = app.post(&format!("/runs/{waiting_run}/cancel"), &json!({})).await;
    assert_eq!(status, 202);
    let cancelled = app.until_ended(waiting_run).await;
    assert_eq!(
        (cancelled["status"].as_str(), cancelled["steps"].as_u64()),
        (Some("cancelled"), Some(1))
    );
    assert_eq!(cancelled["state"], json!({"count": 11}));
    let (_, detail) = app.get(&format!("/graph/state/{waiting_run}")).await;
    let question = app.get(&format!("/runs/{waiting_run}")).await.1["events"][5]["interrupt_id"].clone();
    let (status, _) = app
        .post(
            &format!("/runs/{waiting_run}/resume"),
            &json!({"interrupt_id": question, "input": {"approved": true}}),
        )
        .await;
    assert_eq!(status, 409, "{detail}");
}
