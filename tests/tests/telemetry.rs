//! Logs and traces: with `WEFT_LOG_FORMAT=json` each log line is a JSON object carrying
//! the run's id and the node's name from its spans; with `OTEL_EXPORTER_OTLP_ENDPOINT`
//! the same spans reach an OTLP collector (a fake one here, on port 0).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{json, Value};
use weft_tests::{ServerProcess, TestApp, TIMEOUT};

/// The server as a process over a fresh database in `dir` with `env` (its log is kept
/// line by line), and a client of it.
async fn server(dir: &std::path::Path, env: &[(&str, &str)]) -> (ServerProcess, TestApp) {
    let server =
        ServerProcess::start_with_env(env!("CARGO_BIN_EXE_weft-server-under-test"), &dir.join("weft.db"), env).await;
    let app = TestApp::connect(server.port);
    (server, app)
}

fn failing() -> Value {
    json!({"nodes": {"boom": {"tool": "fail", "config": {"message": "disk full"}}}, "edges": {"boom": null}})
}

#[tokio::test]
async fn json_logs_carry_the_run_id_and_the_node_of_their_spans() {
    let dir = tempfile::tempdir().expect("a directory");
    let (server, app) = server(dir.path(), &[("WEFT_LOG_FORMAT", "json")]).await;
    let graph = app.create_graph(failing()).await;
    let run = app.run_and_wait(&graph, json!({})).await;
    let run_id = run["run_id"].as_str().expect("run_id").to_owned();

    let lines = server.log();
    let parsed: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}")))
        .collect();
    let failed = parsed
        .iter()
        .find(|line| line["fields"]["message"] == "node failed")
        .unwrap_or_else(|| panic!("no `node failed` line in {lines:?}"));
    assert_eq!(failed["level"], "INFO");
    assert!(
        failed["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("disk full")),
        "{failed}"
    );
    let spans = failed["spans"].as_array().expect("the spans it is in");
    assert_eq!(spans[0]["name"], "run");
    assert_eq!(spans[0]["run_id"], run_id.as_str());
    assert_eq!(spans[0]["graph_id"], graph.as_str());
    assert_eq!(spans[1]["name"], "node");
    assert_eq!(spans[1]["node"], "boom");
    assert_eq!(spans[1]["tool"], "fail");
}

/// Every span in OTLP/JSON export bodies: its name and its string attributes.
fn spans_in(body: &Value, into: &mut Vec<(String, Vec<(String, String)>)>) {
    match body {
        Value::Object(map) => {
            if let (Some(Value::String(name)), Some(Value::Array(attributes)), Some(_)) =
                (map.get("name"), map.get("attributes"), map.get("spanId"))
            {
                let attributes = attributes
                    .iter()
                    .filter_map(|a| {
                        Some((
                            a["key"].as_str()?.to_owned(),
                            a["value"]["stringValue"].as_str()?.to_owned(),
                        ))
                    })
                    .collect();
                into.push((name.clone(), attributes));
            }
            map.values().for_each(|value| spans_in(value, into));
        }
        Value::Array(items) => items.iter().for_each(|value| spans_in(value, into)),
        _ => {}
    }
}

#[tokio::test]
async fn spans_are_exported_over_otlp_when_an_endpoint_is_set() {
    // The collector: keeps every body posted to /v1/traces.
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let collector = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post({
            let received = Arc::clone(&received);
            move |body: axum::body::Bytes| async move {
                if let Ok(json) = serde_json::from_slice::<Value>(&body) {
                    received.lock().expect("the bodies").push(json);
                }
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let endpoint = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let dir = tempfile::tempdir().expect("a directory");
    let (_server, app) = server(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let graph = app.create_graph(failing()).await;
    let run_id = app.run_and_wait(&graph, json!({})).await["run_id"]
        .as_str()
        .expect("run_id")
        .to_owned();

    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let mut spans = Vec::new();
        for body in received.lock().expect("the bodies").iter() {
            spans_in(body, &mut spans);
        }
        let run = spans
            .iter()
            .find(|(name, attributes)| name == "run" && attributes.contains(&("run_id".to_owned(), run_id.clone())));
        let node = spans
            .iter()
            .find(|(name, attributes)| name == "node" && attributes.contains(&("node".to_owned(), "boom".to_owned())));
        if let (Some(_), Some((_, attributes))) = (run, node) {
            assert!(
                attributes.contains(&("tool".to_owned(), "fail".to_owned())),
                "{attributes:?}"
            );
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run's spans never reached the collector: {spans:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
