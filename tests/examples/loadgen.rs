//! Load generator for `scripts/bench-http`: measures a running Weft server over loopback.
//!
//! `cargo run --release -p weft-tests --example loadgen -- http://127.0.0.1:PORT [seconds]`
//!
//! 1. runs/s and latency of `POST /graph/run` with `wait: true` (Code Review on 40 lines
//!    of Python with a few notes, so every run writes 5 durable steps) at concurrency 1,
//!    16 and 64;
//! 2. the time from `POST /graph/run` (`wait: false`) to the last event on
//!    `WS /ws/{run_id}`, over 200 runs.
//!
//! With `WEFT_BENCH_TOKEN` set, every request and stream sends it as a bearer token.
//!
//! Every loop is bounded in time and in count.

#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// 40 lines of Python: five small functions and a class, three notes to resolve.
const SNIPPET: &str = "\
import math


def add(a, b):
    # TODO: check types
    return a + b


def mean(values):
    if not values:
        return 0.0
    return sum(values) / len(values)


def spread(values):
    centre = mean(values)
    # FIXME: use a numerically stable variance
    total = 0.0
    for value in values:
        total += (value - centre) ** 2
    return math.sqrt(total / max(len(values) - 1, 1))


class Counter:
    def __init__(self):
        self.counts = {}

    def add(self, key):
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]

    def top(self, n=3):
        ordered = sorted(self.counts.items(), key=lambda kv: kv[1], reverse=True)
        return ordered[:n]


def clamp(x, low, high):
    # TODO: accept reversed bounds
    return max(low, min(x, high))
";
const MAX_REQUESTS_PER_WORKER: usize = 1_000_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> Value {
    client.post(url).json(body).send().await.unwrap().json().await.unwrap()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    // One base URL, or several (comma-separated) instances sharing one database: the
    // clients are spread over them.
    let bases: Vec<String> = args
        .next()
        .expect("usage: loadgen http://127.0.0.1:PORT[,http://127.0.0.1:PORT2…] [seconds]")
        .split(',')
        .map(str::to_owned)
        .collect();
    let base = bases[0].clone();
    let seconds: u64 = args.next().map_or(5, |s| s.parse().unwrap());
    let token = std::env::var("WEFT_BENCH_TOKEN").ok().filter(|t| !t.is_empty());
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &token {
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .default_headers(headers)
        .build()
        .unwrap();
    let graph = post(
        &client,
        &format!("{base}/graph/create"),
        &json!({"preset": "code_review"}),
    )
    .await;
    let graph_id = graph["graph_id"].as_str().unwrap().to_owned();
    let run_urls: Vec<String> = bases.iter().map(|base| format!("{base}/graph/run")).collect();
    let run_url = run_urls[0].clone();
    let body = json!({"graph_id": graph_id, "initial_state": {"code": SNIPPET}, "wait": true});

    println!("| concurrency | runs/s | p50 | p99 | errors |");
    println!("| --- | --- | --- | --- | --- |");
    for concurrency in [1usize, 16, 64] {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let workers = (0..concurrency).map(|worker| {
            let (client, url, body) = (client.clone(), run_urls[worker % run_urls.len()].clone(), body.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0usize);
                while Instant::now() < deadline && latencies.len() < MAX_REQUESTS_PER_WORKER {
                    let sent = Instant::now();
                    match client.post(&url).json(&body).send().await {
                        Ok(response) if response.status().is_success() => {
                            let answer: Value = response.json().await.unwrap();
                            assert_eq!(answer["status"], "completed");
                            latencies.push(sent.elapsed());
                        }
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        });
        let mut latencies = Vec::new();
        let mut errors = 0;
        for worker in futures::future::join_all(workers).await {
            let (mine, failed) = worker.unwrap();
            latencies.extend(mine);
            errors += failed;
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort();
        println!(
            "| {concurrency} | {:.0} | {:.2} ms | {:.2} ms | {errors} |",
            latencies.len() as f64 / elapsed,
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        );
    }

    // Started on the first instance, streamed from the last (another, when there are two).
    let ws_base = bases[bases.len() - 1].replacen("http", "ws", 1);
    let start_body = json!({"graph_id": graph_id, "initial_state": {"code": SNIPPET}});
    let mut delays = Vec::new();
    for _ in 0..200 {
        let sent = Instant::now();
        let started = post(&client, &run_url, &start_body).await;
        let run_id = started["run_id"].as_str().unwrap();
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("{ws_base}/ws/{run_id}").into_client_request().unwrap();
        if let Some(token) = &token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut steps = 0;
        while let Some(Ok(message)) = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .unwrap()
        {
            if let Message::Text(text) = message {
                let event: Value = serde_json::from_str(&text).unwrap();
                if event["type"] == "step" {
                    steps += 1;
                }
                if event["type"] == "end" {
                    break;
                }
            }
        }
        assert_eq!(steps, 5, "every step arrives");
        delays.push(sent.elapsed());
    }
    delays.sort();
    println!(
        "\nPOST → last WS event (end){}, 200 runs: p50 {:.2} ms, p99 {:.2} ms",
        if bases.len() > 1 {
            ", the stream on another instance"
        } else {
            ""
        },
        percentile(&delays, 0.5).as_secs_f64() * 1e3,
        percentile(&delays, 0.99).as_secs_f64() * 1e3
    );
}
