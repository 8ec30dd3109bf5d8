//! A review that outlives its node's timeout stops using the CPU. Alone in its test
//! binary, so that the process's CPU time is this test's own.

use std::time::{Duration, Instant};

use serde_json::json;
use weft_tests::{spawn_app, TestApp};

/// This process's CPU time (user and system) so far, from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name, which is in parentheses and may hold spaces.
    let after_name = stat.rfind(')').expect("the command name's closing parenthesis");
    let fields: Vec<&str> = stat[after_name + 2..].split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |field: &str| field.parse::<u64>().expect("a tick count");
    let ticks = ticks(fields[11]) + ticks(fields[12]);
    // Clock ticks are 1/100 s on Linux.
    Duration::from_millis(ticks * 10)
}

async fn pool_busy(app: &TestApp) -> u64 {
    let (status, health) = app.get("/health").await;
    assert_eq!(status, 200);
    health["cpu_pool"]["busy"].as_u64().expect("cpu_pool.busy")
}

#[tokio::test]
async fn a_review_past_its_timeout_stops_using_the_cpu() {
    let app = spawn_app().await;
    // One node with a timeout far shorter than parsing 10 MB takes.
    let graph = app
        .create_graph(json!({
            "nodes": [{"id": "extract", "tool": "extract", "timeout_ms": 50}],
            "edges": []
        }))
        .await;
    // Dense code: about 200,000 small functions, every line of them parsed and walked.
    let code: String = (0..200_000)
        .map(|f| format!("def f{f}(a):\n    if a > {f}:\n        return a\n    return 0\n\n"))
        .collect();
    let body = app.run_and_wait(&graph, json!({"code": code})).await;
    assert_eq!(body["status"], "failed");
    assert_eq!(body["error"], "node `extract` failed: timed out after 50 ms");

    // The pool job was asked to stop, and its thread ends within a moment.
    let asked = Instant::now();
    while pool_busy(&app).await > 0 {
        assert!(
            asked.elapsed() < Duration::from_millis(300),
            "the pool job is still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And then the process is idle: well under a tenth of a core over the next second.
    let before = cpu_time();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_time() - before;
    assert!(used < Duration::from_millis(100), "{used:?} of CPU in one idle second");
    assert_eq!(pool_busy(&app).await, 0);
}
