//! The web UI in a real headless Chromium: a Code Review started from the form runs to
//! its report, a slow run is watched live (through a reload) and cancelled from the
//! page, and a finished run opened fresh shows its whole timeline; the history lists
//! and filters runs. Screenshots of each screen go to `tests/artifacts/`.
//!
//! Needs the site built by cargo-leptos (`target/site/pkg`) and Chromium with
//! ChromeDriver; `scripts/test` prepares both and runs this with `--include-ignored`.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use weft_server::config::Settings;
use weft_tests::{
    fake_llm::{fake, Reply},
    run_mixed, sometimes_failing, spawn_app_on, ServerProcess, TestApp,
};

const STEP: Duration = Duration::from_secs(30);

/// One browser test at a time: four Chromiums at once on two cores slow page loads past
/// what the live tests allow for.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn site_root() -> PathBuf {
    std::env::var_os("WEFT_SITE_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/site"))
}

/// ChromeDriver in its own process group, killed with everything it started on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let binary = std::env::var("WEFT_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let child = Command::new(&binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {binary} (apt-get install chromium-driver)"))?;
        let driver = Self { child, port };
        let deadline = Instant::now() + STEP;
        while TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_err() {
            if Instant::now() > deadline {
                bail!("chromedriver did not listen on port {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(driver)
    }

    async fn browser(&self, profile: &std::path::Path, extra_args: &[String]) -> anyhow::Result<Client> {
        let chromium = std::env::var("WEFT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ]
        .map(str::to_owned)
        .to_vec();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend_from_slice(extra_args);
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), json!({"binary": chromium, "args": args}));
        let url = format!("http://127.0.0.1:{}", self.port);
        let mut builder = ClientBuilder::native();
        builder.capabilities(caps);
        Ok(tokio::time::timeout(STEP, builder.connect(&url))
            .await
            .context("browser start timed out")??)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The driver leads its own group, and the browsers it started are in it.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            if pid > 1 {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of the first element matching `css`, or empty when there is none.
async fn text_of(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// An attribute of the first element matching `css`.
async fn attr_of(client: &Client, css: &str, attr: &str) -> Option<String> {
    client
        .find(Locator::Css(css))
        .await
        .ok()?
        .attr(attr)
        .await
        .ok()
        .flatten()
}

/// Waits until `check` holds, failing with `what` after [`STEP`].
async fn wait_until<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + STEP;
    while !check().await {
        if Instant::now() > deadline {
            bail!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn wait_for_text(client: &Client, css: &str, expected: &str) -> anyhow::Result<()> {
    wait_until(&format!("`{css}` reads `{expected}`"), || async {
        text_of(client, css).await == expected
    })
    .await
}

/// The state the run page's drawing gives a node (`data-state`: running, completed…).
async fn node_state(client: &Client, node: &str) -> Option<String> {
    attr_of(client, &format!("g.node[data-node={node}]"), "data-state").await
}

/// Picks a card of the start page's gallery: a link to the page with that card's form.
async fn pick(client: &Client, preset: &str) -> anyhow::Result<()> {
    client
        .find(Locator::Css(&format!("[data-preset={preset}] a.pick")))
        .await?
        .click()
        .await?;
    let query = format!("preset={preset}");
    wait_until(&format!("the page with {preset} chosen opens"), || async {
        client
            .current_url()
            .await
            .is_ok_and(|url| url.path() == "/" && url.query() == Some(query.as_str()))
    })
    .await?;
    wait_for_text(client, "[data-testid=hydration]", "interactive").await?;
    assert_eq!(
        attr_of(client, &format!("[data-preset={preset}]"), "class")
            .await
            .as_deref(),
        Some("card chosen")
    );
    Ok(())
}

async fn open(client: &Client, url: &str) -> anyhow::Result<()> {
    tokio::time::timeout(STEP, client.goto(url)).await??;
    wait_for_text(client, "[data-testid=hydration]", "interactive").await
}

fn screenshot_path(name: &str) -> anyhow::Result<PathBuf> {
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts)?;
    Ok(artifacts.join(name))
}

async fn screenshot(client: &Client, name: &str) -> anyhow::Result<()> {
    std::fs::write(screenshot_path(name)?, client.screenshot().await?)?;
    Ok(())
}

/// The app serving the built site, a browser, and the cleanup of both.
struct Ui {
    app: weft_tests::TestApp,
    _dir: tempfile::TempDir,
    _profile: tempfile::TempDir,
    client: Client,
    _driver: Driver,
}

impl Ui {
    /// The app serving the built site, and Chromium started with `extra_args` too.
    async fn start_with(extra_args: &[String]) -> anyhow::Result<Self> {
        let root = site_root();
        assert!(
            root.join("pkg/weft.wasm").exists(),
            "no site at {}: build it with `cargo leptos build --split` first",
            root.display()
        );
        let dir = tempfile::tempdir()?;
        let mut settings = Settings::new(SocketAddr::from(([127, 0, 0, 1], 0)), "");
        settings.site_root = root;
        let app = spawn_app_on(dir.path().join("weft.db"), settings).await;
        let driver = Driver::start()?;
        let profile = tempfile::tempdir()?;
        let client = driver.browser(profile.path(), extra_args).await?;
        Ok(Self {
            app,
            _dir: dir,
            _profile: profile,
            client,
            _driver: driver,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app.address)
    }

    async fn close(self) {
        let _ = tokio::time::timeout(STEP, self.client.clone().close()).await;
    }
}

/// Runs `test` against a fresh app and browser (Chromium started with `extra_args` too),
/// one browser test at a time, and closes the browser whatever the outcome.
async fn with_ui(extra_args: &[String], test: impl AsyncFnOnce(&Ui) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let ui = Ui::start_with(extra_args).await?;
    let outcome = test(&ui).await;
    ui.close().await;
    outcome
}

/// The nodes of a run's step events, in order, from the REST API.
fn step_nodes(detail: &serde_json::Value) -> Vec<String> {
    detail["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|event| event["type"] == "step")
        .map(|event| event["node"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
#[ignore = "needs the site built by cargo-leptos and Chromium: scripts/test runs it"]
async fn a_code_review_started_from_the_form_runs_to_its_report() -> anyhow::Result<()> {
    with_ui(&[], async |ui| {
        // The first render is the server's: the HTML already holds the gallery and the form.
        let html = ui.app.client.get(ui.url("/")).send().await?.text().await?;
        assert!(html.contains("data-preset=\"code_review\""), "{html}");
        assert!(html.contains("server-rendered"));

        let client = &ui.client;
        open(client, &ui.url("/")).await?;
        screenshot(client, "start.png").await?;
        // The custom graph's JSON editors check the text as it is typed.
        pick(client, "custom").await?;
        let state = client.find(Locator::Css("[data-testid=state-editor]")).await?;
        state.clear().await?;
        state.send_keys("{\"a\": ").await?;
        wait_until("the state editor flags the broken JSON", || async {
            text_of(client, "[data-testid=state-editor-check]")
                .await
                .starts_with("line 1, column")
        })
        .await?;
        state.send_keys("1}").await?;
        wait_for_text(
            client,
            "[data-testid=state-editor-check]",
            "valid JSON object (1 key(s))",
        )
        .await?;
        pick(client, "code_review").await?;
        let threshold = client.find(Locator::Css("[data-testid=threshold]")).await?;
        threshold.clear().await?;
        threshold.send_keys("100").await?;
        client.find(Locator::Css("[data-testid=run]")).await?.click().await?;

        wait_until("the run page opens", || async {
            !text_of(client, "[data-testid=status]").await.is_empty()
        })
        .await?;
        let run_id = attr_of(client, "[data-testid=run]", "data-run-id")
            .await
            .context("no run id")?;
        assert!(client.current_url().await?.path().ends_with(&run_id));
        wait_for_text(client, "[data-testid=status]", "completed").await?;

        let (status, detail) = ui.app.get(&format!("/runs/{run_id}")).await;
        assert_eq!(status, 200);
        let state = &detail["run"]["state"];
        // The threshold of 100 is out of reach: the review loops once through its fixes.
        assert_eq!(state["threshold"], 100.0);
        let nodes = step_nodes(&detail);
        assert_eq!(
            nodes[..5],
            ["extract", "complexity", "detect", "suggest", "assess_loop"]
        );

        // The graph shows each node finished at its step, in order.
        for (step, node) in nodes.iter().enumerate().take(5) {
            let steps = attr_of(client, &format!("[data-node={node}]"), "data-steps")
                .await
                .unwrap_or_default();
            assert_eq!(
                steps.split(',').next(),
                Some((step + 1).to_string().as_str()),
                "{node}: {steps}"
            );
            assert_eq!(
                attr_of(client, &format!("[data-node={node}]"), "data-state")
                    .await
                    .as_deref(),
                Some("completed")
            );
        }
        // The report: the score and every issue, as the API has them.
        let score = text_of(client, "[data-testid=score] .score").await;
        assert_eq!(score, state["quality_score"].to_string());
        let issues = client.find_all(Locator::Css("[data-testid=issue]")).await?;
        assert_eq!(issues.len(), state["issues"].as_array().map_or(0, Vec::len));
        assert!(!issues.is_empty());
        let first = issues[0].text().await?;
        for key in ["type", "message", "text"] {
            let value = state["issues"][0][key].as_str().unwrap_or("?");
            assert!(first.contains(value), "{key} `{value}` in {first}");
        }
        let diff = text_of(client, "[data-testid=revised-diff]").await;
        assert!(diff.contains("weft: needs a person"), "{diff}");
        // Tall enough to hold the whole report.
        client.set_window_size(1280, 2600).await?;
        screenshot(client, "report.png").await?;
        anyhow::Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs the site built by cargo-leptos and Chromium: scripts/test runs it"]
async fn a_slow_run_is_followed_live_through_a_reload_and_cancelled_from_the_page() -> anyhow::Result<()> {
    with_ui(&[], async |ui| {
        let graph = ui
            .app
            .create_graph(json!({
                "nodes": {
                    "first": "increment",
                    "wait": {"tool": "sleep", "config": {"ms": 3000}},
                    "second": "increment",
                    "again": {"tool": "sleep", "config": {"ms": 3000}},
                    "third": "increment"
                },
                "edges": {"first": "wait", "wait": "second", "second": "again", "again": "third", "third": null}
            }))
            .await;
        let run_id = ui.app.start_run(&graph, json!({})).await;
        let client = &ui.client;
        let page = ui.url(&format!("/run/{run_id}"));
        open(client, &page).await?;
        let running = |node: &'static str| async move {
            attr_of(client, &format!("[data-node={node}]"), "data-state")
                .await
                .as_deref()
                == Some("running")
        };
        wait_until("`wait` runs", || running("wait")).await?;
        wait_for_text(client, "[data-testid=live]", "Live").await?;
        assert_eq!(
            attr_of(client, "[data-node=first]", "data-state").await.as_deref(),
            Some("completed")
        );
        // Reload mid-run: the same run, still live, the next node lit by the stream.
        client.refresh().await?;
        wait_for_text(client, "[data-testid=hydration]", "interactive").await?;
        wait_until("`again` runs", || running("again")).await?;
        assert_eq!(
            attr_of(client, "[data-node=second]", "data-steps").await.as_deref(),
            Some("3")
        );
        screenshot(client, "live-run.png").await?;

        client.find(Locator::Css("[data-testid=cancel]")).await?.click().await?;
        wait_for_text(client, "[data-testid=status]", "cancelled").await?;
        assert_eq!(
            attr_of(client, "[data-node=third]", "data-state").await.as_deref(),
            Some("skipped")
        );
        let (_, state) = ui.app.get(&format!("/graph/state/{run_id}")).await;
        assert_eq!(state["status"], "cancelled");
        // The log, rebuilt from the stream across the reload, is the server's log.
        let log: Vec<&str> = state["log"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str())
            .collect();
        assert_eq!(log.iter().filter(|line| line.starts_with("[RUNNING]")).count(), 4);
        assert_eq!(text_of(client, "[data-testid=log]").await, log.join("\n"));
        assert!(
            client.find(Locator::Css("[data-testid=cancel]")).await.is_err(),
            "Cancel stays after the end"
        );
        anyhow::Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs the site built by cargo-leptos and Chromium: scripts/test runs it"]
async fn a_finished_run_opened_fresh_shows_its_whole_timeline_and_the_history_lists_it() -> anyhow::Result<()> {
    with_ui(&[], async |ui| {
        let (_, created) = ui.app.post("/graph/create", &json!({"preset": "code_review"})).await;
        let graph = created["graph_id"].as_str().context("graph id")?.to_owned();
        let code = "def f(x):\n    # TODO: more\n    return x   \n";
        let finished = ui
            .app
            .run_and_wait(&graph, json!({"code": code, "threshold": 100}))
            .await;
        let run_id = finished["run_id"].as_str().context("run id")?.to_owned();
        let failing = ui
            .app
            .create_graph(json!({"nodes": {"boom": "fail"}, "edges": {"boom": null}}))
            .await;
        ui.app.run_and_wait(&failing, json!({})).await;
        let (_, detail) = ui.app.get(&format!("/runs/{run_id}")).await;
        let nodes = step_nodes(&detail);
        assert!(nodes.len() > 5, "{nodes:?}");

        // Without JavaScript the server's HTML already holds the whole timeline.
        let html = ui
            .app
            .client
            .get(ui.url(&format!("/run/{run_id}")))
            .send()
            .await?
            .text()
            .await?;
        assert_eq!(html.matches("data-testid=\"timeline-step\"").count(), nodes.len());

        let client = &ui.client;
        open(client, &ui.url(&format!("/run/{run_id}"))).await?;
        let rows = client.find_all(Locator::Css("[data-testid=timeline-step]")).await?;
        let mut shown = Vec::new();
        for row in rows {
            shown.push(row.attr("data-node").await?.unwrap_or_default());
        }
        assert_eq!(shown, nodes);
        // Selecting the first step shows what it changed.
        client
            .find(Locator::Css("[data-testid=timeline-step] button"))
            .await?
            .click()
            .await?;
        wait_until("step 1 is shown", || async {
            text_of(client, "[data-testid=step-detail] h2").await == "After step #1 · extract"
        })
        .await?;
        let changes = text_of(client, "[data-testid=changes]").await;
        assert!(
            changes.contains("functions") && changes.to_lowercase().contains("added"),
            "{changes}"
        );

        client.set_window_size(390, 844).await?;
        screenshot(client, "run-phone.png").await?;
        client.set_window_size(1280, 900).await?;

        open(client, &ui.url("/history")).await?;
        assert_eq!(client.find_all(Locator::Css("[data-testid=run-row]")).await?.len(), 2);
        client
            .find(Locator::Css("[data-testid=status-filter]"))
            .await?
            .select_by_value("failed")
            .await?;
        client.find(Locator::Css(".filters button")).await?.click().await?;
        wait_until("the history shows failed runs only", || async {
            match client.find_all(Locator::Css("[data-testid=run-row]")).await {
                Ok(rows) => rows.len() == 1,
                Err(_) => false,
            }
        })
        .await?;
        assert_eq!(
            attr_of(client, "[data-testid=run-row]", "data-status").await.as_deref(),
            Some("failed")
        );
        screenshot(client, "history.png").await?;

        // An ended run is deleted from the history: its row goes, and so does the run.
        let failed_run = attr_of(client, "[data-testid=run-row] a", "href")
            .await
            .and_then(|href| href.strip_prefix("/run/").map(str::to_owned))
            .context("the failed run's link")?;
        client
            .find(Locator::Css("[data-testid=run-row] [data-testid=delete-run]"))
            .await?
            .click()
            .await?;
        wait_until("the deleted run's row is hidden", || async {
            match client.find(Locator::Css("[data-testid=run-row]")).await {
                Ok(row) => !row.is_displayed().await.unwrap_or(true),
                Err(_) => true,
            }
        })
        .await?;
        assert_eq!(ui.app.get(&format!("/runs/{failed_run}")).await.0, 404);
        assert_eq!(
            ui.app.get(&format!("/runs/{run_id}")).await.0,
            200,
            "the other run stays"
        );

        open(client, &ui.url("/run/no-such-run")).await?;
        assert_eq!(text_of(client, "[data-testid=error] h1").await, "Run not found");
        // The server answers that page with a 404, its own page still readable.
        let missing = ui.app.client.get(ui.url("/run/no-such-run")).send().await?;
        assert_eq!(missing.status().as_u16(), 404);
        assert!(missing.text().await?.contains("Run not found"));
        anyhow::Ok(())
    })
    .await
}

/// How the server goes away under a watching page.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// SIGKILL mid-node, as a crash.
    Crash,
    /// SIGTERM mid-node, as a restart: the node finishes its step and the process exits 0.
    Restart,
}

#[tokio::test]
#[ignore = "needs the site built by cargo-leptos and Chromium: scripts/test runs it"]
async fn the_run_page_reconnects_after_a_server_crash_and_follows_the_resumed_run() -> anyhow::Result<()> {
    reconnects_after(Stop::Crash).await
}

#[tokio::test]
#[ignore = "needs the site built by cargo-leptos and Chromium: scripts/test runs it"]
async fn the_run_page_reconnects_after_a_sigterm_restart_and_follows_the_run_to_its_end() -> anyhow::Result<()> {
    reconnects_after(Stop::Restart).await
}

async fn reconnects_after(stop: Stop) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let root = site_root();
    assert!(root.join("pkg/weft.wasm").exists(), "no site at {}", root.display());
    let dir = tempfile::tempdir()?;
    let database = dir.path().join("weft.db");
    // The page reconnects to the address it came from: the restart must reuse the port.
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let binary = env!("CARGO_BIN_EXE_weft-server-under-test");
    let server = ServerProcess::start(binary, &database, addr, Some(&root)).await;
    let app = TestApp::connect(server.port);
    let graph = app
        .create_graph(json!({
            "nodes": {
                "first": "increment",
                "wait": {"tool": "sleep", "config": {"ms": 4000}},
                "second": "increment"
            },
            "edges": {"first": "wait", "wait": "second", "second": null}
        }))
        .await;
    let run_id = app.start_run(&graph, json!({})).await;

    let driver = Driver::start()?;
    let profile = tempfile::tempdir()?;
    let client = driver.browser(profile.path(), &[]).await?;
    let mut server = Some(server);
    let outcome = async {
        open(&client, &format!("{}/run/{run_id}", app.address)).await?;
        wait_until("`wait` runs", || async {
            attr_of(&client, "[data-node=wait]", "data-state").await.as_deref() == Some("running")
        })
        .await?;
        // The server goes away mid-node: the page says it is reconnecting.
        if let Some(server) = server.take() {
            match stop {
                Stop::Crash => server.kill().await,
                Stop::Restart => {
                    let (status, _) = server.terminate().await.expect("the server exits after SIGTERM");
                    assert!(status.success(), "exit status {status:?}");
                }
            }
        }
        wait_for_text(&client, "[data-testid=reconnecting]", "Connection lost: reconnecting…").await?;
        // Back on the same database and port: the run resumes, and the page follows it.
        server = Some(ServerProcess::start(binary, &database, addr, Some(&root)).await);
        wait_for_text(&client, "[data-testid=status]", "completed").await?;
        assert_eq!(
            attr_of(&client, "[data-node=second]", "data-steps").await.as_deref(),
            Some("3")
        );
        assert!(client.find(Locator::Css("[data-testid=reconnecting]")).await.is_err());
        let (_, state) = app.get(&format!("/graph/state/{run_id}")).await;
        assert_eq!(state["state"]["count"], 2);
        let log: Vec<&str> = state["log"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str())
            .collect();
        assert_eq!(text_of(&client, "[data-testid=log]").await, log.join("\n"));
        anyhow::Ok(())
    }
    .await;
    let _ = tokio::time::timeout(STEP, client.close()).await;
    if let Some(server) = server {
        server.kill().await;
    }
    outcome
}

#[tokio::test]
#[ignore = "needs the site built by cargo-leptos and Chromium: scripts/test runs it"]
async fn a_version_2_graph_from_the_form_runs_its_conditional_loop() -> anyhow::Result<()> {
    with_ui(&[], async |ui| {
        let client = &ui.client;
        open(client, &ui.url("/")).await?;
        pick(client, "custom").await?;
        // A spec with a mistake is refused, each problem listed at its place.
        let spec = client.find(Locator::Css("[data-testid=spec-editor]")).await?;
        let sample = spec.prop("value").await?.context("the sample spec")?;
        spec.clear().await?;
        spec.send_keys(&sample.replace("\"sleep\"", "\"snooze\"")).await?;
        client.find(Locator::Css("[data-testid=run]")).await?.click().await?;
        wait_until("the problems are listed", || async {
            text_of(client, "[data-testid=problems]")
                .await
                .contains("/nodes/1/tool: `snooze` is not a registered tool")
        })
        .await?;

        // The sample as given: count, wait, and loop back while `state.count < 3`.
        spec.clear().await?;
        spec.send_keys(&sample).await?;
        client.find(Locator::Css("[data-testid=run]")).await?.click().await?;
        wait_until("the run page opens", || async {
            !text_of(client, "[data-testid=status]").await.is_empty()
        })
        .await?;
        wait_for_text(client, "[data-testid=status]", "completed").await?;
        for (node, steps) in [("count", "1,3,5"), ("wait", "2,4,6"), ("report", "7")] {
            assert_eq!(
                attr_of(client, &format!("[data-node={node}]"), "data-steps")
                    .await
                    .as_deref(),
                Some(steps),
                "{node}"
            );
        }
        // The conditional edge is drawn as branches, each titled with its condition.
        let back = client.find(Locator::Css("[data-edge='wait → count']")).await?;
        assert_eq!(back.attr("class").await?.as_deref(), Some("edge branch"));
        let title = client
            .execute(
                "return document.querySelector(\"[data-edge='wait → count'] title\").textContent;",
                vec![],
            )
            .await?;
        assert_eq!(title, "state.count < 3");
        screenshot(client, "branching-run.png").await?;
        assert!(text_of(client, "[data-testid=log]")
            .await
            .contains("report: counted to 3"));
        assert!(text_of(client, ".graph-description").await.is_empty());

        // A graph that was accepted with a warning shows it beside its drawing.
        let spinning = ui
            .app
            .create_graph(json!({
                "description": "Spins until the step limit.",
                "max_steps": 4,
                "nodes": [{"id": "spin", "tool": "noop"}, {"id": "again", "tool": "noop"}],
                "edges": [{"from": "spin", "to": "again"}, {"from": "again", "to": "spin"}]
            }))
            .await;
        let run = ui.app.start_run(&spinning, json!({})).await;
        ui.app.wait_for_end(&run).await;
        open(client, &ui.url(&format!("/run/{run}"))).await?;
        assert_eq!(
            text_of(client, ".graph-description").await,
            "Spins until the step limit."
        );
        assert_eq!(
            text_of(client, "[data-testid=graph-warnings] li").await,
            "/nodes/0 the loop through `spin`, `again` has no exit condition: a run that enters it ends only at \
             the step limit (4)"
        );
        anyhow::Ok(())
    })
    .await
}

/// The URLs of every request a page of `origin` made, read from Chromium's net log
/// (`--log-net-log`): each request a page starts names the page's origin as its
/// initiator, while the browser's own background requests name none.
fn requests_initiated_by(netlog: &std::path::Path, origin: &str) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(netlog)?;
    // One event per line; the log of a browser that was killed may end mid-array.
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line.trim_end_matches(',')).ok())
        .filter(|event| event["params"]["initiator"] == origin)
        .filter_map(|event| event["params"]["url"].as_str().map(str::to_owned))
        .collect())
}

#[tokio::test]
#[ignore = "needs the site built by cargo-leptos and Chromium: scripts/test runs it"]
async fn the_api_docs_page_renders_with_no_external_request() -> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let netlog = logs.path().join("netlog.json");
    let mut origin = String::new();
    with_ui(&[format!("--log-net-log={}", netlog.display())], async |ui| {
        origin = ui.url("");
        let client = &ui.client;
        tokio::time::timeout(STEP, client.goto(&ui.url("/docs"))).await??;
        let (_, document) = ui.app.get("/openapi.json").await;
        let operations: usize = document["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .values()
                    .filter_map(|item| item.as_object())
                    .map(|item| item.len())
                    .sum()
            })
            .unwrap_or_default();
        assert_eq!(operations, 20);
        // Swagger UI draws one block per operation once it has read the document.
        wait_until("every operation is listed", || async {
            client
                .find_all(Locator::Css(".opblock"))
                .await
                .map(|blocks| blocks.len() == operations)
                .unwrap_or(false)
        })
        .await?;
        assert!(text_of(client, ".info .title").await.starts_with("Weft"));
        // A person can paste a token: the bearer scheme's "Authorize" button.
        client
            .find(Locator::Css(".auth-wrapper .authorize"))
            .await?
            .click()
            .await?;
        wait_until("the authorize dialog offers the bearer scheme", || async {
            text_of(client, ".auth-container").await.contains("bearer")
        })
        .await?;
        client
            .find(Locator::Css(".modal-ux .close-modal"))
            .await?
            .click()
            .await?;

        // Opening an operation shows its documented examples.
        client
            .find(Locator::Css("#operations-graphs-create_graph .opblock-summary"))
            .await?
            .click()
            .await?;
        wait_until("the create operation shows its example body", || async {
            text_of(client, "#operations-graphs-create_graph .opblock-body")
                .await
                .contains("code_review")
        })
        .await?;
        screenshot(client, "api-docs.png").await?;

        // Everything the page loaded came from Weft itself.
        let loaded = client
            .execute(
                "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href]);",
                vec![],
            )
            .await?;
        let loaded: Vec<String> = serde_json::from_value(loaded)?;
        assert!(
            loaded.iter().any(|url| url.ends_with("/docs/swagger-ui-bundle.js")),
            "{loaded:?}"
        );
        let foreign: Vec<&String> = loaded.iter().filter(|url| !url.starts_with(&origin)).collect();
        assert!(foreign.is_empty(), "loaded from elsewhere: {foreign:?}");
        Ok::<_, anyhow::Error>(())
    })
    .await?;

    // The net log also sees requests that failed, which the page's own list may not.
    let origin = origin.trim_end_matches('/');
    let requested = requests_initiated_by(&netlog, origin)?;
    assert!(
        requested.iter().any(|url| url.ends_with("/openapi.json")),
        "the net log shows the page's requests: {requested:?}"
    );
    let foreign: Vec<&String> = requested.iter().filter(|url| !url.starts_with(origin)).collect();
    assert!(foreign.is_empty(), "requests that left Weft: {foreign:?}");
    Ok(())
}

#[tokio::test]
#[ignore = "needs the site built by cargo-leptos and Chromium: scripts/test runs it"]
async fn a_person_signs_in_runs_signs_out_and_is_asked_to_sign_in_again() -> anyhow::Result<()> {
    with_ui(&[], async |ui| {
        let token = ui.app.create_token("alice", false, false).await;
        // The server trusts its last look at the tokens for a second.
        tokio::time::sleep(weft_server::auth::TOKEN_CACHE_TTL + Duration::from_millis(100)).await;
        let client = &ui.client;
        let path_is = |expected: String| async move {
            client
                .current_url()
                .await
                .map(|url| {
                    let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
                    format!("{}{query}", url.path()) == expected
                })
                .unwrap_or(false)
        };
        // Without a session, a page sends the person to sign in, and back after.
        tokio::time::timeout(STEP, client.goto(&ui.url("/history"))).await??;
        wait_until("the sign-in page opens", || path_is("/signin?next=/history".into())).await?;
        wait_for_text(client, "[data-testid=hydration]", "interactive").await?;
        screenshot(client, "signin.png").await?;
        client
            .find(Locator::Css("[data-testid=token]"))
            .await?
            .send_keys(&token)
            .await?;
        client
            .find(Locator::Css("[data-testid=signin-submit]"))
            .await?
            .click()
            .await?;
        wait_until("the history page opens", || path_is("/history".into())).await?;
        wait_for_text(client, "[data-testid=session] .who", "alice").await?;

        // A run started from the form is alice's.
        open(client, &ui.url("/")).await?;
        pick(client, "code_review").await?;
        client.find(Locator::Css("[data-testid=run]")).await?.click().await?;
        wait_until("the run page opens", || async {
            !text_of(client, "[data-testid=status]").await.is_empty()
        })
        .await?;
        wait_for_text(client, "[data-testid=status]", "completed").await?;
        let run_id = attr_of(client, "[data-testid=run]", "data-run-id")
            .await
            .context("no run id")?;
        let (status, detail) = ui.app.as_principal(&token).get(&format!("/runs/{run_id}")).await;
        assert_eq!((status, detail["run"]["status"].as_str()), (200, Some("completed")));
        let bob = ui.app.as_principal(&ui.app.create_token("bob", false, false).await);
        assert_eq!(bob.get(&format!("/runs/{run_id}")).await.0, 404);

        // Signed out, the run page asks for sign-in again.
        client
            .find(Locator::Css("[data-testid=signout]"))
            .await?
            .click()
            .await?;
        wait_until("the sign-in page opens", || path_is("/signin".into())).await?;
        tokio::time::timeout(STEP, client.goto(&ui.url(&format!("/run/{run_id}")))).await??;
        wait_until("the run page sends to sign-in", || {
            path_is(format!("/signin?next=/run/{run_id}"))
        })
        .await?;
        wait_for_text(client, "[data-testid=signin] h1", "Sign in").await?;
        assert!(text_of(client, "[data-testid=session]").await.is_empty());
        anyhow::Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs the site built by cargo-leptos and Chromium: scripts/test runs it"]
async fn a_fork_from_a_timeline_step_lands_on_the_new_run_which_links_back() -> anyhow::Result<()> {
    with_ui(&[], async |ui| {
        let graph = ui
            .app
            .create_graph(serde_json::json!({
                "start": "count",
                "max_steps": 50,
                "nodes": [{"id": "count", "tool": "increment"}],
                "edges": [{"from": "count", "branches": [{"when": "state.count < state.limit", "to": "count"}], "default": null}]
            }))
            .await;
        let parent = ui
            .app
            .run_and_wait(&graph, serde_json::json!({"count": 0, "limit": 4}))
            .await;
        let parent_id = parent["run_id"].as_str().context("run_id")?.to_owned();
        // Without JavaScript a step is a page of its own: the server renders it whole.
        let html = ui
            .app
            .client
            .get(ui.url(&format!("/run/{parent_id}?step=2")))
            .send()
            .await?
            .text()
            .await?;
        assert!(html.contains("After step #2 · count"), "{html}");
        assert!(html.contains(r#"name="step" value="2""#), "{html}");
        let client = &ui.client;
        open(client, &ui.url(&format!("/run/{parent_id}"))).await?;
        // The second pass of the loop: count 2, shown in place and kept in the address.
        let steps = client.find_all(Locator::Css("[data-testid=timeline-step] button")).await?;
        steps[1].click().await?;
        wait_until("the step's detail shows step 2", || async {
            text_of(client, "[data-testid=step-detail] h2").await.starts_with("After step #2")
        })
        .await?;
        let url = client.current_url().await?;
        assert_eq!((url.path(), url.query()), (format!("/run/{parent_id}").as_str(), Some("step=2")));
        client
            .find(Locator::Css("[data-testid=fork] summary"))
            .await?
            .click()
            .await?;
        let editor = client.find(Locator::Css("[data-testid=fork-state]")).await?;
        let shown: serde_json::Value = serde_json::from_str(&editor.prop("value").await?.unwrap_or_default())?;
        assert_eq!(shown, serde_json::json!({"count": 2, "limit": 4}));
        editor.clear().await?;
        editor.send_keys(r#"{"count": 2, "limit": 7}"#).await?;
        screenshot(client, "fork.png").await?;
        client
            .find(Locator::Css("[data-testid=fork-submit]"))
            .await?
            .click()
            .await?;
        wait_until("the new run's page opens", || async {
            client
                .current_url()
                .await
                .map(|url| url.path().starts_with("/run/") && !url.path().ends_with(&parent_id))
                .unwrap_or(false)
        })
        .await?;
        wait_for_text(client, "[data-testid=status]", "completed").await?;
        let child_id = attr_of(client, "[data-testid=run]", "data-run-id")
            .await
            .context("no run id")?;
        assert!(text_of(client, "[data-testid=forked-from]").await.contains(&parent_id));
        assert_eq!(
            attr_of(client, "[data-testid=forked-from] a", "href").await.as_deref(),
            Some(format!("/run/{parent_id}").as_str())
        );
        let (_, child) = ui.app.get(&format!("/graph/state/{child_id}")).await;
        assert_eq!(child["state"], serde_json::json!({"count": 7, "limit": 7}));
        // The parent lists it.
        open(client, &ui.url(&format!("/run/{parent_id}"))).await?;
        assert!(text_of(client, "[data-testid=forks]").await.contains(&child_id));
        anyhow::Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs the site built by cargo-leptos and Chromium: scripts/test runs it"]
async fn a_code_review_with_approval_is_approved_from_its_form_and_completes() -> anyhow::Result<()> {
    with_ui(&[], async |ui| {
        let graph = ui.app.create_graph(json!({"preset": "code_review_approval"})).await;
        let code = "def f(x):\n    # TODO: handle None\n    return x * 2    \n";
        let run_id = ui.app.start_run(&graph, json!({"code": code, "threshold": 100})).await;
        let client = &ui.client;
        open(client, &ui.url(&format!("/run/{run_id}"))).await?;
        wait_for_text(client, "[data-testid=status]", "waiting").await?;
        wait_for_text(client, "[data-testid=question-prompt]", "Approve the revised code?").await?;
        // The question shows the revised diff, and the node that asks is lit as waiting.
        let diff = text_of(client, "[data-testid=question-context][data-key=revised_diff]").await;
        assert!(diff.contains("--- code") && diff.contains("+++ revised_code"), "{diff}");
        assert_eq!(node_state(client, "approve").await.as_deref(), Some("waiting"));
        client
            .find(Locator::Css("[data-testid=field-approved]"))
            .await?
            .click()
            .await?;
        client
            .find(Locator::Css("[data-testid=field-comment]"))
            .await?
            .send_keys("Looks right to me")
            .await?;
        screenshot(client, "approval.png").await?;
        client
            .find(Locator::Css("[data-testid=question-submit]"))
            .await?
            .click()
            .await?;
        wait_for_text(client, "[data-testid=status]", "completed").await?;
        wait_until("the question is gone", || async {
            client.find(Locator::Css("[data-testid=question]")).await.is_err()
        })
        .await?;
        let (_, done) = ui.app.get(&format!("/graph/state/{run_id}")).await;
        assert_eq!(
            done["state"]["approval"],
            json!({"approved": true, "comment": "Looks right to me"})
        );
        assert!(text_of(client, "[data-testid=log]").await.contains("approve: answered"));
        anyhow::Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs the site built by cargo-leptos and Chromium: scripts/test runs it"]
async fn a_fork_edited_while_the_run_goes_on_keeps_its_edits_through_the_page_updates() -> anyhow::Result<()> {
    with_ui(&[], async |ui| {
        let graph = ui
            .app
            .create_graph(json!({
                "nodes": {
                    "first": "increment",
                    "wait": {"tool": "sleep", "config": {"ms": 3000}},
                    "second": "increment"
                },
                "edges": {"first": "wait", "wait": "second", "second": null}
            }))
            .await;
        let run_id = ui.app.start_run(&graph, json!({"note": "as given"})).await;
        let client = &ui.client;
        open(client, &ui.url(&format!("/run/{run_id}"))).await?;
        wait_until("`wait` runs", || async {
            node_state(client, "wait").await.as_deref() == Some("running")
        })
        .await?;
        // Step 1 picked, its fork opened and edited; then the person looks elsewhere.
        client
            .find(Locator::Css("[data-testid=timeline-step] button"))
            .await?
            .click()
            .await?;
        wait_until("step 1 is shown", || async {
            client
                .current_url()
                .await
                .is_ok_and(|url| url.query() == Some("step=1"))
        })
        .await?;
        client
            .find(Locator::Css("[data-testid=fork] summary"))
            .await?
            .click()
            .await?;
        let editor = client.find(Locator::Css("[data-testid=fork-state]")).await?;
        editor.clear().await?;
        editor.send_keys(r#"{"count": 1, "note": "edited"}"#).await?;
        client.find(Locator::Css("[data-testid=run] h1")).await?.click().await?;
        // The run goes on: the page takes in its steps, and keeps the edits.
        wait_for_text(client, "[data-testid=status]", "completed").await?;
        assert_eq!(node_state(client, "second").await.as_deref(), Some("completed"));
        assert_eq!(text_of(client, "[data-testid=step-count]").await, "3 step(s)");
        assert!(
            attr_of(client, "[data-testid=fork]", "open").await.is_some(),
            "the fork stays open"
        );
        let editor = client.find(Locator::Css("[data-testid=fork-state]")).await?;
        assert_eq!(
            editor.prop("value").await?.as_deref(),
            Some(r#"{"count": 1, "note": "edited"}"#)
        );
        client
            .find(Locator::Css("[data-testid=fork-submit]"))
            .await?
            .click()
            .await?;
        wait_until("the fork's page opens", || async {
            client
                .current_url()
                .await
                .is_ok_and(|url| url.path().starts_with("/run/") && !url.path().ends_with(&run_id))
        })
        .await?;
        wait_for_text(client, "[data-testid=status]", "completed").await?;
        let fork_id = attr_of(client, "[data-testid=run]", "data-run-id")
            .await
            .context("no run id")?;
        let (_, fork) = ui.app.get(&format!("/graph/state/{fork_id}")).await;
        // From step 1 (count 1, edited), on through `wait` and `second`.
        assert_eq!(fork["state"], json!({"count": 2, "note": "edited"}));
        anyhow::Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs the site built by cargo-leptos and Chromium: scripts/test runs it"]
async fn two_branches_of_a_fan_out_are_lit_at_once() -> anyhow::Result<()> {
    with_ui(&[], async |ui| {
        let graph = ui
            .app
            .create_graph(json!({
                "name": "fan out",
                "start": "begin",
                "nodes": [
                    {"id": "begin", "tool": "noop"},
                    {"id": "left", "tool": "sleep", "config": {"ms": 4000}},
                    {"id": "right", "tool": "sleep", "config": {"ms": 4000}},
                    {"id": "after", "tool": "noop"}
                ],
                "edges": [
                    {"from": "begin", "to": ["left", "right"]},
                    {"from": ["left", "right"], "to": "after"},
                    {"from": "after", "to": null}
                ]
            }))
            .await;
        let run_id = ui.app.start_run(&graph, json!({})).await;
        let client = &ui.client;
        open(client, &ui.url(&format!("/run/{run_id}"))).await?;
        wait_until("both branches are lit at once", || async {
            node_state(client, "left").await.as_deref() == Some("running")
                && node_state(client, "right").await.as_deref() == Some("running")
        })
        .await?;
        screenshot(client, "parallel.png").await?;
        wait_for_text(client, "[data-testid=status]", "completed").await?;
        for node in ["begin", "left", "right", "after"] {
            assert_eq!(node_state(client, node).await.as_deref(), Some("completed"), "{node}");
        }
        anyhow::Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs the site built by cargo-leptos and Chromium: scripts/test runs it"]
async fn an_llm_review_streams_its_answer_on_the_run_page_then_shows_its_report() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let root = site_root();
    assert!(root.join("pkg/weft.wasm").exists(), "no site at {}", root.display());
    let suggestion = "Handle None before doubling.";
    let own = "Name `x` for what it holds.";
    let answer = json!({
        "suggestions": [
            {"line": 2, "type": "todo/fixme", "suggestion": suggestion},
            {"line": 1, "type": "naming", "suggestion": own}
        ],
        "revised_code": "def f(x):\n    if x is None:\n        return 0\n    return x * 2\n",
        "summary": "Handled None."
    })
    .to_string();
    // In pieces of 8 characters, each after 150 ms: the answer takes seconds to arrive.
    let (_fake, base) = fake(vec![Reply::pieces(&answer, 8, true)]).await;
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start_with_env(
        env!("CARGO_BIN_EXE_weft-server-under-test"),
        &dir.path().join("weft.db"),
        &[
            ("LEPTOS_SITE_ROOT", root.to_str().context("a UTF-8 path")?),
            ("WEFT_LLM_BASE_URL", &base),
            ("WEFT_LLM_MODEL", "m1"),
            ("WEFT_LLM_PRICES", "m1=1000:2000"),
        ],
    )
    .await;
    let app = TestApp::connect(server.port);
    let driver = Driver::start()?;
    let profile = tempfile::tempdir()?;
    let client = driver.browser(profile.path(), &[]).await?;
    let outcome = async {
        open(&client, &format!("{}/", app.address)).await?;
        // A provider is configured: the LLM review is offered like any preset.
        assert!(client
            .find(Locator::Css("[data-preset=code_review_llm] [data-testid=unavailable]"))
            .await
            .is_err());
        pick(&client, "code_review_llm").await?;
        let code = client.find(Locator::Css("[data-testid=code]")).await?;
        code.clear().await?;
        code.send_keys("def f(x):\n    # TODO: handle None\n    return x * 2\n")
            .await?;
        client.find(Locator::Css("[data-testid=run]")).await?.click().await?;

        // The answer grows in the node's panel as the tokens arrive: read it until it
        // has shown some text, then more of it.
        let deadline = Instant::now() + STEP;
        let mut first = String::new();
        let grown = loop {
            let shown = text_of(&client, "[data-testid=streaming][data-node=review]").await;
            if first.is_empty() && !shown.is_empty() {
                screenshot(&client, "llm-streaming.png").await?;
                first = shown.clone();
            } else if !first.is_empty() && shown.len() > first.len() {
                break shown;
            }
            if Instant::now() > deadline {
                bail!("the answer did not stream: `{first}`, then `{shown}`");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(grown.starts_with(&first), "`{grown}` goes on from `{first}`");
        assert!(answer.starts_with(&grown), "`{grown}` is the answer so far");

        wait_for_text(&client, "[data-testid=status]", "completed").await?;
        assert!(client.find(Locator::Css("[data-testid=streaming]")).await.is_err());
        let run_id = attr_of(&client, "[data-testid=run]", "data-run-id")
            .await
            .context("no run id")?;
        let (_, done) = app.get(&format!("/graph/state/{run_id}")).await;
        assert_eq!(done["state"]["assessment"]["verdict"], "threshold_met");
        // The report: the model's suggestion beside the issue it is about, its own after.
        let issue = text_of(&client, "[data-testid=issue] .suggestion").await;
        assert_eq!(issue, suggestion);
        let more = text_of(&client, "[data-testid=more-suggestion]").await;
        assert!(more.contains(own), "{more}");
        let score = text_of(&client, "[data-testid=score] .score").await;
        assert_eq!(score, done["state"]["quality_score"].to_string());
        // What the model used, as the API sums it.
        let usage = &done["usage"];
        let tokens = usage["prompt_tokens"].as_u64().unwrap_or(0) + usage["completion_tokens"].as_u64().unwrap_or(0);
        assert!(tokens > 0, "{done}");
        let cost = usage["cost_usd"].as_f64().context("a cost")?;
        assert_eq!(
            text_of(&client, "[data-testid=run-usage]").await,
            format!("{tokens} tok · ${cost:.4}")
        );
        client.set_window_size(1280, 2200).await?;
        screenshot(&client, "llm-review.png").await?;
        anyhow::Ok(())
    }
    .await;
    let _ = tokio::time::timeout(STEP, client.close()).await;
    server.kill().await;
    outcome
}

#[tokio::test]
#[ignore = "needs the site built by cargo-leptos and Chromium: scripts/test runs it"]
async fn a_spec_with_an_unknown_tool_is_marked_on_its_line_as_it_is_typed() -> anyhow::Result<()> {
    with_ui(&[], async |ui| {
        let client = &ui.client;
        open(client, &ui.url("/")).await?;
        pick(client, "custom").await?;
        let broken = "{\n  \"start\": \"a\",\n  \"nodes\": [\n    {\"id\": \"a\", \"tool\": \"increment\"},\n    \
                      {\"id\": \"b\", \"tool\": \"teleport\"}\n  ],\n  \"edges\": [{\"from\": \"a\", \"to\": \"b\"}]\n}";
        // The API places the problem at `/nodes/1/tool`: line 5 of the text.
        let (status, answer) = ui.app.post("/graph/validate", &serde_json::from_str(broken)?).await;
        assert_eq!(status, 422);
        assert_eq!(answer["errors"][0]["path"], "/nodes/1/tool");
        let spec = client.find(Locator::Css("[data-testid=spec-editor]")).await?;
        spec.clear().await?;
        spec.send_keys(broken).await?;
        // Marked within a second of the last key, before Run.
        let typed = Instant::now();
        let marked = || async {
            let mut lines = Vec::new();
            for mark in client
                .find_all(Locator::Css("[data-testid=spec-editor-gutter] .ln.marked"))
                .await
                .unwrap_or_default()
            {
                lines.push(mark.attr("data-line").await.ok().flatten().unwrap_or_default());
            }
            lines
        };
        while marked().await != ["5"] && typed.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(marked().await, ["5"], "after {:?}", typed.elapsed());
        let listed = text_of(client, "[data-testid=spec-problems] li").await;
        assert!(
            listed.starts_with("line 5 /nodes/1/tool") && listed.contains("`teleport` is not a registered tool"),
            "{listed}"
        );
        screenshot(client, "spec-validation.png").await?;
        // Fixing it clears the mark; nothing was stored on the way.
        spec.clear().await?;
        spec.send_keys(&broken.replace("teleport", "increment")).await?;
        wait_until("the mark clears", || async { marked().await.is_empty() }).await?;
        assert!(client
            .find(Locator::Css("[data-testid=spec-problems] li"))
            .await
            .is_err());
        let (_, graphs) = ui.app.get("/graphs").await;
        assert_eq!(graphs["graphs"], json!([]));
        // A preset's initial state is checked against its input schema the same way.
        pick(client, "summarize").await?;
        let state = client.find(Locator::Css("[data-testid=state-editor]")).await?;
        state.clear().await?;
        state.send_keys("{\"text\": 5}").await?;
        wait_until("the state's problem is listed", || async {
            text_of(client, "[data-testid=state-problems] li")
                .await
                .starts_with("/initial_state/text: ")
        })
        .await?;
        anyhow::Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "needs the site built by cargo-leptos and Chromium: scripts/test runs it"]
async fn a_graph_page_charts_its_runs_as_the_api_counts_them() -> anyhow::Result<()> {
    with_ui(&[], async |ui| {
        let graph = ui.app.create_graph(sometimes_failing()).await;
        run_mixed(&ui.app, &graph, 10, 2).await;
        let (_, stats) = ui.app.get(&format!("/graphs/{graph}/stats")).await;
        let total = |status: &str| -> u64 {
            stats["days"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|day| day[status].as_u64())
                .sum()
        };
        assert_eq!((total("completed"), total("failed")), (10, 2));
        let client = &ui.client;
        // From the history, the graph's name leads to its page.
        open(client, &ui.url("/history")).await?;
        client
            .find(Locator::Css("[data-testid=graph-link]"))
            .await?
            .click()
            .await?;
        wait_until("the graph page opens", || async {
            attr_of(client, "[data-testid=graph-page]", "data-graph-id")
                .await
                .as_deref()
                == Some(graph.as_str())
        })
        .await?;
        // The chart's totals and today's bar hold the API's counts.
        for status in ["completed", "failed"] {
            assert_eq!(
                text_of(client, &format!("[data-testid=total-{status}] strong")).await,
                total(status).to_string()
            );
        }
        let today = stats["days"][0]["day"].as_str().unwrap_or_default();
        for (status, count) in [("completed", "10"), ("failed", "2")] {
            let css = format!("[data-testid=runs-chart] rect[data-day='{today}'][data-status={status}]");
            assert_eq!(attr_of(client, &css, "data-count").await.as_deref(), Some(count));
        }
        assert!(client.find(Locator::Css("[data-testid=line-p95]")).await.is_ok());
        // The drawing carries each node's record: `boom` failed every time it ran.
        let heat = text_of(client, "g.node[data-node=boom] [data-testid=heat]").await;
        assert!(heat.ends_with("100% failed"), "{heat}");
        let heat = text_of(client, "g.node[data-node=work] [data-testid=heat]").await;
        assert!(heat.ends_with(" 0% failed"), "{heat}");
        client.set_window_size(1280, 1400).await?;
        screenshot(client, "graph-page.png").await?;
        // The history's day range, from the form's dates: today holds all twelve runs.
        let today = &today[..10];
        open(
            client,
            &ui.url(&format!("/history?graph_id={graph}&from={today}&to={today}")),
        )
        .await?;
        assert_eq!(client.find_all(Locator::Css("[data-testid=run-row]")).await?.len(), 12);
        assert_eq!(
            attr_of(client, "[data-testid=from-filter]", "value").await.as_deref(),
            Some(today)
        );
        let tomorrow = weft_app::format::utc(weft_app::format::day_start(today).unwrap_or(0) + 86_400_000);
        open(
            client,
            &ui.url(&format!("/history?graph_id={graph}&from={}", &tomorrow[..10])),
        )
        .await?;
        assert!(client.find(Locator::Css("[data-testid=empty]")).await.is_ok());
        anyhow::Ok(())
    })
    .await
}
