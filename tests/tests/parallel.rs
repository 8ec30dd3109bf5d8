//! Parallel branches and map: a fan-out runs its branches at once and a join waits for
//! all of them; a map runs a node per element and collects the results in order; two
//! branches writing one key need a reducer; each branch's step is committed as it
//! finishes, so a crash mid-map runs again only the elements not done; questions asked
//! in two branches are answered one at a time.

use std::path::Path;

use serde_json::{json, Value};
use weft_tests::{spawn_app, ServerProcess, TestApp, TIMEOUT};

/// The run's events, from `GET /runs/{id}`.
async fn events(app: &TestApp, run_id: &str) -> Vec<Value> {
    let (_, detail) = app.get(&format!("/runs/{run_id}")).await;
    detail["events"].as_array().cloned().unwrap_or_default()
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|event| event["type"] == kind).collect()
}

#[tokio::test]
async fn a_fan_out_runs_its_branches_at_once_and_the_join_waits_for_both() {
    let app = spawn_app().await;
    let graph = app
        .create_graph(json!({
            "start": "begin",
            "nodes": [
                {"id": "begin", "tool": "noop"},
                {"id": "left", "tool": "sleep", "config": {"ms": 500}},
                {"id": "right", "tool": "sleep", "config": {"ms": 500}},
                {"id": "after", "tool": "increment", "config": {"key": "joined"}}
            ],
            "edges": [
                {"from": "begin", "to": ["left", "right"]},
                {"from": ["left", "right"], "to": "after"},
                {"from": "after", "to": null}
            ]
        }))
        .await;
    let done = app.run_and_wait(&graph, json!({})).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["state"], json!({"joined": 1}), "the join ran once");
    let run_id = done["run_id"].as_str().unwrap();
    let events = events(&app, run_id).await;
    let steps = of_type(&events, "step");
    let order: Vec<(&str, &str)> = steps
        .iter()
        .map(|step| (step["node"].as_str().unwrap(), step["branch"].as_str().unwrap()))
        .collect();
    assert_eq!(order[0], ("begin", "0"));
    assert_eq!(order[3], ("after", "2"), "the branch that completes the join goes on");
    let mut middle = vec![order[1], order[2]];
    middle.sort_unstable();
    assert_eq!(middle, [("left", "1"), ("right", "2")]);
    // Both sleeps started before either finished: the events say so, in their order.
    let seq_of = |kind: &str, node: &str| {
        events
            .iter()
            .find(|event| event["type"] == kind && event["node"] == node)
            .and_then(|event| event["seq"].as_u64())
            .unwrap()
    };
    let last_start = seq_of("node_started", "left").max(seq_of("node_started", "right"));
    let first_finish = seq_of("step", "left").min(seq_of("step", "right"));
    assert!(last_start < first_finish, "{events:?}");
    // Each slept its 500 ms, and the run took well under the 1 s they would take in turn,
    // by the server's own clock.
    for step in &steps[1..3] {
        assert!(step["duration_us"].as_u64().unwrap() >= 500_000, "{step}");
    }
    let (_, snapshot) = app.get(&format!("/graph/state/{run_id}")).await;
    let took = snapshot["finished_at"].as_i64().unwrap() - snapshot["created_at"].as_i64().unwrap();
    assert!(took < 900, "the run took {took} ms");
}

#[tokio::test]
async fn two_branches_writing_one_key_need_a_reducer() {
    let app = spawn_app().await;
    let spec = |reducers: Value| {
        json!({
            "start": "begin",
            "reducers": reducers,
            "nodes": [
                {"id": "begin", "tool": "noop"},
                {"id": "count_a", "tool": "script", "config": {"script": "#{total: 2, witnesses: [\"a\"]}"}},
                {"id": "count_b", "tool": "script", "config": {"script": "#{total: 3, witnesses: [\"b\"]}"}}
            ],
            "edges": [{"from": "begin", "to": ["count_a", "count_b"]}]
        })
    };
    let graph = app.create_graph(spec(json!({}))).await;
    let failed = app.run_and_wait(&graph, json!({})).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap();
    let one_way = "nodes `count_a` and `count_b` both wrote `total` in parallel branches";
    let other_way = "nodes `count_b` and `count_a` both wrote `total` in parallel branches";
    assert!(error.starts_with(one_way) || error.starts_with(other_way), "{error}");
    assert!(
        error.ends_with("give `total` a reducer in the graph's `reducers` (append, extend, sum, max, merge or last)")
    );

    let graph = app
        .create_graph(spec(json!({"total": "sum", "witnesses": "extend"})))
        .await;
    let done = app.run_and_wait(&graph, json!({"total": 10})).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["state"]["total"], 15);
    let mut witnesses: Vec<String> = serde_json::from_value(done["state"]["witnesses"].clone()).unwrap();
    witnesses.sort_unstable();
    assert_eq!(witnesses, ["a", "b"]);

    // What the validator sees: an unknown reducer, a branch listed twice.
    let (status, bad) = app
        .post(
            "/graph/create",
            &json!({
                "start": "begin",
                "reducers": {"total": "average"},
                "nodes": [{"id": "begin", "tool": "noop"}, {"id": "a", "tool": "noop"}],
                "edges": [{"from": "begin", "to": ["a", "a"]}]
            }),
        )
        .await;
    assert_eq!(status, 422);
    let problems: Vec<(&str, &str)> = bad["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["path"].as_str().unwrap(), p["message"].as_str().unwrap()))
        .collect();
    assert!(
        problems.contains(&(
            "/reducers/total",
            "must be `append`, `extend`, `sum`, `max`, `merge` or `last`"
        )),
        "{problems:?}"
    );
    assert!(
        problems.contains(&("/edges/0/to/1", "`a` is in this fan-out twice")),
        "{problems:?}"
    );
}

/// `split` leaves the chunks; `shout` runs per chunk; `count` runs after.
fn mapping(max_concurrency: u64, per_item: Value) -> Value {
    json!({
        "start": "split",
        "max_steps": 50,
        "nodes": [
            {"id": "split", "tool": "noop"},
            per_item,
            {"id": "count", "tool": "script", "config": {"script": "#{count: state.shout.len()}"}}
        ],
        "edges": [
            {"from": "split", "map": {"over": "chunks", "as": "chunk", "to": "shout", "max_concurrency": max_concurrency}, "then": "count"},
            {"from": "count", "to": null}
        ]
    })
}

fn chunks(n: usize) -> Value {
    json!({"chunks": (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>()})
}

#[tokio::test]
async fn a_map_runs_a_node_per_element_and_collects_the_results_in_order() {
    let app = spawn_app().await;
    let shout = json!({"id": "shout", "tool": "script", "config": {"script": "#{shout: state.chunk.to_upper() + state.mark, sees: state.keys().len()}"}});
    let mut with_mark = mapping(4, shout.clone());
    with_mark["edges"][0]["map"]["with"] = json!(["mark"]);
    let graph = app.create_graph(with_mark).await;
    let mut input = chunks(10);
    input["mark"] = json!("!");
    input["unseen"] = json!("not copied to each element");
    let done = app.run_and_wait(&graph, input).await;
    assert_eq!(done["status"], "completed", "{done}");
    let expected: Vec<String> = (0..10).map(|i| format!("C{i}!")).collect();
    assert_eq!(done["state"]["shout"], json!(expected));
    assert_eq!(
        done["state"]["sees"],
        json!(vec![2; 10]),
        "each element sees `chunk` and `mark` only"
    );
    assert_eq!(done["state"]["count"], 10);
    assert!(
        done["state"].get("chunk").is_none(),
        "an element is seen by its own run only"
    );
    let events = events(&app, done["run_id"].as_str().unwrap()).await;
    let mut branches: Vec<&str> = of_type(&events, "step")
        .iter()
        .filter(|step| step["node"] == "shout")
        .map(|step| step["branch"].as_str().unwrap())
        .collect();
    branches.sort_unstable_by_key(|branch| branch[2..branch.len() - 1].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..10).map(|i| format!("0[{i}]")).collect();
    assert_eq!(branches, expected);
    // Every element's step counts toward the limit: 12 steps do not fit in 8.
    let mut limited = mapping(4, shout);
    limited["max_steps"] = json!(8);
    limited["edges"][0]["map"]["with"] = json!(["mark"]);
    let graph = app.create_graph(limited).await;
    let mut input = chunks(10);
    input["mark"] = json!("");
    let failed = app.run_and_wait(&graph, input).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(
        failed["error"],
        "step limit of 8 reached; the run was cycling through shout"
    );
}

async fn start(database: &Path, env: &[(&str, &str)]) -> ServerProcess {
    ServerProcess::start_with_env(env!("CARGO_BIN_EXE_weft-server-under-test"), database, env).await
}

#[tokio::test]
async fn a_crash_mid_map_runs_again_only_the_elements_not_done() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("weft.db");
    // The server dies right after the first element's step is committed.
    let first = start(&database, &[("WEFT_TEST_ABORT_AFTER_STEP", "shout")]).await;
    let app = TestApp::connect(first.port);
    let slow = json!({"id": "shout", "tool": "script", "config": {"script": "let x = 0; while x < 20000 { x += 1; } #{shout: state.chunk.to_upper()}"}});
    let mut graph = mapping(3, slow);
    // A pause first, so the server answers the start of the run before the hook kills it.
    graph["nodes"][0] = json!({"id": "split", "tool": "sleep", "config": {"ms": 200}});
    let graph = app.create_graph(graph).await;
    let run_id = app.start_run(&graph, chunks(10)).await;
    let status = first.exited().await.expect("the hook aborts the server");
    assert!(!status.success());

    let second = start(&database, &[]).await;
    let app = TestApp::connect(second.port);
    let done = app.until_ended(&run_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let expected: Vec<String> = (0..10).map(|i| format!("C{i}")).collect();
    assert_eq!(done["state"]["shout"], json!(expected));
    let events = events(&app, &run_id).await;
    let resumed_at = events
        .iter()
        .find(|event| event["type"] == "run_started" && event["resumed"] == true)
        .and_then(|event| event["seq"].as_u64())
        .expect("the run was resumed");
    let item_steps: Vec<(&str, u64)> = events
        .iter()
        .filter(|event| event["type"] == "step" && event["node"] == "shout")
        .map(|event| (event["branch"].as_str().unwrap(), event["seq"].as_u64().unwrap()))
        .collect();
    // Exactly one step per element, first before the crash, the rest after.
    assert_eq!(item_steps.len(), 10, "{item_steps:?}");
    let before: Vec<&str> = item_steps
        .iter()
        .filter(|(_, seq)| *seq < resumed_at)
        .map(|(branch, _)| *branch)
        .collect();
    assert_eq!(before.len(), 1, "{item_steps:?}");
    // The element done before the crash never ran again: no start of it after.
    let started_again = events.iter().any(|event| {
        event["type"] == "node_started" && event["branch"] == before[0] && event["seq"].as_u64().unwrap() > resumed_at
    });
    assert!(!started_again, "{} ran again", before[0]);
    let executions = events
        .iter()
        .filter(|event| event["type"] == "node_started" && event["node"] == "shout")
        .count();
    assert!(executions <= 10 + 3, "at most the 3 in flight ran twice: {executions}");
    second.terminate().await;
}

#[tokio::test]
async fn questions_in_two_branches_are_answered_one_at_a_time() {
    let app = spawn_app().await;
    let ask = |id: &str| {
        json!({"id": id, "tool": "interrupt", "config": {
            "prompt": format!("{id}?"), "key": id,
            "input_schema": {"type": "integer"}
        }})
    };
    let graph = app
        .create_graph(json!({
            "start": "begin",
            "reducers": {"sum": "sum"},
            "nodes": [
                {"id": "begin", "tool": "noop"},
                ask("left"),
                ask("right"),
                {"id": "add", "tool": "script", "config": {"script": "#{sum: state.left + state.right}"}}
            ],
            "edges": [
                {"from": "begin", "to": ["left", "right"]},
                {"from": ["left", "right"], "to": "add"},
                {"from": "add", "to": null}
            ]
        }))
        .await;
    let run_id = app.start_run(&graph, json!({})).await;
    let waiting = app.wait_for_end(&run_id).await;
    assert_eq!(waiting["status"], "waiting", "{waiting}");
    let questions = waiting["interrupts"].as_array().unwrap();
    let mut asked: Vec<&str> = questions.iter().map(|q| q["node"].as_str().unwrap()).collect();
    asked.sort_unstable();
    assert_eq!(asked, ["left", "right"]);
    let id_of = |node: &str| {
        questions
            .iter()
            .find(|q| q["node"] == node)
            .map(|q| q["interrupt_id"].clone())
            .unwrap()
    };
    let resume = format!("/runs/{run_id}/resume");
    let (status, first) = app
        .post(&resume, &json!({"interrupt_id": id_of("left"), "input": 4}))
        .await;
    assert_eq!((status, first["status"].as_str()), (202, Some("waiting")));
    let (_, still) = app.get(&format!("/graph/state/{run_id}")).await;
    assert_eq!(still["status"], "waiting");
    let left: Vec<&str> = still["interrupts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["node"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["right"], "the answered question is no longer pending");
    let (status, second) = app
        .post(&resume, &json!({"interrupt_id": id_of("right"), "input": 5}))
        .await;
    assert_eq!((status, second["status"].as_str()), (202, Some("queued")));
    let done = app.until_ended(&run_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["state"], json!({"left": 4, "right": 5, "sum": 9}));
}

#[tokio::test]
async fn a_fork_from_a_branch_step_goes_on_along_its_edges() {
    let app = spawn_app().await;
    let graph = app
        .create_graph(json!({
            "start": "begin",
            "nodes": [
                {"id": "begin", "tool": "noop"},
                {"id": "left", "tool": "increment", "config": {"key": "l"}},
                {"id": "right", "tool": "increment", "config": {"key": "r"}},
                {"id": "after", "tool": "increment", "config": {"key": "joined"}}
            ],
            "edges": [
                {"from": "begin", "to": ["left", "right"]},
                {"from": ["left", "right"], "to": "after"},
                {"from": "after", "to": null}
            ]
        }))
        .await;
    let parent = app.run_and_wait(&graph, json!({})).await;
    assert_eq!(parent["state"], json!({"l": 1, "r": 1, "joined": 1}));
    let parent_id = parent["run_id"].as_str().unwrap();
    let step_of = |events: &[Value], node: &str| {
        events
            .iter()
            .find(|event| event["type"] == "step" && event["node"] == node)
            .and_then(|event| event["step"].as_u64())
            .unwrap()
    };
    let parent_events = events(&app, parent_id).await;

    // From the fan-out's step: both branches run again, from the patched state.
    let (status, forked) = app
        .post(
            &format!("/runs/{parent_id}/fork"),
            &json!({"from_step": step_of(&parent_events, "begin"), "state_patch": {"l": 40}}),
        )
        .await;
    assert_eq!(status, 200, "{forked}");
    let done = app.until_ended(forked["run_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["state"], json!({"l": 41, "r": 1, "joined": 1}));
    let forked_events = events(&app, forked["run_id"].as_str().unwrap()).await;
    let mut branches: Vec<(&str, &str)> = of_type(&forked_events, "step")
        .iter()
        .map(|step| (step["node"].as_str().unwrap(), step["branch"].as_str().unwrap()))
        .collect();
    branches.sort_unstable();
    assert_eq!(branches, [("after", "2"), ("left", "1"), ("right", "2")]);

    // From inside a branch: what the other branch did is in the state; the join runs.
    let left = step_of(&parent_events, "left");
    let (status, forked) = app
        .post(
            &format!("/runs/{parent_id}/fork"),
            &json!({"from_step": left, "state_patch": {"l": 7}}),
        )
        .await;
    assert_eq!(status, 200, "{forked}");
    let done = app.until_ended(forked["run_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["state"]["l"], 7);
    assert_eq!(done["state"]["joined"], 1);
}

/// `begin` fans out to two branches of `laps` × (count, 150 ms pause), which join.
fn two_slow_branches(laps: usize) -> Value {
    let mut nodes = vec![
        json!({"id": "begin", "tool": "noop"}),
        json!({"id": "after", "tool": "noop"}),
    ];
    let mut edges = Vec::new();
    for side in ["l", "r"] {
        for lap in 0..laps {
            nodes.push(json!({"id": format!("{side}{lap}"), "tool": "increment", "config": {"key": side}}));
            nodes.push(json!({"id": format!("{side}{lap}_pause"), "tool": "sleep", "config": {"ms": 150}}));
            edges.push(json!({"from": format!("{side}{lap}"), "to": format!("{side}{lap}_pause")}));
            if lap + 1 < laps {
                edges.push(json!({"from": format!("{side}{lap}_pause"), "to": format!("{side}{}", lap + 1)}));
            }
        }
    }
    edges.push(json!({"from": "begin", "to": ["l0", "r0"]}));
    edges.push(json!({"from": [format!("l{}_pause", laps - 1), format!("r{}_pause", laps - 1)], "to": "after"}));
    json!({"start": "begin", "max_steps": 200, "nodes": nodes, "edges": edges})
}

#[tokio::test]
async fn a_parallel_run_stopped_by_sigterm_goes_on_after_the_restart_with_each_step_once() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("weft.db");
    let first = start(&database, &[]).await;
    let app = TestApp::connect(first.port);
    let graph = app.create_graph(two_slow_branches(6)).await;
    let run_id = app.start_run(&graph, json!({})).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while app.get(&format!("/graph/state/{run_id}")).await.1["steps"]
        .as_u64()
        .unwrap_or(0)
        < 6
    {
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, _) = first.terminate().await.expect("it stops in time");
    assert!(status.success(), "{status}");

    let second = start(&database, &[]).await;
    let app = TestApp::connect(second.port);
    let done = app.until_ended(&run_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["state"], json!({"l": 6, "r": 6}));
    let events = events(&app, &run_id).await;
    let mut nodes: Vec<&str> = of_type(&events, "step")
        .iter()
        .map(|step| step["node"].as_str().unwrap())
        .collect();
    nodes.sort_unstable();
    let before = nodes.len();
    nodes.dedup();
    assert_eq!(before, nodes.len(), "each node recorded once");
    assert_eq!(nodes.len(), 2 + 2 * 12);
    assert!(
        events
            .iter()
            .any(|event| event["type"] == "run_started" && event["resumed"] == true),
        "the second server took it up"
    );
    second.terminate().await;
}

#[tokio::test]
async fn a_cancel_stops_every_branch_at_once() {
    let app = spawn_app().await;
    let graph = app.create_graph(two_slow_branches(20)).await;
    let run_id = app.start_run(&graph, json!({})).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while app.get(&format!("/graph/state/{run_id}")).await.1["steps"]
        .as_u64()
        .unwrap_or(0)
        < 4
    {
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, _) = app.post(&format!("/runs/{run_id}/cancel"), &json!({})).await;
    assert_eq!(status, 202);
    let cancelled = app.until_ended(&run_id).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let events = events(&app, &run_id).await;
    let end = events.last().unwrap();
    assert_eq!(end["type"], "end");
    // Cut mid-pause: far from the 82 steps of the whole run, and nothing after the end.
    assert!(end["steps"].as_u64().unwrap() < 20, "{end}");
    let (_, later) = app.get(&format!("/runs/{run_id}")).await;
    assert_eq!(later["events"].as_array().unwrap().len(), events.len());
}
