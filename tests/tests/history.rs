//! The run history: listing runs (filtered, newest first, paginated) and reading one
//! run with every event and the state after each step.

use serde_json::json;
use weft_tests::{counter_chain, event_types, run_mixed, sometimes_failing, spawn_app};

#[tokio::test]
async fn lists_runs_newest_first_filtered_and_paginated() {
    let app = spawn_app().await;
    let counting = app.create_graph(counter_chain(2)).await;
    let failing = app
        .create_graph(json!({"nodes": {"fail": {}}, "edges": {"fail": null}}))
        .await;
    let mut ok_runs = Vec::new();
    for _ in 0..3 {
        ok_runs.push(
            app.run_and_wait(&counting, json!({})).await["run_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let failed = app.run_and_wait(&failing, json!({})).await["run_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, all) = app.get("/runs").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = all["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [failed.as_str(), &ok_runs[2], &ok_runs[1], &ok_runs[0]]);
    assert!(all.get("next_before").is_none());
    assert_eq!(all["runs"][0]["status"], "failed");
    assert_eq!(all["runs"][0]["error"], "node `fail` failed: this node always fails");
    assert_eq!(all["runs"][1]["steps"], 2);
    assert!(all["runs"][1]["finished_at"].as_i64() >= all["runs"][1]["created_at"].as_i64());

    let (_, by_graph) = app.get(&format!("/runs?graph_id={counting}&limit=2")).await;
    let page: Vec<&str> = by_graph["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(page, [&ok_runs[2], &ok_runs[1]]);
    let cursor = by_graph["next_before"].as_str().unwrap();
    assert_eq!(cursor, ok_runs[1]);
    let (_, rest) = app
        .get(&format!("/runs?graph_id={counting}&limit=2&before={cursor}"))
        .await;
    assert_eq!(rest["runs"].as_array().unwrap().len(), 1);
    assert_eq!(rest["runs"][0]["run_id"], ok_runs[0].as_str());

    let (_, failed_only) = app.get("/runs?status=failed").await;
    assert_eq!(failed_only["runs"].as_array().unwrap().len(), 1);
    let (status, body) = app.get("/runs?status=finished").await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = app.get("/runs?limit=0").await;
    assert_eq!(status, 422);
    let (status, _) = app.get("/runs?limit=many").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn reads_one_run_with_every_event_and_state() {
    let app = spawn_app().await;
    let graph = app.create_graph(counter_chain(3)).await;
    let done = app.run_and_wait(&graph, json!({"count": 5})).await;
    let run_id = done["run_id"].as_str().unwrap();

    let (status, detail) = app.get(&format!("/runs/{run_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(detail["run"]["status"], "completed");
    assert_eq!(detail["run"]["state"], json!({"count": 8}));
    let events = detail["events"].as_array().unwrap();
    assert_eq!(
        event_types(&detail),
        [
            "run_queued",
            "run_started",
            "node_started",
            "step",
            "node_started",
            "step",
            "node_started",
            "step",
            "end"
        ]
    );
    let steps: Vec<&serde_json::Value> = events.iter().filter(|e| e["type"] == "step").collect();
    let counts: Vec<u64> = steps.iter().map(|e| e["state"]["count"].as_u64().unwrap()).collect();
    assert_eq!(counts, [6, 7, 8], "each step carries the state after it");
    assert_eq!(steps[0]["update"], json!({"count": 6}));
    assert_eq!(events[8]["state"], json!({"count": 8}));
    assert_eq!(events[8]["steps"], 3);
    // The same events the WebSocket replays.
    assert_eq!(app.stream(run_id, "").await.unwrap(), *events);

    let (status, _) = app.get("/runs/no-such-run").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_graph_s_stats_count_its_runs_by_day_and_status_and_its_nodes_failures() {
    let app = spawn_app().await;
    let graph = app.create_graph(sometimes_failing()).await;
    run_mixed(&app, &graph, 10, 2).await;
    let (status, stats) = app.get(&format!("/graphs/{graph}/stats")).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(
        (stats["runs"].as_u64(), stats["node_runs"].as_u64()),
        (Some(12), Some(12))
    );
    // Every run was made today: one day, at the end of the window.
    let days = stats["days"].as_array().unwrap();
    assert_eq!(days.len(), 1, "{stats}");
    let today = &days[0];
    assert_eq!(
        (
            &today["completed"],
            &today["failed"],
            &today["cancelled"],
            &today["other"]
        ),
        (&json!(10), &json!(2), &json!(0), &json!(0))
    );
    let (p50, p95) = (today["p50_ms"].as_u64().unwrap(), today["p95_ms"].as_u64().unwrap());
    assert!(p50 <= p95, "{today}");
    assert_eq!(today["day"].as_str().map(str::len), Some("2026-11-30".len()), "{today}");
    let nodes = stats["nodes"].as_array().unwrap();
    let node = |name: &str| {
        nodes
            .iter()
            .find(|node| node["node"] == name)
            .cloned()
            .unwrap_or_default()
    };
    let (work, boom) = (node("work"), node("boom"));
    assert_eq!(
        (&work["steps"], &work["failures"], &work["failure_rate"]),
        (&json!(12), &json!(0), &json!(0.0))
    );
    assert_eq!(
        (&boom["steps"], &boom["failures"], &boom["failure_rate"]),
        (&json!(0), &json!(2), &json!(1.0))
    );
    assert!(work["mean_us"].as_u64().is_some());

    // The history's time range: today's start holds all twelve, tomorrow's none.
    let start = stats["days"][0]["start"].as_i64().unwrap();
    let listed = async |query: String| {
        let (status, page) = app.get(&format!("/runs?graph_id={graph}&{query}")).await;
        assert_eq!(status, 200, "{page}");
        page["runs"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(listed(format!("since={start}")).await, 12);
    assert_eq!(listed(format!("since={start}&until={}", start + 86_400_000)).await, 12);
    assert_eq!(listed(format!("since={}", start + 86_400_000)).await, 0);
    assert_eq!(listed(format!("until={start}")).await, 0);

    let (status, _) = app.get(&format!("/graphs/{graph}/stats?days=0")).await;
    assert_eq!(status, 400);
    let (status, body) = app.get("/graphs/nope/stats").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("graph_not_found")));
}
