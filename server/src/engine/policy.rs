//! Per-node execution policy: how long a node may take and how it is retried.
//!
//! In a node spec: `"timeout_ms": 5000` and
//! `"retry": {"attempts": 3, "backoff_ms": 100, "max_backoff_ms": 10000}`.
//! By default a node has 60 s and one attempt: tools need not be idempotent, so retrying
//! is the graph author's choice. The wait before attempt `n + 1` doubles each time from
//! `backoff_ms`, capped at `max_backoff_ms` ([`RetryPolicy::delay_after`]).
//!
//! A timed-out tool running on the CPU pool cannot be interrupted: its result is
//! dropped and the node retried or failed, while the job finishes on its thread.

use std::time::Duration;

use serde_json::{Map, Value};
use weft_app::wire::Problem;

/// The default time a node may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest timeout a node may ask for.
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;
/// The most attempts a node may ask for.
pub const MAX_ATTEMPTS: u32 = 10;
/// The longest wait between attempts a node may ask for.
pub const MAX_BACKOFF_MS: u64 = 600_000;

/// How a failing node is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, at least 1.
    pub attempts: u32,
    /// The wait after the first failure.
    pub backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 1,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based) before the next one, or `None`
    /// when it was the last.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        Some(self.backoff.saturating_mul(factor).min(self.max_backoff))
    }
}

/// How a node is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePolicy {
    /// The time one attempt may take.
    pub timeout: Duration,
    /// How failures are retried.
    pub retry: RetryPolicy,
}

impl Default for NodePolicy {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
        }
    }
}

fn millis(value: &Value, max: u64) -> Result<u64, String> {
    value
        .as_u64()
        .filter(|ms| (1..=max).contains(ms))
        .ok_or_else(|| format!("must be a whole number of milliseconds from 1 to {max}"))
}

impl NodePolicy {
    /// Reads `timeout_ms` and `retry` from a node spec at `path`, adding what is wrong.
    pub(crate) fn parse(fields: &Map<String, Value>, path: &str, problems: &mut Vec<Problem>) -> Self {
        let mut policy = Self::default();
        let mut problem = |at: String, message: String| problems.push(Problem { path: at, message });
        if let Some(value) = fields.get("timeout_ms") {
            match millis(value, MAX_TIMEOUT_MS) {
                Ok(ms) => policy.timeout = Duration::from_millis(ms),
                Err(message) => problem(format!("{path}/timeout_ms"), message),
            }
        }
        match fields.get("retry") {
            None | Some(Value::Null) => {}
            Some(Value::Object(retry)) => {
                for (key, value) in retry {
                    let at = super::pointer(&format!("{path}/retry"), key);
                    match key.as_str() {
                        "attempts" => match value.as_u64().filter(|n| (1..=u64::from(MAX_ATTEMPTS)).contains(n)) {
                            Some(n) => policy.retry.attempts = n as u32,
                            None => problem(at, format!("must be a whole number from 1 to {MAX_ATTEMPTS}")),
                        },
                        "backoff_ms" => match millis(value, MAX_BACKOFF_MS) {
                            Ok(ms) => policy.retry.backoff = Duration::from_millis(ms),
                            Err(message) => problem(at, message),
                        },
                        "max_backoff_ms" => match millis(value, MAX_BACKOFF_MS) {
                            Ok(ms) => policy.retry.max_backoff = Duration::from_millis(ms),
                            Err(message) => problem(at, message),
                        },
                        _ => problem(
                            at,
                            "unknown field (expected `attempts`, `backoff_ms` or `max_backoff_ms`)".into(),
                        ),
                    }
                }
            }
            Some(_) => problem(
                format!("{path}/retry"),
                "must be an object such as {\"attempts\": 3}".into(),
            ),
        }
        policy
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_stops_at_the_last_attempt() {
        let retry = RetryPolicy {
            attempts: 6,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
        };
        let delays: Vec<Option<u64>> = (1..=6)
            .map(|n| retry.delay_after(n).map(|d| d.as_millis() as u64))
            .collect();
        assert_eq!(delays, [Some(100), Some(200), Some(400), Some(500), Some(500), None]);
        assert_eq!(RetryPolicy::default().delay_after(1), None);
        let many = RetryPolicy {
            attempts: u32::MAX,
            ..retry
        };
        assert_eq!(many.delay_after(40), Some(Duration::from_millis(500)));
    }

    #[test]
    fn reads_a_policy_and_reports_each_bad_field() {
        let mut problems = Vec::new();
        let spec = json!({"timeout_ms": 250, "retry": {"attempts": 3, "backoff_ms": 10}});
        let policy = NodePolicy::parse(spec.as_object().unwrap(), "/nodes/a", &mut problems);
        assert!(problems.is_empty());
        assert_eq!(policy.timeout, Duration::from_millis(250));
        assert_eq!(policy.retry.attempts, 3);
        assert_eq!(policy.retry.backoff, Duration::from_millis(10));

        let bad = json!({"timeout_ms": 0, "retry": {"attempts": 99, "jitter": true}});
        NodePolicy::parse(bad.as_object().unwrap(), "/nodes/a", &mut problems);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/nodes/a/timeout_ms",
                "/nodes/a/retry/attempts",
                "/nodes/a/retry/jitter"
            ]
        );
    }
}
