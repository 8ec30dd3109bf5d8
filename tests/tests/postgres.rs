//! Several server processes on one Postgres database: any instance takes any request,
//! each run is executed once, by one instance. Every node's execution is counted through
//! a side effect: the test-only `record` tool appends a line to a file, one file per
//! instance, so the test also sees which instance executed what.
//!
//! Postgres comes from `WEFT_TEST_POSTGRES` (default: the machine's local server); each
//! test makes a database of its own and drops it. With no Postgres there, the tests fail
//! under CI (`CI` set) and are skipped, saying so, in a plain local run.

use std::{collections::BTreeMap, path::Path};

use serde_json::json;
use sqlx::Connection;
use weft_tests::{step_nodes, ServerProcess, TestApp};

const LOCAL_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database made for one test, dropped with it.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    async fn create() -> Option<Self> {
        let admin = std::env::var("WEFT_TEST_POSTGRES").unwrap_or_else(|_| LOCAL_POSTGRES.to_owned());
        let mut conn = match sqlx::PgConnection::connect(&admin).await {
            Ok(conn) => conn,
            Err(err) if std::env::var_os("CI").is_none() => {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: the Postgres process tests: no Postgres at {admin} ({err}); set WEFT_TEST_POSTGRES"
                );
                return None;
            }
            Err(err) => panic!("no Postgres at {admin} ({err}): these tests need one (WEFT_TEST_POSTGRES)"),
        };
        let name = format!("weft_test_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("the test database is created");
        conn.close().await.expect("the admin connection closes");
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        Some(Self { admin, name, url })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // On a thread of its own: a test's runtime cannot be blocked on from inside.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                Ok::<_, sqlx::Error>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}

async fn start(url: &str, record: &Path, settings: &[(&str, &str)]) -> ServerProcess {
    let mut env = vec![("WEFT_TEST_RECORD_FILE", record.to_str().expect("a UTF-8 path"))];
    env.extend_from_slice(settings);
    ServerProcess::start_with_env(env!("CARGO_BIN_EXE_weft-server-under-test"), Path::new(url), &env).await
}

/// `n` instances on a database of their own; instance `i` records into `records[i]`.
struct Cluster {
    _database: Database,
    _dir: tempfile::TempDir,
    records: Vec<std::path::PathBuf>,
    processes: Vec<ServerProcess>,
    apps: Vec<TestApp>,
}

impl Cluster {
    async fn start(n: usize) -> Option<Self> {
        Self::start_with(&vec![&[][..]; n]).await
    }

    /// One instance per entry of `settings`, each started with its entry's variables.
    async fn start_with(settings: &[&[(&str, &str)]]) -> Option<Self> {
        let database = Database::create().await?;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let records: Vec<_> = (0..settings.len())
            .map(|i| dir.path().join(format!("instance-{i}.txt")))
            .collect();
        let mut processes = Vec::new();
        for (record, settings) in records.iter().zip(settings) {
            processes.push(start(&database.url, record, settings).await);
        }
        let apps = processes.iter().map(|p| TestApp::connect(p.port)).collect();
        Some(Self {
            _database: database,
            _dir: dir,
            records,
            processes,
            apps,
        })
    }

    /// What instance `i` recorded executing, one line per node.
    fn recorded(&self, i: usize) -> String {
        std::fs::read_to_string(&self.records[i]).unwrap_or_default()
    }

    async fn stop(self) {
        for process in self.processes {
            process.kill().await;
        }
    }
}

#[tokio::test]
async fn runs_started_round_robin_on_three_instances_each_execute_once() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let apps = &cluster.apps;
    let (_, health) = apps[1].get("/health").await;
    assert_eq!(health["store"], json!({"kind": "postgres", "ok": true}));

    let graph = apps[0]
        .create_graph(json!({
            "nodes": [
                {"id": "a", "tool": "record", "config": {"mark": "a"}},
                {"id": "count", "tool": "increment"},
                {"id": "b", "tool": "record", "config": {"mark": "b"}}
            ],
            "edges": [{"from": "a", "to": "count"}, {"from": "count", "to": "b"}]
        }))
        .await;
    let runs = 300;
    let mut started = Vec::new();
    for i in 0..runs {
        // Any instance takes any request: the graph was created through the first.
        started.push(apps[i % 3].start_run(&graph, json!({"token": format!("r{i}")})).await);
    }
    for (i, run) in started.iter().enumerate() {
        // And any instance answers for any run.
        let body = apps[(i + 2) % 3].wait_for_end(run).await;
        assert_eq!(body["status"], "completed", "{body}");
        assert_eq!(body["steps"], 3);
        assert_eq!(body["state"], json!({"token": format!("r{i}"), "count": 1}));
    }

    let mut executions: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..3 {
        let lines = cluster.recorded(i);
        assert!(!lines.is_empty(), "instance {i} executed no run");
        for line in lines.lines() {
            *executions.entry(line.to_owned()).or_default() += 1;
        }
    }
    let expected: BTreeMap<String, usize> = (0..runs)
        .flat_map(|i| ["a", "b"].map(|mark| (format!("r{i} {mark}"), 1)))
        .collect();
    assert_eq!(executions, expected, "each node of each run executed exactly once");
    cluster.stop().await;
}

/// A chain of `record` nodes with pauses between them: slow enough to watch, or to kill
/// an instance in the middle of.
fn slow_chain(marks: &[&str], pause_ms: u64) -> serde_json::Value {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for (i, mark) in marks.iter().enumerate() {
        nodes.push(json!({"id": mark, "tool": "record", "config": {"mark": mark}}));
        if i + 1 < marks.len() {
            let pause = format!("pause_{mark}");
            nodes.push(json!({"id": pause, "tool": "sleep", "config": {"ms": pause_ms}}));
            edges.push(json!({"from": mark, "to": pause}));
            edges.push(json!({"from": pause, "to": marks[i + 1]}));
        }
    }
    json!({"nodes": nodes, "edges": edges})
}

#[tokio::test]
async fn a_stream_on_one_instance_follows_a_run_executing_on_another() {
    let Some(cluster) = Cluster::start(2).await else {
        return;
    };
    let (on_a, on_b) = (&cluster.apps[0], &cluster.apps[1]);
    let graph = on_a.create_graph(slow_chain(&["x", "y", "z"], 200)).await;
    let run = on_a.start_run(&graph, json!({"token": "s"})).await;
    // B does not execute the run: it streams it from the database, live.
    let messages = on_b.stream(&run, "").await.unwrap();
    let seqs: Vec<u64> = messages.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gap-free, in order, once each"
    );
    let last = messages.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["status"].as_str()),
        (Some("end"), Some("completed"))
    );
    assert_eq!(last["state"], json!({"token": "s"}));
    let steps = messages.iter().filter(|m| m["type"] == "step").count();
    assert_eq!(steps, 5);
    // The run was executed by A alone.
    assert_eq!(cluster.recorded(0), "s x\ns y\ns z\n");
    assert_eq!(cluster.recorded(1), "");
    cluster.stop().await;
}

#[tokio::test]
async fn when_an_instance_dies_the_others_finish_its_runs_from_their_checkpoints() {
    let Some(mut cluster) = Cluster::start(3).await else {
        return;
    };
    let apps = &cluster.apps;
    let graph = apps[0].create_graph(slow_chain(&["p", "q", "r"], 600)).await;
    let mut runs = Vec::new();
    for i in 0..20 {
        runs.push(apps[0].start_run(&graph, json!({"token": format!("k{i}")})).await);
    }
    // Instance 0 dies mid-run: each of its runs has passed `p` and sits in a pause.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let dead = cluster.processes.remove(0);
    dead.kill().await;

    for (i, run) in runs.iter().enumerate() {
        let body = apps[1 + i % 2].wait_for_end(run).await;
        assert_eq!(body["status"], "completed", "{body}");
        assert_eq!(body["state"], json!({"token": format!("k{i}")}));
        assert_eq!(body["steps"], 5);
        // One `step` event per executed node, whoever executed it.
        let (_, detail) = apps[1].get(&format!("/runs/{run}")).await;
        assert_eq!(step_nodes(&detail), ["p", "pause_p", "q", "pause_q", "r"]);
        // Each step names the instance that executed it: `p` the dead one, `r` a survivor.
        let instance_of = |node: &str| {
            detail["events"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["type"] == "step" && e["node"] == node)
                .map(|e| e["instance"].as_str().unwrap().to_owned())
                .unwrap()
        };
        assert_ne!(instance_of("p"), instance_of("r"), "{detail}");
    }
    // Each node of each run executed once in all; `p` on the dead instance, `r` (after
    // 1.2 s of pauses) on a survivor.
    let (dead_lines, survivors) = (
        cluster.recorded(0),
        format!("{}{}", cluster.recorded(1), cluster.recorded(2)),
    );
    let mut executed: Vec<&str> = dead_lines.lines().chain(survivors.lines()).collect();
    executed.sort_unstable();
    let mut expected: Vec<String> = (0..20)
        .flat_map(|i| ["p", "q", "r"].map(|m| format!("k{i} {m}")))
        .collect();
    expected.sort_unstable();
    assert_eq!(executed, expected, "each node of each run once");
    for i in 0..20 {
        assert!(dead_lines.contains(&format!("k{i} p\n")), "k{i} p ran before the kill");
        assert!(survivors.contains(&format!("k{i} r\n")), "k{i} r ran on a survivor");
    }
    cluster.stop().await;
}

#[tokio::test]
async fn a_cancel_through_one_instance_stops_a_run_on_another_within_a_second() {
    let Some(cluster) = Cluster::start(2).await else {
        return;
    };
    let (on_a, on_b) = (&cluster.apps[0], &cluster.apps[1]);
    let graph = on_a.create_graph(slow_chain(&["x", "y"], 10_000)).await;
    let run = on_a.start_run(&graph, json!({"token": "c"})).await;
    // Into its 10 s pause, on A.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let asked = std::time::Instant::now();
    let (status, body) = on_b.post(&format!("/runs/{run}/cancel"), &json!({})).await;
    assert_eq!(status, 202, "{body}");
    let ended = on_b.wait_for_end(&run).await;
    let took = asked.elapsed();
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert!(
        took < std::time::Duration::from_secs(1),
        "the run stopped after {took:?}"
    );
    // `y` never ran; the pause's step never happened.
    assert_eq!(cluster.recorded(0), "c x\n");
    assert_eq!(ended["steps"], 1);
    // A second cancel finds the run ended.
    assert_eq!(on_a.post(&format!("/runs/{run}/cancel"), &json!({})).await.0, 409);
    cluster.stop().await;
}

#[tokio::test]
async fn a_run_sent_to_a_busy_instance_is_claimed_by_an_idle_one_woken_at_once() {
    // The busy instance has one slot. The idle one renews (and so claims) only every 20 s:
    // it can only claim in time because the queue's notice wakes it.
    let busy: &[(&str, &str)] = &[("WEFT_MAX_RUNNING", "1")];
    let idle: &[(&str, &str)] = &[("WEFT_LEASE_MS", "60000"), ("WEFT_LEASE_RENEW_MS", "20000")];
    let Some(cluster) = Cluster::start_with(&[busy, idle]).await else {
        return;
    };
    let (on_busy, on_idle) = (&cluster.apps[0], &cluster.apps[1]);
    let slow = on_busy.create_graph(slow_chain(&["s1", "s2"], 6_000)).await;
    let quick = on_busy.create_graph(slow_chain(&["q1", "q2", "q3"], 100)).await;
    // The busy instance's slot is taken (and its first node done) before the others come.
    let hog = on_busy.start_run(&slow, json!({"token": "hog"})).await;
    while !cluster.recorded(0).contains("hog s1") {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Followed live on the busy instance, which does not execute it.
    let streamed = on_busy.start_run(&quick, json!({"token": "w"})).await;
    let messages = on_busy.stream(&streamed, "").await.unwrap();
    let seqs: Vec<u64> = messages.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gap-free, once each");
    let last = messages.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["status"].as_str()),
        (Some("end"), Some("completed"))
    );
    assert_eq!(last["state"], json!({"token": "w"}));
    let instances: std::collections::BTreeSet<&str> = messages
        .iter()
        .filter(|m| m["type"] == "step")
        .map(|m| m["instance"].as_str().unwrap())
        .collect();
    assert_eq!(instances.len(), 1, "one instance executed it: {instances:?}");

    // `wait: true` on the busy instance answers with the end of a run the idle one executed.
    let body = on_busy.run_and_wait(&quick, json!({"token": "v"})).await;
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(body["state"], json!({"token": "v"}));
    assert_eq!(
        body["log"],
        json!([
            "[RUNNING] q1",
            "[RUNNING] pause_q1",
            "[RUNNING] q2",
            "[RUNNING] pause_q2",
            "[RUNNING] q3"
        ])
    );

    // Both ran on the idle instance while the hog still held the busy one's slot.
    assert_eq!(cluster.recorded(1), "w q1\nw q2\nw q3\nv q1\nv q2\nv q3\n");
    assert_eq!(cluster.recorded(0), "hog s1\n");
    let (_, hog_state) = on_idle.get(&format!("/graph/state/{hog}")).await;
    assert_eq!(hog_state["status"], "running");
    cluster.stop().await;
}
