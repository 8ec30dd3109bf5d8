//! How the Code Review preset scales with its input's size and shape
//! (`cargo bench -p weft-server --bench review_scaling`).
//!
//! Five shapes of Python, each at 10k, 100k and 1M lines: many small functions, one huge
//! function, long comment blocks, long string literals and deep nesting. Each input is
//! reviewed by the whole preset (`extract` → `complexity` → `detect` → `suggest` →
//! `assess_loop`) with `threshold: 0`, so that every shape gets exactly one pass and the
//! times compare the analysis, not how many refinement passes a shape earns. Each review
//! runs three times on code no earlier run saw (no cached analysis applies); the median is
//! printed as a Markdown table for `docs/benchmarks.md`. `WEFT_BENCH_MAX_LINES` lowers the
//! largest size.

#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Map};
use weft_server::{
    engine::{execute, executor::NullSink, Checkpoint, CpuPool, Graph},
    tools::{default_registry, presets},
};

/// A shape: its name and a generator of about `lines` lines of it.
type Shape = (&'static str, fn(usize) -> String);

fn small_functions(lines: usize) -> String {
    (0..lines / 5)
        .map(|i| format!("def f_{i}(a, b):\n    if a > b:\n        return a\n    return b\n\n"))
        .collect()
}

fn huge_function(lines: usize) -> String {
    let body: String = (0..lines / 4)
        .map(|i| format!("    if a > {i}:\n        b += {i}\n    else:\n        b -= 1\n"))
        .collect();
    format!("def huge(a, b):\n{body}    return b\n")
}

fn comment_blocks(lines: usize) -> String {
    let comment = format!("    # {}\n", "c".repeat(91));
    (0..10)
        .map(|f| format!("def f{f}(a):\n{}    return a\n\n", comment.repeat(lines / 10)))
        .collect()
}

fn string_literals(lines: usize) -> String {
    let text = format!("{}\n", "s".repeat(97));
    (0..10)
        .map(|f| {
            format!(
                "def f{f}(a):\n    text = \"\"\"\n{}\"\"\"\n    return text\n\n",
                text.repeat(lines / 10)
            )
        })
        .collect()
}

fn deep_nesting(lines: usize) -> String {
    const DEPTH: usize = 20;
    let function: String = (0..DEPTH)
        .map(|d| format!("{}if a > {d}:\n", "    ".repeat(d + 1)))
        .chain([format!("{}return a\n    return 0\n\n", "    ".repeat(DEPTH + 1))])
        .collect();
    (0..lines / (DEPTH + 4))
        .map(|i| format!("def f_{i}(a):\n{function}"))
        .collect()
}

fn main() {
    let shapes: [Shape; 5] = [
        ("many small functions", small_functions),
        ("one huge function", huge_function),
        ("long comment blocks", comment_blocks),
        ("long string literals", string_literals),
        ("deep nesting", deep_nesting),
    ];
    let max_lines: usize = std::env::var("WEFT_BENCH_MAX_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let registry = default_registry(&CpuPool::new(2));
    let graph = Graph::parse(&presets::find("code_review").unwrap().spec(), &registry).unwrap();

    println!("| shape | lines | MB | time | per line | per KB |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, generate) in shapes {
        for lines in [10_000, 100_000, 1_000_000].into_iter().filter(|&l| l <= max_lines) {
            let code = generate(lines);
            let counted = code.lines().count();
            let mut times: Vec<Duration> = (0..3)
                .map(|run| {
                    let mut state = Map::new();
                    state.insert("code".into(), format!("{code}# run {run}\n").into());
                    state.insert("threshold".into(), json!(0));
                    let checkpoint = Checkpoint::start(&graph, state);
                    let started = Instant::now();
                    let end = rt.block_on(execute(&graph, checkpoint, 100, &mut NullSink)).unwrap();
                    let took = started.elapsed();
                    assert_eq!(end.steps, 5, "{name}: one pass");
                    assert!(end.state["functions"].as_array().is_some_and(|f| !f.is_empty()));
                    took
                })
                .collect();
            times.sort();
            let median = times[1];
            println!(
                "| {name} | {counted} | {:.1} | {:.3} s | {:.2} µs | {:.2} µs |",
                code.len() as f64 / 1e6,
                median.as_secs_f64(),
                median.as_secs_f64() * 1e6 / counted as f64,
                median.as_secs_f64() * 1e6 / (code.len() as f64 / 1e3),
            );
        }
    }
}
