//! `GET /metrics`: after a known set of runs, the exact counts, read by a Prometheus
//! text-format parser. The server runs as a process of its own: the metrics recorder is
//! the process's, so no other test's runs are counted.

use std::time::Duration;

use prometheus_parse::{Sample, Scrape, Value as Metric};
use serde_json::json;
use weft_tests::{counter_chain, ServerProcess, TestApp, TIMEOUT};

/// The value of the sample named `metric` whose labels include all of `labels`; for a
/// histogram, its count (the `+Inf` bucket).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matches =
        |sample: &&Sample| sample.metric == metric && labels.iter().all(|(k, v)| sample.labels.get(k) == Some(*v));
    scrape.samples.iter().find(matches).map(|sample| match &sample.value {
        Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => *v,
        Metric::Histogram(buckets) => buckets
            .iter()
            .find(|bucket| bucket.less_than.is_infinite())
            .map_or(0.0, |bucket| bucket.count),
        Metric::Summary(_) => f64::NAN,
    })
}

async fn scrape(app: &TestApp) -> Scrape {
    let response = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("text").to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = response.text().await.expect("a body");
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("Prometheus text format")
}

#[tokio::test]
async fn metrics_count_exactly_the_runs_nodes_and_requests_made() {
    let dir = tempfile::tempdir().expect("a directory");
    let server = ServerProcess::start_with_env(
        env!("CARGO_BIN_EXE_weft-server-under-test"),
        &dir.path().join("weft.db"),
        &[],
    )
    .await;
    let app = TestApp::connect(server.port);
    // Runs are counted by their graph's name: not by id, or clients that create a graph
    // per run would grow the series without end.
    let counting = app
        .create_graph(json!({
            "name": "counting",
            "start": "n0",
            "nodes": [{"id": "n0", "tool": "increment"}, {"id": "n1", "tool": "increment"}],
            "edges": [{"from": "n0", "to": "n1"}, {"from": "n1", "to": null}]
        }))
        .await;
    let failing = app
        .create_graph(
            json!({"name": "failing", "start": "boom", "nodes": [{"id": "boom", "tool": "fail"}], "edges": []}),
        )
        .await;
    let unnamed = app.create_graph(counter_chain(1)).await;
    let also_unnamed = app.create_graph(counter_chain(1)).await;
    for graph in [&unnamed, &also_unnamed] {
        assert_eq!(app.run_and_wait(graph, json!({})).await["status"], "completed");
    }
    for n in 0..3 {
        assert_eq!(
            app.run_and_wait(&counting, json!({"count": n})).await["status"],
            "completed"
        );
    }
    for _ in 0..2 {
        assert_eq!(app.run_and_wait(&failing, json!({})).await["status"], "failed");
    }
    let (status, _) = app.get("/graphs/nope").await;
    assert_eq!(status, 404);
    let run = app.start_run(&counting, json!({})).await;
    let events = app.stream(&run, "").await.expect("a stream");
    assert_eq!(events.last().expect("events")["type"], "end");

    // The stream's client is counted until its connection is let go.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let scrape = loop {
        let scrape = scrape(&app).await;
        if value(&scrape, "weft_ws_clients", &[]) == Some(0.0) {
            break scrape;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream's client is never let go"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let started = |graph: &str| value(&scrape, "weft_runs_started_total", &[("graph", graph)]);
    assert_eq!(started("counting"), Some(4.0));
    assert_eq!(started("failing"), Some(2.0));
    assert_eq!(started("unnamed"), Some(2.0));
    assert_eq!(started(&counting), None);
    let ended = |graph: &str, status: &str| {
        value(
            &scrape,
            "weft_runs_ended_total",
            &[("graph", graph), ("status", status)],
        )
    };
    assert_eq!(ended("counting", "completed"), Some(4.0));
    assert_eq!(ended("failing", "failed"), Some(2.0));
    assert_eq!(ended("unnamed", "completed"), Some(2.0));
    assert_eq!(ended("counting", "failed"), None);

    // Two `increment` nodes in each of four runs, one in each of two; one `fail` node in
    // each of two.
    let nodes = |tool: &str| value(&scrape, "weft_node_duration_seconds", &[("tool", tool)]);
    assert_eq!(nodes("increment"), Some(10.0));
    assert_eq!(nodes("fail"), Some(2.0));

    assert_eq!(value(&scrape, "weft_runs_running", &[]), Some(0.0));
    assert_eq!(value(&scrape, "weft_runs_queued", &[]), Some(0.0));

    let requests = |method: &str, route: &str, status: &str| {
        value(
            &scrape,
            "weft_http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(requests("POST", "/graph/create", "200"), Some(4.0));
    assert_eq!(requests("POST", "/graph/run", "200"), Some(8.0));
    assert_eq!(requests("GET", "/graphs/:graph_id", "404"), Some(1.0));
    assert_eq!(
        value(
            &scrape,
            "weft_http_request_duration_seconds",
            &[("method", "POST"), ("route", "/graph/run"), ("status", "200")]
        ),
        Some(8.0)
    );

    // Every write was committed in some batch: graphs, runs and their events.
    let commits = value(&scrape, "weft_store_commit_seconds", &[("store", "sqlite")]).expect("commits");
    let writes = value(&scrape, "weft_store_commit_batch_size_sum", &[("store", "sqlite")]).expect("writes");
    assert!(
        commits >= 1.0 && writes >= commits,
        "{commits} commits of {writes} writes"
    );
}
