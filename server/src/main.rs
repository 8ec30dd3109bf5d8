//! The `weft-server` binary: reads settings from the environment and serves until
//! Ctrl-C or SIGTERM.

use anyhow::Context;
use weft_server::{config::Settings, startup, telemetry};

/// mimalloc, not the system allocator: under load glibc's malloc spent a fifth of the
/// server's time in `malloc`/`free` and waiting on its arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let settings = Settings::from_env()?;
    startup::serve_until_signal(settings).await.context("running Weft")
}
