//! The `weft-server` binary: reads settings from the environment and serves until
//! Ctrl-C or SIGTERM; or, with `token …`, manages API tokens (see [`weft_server::cli`]).

use anyhow::Context;
use weft_server::{
    cli::{self, Command},
    config::Settings,
    startup, telemetry,
};

/// mimalloc, not the system allocator: under load glibc's malloc spent a fifth of the
/// server's time in `malloc`/`free` and waiting on its arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(command) => command,
        Err(why) => {
            eprintln!("{why}\n\n{}", cli::USAGE);
            std::process::exit(2);
        }
    };
    let settings = Settings::from_env()?;
    if command != Command::Serve {
        print!("{}", cli::run(command, &settings.database).await?);
        return Ok(());
    }
    let _telemetry = telemetry::init();
    startup::serve_until_signal(settings).await.context("running Weft")
}
