//! `WS /ws/{run_id}` against the real server: one `step` message per executed node, in
//! order, then the end, however late the client attaches.

use serde_json::{json, Value};
use weft_tests::{counter_chain, spawn_app};

fn steps(messages: &[Value]) -> Vec<&Value> {
    messages.iter().filter(|m| m["type"] == "step").collect()
}

#[tokio::test]
async fn a_client_attached_after_the_run_ended_gets_every_step_and_the_final_state() {
    let app = spawn_app().await;
    let graph = app.create_graph(json!({"preset": "code_review"})).await;
    let body = app
        .run_and_wait(&graph, json!({"code": "def f(x):\n    return x\n"}))
        .await;
    let run_id = body["run_id"].as_str().unwrap();

    let messages = app.stream(run_id, "").await.unwrap();
    let steps = steps(&messages);
    let nodes: Vec<&str> = steps.iter().map(|m| m["node"].as_str().unwrap()).collect();
    assert_eq!(nodes, ["extract", "complexity", "detect", "suggest", "assess_loop"]);
    let numbers: Vec<u64> = steps.iter().map(|m| m["step"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5]);
    // One instance executed them all, and each step says which.
    let instance = steps[0]["instance"].as_str().expect("the executing instance");
    assert!(!instance.is_empty());
    assert!(steps.iter().all(|m| m["instance"] == instance), "{steps:?}");
    assert_eq!(
        steps[1]["update"]["complexities"],
        json!({"f": 1}),
        "the step's own writes"
    );
    assert_eq!(steps[0]["log"], "[RUNNING] extract");
    assert_eq!(steps[0]["run_id"], run_id);
    assert_eq!(steps[0]["status"], "running");
    assert_eq!(steps[0]["state"]["functions"], json!(["f"]));
    assert!(
        steps[0]["state"].get("complexities").is_none(),
        "state is the state after that node"
    );
    assert_eq!(steps[4]["status"], "completed");

    let last = messages.last().unwrap();
    assert_eq!(last["type"], "end");
    assert_eq!(last["status"], "completed");
    assert_eq!(last["state"], body["state"]);
    let kinds: Vec<&str> = messages.iter().map(|m| m["type"].as_str().unwrap()).collect();
    let mut expected = vec!["run_queued", "run_started"];
    for _ in 0..5 {
        expected.extend(["node_started", "step"]);
    }
    expected.push("end");
    assert_eq!(kinds, expected);
    assert_eq!(messages[2]["node"], "extract");
    assert_eq!(messages[2]["attempt"], 1);
}

#[tokio::test]
async fn a_client_attached_mid_run_gets_every_step_exactly_once() {
    let app = spawn_app().await;
    let mut nodes = serde_json::Map::new();
    let mut edges = serde_json::Map::new();
    for i in 0..6 {
        nodes.insert(format!("tick{i}"), json!({"tool": "increment"}));
        nodes.insert(format!("wait{i}"), json!({"tool": "sleep", "config": {"ms": 40}}));
        edges.insert(format!("tick{i}"), json!(format!("wait{i}")));
        if i > 0 {
            edges.insert(format!("wait{}", i - 1), json!(format!("tick{i}")));
        }
    }
    let graph = app.create_graph(json!({"nodes": nodes, "edges": edges})).await;
    let run_id = app.start_run(&graph, json!({})).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    // Two clients at different moments, one of them resuming from step 4.
    let (all, tail) = tokio::join!(app.stream(&run_id, ""), app.stream(&run_id, "?since=4"));
    let (all, tail) = (all.unwrap(), tail.unwrap());
    let steps_of = |messages: &[Value]| {
        steps(messages)
            .iter()
            .map(|m| m["step"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(steps_of(&all), (1..=12).collect::<Vec<_>>());
    let seqs: Vec<u64> = all.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert_eq!(tail, all[4..], "?since=4 resumes right after event 4");
    for messages in [&all, &tail] {
        let end = messages.last().unwrap();
        assert_eq!(end["type"], "end");
        assert_eq!(end["state"], json!({"count": 6}));
    }
}

#[tokio::test]
async fn every_client_of_a_run_gets_the_whole_stream() {
    let app = spawn_app().await;
    let graph = app.create_graph(counter_chain(20)).await;
    let run_id = app.start_run(&graph, json!({})).await;
    let streams = futures::future::join_all((0..10).map(|_| app.stream(&run_id, ""))).await;
    for messages in streams {
        let messages = messages.unwrap();
        let counts: Vec<u64> = steps(&messages)
            .iter()
            .map(|m| m["state"]["count"].as_u64().unwrap())
            .collect();
        assert_eq!(counts, (1..=20).collect::<Vec<_>>());
        assert_eq!(messages.last().unwrap()["status"], "completed");
    }
}

#[tokio::test]
async fn an_unknown_run_gets_an_error_and_the_socket_closes() {
    let app = spawn_app().await;
    let messages = app.stream("no-such-run", "").await.unwrap();
    assert_eq!(
        messages,
        vec![json!({"type": "error", "detail": "no run with id `no-such-run`"})]
    );
}

#[tokio::test]
async fn a_failed_run_streams_the_failing_step_and_the_error() {
    let app = spawn_app().await;
    let graph = app
        .create_graph(json!({"nodes": {"noop": {}, "fail": {}}, "edges": {"noop": "fail"}}))
        .await;
    let body = app.run_and_wait(&graph, json!({})).await;
    let messages = app.stream(body["run_id"].as_str().unwrap(), "").await.unwrap();
    let steps = steps(&messages);
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[1]["status"], "failed");
    assert_eq!(steps[1]["error"], "node `fail` failed: this node always fails");
    let end = messages.last().unwrap();
    assert_eq!(
        (end["type"].as_str(), end["status"].as_str()),
        (Some("end"), Some("failed"))
    );
}

#[tokio::test]
async fn fifty_concurrent_runs_each_stream_exactly_their_own_events() {
    let app = spawn_app().await;
    let graph = app.create_graph(counter_chain(4)).await;
    let runs = futures::future::join_all((0..50).map(|i| app.start_run(&graph, json!({"count": i * 100})))).await;
    let streams = futures::future::join_all(runs.iter().map(|run| app.stream(run, ""))).await;
    for (i, (run, messages)) in runs.iter().zip(streams).enumerate() {
        let messages = messages.unwrap();
        assert!(
            messages.iter().all(|m| m["run_id"] == run.as_str()),
            "only its own run's events"
        );
        let counts: Vec<u64> = steps(&messages)
            .iter()
            .map(|m| m["state"]["count"].as_u64().unwrap())
            .collect();
        let base = i as u64 * 100;
        assert_eq!(counts, [base + 1, base + 2, base + 3, base + 4]);
        let end = messages.last().unwrap();
        assert_eq!(
            (end["type"].as_str(), end["status"].as_str()),
            (Some("end"), Some("completed"))
        );
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_neither_stalls_the_run_nor_loses_events() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let app = spawn_app().await;
    // 300 steps whose events carry a 50 KB state: far more than the socket buffers and
    // the live channel hold, so the server must fall behind this client and catch up.
    let mut spec = counter_chain(300);
    spec["max_steps"] = json!(1000);
    let graph = app.create_graph(spec).await;
    let run_id = app.start_run(&graph, json!({"pad": "x".repeat(50_000)})).await;
    let url = format!("ws://127.0.0.1:{}/ws/{run_id}", app.port);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();

    // The client reads nothing, yet the run finishes.
    let done = app.wait_for_end(&run_id).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["steps"], 300);

    let mut seqs = Vec::new();
    let mut last_count = 0;
    while let Some(message) = tokio::time::timeout(weft_tests::TIMEOUT, socket.next()).await.unwrap() {
        match message.unwrap() {
            Message::Text(text) => {
                let event: Value = serde_json::from_str(&text).unwrap();
                seqs.push(event["seq"].as_u64().unwrap());
                if event["type"] == "step" {
                    last_count = event["state"]["count"].as_u64().unwrap();
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert_eq!(seqs.len(), 2 + 300 * 2 + 1);
    assert_eq!(last_count, 300);

    // The run's history reads the same events back, across several pages of the store.
    let (_, detail) = app.get(&format!("/runs/{run_id}")).await;
    let stored: Vec<u64> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(stored, seqs);
}
