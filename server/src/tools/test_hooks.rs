//! Test-only tools (the `test-hooks` feature, which only the tests package turns on): a
//! side effect a process test can count, to prove that each node ran exactly once, and
//! a tool that panics on the async runtime.

use std::io::Write;

use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::engine::tool::{FnTool, Outcome, Registry, ToolConfig, ToolError};

/// `record`'s config.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"mark": "a"}))]
pub struct RecordConfig {
    /// What the line says after the run's token.
    pub mark: String,
}

impl ToolConfig for RecordConfig {}

/// Registers `record` and `panic`. `record` appends `"<state.token> <mark>"` as a line to the file named by
/// `WEFT_TEST_RECORD_FILE`, once per call.
pub fn register(registry: &mut Registry) {
    registry.register(
        "record",
        FnTool::inline(
            "Test only: appends `<state.token> <mark>` to WEFT_TEST_RECORD_FILE.",
            |state, config| {
                let mark = config.get("mark").and_then(Value::as_str).unwrap_or_default();
                let token = state.get("token").and_then(Value::as_str).unwrap_or_default();
                let path = std::env::var("WEFT_TEST_RECORD_FILE")
                    .map_err(|_| ToolError::Failed("WEFT_TEST_RECORD_FILE is not set".into()))?;
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|err| ToolError::Failed(err.to_string()))?;
                // One write of one short line: appends from several processes do not interleave.
                file.write_all(format!("{token} {mark}\n").as_bytes())
                    .map_err(|err| ToolError::Failed(err.to_string()))?;
                Ok(Outcome::default())
            },
        )
        .with_config::<RecordConfig>(),
    );
    registry.register(
        "panic",
        FnTool::inline("Test only: panics, inline on the async runtime.", |_, _| {
            panic!("the `panic` tool panicked, as asked")
        }),
    );
}
