//! General-purpose tools for custom graphs: small, cheap building blocks.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use weft_app::wire::{Problem, State};

use crate::engine::tool::{ConfigSpec, FnTool, Outcome, Registry, Tool, ToolConfig, ToolError, ToolFuture, ToolInput};

/// The longest pause the `sleep` tool takes.
pub const MAX_SLEEP_MS: u64 = 60_000;

/// `increment`'s config.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"key": "laps"}))]
pub struct IncrementConfig {
    /// The state key to add 1 to (default `count`).
    pub key: Option<String>,
}

impl ToolConfig for IncrementConfig {}

/// `sleep`'s config.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"ms": 250}))]
pub struct SleepConfig {
    /// The pause in milliseconds (default: the state's `sleep_ms`, else 100).
    #[schema(maximum = 60000)]
    pub ms: Option<u64>,
}

impl ToolConfig for SleepConfig {
    fn validate(&self) -> Vec<Problem> {
        match self.ms {
            Some(ms) if ms > MAX_SLEEP_MS => vec![Problem {
                path: "/ms".into(),
                message: format!("must be at most {MAX_SLEEP_MS}"),
            }],
            _ => Vec::new(),
        }
    }
}

/// `fail`'s config.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"message": "disk full"}))]
pub struct FailConfig {
    /// The error the node fails with.
    pub message: Option<String>,
}

impl ToolConfig for FailConfig {}

/// Registers `noop`, `increment`, `sleep` and `fail`.
pub fn register(registry: &mut Registry) {
    registry
        .register(
            "noop",
            FnTool::inline("Does nothing; useful as a start, join or end node.", |_, _| {
                Ok(Outcome::default())
            }),
        )
        .register(
            "increment",
            FnTool::inline(
                "Adds 1 to the number at `config.key` (default `count`), starting from 0.",
                increment,
            )
            .with_config::<IncrementConfig>(),
        )
        .register(
            "sleep",
            Sleep {
                config: ConfigSpec::of::<SleepConfig>(),
            },
        )
        .register(
            "fail",
            FnTool::inline(
                "Always fails, with `config.message` if given: for testing failure paths.",
                |_, config| {
                    let message = config
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("this node always fails");
                    Err(ToolError::Failed(message.to_owned()))
                },
            )
            .with_config::<FailConfig>(),
        );
}

fn key(config: &Value) -> Result<&str, ToolError> {
    match config.get("key") {
        None | Some(Value::Null) => Ok("count"),
        Some(Value::String(key)) => Ok(key),
        Some(_) => Err(ToolError::InvalidInput("`config.key` must be a string".into())),
    }
}

fn increment(state: &State, config: &Value) -> Result<Outcome, ToolError> {
    let key = key(config)?;
    let current = match state.get(key) {
        None | Some(Value::Null) => 0,
        Some(value) => value
            .as_i64()
            .ok_or_else(|| ToolError::InvalidInput(format!("`{key}` must be a whole number")))?,
    };
    let next = current
        .checked_add(1)
        .ok_or_else(|| ToolError::Failed(format!("`{key}` is at its maximum")))?;
    let mut update = State::new();
    update.insert(key.to_owned(), next.into());
    Ok(Outcome::update(update))
}

/// Waits without blocking a thread: `config.ms`, else `state.sleep_ms`, else 100 ms.
struct Sleep {
    config: ConfigSpec,
}

impl Tool for Sleep {
    fn description(&self) -> &str {
        "Waits `config.ms` (else `state.sleep_ms`, else 100) milliseconds, at most 60000."
    }

    fn config(&self) -> &ConfigSpec {
        &self.config
    }

    fn call(&self, input: ToolInput) -> ToolFuture {
        let ms = input
            .config
            .get("ms")
            .or_else(|| input.state.get("sleep_ms"))
            .map_or(Some(100), Value::as_u64);
        Box::pin(async move {
            let ms = ms.filter(|ms| *ms <= MAX_SLEEP_MS).ok_or_else(|| {
                ToolError::InvalidInput(format!("the pause must be a whole number of ms up to {MAX_SLEEP_MS}"))
            })?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(Outcome::default())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    fn registry() -> Registry {
        let mut registry = Registry::new();
        register(&mut registry);
        registry
    }

    async fn call(tool: &str, state: Value, config: Value) -> Result<Outcome, ToolError> {
        let input = ToolInput {
            state: Arc::new(state.as_object().cloned().unwrap_or_default()),
            config: Arc::new(config),
            timeout: crate::engine::policy::DEFAULT_TIMEOUT,
            missing: crate::engine::tool::MissingInput::Fail,
            answer: None,
            progress: None,
        };
        registry().get(tool).unwrap().call(input).await
    }

    #[tokio::test]
    async fn increment_counts_from_zero_under_the_configured_key() {
        let first = call("increment", json!({}), Value::Null).await.unwrap();
        assert_eq!(first.update["count"], 1);
        let next = call("increment", json!({"laps": 4}), json!({"key": "laps"}))
            .await
            .unwrap();
        assert_eq!(next.update["laps"], 5);
        let bad = call("increment", json!({"count": "x"}), Value::Null).await.unwrap_err();
        assert_eq!(bad.to_string(), "invalid input: `count` must be a whole number");
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_waits_the_configured_time() {
        let started = tokio::time::Instant::now();
        call("sleep", json!({"sleep_ms": 5000}), Value::Null).await.unwrap();
        assert_eq!(started.elapsed().as_millis(), 5000);
        let err = call("sleep", json!({}), json!({"ms": 999_999})).await.unwrap_err();
        assert!(err.to_string().contains("up to 60000"));
    }

    #[tokio::test]
    async fn fail_says_its_message() {
        let err = call("fail", json!({}), json!({"message": "boom"})).await.unwrap_err();
        assert_eq!(err, ToolError::Failed("boom".into()));
    }
}
