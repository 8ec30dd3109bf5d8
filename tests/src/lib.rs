//! Helpers for the end-to-end tests: the real server on `127.0.0.1:0` with a fresh
//! SQLite file, and small clients for its REST API and WebSocket.

pub mod fake_llm;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::oneshot,
    task::JoinHandle,
};
use tokio_tungstenite::tungstenite::Message;
use weft_server::{config::Settings, startup::Application};

/// The lease of a server started as a child process: how long its runs stay its own
/// after it dies.
pub const LEASE_MS: u64 = 1_500;

/// How long any single wait in a test may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A running server with its own database.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// The port it listens on.
    pub port: u16,
    /// Where its database lives.
    pub database: PathBuf,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// The API token its requests and streams send, if any.
    pub token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<std::io::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

/// Starts a server with a fresh database in a temporary directory.
pub async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = dir.path().join("weft.db");
    let mut app = spawn_app_on(database, Settings::new(SocketAddr::from(([127, 0, 0, 1], 0)), "")).await;
    app._dir = Some(dir);
    app
}

/// Starts a server on the database at `database`, with `settings` otherwise.
pub async fn spawn_app_on(database: PathBuf, mut settings: Settings) -> TestApp {
    settings.database = database.to_string_lossy().into_owned();
    let app = Application::build(settings).await.expect("the server starts");
    let port = app.port();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        database,
        client: reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .expect("HTTP client"),
        token: None,
        stop: Some(stop),
        serving: Some(serving),
        _dir: None,
    }
}

impl TestApp {
    /// A client of a server already listening on `port` (started by someone else).
    pub fn connect(port: u16) -> Self {
        Self {
            address: format!("http://127.0.0.1:{port}"),
            port,
            database: PathBuf::new(),
            client: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .expect("HTTP client"),
            token: None,
            stop: None,
            serving: None,
            _dir: None,
        }
    }

    /// A client of this server that sends `token` with every request and stream.
    pub fn as_principal(&self, token: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("a header value"),
        );
        let mut client = Self::connect(self.port);
        client.database = self.database.clone();
        client.client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .default_headers(headers)
            .build()
            .expect("HTTP client");
        client.token = Some(token.to_owned());
        client
    }

    /// Creates an API token with the `weft-server token create` command's code, against
    /// this server's database; answers the token.
    pub async fn create_token(&self, name: &str, admin: bool, read_only: bool) -> String {
        let command = weft_server::cli::Command::Create {
            name: name.to_owned(),
            admin,
            read_only,
        };
        let printed = weft_server::cli::run(command, &self.database.to_string_lossy())
            .await
            .expect("the token is created");
        printed.lines().next().expect("the token's line").to_owned()
    }

    /// Stops serving and waits for open requests to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = self.serving.take() {
            let _ = tokio::time::timeout(TIMEOUT, serving).await;
        }
    }

    /// Takes ownership of the temporary directory, so it outlives this app.
    pub fn keep_dir(&mut self) -> Option<tempfile::TempDir> {
        self._dir.take()
    }

    /// POSTs `body` as JSON to `path`; answers the status and the JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .json(body)
            .send()
            .await
            .expect("request sent");
        json_answer(response).await
    }

    /// POSTs raw bytes with a content type; answers the status and the JSON body.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent");
        json_answer(response).await
    }

    /// GETs `path`; answers the status and the JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent");
        json_answer(response).await
    }

    /// DELETEs `path`; answers the status and the JSON body (`null` when there is none).
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .delete(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates a graph; answers its id.
    pub async fn create_graph(&self, spec: Value) -> String {
        let (status, body) = self.post("/graph/create", &spec).await;
        assert_eq!(status, 200, "create failed: {body}");
        body["graph_id"].as_str().expect("graph_id").to_owned()
    }

    /// Runs a graph with `wait: true`; answers the body.
    pub async fn run_and_wait(&self, graph_id: &str, initial_state: Value) -> Value {
        let (status, body) = self
            .post(
                "/graph/run",
                &json!({"graph_id": graph_id, "initial_state": initial_state, "wait": true}),
            )
            .await;
        assert_eq!(status, 200, "run failed: {body}");
        body
    }

    /// Starts a run with `wait: false`; answers its id.
    pub async fn start_run(&self, graph_id: &str, initial_state: Value) -> String {
        let (status, body) = self
            .post(
                "/graph/run",
                &json!({"graph_id": graph_id, "initial_state": initial_state}),
            )
            .await;
        assert_eq!(status, 200, "run failed: {body}");
        body["run_id"].as_str().expect("run_id").to_owned()
    }

    /// Polls `GET /graph/state` until the run has ended; answers the last snapshot.
    pub async fn wait_for_end(&self, run_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let (status, body) = self.get(&format!("/graph/state/{run_id}")).await;
            assert_eq!(status, 200, "state failed: {body}");
            if !matches!(body["status"].as_str(), Some("running" | "queued")) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {run_id} did not end: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `GET /graph/state` until the run has ended, not stopping while it waits for
    /// an answer (as [`TestApp::wait_for_end`] does); answers the last snapshot.
    pub async fn until_ended(&self, run_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let (_, state) = self.get(&format!("/graph/state/{run_id}")).await;
            if matches!(state["status"].as_str(), Some("completed" | "failed" | "cancelled")) {
                return state;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {run_id} did not end: {state}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Opens `WS /ws/{run_id}{query}` and reads every message until the server closes it.
    pub async fn stream(&self, run_id: &str, query: &str) -> anyhow::Result<Vec<Value>> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://127.0.0.1:{}/ws/{run_id}{query}", self.port).into_client_request()?;
        if let Some(token) = &self.token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
        }
        let (mut socket, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
            .await
            .context("connect timed out")??;
        let mut messages = Vec::new();
        loop {
            let next = tokio::time::timeout(TIMEOUT, socket.next())
                .await
                .context("the stream stalled")?;
            match next {
                None | Some(Ok(Message::Close(_))) => return Ok(messages),
                Some(Ok(Message::Text(text))) => messages.push(serde_json::from_str(&text)?),
                Some(Ok(_)) => {}
                Some(Err(err)) => bail!("socket error: {err}"),
            }
        }
    }
}

/// The status and JSON body of an answer.
async fn json_answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The `type` of each event in a run's detail (`GET /runs/{id}`), in order.
pub fn event_types(detail: &Value) -> Vec<&str> {
    detail["events"]
        .as_array()
        .expect("the run's events")
        .iter()
        .map(|event| event["type"].as_str().expect("an event type"))
        .collect()
}

/// The node of each `step` event in a run's detail (`GET /runs/{id}`), in order: one per
/// executed node.
pub fn step_nodes(detail: &Value) -> Vec<&str> {
    detail["events"]
        .as_array()
        .expect("the run's events")
        .iter()
        .filter(|event| event["type"] == "step")
        .map(|event| event["node"].as_str().expect("a step's node"))
        .collect()
}

/// `functions` Python functions, each of `lines` lines of a 97-character comment (which
/// starts with `salt`) between its signature and its `return`.
pub fn comment_heavy_python(functions: usize, lines: usize, salt: &str) -> String {
    let comment = format!("    # {salt}{}\n", "c".repeat(97 - 6 - salt.len()));
    (0..functions)
        .map(|f| format!("def f{f}(a):\n{}    return a\n\n", comment.repeat(lines)))
        .collect()
}

/// A graph in the prototype's form of `nodes` (name and spec) chained in order. The last
/// node's edge is `null` (the end), so even one node has an edge: the prototype's form
/// counts empty `edges` as missing.
pub fn chain(nodes: impl IntoIterator<Item = (String, Value)>) -> Value {
    let nodes: serde_json::Map<String, Value> = nodes.into_iter().collect();
    let names: Vec<&String> = nodes.keys().collect();
    let edges: serde_json::Map<String, Value> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            (
                (*name).clone(),
                names.get(i + 1).map_or(Value::Null, |next| json!(next)),
            )
        })
        .collect();
    json!({"nodes": nodes, "edges": edges})
}

/// A graph of `count` nodes chained in order, each running the `increment` tool.
pub fn counter_chain(count: usize) -> Value {
    chain((0..count).map(|i| (format!("n{i}"), json!({"tool": "increment"}))))
}

/// A graph whose runs complete, or fail at its `boom` node when the state has
/// `"fail": true`: 10 of one and 2 of the other make a history to chart.
pub fn sometimes_failing() -> Value {
    json!({
        "name": "sometimes failing",
        "start": "work",
        "nodes": [
            {"id": "work", "tool": "increment"},
            {"id": "boom", "tool": "fail", "config": {"message": "disk full"}}
        ],
        "edges": [{"from": "work", "branches": [{"when": "state.fail == true", "to": "boom"}], "default": null}]
    })
}

/// Runs `graph_id` to its end `completed` times with `{}` and `failed` times with
/// `{"fail": true}` (see [`sometimes_failing`]).
pub async fn run_mixed(app: &TestApp, graph_id: &str, completed: usize, failed: usize) {
    for fail in std::iter::repeat_n(false, completed).chain(std::iter::repeat_n(true, failed)) {
        let end = app.run_and_wait(graph_id, json!({"fail": fail})).await;
        let expected = if fail { "failed" } else { "completed" };
        assert_eq!(end["status"], expected, "{end}");
    }
}

/// The server binary as a child process, killed with SIGKILL when dropped.
pub struct ServerProcess {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    /// Every line it has logged so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts `binary` (the server) on `addr` over `database`, serving the site built in
    /// `site_root` when given, and waits until it listens.
    pub async fn start(binary: &str, database: &Path, addr: SocketAddr, site_root: Option<&Path>) -> Self {
        let mut command = Self::command(binary, database);
        if let Some(root) = site_root {
            command.env("LEPTOS_SITE_ROOT", root);
        }
        command.env("WEFT_ADDR", addr.to_string());
        Self::launch(command).await
    }

    /// Starts `binary` on port 0 over `database`, with `env` set (over the defaults): test
    /// hooks, say, or other leases.
    pub async fn start_with_env(binary: &str, database: &Path, env: &[(&str, &str)]) -> Self {
        let mut command = Self::command(binary, database);
        command.env("WEFT_ADDR", "127.0.0.1:0").envs(env.iter().copied());
        Self::launch(command).await
    }

    /// The server over `database`, with the tests' defaults.
    fn command(binary: &str, database: &Path) -> Command {
        let mut command = Command::new(binary);
        command
            .env("WEFT_DATABASE", database)
            // Short leases: a killed server's runs pass to the next one within a moment.
            .env("WEFT_LEASE_MS", LEASE_MS.to_string())
            .env("WEFT_LEASE_RENEW_MS", "200")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        command
    }

    async fn launch(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the server starts");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let port = tokio::time::timeout(TIMEOUT, async {
            while let Some(line) = lines.next_line().await.expect("server log") {
                log.lock().expect("the log").push(line.clone());
                if let Some(at) = line.find("listening on http://127.0.0.1:") {
                    let digits: String = line[at + 30..].chars().take_while(char::is_ascii_digit).collect();
                    return digits.parse::<u16>().expect("a port");
                }
            }
            panic!("the server exited before listening");
        })
        .await
        .expect("the server listens in time");
        // Keep reading its log, or a full pipe would block it.
        let kept = std::sync::Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                kept.lock().expect("the log").push(line);
            }
        });
        Self { child, port, log }
    }

    /// Every line it has logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("the log").clone()
    }

    /// Sends it SIGTERM, as a service manager stopping it would, and waits for it to exit:
    /// its exit status and how long it took, or `None` if it did not exit in time.
    pub async fn terminate(mut self) -> Option<(std::process::ExitStatus, Duration)> {
        let pid = self.child.id().expect("the server is running");
        let sent = std::time::Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid")),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM sent");
        let status = tokio::time::timeout(TIMEOUT, self.child.wait()).await.ok()?.ok()?;
        Some((status, sent.elapsed()))
    }

    /// Waits for it to exit by itself (a test hook aborting it, say): its exit status, or
    /// `None` if it did not exit in time.
    pub async fn exited(mut self) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(TIMEOUT, self.child.wait()).await.ok()?.ok()
    }

    /// Kills it with SIGKILL, as a crash would.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL sent");
        let _ = tokio::time::timeout(TIMEOUT, self.child.wait()).await;
    }
}
