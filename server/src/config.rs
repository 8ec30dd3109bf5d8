//! Settings, read from the environment with defaults that need nothing else to run.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `WEFT_ADDR` (else `LEPTOS_SITE_ADDR`) | `127.0.0.1:3000` | where to listen |
//! | `WEFT_DATABASE` | `weft.db` | the SQLite file (or a `sqlite:` URL), or a `postgres://` URL |
//! | `LEPTOS_SITE_ROOT` | `target/site` | the built site (cargo-leptos sets it) |
//! | `WEFT_MAX_BODY_BYTES` | 16 MiB | the largest request body |
//! | `WEFT_MAX_OPEN` | 4096 | run streams and `wait: true` runs held open at once |
//! | `WEFT_MAX_RUNNING` | 256 | runs executing at once, on this instance |
//! | `WEFT_MAX_QUEUED` | 4096 | runs waiting for a slot (in the shared queue) before new ones get 503 |
//! | `WEFT_MAX_STATE_BYTES` | 16 MiB | a run's state at most, serialized |
//! | `WEFT_LEASE_MS` | 30000 | how long an instance holds a run without renewing its lease |
//! | `WEFT_LEASE_RENEW_MS` | 5000 | how often leases are renewed and expired ones claimed |
//! | `WEFT_SHUTDOWN_GRACE_S` | 10 | at SIGTERM, how long nodes in progress may take to finish their step |
//! | `WEFT_RETENTION_DAYS` | (keep all) | ended runs older than this many days are deleted, hourly |
//! | `WEFT_AUTH` | (on) | `off` lets Weft listen beyond loopback with no authentication, on purpose |
//! | `WEFT_ALLOWED_HOSTS` | the listen address and `localhost` names | host names requests may use (comma-separated), or `*` |
//! | `WEFT_REQUEST_TIMEOUT_S` | 30 | how long a request may take (streams and `wait: true` runs aside) |
//! | `WEFT_RATE_LIMIT` | (none) | runs each principal may start per second (bursts as large) |
//! | `WEFT_PUBLIC_HEALTH` | `off` | `on`: `GET /health` answers without a token |
//! | `WEFT_PUBLIC_METRICS` | `off` | `on`: `GET /metrics` answers without a token |
//! | `WEFT_LOG_FORMAT` | `text` | `json`: one JSON object per log line |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | (none) | export traces over OTLP/HTTP to this collector |

use std::{net::SocketAddr, path::PathBuf};

use std::time::Duration;

use crate::{
    api::{auth::Exempt, edge::AllowedHosts, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_HELD_OPEN},
    runner::{Leases, RunLimits},
};

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name} is `{value}`: {why}")]
pub struct ConfigError {
    name: &'static str,
    value: String,
    why: &'static str,
}

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen; port 0 picks a free port.
    pub addr: SocketAddr,
    /// The database: a SQLite file path or `sqlite:` URL, or a `postgres://` URL (for
    /// many instances sharing one database).
    pub database: String,
    /// The directory cargo-leptos built the site into (holding `pkg/`).
    pub site_root: PathBuf,
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// Run streams and `wait: true` runs held open at once, at most.
    pub max_held_open: usize,
    /// Whether to resume runs a previous stop interrupted.
    pub resume_runs: bool,
    /// How many runs execute and wait at once.
    pub limits: RunLimits,
    /// How long this instance holds its runs, and how often it renews them.
    pub leases: Leases,
    /// At shutdown, how long nodes in progress may take to finish their step.
    pub shutdown_grace: Duration,
    /// The host names requests may address this server by (see [`crate::api::edge`]).
    pub allowed_hosts: AllowedHosts,
    /// How long ended runs are kept; `None`: for ever.
    pub retention: Option<Duration>,
    /// `WEFT_AUTH=off`: listening on an address other machines reach, with no
    /// authentication, is wanted (else it is refused at start).
    pub auth_off: bool,
    /// How long a request may take (streams and `wait: true` runs have their own caps).
    pub request_timeout: Duration,
    /// Runs each principal may start per second; 0: unlimited.
    pub rate_limit: u32,
    /// Which routes answer without a token once tokens exist.
    pub exempt: Exempt,
}

impl Settings {
    /// Settings for tests and embedding: listen on `addr`, store in `database`.
    pub fn new(addr: SocketAddr, database: impl Into<String>) -> Self {
        Self {
            addr,
            database: database.into(),
            site_root: PathBuf::from("target/site"),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_held_open: DEFAULT_MAX_HELD_OPEN,
            resume_runs: true,
            limits: RunLimits::default(),
            leases: Leases::default(),
            shutdown_grace: Duration::from_secs(10),
            allowed_hosts: AllowedHosts::for_address(addr),
            auth_off: false,
            retention: None,
            request_timeout: Duration::from_secs(30),
            rate_limit: 0,
            exempt: Exempt::default(),
        }
    }

    /// Reads the settings from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        let addr_var = if var("WEFT_ADDR").is_some() {
            "WEFT_ADDR"
        } else {
            "LEPTOS_SITE_ADDR"
        };
        let addr = match var(addr_var) {
            None => SocketAddr::from(([127, 0, 0, 1], 3000)),
            Some(value) => value.parse().map_err(|_| ConfigError {
                name: addr_var,
                value,
                why: "expected an address such as 127.0.0.1:3000",
            })?,
        };
        let number = |name: &'static str, default: usize| match var(name) {
            None => Ok(default),
            Some(value) => value.parse::<usize>().ok().filter(|n| *n > 0).ok_or(ConfigError {
                name,
                value,
                why: "expected a whole number above 0",
            }),
        };
        let max_body_bytes = number("WEFT_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)?;
        let defaults = RunLimits::default();
        let limits = RunLimits {
            max_running: number("WEFT_MAX_RUNNING", defaults.max_running)?,
            max_queued: number("WEFT_MAX_QUEUED", defaults.max_queued)?,
            max_state_bytes: number("WEFT_MAX_STATE_BYTES", defaults.max_state_bytes)?,
        };
        let lease_defaults = Leases::default();
        let millis = |name, default: Duration| {
            number(name, usize::try_from(default.as_millis()).unwrap_or(usize::MAX))
                .map(|ms| Duration::from_millis(ms as u64))
        };
        let leases = Leases {
            duration: millis("WEFT_LEASE_MS", lease_defaults.duration)?,
            renew_every: millis("WEFT_LEASE_RENEW_MS", lease_defaults.renew_every)?,
        };
        if leases.renew_every >= leases.duration {
            return Err(ConfigError {
                name: "WEFT_LEASE_RENEW_MS",
                value: leases.renew_every.as_millis().to_string(),
                why: "must be shorter than WEFT_LEASE_MS, or leases run out between renewals",
            });
        }
        let mut settings = Self::new(addr, var("WEFT_DATABASE").unwrap_or_else(|| "weft.db".into()));
        if let Some(root) = var("LEPTOS_SITE_ROOT") {
            settings.site_root = PathBuf::from(root);
        }
        settings.max_body_bytes = max_body_bytes;
        settings.max_held_open = number("WEFT_MAX_OPEN", DEFAULT_MAX_HELD_OPEN)?;
        settings.limits = limits;
        settings.leases = leases;
        settings.shutdown_grace = Duration::from_secs(number("WEFT_SHUTDOWN_GRACE_S", 10)? as u64);
        if var("WEFT_RETENTION_DAYS").is_some() {
            let days = number("WEFT_RETENTION_DAYS", 1)?;
            settings.retention = Some(Duration::from_secs(days as u64 * 86_400));
        }
        let switch = |name: &'static str, default: bool| match var(name).as_deref() {
            None => Ok(default),
            Some("on") => Ok(true),
            Some("off") => Ok(false),
            Some(other) => Err(ConfigError {
                name,
                value: other.to_owned(),
                why: "expected `on` or `off`",
            }),
        };
        settings.auth_off = !switch("WEFT_AUTH", true)?;
        settings.exempt = Exempt {
            health: switch("WEFT_PUBLIC_HEALTH", false)?,
            metrics: switch("WEFT_PUBLIC_METRICS", false)?,
        };
        settings.request_timeout = Duration::from_secs(number("WEFT_REQUEST_TIMEOUT_S", 30)? as u64);
        if var("WEFT_RATE_LIMIT").is_some() {
            settings.rate_limit = u32::try_from(number("WEFT_RATE_LIMIT", 1)?).unwrap_or(u32::MAX);
        }
        if let Some(value) = var("WEFT_ALLOWED_HOSTS") {
            settings.allowed_hosts = AllowedHosts::parse(&value).ok_or(ConfigError {
                name: "WEFT_ALLOWED_HOSTS",
                value,
                why: "expected host names separated by commas, or *",
            })?;
        } else if addr.ip().is_unspecified() {
            tracing::warn!(
                %addr,
                "listening on every address, but answering only to localhost names: set WEFT_ALLOWED_HOSTS to the names clients use"
            );
        }
        Ok(settings)
    }
}
