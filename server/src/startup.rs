//! Building and running the server: the store, the engine, the API and the site.

use std::{future::Future, io, net::SocketAddr, sync::Arc};

use axum::http::request::Parts;
use axum::{routing::get, Router};
use leptos::prelude::{provide_context, use_context, LeptosOptions};
use leptos_axum::{generate_route_list, LeptosRoutes};
use tokio::net::TcpListener;
use tower_http::{
    auth::AsyncRequireAuthorizationLayer, compression::CompressionLayer, trace::TraceLayer,
    validate_request::ValidateRequestHeaderLayer,
};
use weft_app::{api::BackendHandle, shell, App};

use crate::{
    api::auth::{Authenticate, RequestTimeout},
    assets::{self, Assets},
    auth::{Principal, Tokens},
    config::Settings,
    engine::CpuPool,
    runner::{Runner, RunnerError},
    store::{postgres::PgStore, sqlite::SqliteStore, Store, StoreError},
    tools::default_registry,
    ui::UiBackend,
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database could not be opened or migrated.
    #[error("could not open the database: {0}")]
    Store(#[from] StoreError),
    /// Interrupted runs could not be listed.
    #[error("could not resume interrupted runs: {0}")]
    Resume(#[from] RunnerError),
    /// The address is reachable from other machines, and nothing would stop them.
    #[error(
        "refusing to listen on {0} without authentication: Weft has no API tokens, so anyone who can reach \
         that address could read and run everything. Listen on a loopback address (WEFT_ADDR=127.0.0.1:3000), \
         or set WEFT_AUTH=off to run open on purpose"
    )]
    Unprotected(SocketAddr),
    /// The address could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The site's files could not be prepared.
    #[error("could not prepare the site's files: {0}")]
    Assets(String),
}

/// A built server, bound and ready to serve.
pub struct Application {
    listener: TcpListener,
    router: Router,
    runner: Runner,
    /// Renews this instance's leases and claims expired ones, while it serves.
    lease_keeper: Option<tokio::task::JoinHandle<()>>,
    /// Stops the runs asked to stop through other instances, and claims queued runs into
    /// free slots, as the store tells of them.
    notice_watcher: tokio::task::JoinHandle<()>,
    /// Deletes the runs past `WEFT_RETENTION_DAYS`, when set.
    purger: Option<tokio::task::JoinHandle<()>>,
    /// How long runs may take to finish their step at shutdown.
    grace: std::time::Duration,
}

impl Application {
    /// Opens the store, resumes interrupted runs and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let store = open_store(&settings.database).await?;
        let tokens = Arc::new(Tokens::new(Arc::clone(&store)));
        // Protected by tokens, open to this machine only, or open on purpose.
        if !settings.addr.ip().is_loopback() && !tokens.required().await? {
            if !settings.auth_off {
                return Err(StartupError::Unprotected(settings.addr));
            }
            tracing::warn!(
                addr = %settings.addr,
                "WEFT_AUTH=off: listening beyond this machine with no authentication; anyone who can reach it can use it"
            );
        }
        crate::meters::handle();
        let pool = CpuPool::for_this_machine();
        let runner = Runner::new(store, default_registry(&pool), pool, settings.limits).with_leases(settings.leases);
        let mut lease_keeper = None;
        if settings.resume_runs {
            let resumed = runner.resume_unfinished().await?;
            if resumed > 0 {
                tracing::info!(resumed, "resumed interrupted runs");
            }
            lease_keeper = Some(tokio::spawn(runner.clone().keep_leases()));
        }
        let notice_watcher = tokio::spawn(runner.clone().watch_notices());
        let purger = settings
            .retention
            .map(|keep| tokio::spawn(runner.clone().purge_old_runs(keep)));
        let listener = TcpListener::bind(settings.addr)
            .await
            .map_err(|source| StartupError::Bind {
                addr: settings.addr,
                source,
            })?;
        // Hashing and compressing the site's files reads (and, once per build, writes)
        // a megabyte or two: off the runtime's threads.
        let pkg_dir = settings.site_root.join("pkg");
        let assets = tokio::task::spawn_blocking(move || Assets::prepare(&pkg_dir, OUTPUT_NAME))
            .await
            .map_err(|err| StartupError::Assets(err.to_string()))?;
        let router = router(runner.clone(), &settings, tokens, assets);
        Ok(Self {
            listener,
            router,
            runner,
            lease_keeper,
            notice_watcher,
            purger,
            grace: settings.shutdown_grace,
        })
    }

    /// The port it listens on (useful with port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |addr| addr.port())
    }

    /// The runner, for embedding and tests.
    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully: new runs are refused
    /// (503), streams close with code 1012, each run finishes the step it is in (within
    /// the grace period), and every run not ended is handed back, checkpointed, for the
    /// next start to resume. Open requests are answered (a `wait: true` one with 503).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        let token = self.runner.shutdown_signal().clone();
        let signal = {
            let token = token.clone();
            async move {
                shutdown.await;
                tracing::info!("shutting down");
                token.cancel();
            }
        };
        let grace = self.grace;
        let serving = axum::serve(self.listener, self.router).with_graceful_shutdown(signal);
        // Requests get the grace period too, and a moment more to send their answers.
        let bounded = async {
            tokio::select! {
                served = serving => served,
                () = async {
                    token.cancelled().await;
                    tokio::time::sleep(grace + std::time::Duration::from_secs(1)).await;
                } => Ok(()),
            }
        };
        let draining = async {
            token.cancelled().await;
            self.runner.shut_down(grace).await
        };
        let (served, cut) = tokio::join!(bounded, draining);
        if let Some(keeper) = self.lease_keeper {
            keeper.abort();
        }
        self.notice_watcher.abort();
        if let Some(purger) = self.purger {
            purger.abort();
        }
        if cut > 0 {
            tracing::warn!(
                cut,
                "runs were still mid-node when the grace period ended; they resume at the next start"
            );
        }
        served
    }
}

/// Builds the server from `settings` and serves until Ctrl-C or SIGTERM: what the
/// `weft-server` binary does.
pub async fn serve_until_signal(settings: Settings) -> Result<(), StartupError> {
    let app = Application::build(settings.clone()).await?;
    tracing::info!("Weft listening on http://{}:{}", settings.addr.ip(), app.port());
    app.run_until_stopped(shutdown_signal())
        .await
        .map_err(|source| StartupError::Bind {
            addr: settings.addr,
            source,
        })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// The name cargo-leptos gives the site's files (`pkg/weft.wasm`, ...).
const OUTPUT_NAME: &str = "weft";

/// The leptos options for the site built into `settings.site_root`, its files under the
/// hashed names `assets` gives them.
fn leptos_options(settings: &Settings, assets: &Assets) -> LeptosOptions {
    let options = LeptosOptions::builder()
        .output_name(OUTPUT_NAME)
        .site_root(settings.site_root.to_string_lossy().as_ref())
        .site_pkg_dir("pkg")
        .site_addr(settings.addr);
    match assets.hash_file() {
        // An absolute path: leptos joins it to its executable's directory, which keeps it.
        Some(file) => options
            .hash_files(true)
            .hash_file(Arc::from(file.to_string_lossy().as_ref()))
            .build(),
        None => options.build(),
    }
}

/// Opens the store `database` names: a `postgres://` URL, a `sqlite:` URL or a file.
pub async fn open_store(database: &str) -> Result<Arc<dyn Store>, StoreError> {
    Ok(
        if database.starts_with("postgres://") || database.starts_with("postgresql://") {
            Arc::new(PgStore::open(database).await?)
        } else if database.starts_with("sqlite:") {
            Arc::new(SqliteStore::open_url(database).await?)
        } else {
            Arc::new(SqliteStore::open(database.as_ref()).await?)
        },
    )
}

/// The whole server's routes: the API, then the SSR site and its static files.
pub fn router(runner: Runner, settings: &Settings, tokens: Arc<Tokens>, assets: Assets) -> Router {
    let options = leptos_options(settings, &assets);
    let routes = generate_route_list(App);
    // Each page sees what its request's principal sees (the layer below put it there).
    let context = {
        let (runner, tokens) = (runner.clone(), Arc::clone(&tokens));
        move || {
            let principal = use_context::<Parts>()
                .and_then(|parts| parts.extensions.get::<Principal>().cloned())
                .unwrap_or_else(Principal::nobody);
            let backend = UiBackend::new(runner.clone(), Arc::clone(&tokens), principal);
            provide_context(BackendHandle(backend));
        }
    };
    let site = Router::new()
        .leptos_routes_with_context(&options, routes, context, {
            let options = options.clone();
            move || shell(options.clone())
        })
        .fallback(leptos_axum::file_and_error_handler(shell))
        .with_state(options)
        // Pages (and the API's JSON, below) compressed as they are sent; `pkg/` files
        // have their copies made once.
        .layer(CompressionLayer::new());
    let site = Router::new()
        .route("/pkg/{file}", get(assets::serve))
        .with_state(assets)
        .merge(site);
    let site = crate::api::with_timeout(site, RequestTimeout(settings.request_timeout));
    crate::api::router(runner, settings, Arc::clone(&tokens))
        .merge(site)
        // Who the request speaks for (see `api::auth`), and how each route fares.
        .layer(AsyncRequireAuthorizationLayer::new(Authenticate::new(
            tokens,
            settings.exempt,
        )))
        .layer(axum::middleware::from_fn(crate::meters::track_http))
        // Before any route: requests for another host, or from a foreign page (see `edge`).
        .layer(ValidateRequestHeaderLayer::custom(settings.allowed_hosts.clone()))
        .layer(TraceLayer::new_for_http())
}
