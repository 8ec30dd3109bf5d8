//! The edge: requests for another host, and requests from a foreign page, are refused
//! before any route sees them; a WebSocket client cannot send more than a close.

use std::{net::SocketAddr, time::Duration};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
use weft_server::{api::edge::AllowedHosts, config::Settings};
use weft_tests::{chain, spawn_app, spawn_app_on, TestApp, TIMEOUT};

/// A run of `count` pauses of `ms` each: long enough to act on while it runs.
fn pauses(count: usize, ms: u64) -> Value {
    chain((0..count).map(|i| (format!("p{i}"), json!({"tool": "sleep", "config": {"ms": ms}}))))
}

async fn get_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = app.client.get(format!("{}{path}", app.address));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("an answer");
    (response.status().as_u16(), response.json().await.expect("a JSON body"))
}

/// Opens the run's stream with `origin`; answers the HTTP status the upgrade got.
async fn open_stream(app: &TestApp, run_id: &str, origin: &str) -> Result<(), u16> {
    let mut request = format!("ws://127.0.0.1:{}/ws/{run_id}", app.port)
        .into_client_request()
        .expect("a WebSocket request");
    request
        .headers_mut()
        .insert("origin", origin.parse().expect("a header value"));
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(err) => panic!("unexpected error: {err}"),
    }
}

#[tokio::test]
async fn a_request_for_another_host_is_refused() {
    let app = spawn_app().await;
    // A page whose name was rebound to 127.0.0.1 still sends its own name.
    let (status, body) = get_with(&app, "/health", &[("host", "evil.example")]).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "host_not_allowed");
    assert_eq!(
        body["detail"],
        "this server does not answer to the host `evil.example`; add it to WEFT_ALLOWED_HOSTS"
    );
    // The site's pages too, not only the API.
    let (status, _) = get_with(&app, "/history", &[("host", "evil.example:3000")]).await;
    assert_eq!(status, 403);
    // Its own names pass, with or without the port.
    let port = app.port.to_string();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "localhost".to_owned(),
    ] {
        let (status, body) = get_with(&app, "/health", &[("host", &host)]).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("ok")), "{host}");
    }
}

#[tokio::test]
async fn the_hosts_allowed_are_the_ones_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(SocketAddr::from(([127, 0, 0, 1], 0)), "");
    settings.allowed_hosts = AllowedHosts::parse("weft.internal").unwrap();
    let app = spawn_app_on(dir.path().join("weft.db"), settings).await;
    let (status, _) = get_with(&app, "/health", &[("host", "weft.internal:8080")]).await;
    assert_eq!(status, 200);
    let (status, body) = get_with(&app, "/health", &[("host", "localhost")]).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("host_not_allowed")));
}

#[tokio::test]
async fn a_foreign_page_can_neither_follow_nor_cancel_a_run() {
    let app = spawn_app().await;
    let graph = app.create_graph(pauses(3, 300)).await;
    let run = app.start_run(&graph, json!({})).await;

    // A WebSocket opened by a foreign page is refused at the upgrade.
    assert_eq!(open_stream(&app, &run, "https://evil.example").await, Err(403));
    assert_eq!(open_stream(&app, &run, "null").await, Err(403));
    // Weft's own page may follow it.
    let own = format!("http://127.0.0.1:{}", app.port);
    assert_eq!(open_stream(&app, &run, &own).await, Ok(()));

    // A cross-site POST (a form, or fetch with no-cors) is refused, and the run goes on.
    let response = app
        .client
        .post(format!("{}/runs/{run}/cancel", app.address))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "origin_not_allowed");
    let (_, state) = app.get(&format!("/graph/state/{run}")).await;
    assert_eq!(state["status"], "running");

    // From Weft's own origin (or from no page at all) the same cancel is taken.
    let response = app
        .client
        .post(format!("{}/runs/{run}/cancel", app.address))
        .header("origin", &own)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(app.wait_for_end(&run).await["status"], "cancelled");
}

#[tokio::test]
async fn a_client_that_sends_more_than_a_close_is_dropped_and_the_run_goes_on() {
    let app = spawn_app().await;
    let graph = app.create_graph(pauses(4, 150)).await;
    let run = app.start_run(&graph, json!({})).await;
    let url = format!("ws://127.0.0.1:{}/ws/{run}", app.port);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // The first events arrive; then the client sends 64 KiB.
    let first = socket.next().await.unwrap().unwrap();
    assert!(matches!(first, Message::Text(_)), "{first:?}");
    socket.send(Message::text("x".repeat(64 * 1024))).await.unwrap();
    // The server drops the connection long before the run's 600 ms are over.
    let dropped = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(dropped.is_ok(), "the connection stayed open");
    let (_, state) = app.get(&format!("/graph/state/{run}")).await;
    assert_eq!(state["status"], "running", "the run was not affected");
    let done = app.wait_for_end(&run).await;
    assert_eq!(
        (done["status"].as_str(), done["steps"].as_u64()),
        (Some("completed"), Some(4))
    );
    // A fresh connection gets the whole run.
    let messages = tokio::time::timeout(TIMEOUT, app.stream(&run, ""))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(messages.last().unwrap()["type"], "end");
}

#[tokio::test]
async fn a_script_that_declares_100000_variables_fails_its_node_cleanly() {
    let app = spawn_app().await;
    // 3,226 variables a call, 31 calls deep: 100,006 in all, in 40 KB of source.
    let lets: String = (0..3_226).map(|i| format!("let v{i} = 0;")).collect();
    let script = format!("fn f(n) {{ {lets} if n > 1 {{ f(n - 1) }} }} f(31); #{{done: true}}");
    let graph = app
        .create_graph(json!({
            "nodes": [
                {"id": "before", "tool": "increment"},
                {"id": "vars", "tool": "script", "config": {"script": script}}
            ],
            "edges": [{"from": "before", "to": "vars"}]
        }))
        .await;
    let body = app.run_and_wait(&graph, json!({})).await;
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(
        body["error"],
        "node `vars` failed: stopped: more than 1024 variables at once"
    );
    // The step before it stands; the server goes on serving.
    assert_eq!(body["state"], json!({"count": 1}));
    assert_eq!(app.get("/health").await.0, 200);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_the_run_is_unaffected() {
    let app = spawn_app().await;
    // A 1.3 MB state, then 30 steps: each streamed step carries the whole state, about
    // 40 MB in all, far more than the socket buffers hold.
    let mut nodes = vec![(
        "grow".to_owned(),
        json!({"tool": "script", "config": {"script": "let s = \"0123456789\"; for i in 0..17 { s += s; } #{blob: s}"}}),
    )];
    nodes.extend((0..30).map(|i| (format!("n{i}"), json!({"tool": "increment"}))));
    let graph = app.create_graph(chain(nodes)).await;
    let run = app.start_run(&graph, json!({})).await;
    let url = format!("ws://127.0.0.1:{}/ws/{run}", app.port);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // The client reads nothing for longer than the server's send timeout (10 s).
    tokio::time::sleep(Duration::from_secs(13)).await;
    let (_, state) = app.get(&format!("/graph/state/{run}")).await;
    assert_eq!(
        (state["status"].as_str(), state["steps"].as_u64()),
        (Some("completed"), Some(31)),
        "the run went on without the client"
    );
    // What it reads now is what was in flight when it was dropped: never the end.
    let mut types = Vec::new();
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
        if let Message::Text(text) = message {
            let event: Value = serde_json::from_str(&text).unwrap();
            types.push(event["type"].as_str().unwrap().to_owned());
        }
    }
    assert!(!types.is_empty(), "the first events were sent");
    assert!(
        !types.iter().any(|t| t == "end"),
        "the stream was cut, not finished: {types:?}"
    );
    // Reconnecting, it gets the rest.
    let last = types.len() as u64;
    let rest = app.stream(&run, &format!("?since={last}")).await.unwrap();
    assert_eq!(rest.last().unwrap()["type"], "end");
    assert_eq!(rest[0]["seq"].as_u64(), Some(last + 1));
}

/// The server binary over a fresh database in `dir`, listening on `addr`, with `env`.
fn server_command(dir: &std::path::Path, addr: &str, env: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_weft-server-under-test"));
    command
        .env("WEFT_ADDR", addr)
        .env("WEFT_DATABASE", dir.join("weft.db"))
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn the_server_listens_beyond_loopback_only_when_told_to_run_open() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    // No tokens exist: on every address, it refuses to start, and says why.
    let refused = tokio::time::timeout(TIMEOUT, server_command(dir.path(), "0.0.0.0:0", &[]).output())
        .await
        .unwrap()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("refusing to listen on 0.0.0.0:0 without authentication")
            && said.contains("set WEFT_AUTH=off to run open on purpose"),
        "{said}"
    );

    // Told to run open, it starts, warns, and serves.
    let mut open = server_command(dir.path(), "0.0.0.0:0", &[("WEFT_AUTH", "off")])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(open.stderr.take().unwrap()).lines();
    let (mut warned, mut port) = (false, None);
    tokio::time::timeout(TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            warned |= line.contains("WEFT_AUTH=off: listening beyond this machine with no authentication");
            if let Some(at) = line.find("listening on http://0.0.0.0:") {
                let digits: String = line[at + 28..].chars().take_while(char::is_ascii_digit).collect();
                port = Some(digits.parse::<u16>().unwrap());
                return;
            }
        }
    })
    .await
    .unwrap();
    assert!(warned, "the warning is logged");
    let app = TestApp::connect(port.unwrap());
    assert_eq!(app.get("/health").await.0, 200);
    open.kill().await.unwrap();
}

#[tokio::test]
async fn an_idle_stream_is_kept_alive_with_pings() {
    let app = spawn_app().await;
    let graph = app.create_graph(pauses(1, 30_000)).await;
    let run = app.start_run(&graph, json!({})).await;
    let url = format!("ws://127.0.0.1:{}/ws/{run}", app.port);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // Nothing happens in the run for 30 s; the server pings every 15 s meanwhile (and the
    // client answers, as WebSocket clients do).
    let pinged = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Ping(_))) => return true,
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return false,
            }
        }
    })
    .await;
    assert_eq!(pinged, Ok(true), "a ping within 20 s");
    let (_, state) = app.get(&format!("/graph/state/{run}")).await;
    assert_eq!(
        (state["status"].as_str(), state["steps"].as_u64()),
        (Some("running"), Some(0))
    );
    app.post(&format!("/runs/{run}/cancel"), &json!({})).await;
    // Still connected: the stream ends with the run.
    let mut last = Value::Null;
    while let Some(Ok(message)) = socket.next().await {
        if let Message::Text(text) = message {
            last = serde_json::from_str(&text).unwrap();
        }
    }
    assert_eq!(
        (last["type"].as_str(), last["status"].as_str()),
        (Some("end"), Some("cancelled"))
    );
}

#[tokio::test]
async fn streams_and_waiting_runs_held_open_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(SocketAddr::from(([127, 0, 0, 1], 0)), "");
    settings.max_held_open = 1;
    let app = spawn_app_on(dir.path().join("weft.db"), settings).await;
    let graph = app.create_graph(pauses(1, 5_000)).await;
    let run = app.start_run(&graph, json!({})).await;
    let url = format!("ws://127.0.0.1:{}/ws/{run}", app.port);
    let (held, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();

    // The one place is taken: another stream, or a run waited on, is turned away.
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            assert_eq!(response.headers()["retry-after"], "1");
        }
        other => panic!("a second stream was let in: {:?}", other.map(|_| ())),
    }
    let (status, body) = app.post("/graph/run", &json!({"graph_id": graph, "wait": true})).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("at_capacity")), "{body}");
    // Runs not waited on, and plain reads, are not held open: they go on.
    assert_eq!(app.post("/graph/run", &json!({"graph_id": graph})).await.0, 200);
    assert_eq!(app.get(&format!("/runs/{run}")).await.0, 200);

    // The place comes back when the stream closes.
    drop(held);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while tokio_tungstenite::connect_async(url.as_str()).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the place never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn starting_runs_faster_than_the_rate_limit_answers_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(SocketAddr::from(([127, 0, 0, 1], 0)), "");
    settings.rate_limit = 3;
    let app = spawn_app_on(dir.path().join("weft.db"), settings).await;
    let root = app.as_principal(&app.create_token("root", true, false).await);
    let alice = app.as_principal(&app.create_token("alice", false, false).await);
    let graph = alice.create_graph(weft_tests::counter_chain(1)).await;
    let start = |client: &TestApp| {
        let request = client
            .client
            .post(format!("{}/graph/run", client.address))
            .json(&json!({"graph_id": graph, "initial_state": {}}));
        async move {
            let response = request.send().await.expect("an answer");
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|value| value.to_str().unwrap().to_owned());
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("JSON");
            (status, retry_after, body)
        }
    };
    // A burst as large as the rate passes; the next is refused, and says when to retry.
    for _ in 0..3 {
        assert_eq!(start(&alice).await.0, 200);
    }
    let (status, retry_after, body) = start(&alice).await;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")), "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    // Another principal has its own allowance (the admin may not see alice's graph, but
    // is not refused for her rate).
    let (status, _, body) = start(&root).await;
    assert_eq!(status, 200, "{body}");
    // After the wait it says, alice may start again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(start(&alice).await.0, 200);
}

#[tokio::test]
async fn the_server_listens_beyond_loopback_once_a_token_exists() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("weft.db");
    let printed = weft_server::cli::run(
        weft_server::cli::Command::Create {
            name: "root".into(),
            admin: true,
            read_only: false,
        },
        &database.to_string_lossy(),
    )
    .await
    .unwrap();
    let token = printed.lines().next().unwrap().to_owned();
    let mut server = server_command(dir.path(), "0.0.0.0:0", &[]).spawn().unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let port = tokio::time::timeout(TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            assert!(!line.contains("WEFT_AUTH=off"), "{line}");
            if let Some(at) = line.find("listening on http://0.0.0.0:") {
                let digits: String = line[at + 28..].chars().take_while(char::is_ascii_digit).collect();
                return digits.parse::<u16>().unwrap();
            }
        }
        panic!("the server exited: it should start when tokens protect it");
    })
    .await
    .unwrap();
    let app = TestApp::connect(port);
    assert_eq!(app.get("/runs").await.0, 401);
    assert_eq!(app.as_principal(&token).get("/runs").await.0, 200);
    server.kill().await.unwrap();
}

#[tokio::test]
async fn a_request_past_the_timeout_gets_408_but_a_run_waited_on_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(SocketAddr::from(([127, 0, 0, 1], 0)), "");
    settings.request_timeout = Duration::from_secs(1);
    let app = spawn_app_on(dir.path().join("weft.db"), settings).await;
    // A run waited on may take longer than the request timeout: it has its own cap.
    let graph = app.create_graph(pauses(1, 1_500)).await;
    let started = std::time::Instant::now();
    let ended = app.run_and_wait(&graph, json!({})).await;
    assert_eq!(ended["status"], "completed");
    assert!(started.elapsed() >= Duration::from_millis(1_500));

    // Another process holds the database's write lock: storing a graph waits for it, and
    // the request is answered 408 at the timeout instead of hanging.
    let database = app.database.clone();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(database).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        std::thread::sleep(Duration::from_millis(2_500));
        conn.execute_batch("ROLLBACK").unwrap();
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = app.post("/graph/create", &weft_tests::counter_chain(1)).await;
    assert_eq!((status, body["code"].as_str()), (408, Some("timeout")), "{body}");
    assert_eq!(body["detail"], "the request took longer than this server allows");
    holder.join().unwrap();
    // Once the lock is let go, requests go through again.
    let (status, _) = app.post("/graph/create", &weft_tests::counter_chain(1)).await;
    assert_eq!(status, 200);
}
