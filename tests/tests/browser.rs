//! A real headless Chromium loads the home page: the first render comes from the
//! server, then the wasm hydrates it and makes it interactive.
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
use weft_tests::spawn_app_on;

const STEP: Duration = Duration::from_secs(20);

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

    async fn browser(&self, profile: &std::path::Path) -> anyhow::Result<Client> {
        let chromium = std::env::var("WEFT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }),
        );
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

/// Waits until the element's text is `expected`; answers the last text seen.
async fn wait_for_text(client: &Client, css: &str, expected: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + STEP;
    loop {
        let text = match client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text == expected || Instant::now() > deadline {
            return Ok(text);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
#[ignore = "needs the site built by cargo-leptos and Chromium: scripts/test runs it"]
async fn the_home_page_renders_on_the_server_and_hydrates_in_chromium() -> anyhow::Result<()> {
    let root = site_root();
    assert!(
        root.join("pkg/weft.wasm").exists(),
        "no site at {}: build it with `cargo leptos build` first",
        root.display()
    );
    let dir = tempfile::tempdir()?;
    let mut settings = Settings::new(SocketAddr::from(([127, 0, 0, 1], 0)), "");
    settings.site_root = root;
    let app = spawn_app_on(dir.path().join("weft.db"), settings).await;

    // The first render is the server's: the HTML already holds the page.
    let html = app.client.get(&app.address).send().await?.text().await?;
    assert!(html.contains("<h1>Weft</h1>"), "{html}");
    assert!(html.contains("server-rendered"));
    let wasm = app.client.get(format!("{}/pkg/weft.wasm", app.address)).send().await?;
    assert_eq!(wasm.status(), 200);

    let driver = Driver::start()?;
    let profile = tempfile::tempdir()?;
    let client = driver.browser(profile.path()).await?;
    let outcome = async {
        tokio::time::timeout(STEP, client.goto(&app.address)).await??;
        let status = wait_for_text(&client, "[data-testid=hydration]", "interactive").await?;
        assert_eq!(status, "interactive", "the page never hydrated");
        let button = client.find(Locator::Css("[data-testid=ping]")).await?;
        button.click().await?;
        button.click().await?;
        assert_eq!(
            wait_for_text(&client, "[data-testid=ping]", "Clicked 2 times").await?,
            "Clicked 2 times"
        );
        let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("artifacts");
        std::fs::create_dir_all(&artifacts)?;
        std::fs::write(artifacts.join("home.png"), client.screenshot().await?)?;
        anyhow::Ok(())
    }
    .await;
    let _ = tokio::time::timeout(STEP, client.close()).await;
    outcome
}
