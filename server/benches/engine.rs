//! Engine benchmarks (`cargo bench -p weft-server`):
//!
//! - `step_overhead`: a chain of `noop` nodes with a sink that keeps nothing, so the time
//!   per element is the engine's own cost per step (tool call, state merge, next node).
//! - `branching`: a loop of 1,000 steps whose conditional edge is a Rhai condition
//!   (`state.count < 1000`) after an `increment` node, and the same loop with the counting
//!   done by a `script` node (a compiled Rhai script, run on the CPU pool).
//! - `code_review`: the whole Code Review preset over generated Python of 1k, 10k and
//!   100k lines, tools on the CPU pool as in the server.
//! - `parallel`: the cost per step of a parallel branch (a fan-out to 10 and 100 `noop`
//!   branches and their join) and of a map element (a map of `noop` over 100 and 1,000
//!   elements, 16 at once), each step checkpointing where every branch stands.
//!
//! Results are recorded in `docs/benchmarks.md`.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Map, Value};
use weft_server::{
    engine::{execute, executor::NullSink, Checkpoint, CpuPool, Graph},
    tools::{default_registry, presets},
};

fn chain(len: usize) -> Value {
    let nodes: Map<String, Value> = (0..len).map(|i| (format!("n{i}"), json!({"tool": "noop"}))).collect();
    let edges: Map<String, Value> = (1..len)
        .map(|i| (format!("n{}", i - 1), json!(format!("n{i}"))))
        .collect();
    json!({"nodes": nodes, "edges": edges, "max_steps": 10_000})
}

/// Python with a realistic mix: small and branchy functions, notes, long lines.
pub fn python_source(lines: usize) -> String {
    let mut code = String::with_capacity(lines * 40);
    let mut i = 0;
    // Each function below is 11 lines.
    while i * 11 < lines {
        code.push_str(&format!(
            "def handler_{i}(request, user, retries=3):\n    # TODO: validate request {i}\n    if request is None or user is None:\n        return None\n    for attempt in range(retries):\n        if attempt > 1 and user.active:\n            log = \"{}\"\n        elif attempt == 0:\n            continue\n    return [x for x in request if x]\n\n",
            "x".repeat(100)
        ));
        i += 1;
    }
    code
}

/// A runtime like the server's on this machine kind: two workers.
fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A state carrying a 100-element array, so that a per-step copy of the state would show.
fn with_payload() -> Map<String, Value> {
    let mut state = Map::new();
    state.insert("payload".into(), json!({"items": (0..100).collect::<Vec<_>>()}));
    state
}

fn step_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = default_registry(&CpuPool::new(2));
    let mut group = c.benchmark_group("step_overhead");
    for len in [10usize, 1_000] {
        let graph = Graph::parse(&chain(len), &registry).unwrap();
        let state = with_payload();
        group.throughput(Throughput::Elements(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(len), &graph, |b, graph| {
            b.to_async(&rt).iter(|| {
                let checkpoint = Checkpoint::start(graph, state.clone());
                async move { execute(graph, checkpoint, 10_000, &mut NullSink).await.unwrap() }
            });
        });
    }
    group.finish();
}

fn code_review(c: &mut Criterion) {
    let rt = two_workers();
    let registry = default_registry(&CpuPool::new(2));
    let spec = presets::find("code_review").unwrap().spec();
    let graph = Graph::parse(&spec, &registry).unwrap();
    let mut group = c.benchmark_group("code_review");
    group.sample_size(10);
    for lines in [1_000usize, 10_000, 100_000] {
        let source = python_source(lines);
        let counter = std::cell::Cell::new(0u64);
        group.throughput(Throughput::Elements(lines as u64));
        group.bench_function(BenchmarkId::from_parameter(lines), |b| {
            b.to_async(&rt).iter_batched(
                || {
                    // Code no earlier iteration reviewed, so no cached analysis applies.
                    counter.set(counter.get() + 1);
                    let mut state = Map::new();
                    state.insert("code".into(), format!("{source}# run {}\n", counter.get()).into());
                    Checkpoint::start(&graph, state)
                },
                |checkpoint| {
                    let graph = &graph;
                    async move { execute(graph, checkpoint, 100, &mut NullSink).await.unwrap() }
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

/// A loop of `steps` steps: `count` runs `tool` (with `config`), then loops back while
/// `state.count < steps`.
fn counting_loop(steps: usize, tool: &str, config: Value) -> Value {
    json!({
        "max_steps": 10_000,
        "nodes": [{"id": "count", "tool": tool, "config": config}],
        "edges": [{"from": "count", "branches": [{"when": format!("state.count < {steps}"), "to": "count"}], "default": null}]
    })
}

fn branching(c: &mut Criterion) {
    let rt = two_workers();
    let registry = default_registry(&CpuPool::new(2));
    let steps = 1_000;
    let mut group = c.benchmark_group("branching");
    group.throughput(Throughput::Elements(steps as u64));
    for (name, tool, config) in [
        ("condition", "increment", Value::Null),
        (
            "script",
            "script",
            json!({"script": "#{count: (state.count ?? 0) + 1}"}),
        ),
    ] {
        let graph = Graph::parse(&counting_loop(steps, tool, config), &registry).unwrap();
        let state = with_payload();
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let checkpoint = Checkpoint::start(&graph, state.clone());
                let graph = &graph;
                async move {
                    let end = execute(graph, checkpoint, 10_000, &mut NullSink).await.unwrap();
                    assert_eq!(end.steps, steps as u64);
                    end
                }
            });
        });
    }
    group.finish();
}

/// `begin` fans out to `width` `noop` branches, which join at `after`.
fn fan_out(width: usize) -> Value {
    let branches: Vec<String> = (0..width).map(|i| format!("b{i}")).collect();
    let mut nodes = vec![
        json!({"id": "begin", "tool": "noop"}),
        json!({"id": "after", "tool": "noop"}),
    ];
    nodes.extend(branches.iter().map(|id| json!({"id": id, "tool": "noop"})));
    json!({
        "start": "begin", "max_steps": 10_000, "nodes": nodes,
        "edges": [{"from": "begin", "to": branches}, {"from": branches, "to": "after"}, {"from": "after", "to": null}]
    })
}

/// `split` maps `noop` over the state's `items`, 16 at once.
fn map_over() -> Value {
    json!({
        "start": "split", "max_steps": 10_000,
        "nodes": [{"id": "split", "tool": "noop"}, {"id": "each", "tool": "increment", "config": {"key": "seen"}}],
        "edges": [{"from": "split", "map": {"over": "items", "as": "item", "to": "each", "max_concurrency": 16}, "then": null}]
    })
}

fn parallel(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = default_registry(&CpuPool::new(2));
    let mut group = c.benchmark_group("parallel");
    for width in [10usize, 100] {
        let graph = Graph::parse(&fan_out(width), &registry).unwrap();
        let state = with_payload();
        group.throughput(Throughput::Elements(width as u64 + 2));
        group.bench_with_input(BenchmarkId::new("fan_out", width), &graph, |b, graph| {
            b.to_async(&rt).iter(|| {
                let checkpoint = Checkpoint::start(graph, state.clone());
                async move { execute(graph, checkpoint, 10_000, &mut NullSink).await.unwrap() }
            });
        });
    }
    let graph = Graph::parse(&map_over(), &registry).unwrap();
    for len in [100usize, 1_000] {
        let mut state = with_payload();
        state.insert("items".into(), json!((0..len).collect::<Vec<_>>()));
        group.throughput(Throughput::Elements(len as u64 + 1));
        group.bench_with_input(BenchmarkId::new("map", len), &state, |b, state| {
            b.to_async(&rt).iter(|| {
                let checkpoint = Checkpoint::start(&graph, state.clone());
                let graph = &graph;
                async move { execute(graph, checkpoint, 10_000, &mut NullSink).await.unwrap() }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, step_overhead, branching, code_review, parallel);
criterion_main!(benches);
