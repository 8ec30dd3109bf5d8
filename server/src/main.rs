//! The `weft-server` binary: reads settings from the environment and serves until
//! Ctrl-C or SIGTERM.

use anyhow::Context;
use weft_server::{config::Settings, startup, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let settings = Settings::from_env()?;
    startup::serve_until_signal(settings).await.context("running Weft")
}
