//! `interrupt`: a node that asks a person a question and waits for the answer (human in
//! the loop).
//!
//! Reached, the node answers [`Next::Wait`]: the run stops, `waiting`, holding no worker
//! and no lease, with its question stored. `POST /runs/{id}/resume` checks an answer
//! against the question's `input_schema`, and the run goes on from this node, which
//! writes the answer to the state at `key` and follows its edges. Unanswered past
//! `timeout_s`, it goes to `on_timeout` instead, or fails.

use std::{sync::Arc, time::Duration};

use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use weft_app::wire::{Problem, State};

use crate::engine::tool::{
    read_config, Answer, ConfigSpec, Next, Outcome, Pause, Problems, Tool, ToolConfig, ToolError, ToolFuture, ToolInput,
};

/// The longest an interrupt may wait with a timeout: 30 days.
pub const MAX_TIMEOUT_S: u64 = 30 * 24 * 3_600;

/// `interrupt`'s config.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"prompt": "Approve the revised code?", "key": "review", "input_schema": {"type": "object", "required": ["approved"], "properties": {"approved": {"type": "boolean"}, "comment": {"type": "string"}}}, "show": ["revised_code"], "timeout_s": 86400, "on_timeout": "escalate"}))]
pub struct InterruptConfig {
    /// The question, for a person.
    pub prompt: String,
    /// The state key the answer is written to.
    pub key: String,
    /// The JSON Schema the answer must match (default: any JSON value).
    #[serde(default)]
    pub input_schema: Option<Value>,
    /// State keys shown with the question, as they stand when it is asked.
    #[serde(default)]
    pub show: Vec<String>,
    /// How long to wait for an answer, in seconds (at most 30 days); none: until
    /// answered or cancelled.
    #[schema(minimum = 1, maximum = 2592000)]
    pub timeout_s: Option<u64>,
    /// Where the run goes when nobody answers in time: a node's name, or `fail` (the
    /// default) to fail the node.
    pub on_timeout: Option<String>,
}

impl ToolConfig for InterruptConfig {
    fn validate(&self) -> Vec<Problem> {
        let mut problems = Problems::default();
        if self.prompt.trim().is_empty() {
            problems.add("/prompt", "must not be empty");
        }
        if self.key.is_empty() {
            problems.add("/key", "must not be empty");
        }
        if let Some(why) = self.input_schema.as_ref().and_then(super::schema::invalid) {
            problems.add("/input_schema", why);
        }
        match self.timeout_s {
            Some(seconds) if !(1..=MAX_TIMEOUT_S).contains(&seconds) => {
                problems.add("/timeout_s", format!("must be from 1 to {MAX_TIMEOUT_S}"));
            }
            None if self.on_timeout.is_some() => {
                problems.add("/on_timeout", "has no effect without `timeout_s`");
            }
            _ => {}
        }
        problems.0
    }
}

/// Registered as `interrupt`; each node gets a [`Configured`] one.
pub struct Interrupt {
    config: ConfigSpec,
}

impl Interrupt {
    /// The tool, for the registry.
    pub fn new() -> Self {
        Self {
            config: ConfigSpec::of::<InterruptConfig>(),
        }
    }
}

impl Default for Interrupt {
    fn default() -> Self {
        Self::new()
    }
}

impl Tool for Interrupt {
    fn description(&self) -> &str {
        "Asks a person `config.prompt` and waits (the run is `waiting`, holding no worker) for an answer \
         matching `config.input_schema`, written to `config.key`; past `config.timeout_s`, goes to \
         `config.on_timeout` or fails."
    }

    fn config(&self) -> &ConfigSpec {
        &self.config
    }

    fn configure(&self, config: &Value) -> Result<Option<Arc<dyn Tool>>, Vec<Problem>> {
        let config: InterruptConfig = read_config(config)?;
        let jumps = config
            .on_timeout
            .iter()
            .filter(|target| *target != "fail")
            .cloned()
            .collect();
        Ok(Some(Arc::new(Configured {
            description: self.description().to_owned(),
            schema: config
                .input_schema
                .clone()
                .unwrap_or_else(|| Value::Object(serde_json::Map::new())),
            config,
            jumps,
        })))
    }

    fn call(&self, _input: ToolInput) -> ToolFuture {
        // Every node runs its configured tool.
        Box::pin(std::future::ready(Err(ToolError::Failed(
            "unconfigured interrupt".into(),
        ))))
    }
}

/// One node's `interrupt`.
struct Configured {
    description: String,
    config: InterruptConfig,
    /// `input_schema`, `{}` (anything) when not given.
    schema: Value,
    /// `on_timeout`, when it names a node.
    jumps: Vec<String>,
}

impl Configured {
    fn outcome(&self, state: &State, answer: Option<&Answer>) -> Result<Outcome, ToolError> {
        match answer {
            None => {
                let context: State = self
                    .config
                    .show
                    .iter()
                    .filter_map(|key| state.get(key).map(|value| (key.clone(), value.clone())))
                    .collect();
                Ok(Outcome::default().then(Next::Wait(Box::new(Pause {
                    prompt: self.config.prompt.clone(),
                    input_schema: self.schema.clone(),
                    context,
                    timeout: self.config.timeout_s.map(Duration::from_secs),
                }))))
            }
            Some(Answer::Given { input, by }) => {
                let mut update = State::new();
                update.insert(self.config.key.clone(), input.clone());
                let by = by.as_deref().map(|by| format!(" by {by}")).unwrap_or_default();
                Ok(Outcome::update(update).note(format!("answered{by}")))
            }
            Some(Answer::TimedOut) => {
                let waited = self.config.timeout_s.unwrap_or_default();
                match self.jumps.first() {
                    Some(target) => Ok(Outcome::default()
                        .then(Next::Node(target.clone()))
                        .note(format!("no answer within {waited} s: going to `{target}`"))),
                    None => Err(ToolError::Failed(format!("no answer within {waited} s"))),
                }
            }
        }
    }
}

impl Tool for Configured {
    fn description(&self) -> &str {
        &self.description
    }

    fn call(&self, input: ToolInput) -> ToolFuture {
        Box::pin(std::future::ready(self.outcome(&input.state, input.answer.as_deref())))
    }

    fn jumps(&self) -> &[String] {
        &self.jumps
    }

    fn named_targets(&self) -> Vec<(String, String)> {
        self.jumps
            .iter()
            .map(|target| ("/on_timeout".to_owned(), target.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::engine::{testing::run_spec, Registry};

    fn registry() -> Registry {
        let mut registry = Registry::new();
        crate::tools::builtin::register(&mut registry);
        registry.register("interrupt", Interrupt::new());
        registry
    }

    #[test]
    fn an_answer_is_checked_against_the_schema_with_the_paths_of_its_problems() {
        let schema = json!({"type": "object", "required": ["approved"],
            "properties": {"approved": {"type": "boolean"}, "comment": {"type": "string"}}});
        assert_eq!(
            crate::tools::schema::check(&schema, &json!({"approved": true})),
            Vec::new()
        );
        let problems = crate::tools::schema::check(&schema, &json!({"approved": "yes", "comment": 3}));
        let mut paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, ["/approved", "/comment"]);
        assert_eq!(
            problems.iter().find(|p| p.path == "/approved").unwrap().message,
            "\"yes\" is not of type \"boolean\""
        );
        let missing = crate::tools::schema::check(&schema, &json!({}));
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].path, "");
        assert!(missing[0].message.contains("approved"), "{}", missing[0].message);
    }

    #[test]
    fn a_config_is_checked_when_its_graph_is_parsed() {
        let spec = json!({"nodes": [
            {"id": "ask", "tool": "interrupt", "config": {"prompt": " ", "key": "a", "input_schema": {"type": 5}, "on_timeout": "nowhere"}},
            {"id": "ask2", "tool": "interrupt", "config": {"prompt": "ok?", "key": "b", "timeout_s": 5, "on_timeout": "nowhere"}}
        ], "edges": [{"from": "ask", "to": "ask2"}]});
        let err = crate::engine::Graph::parse(&spec, &registry()).unwrap_err();
        let found: Vec<(&str, &str)> = err
            .problems
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        let bad = "bad config for `interrupt`: ";
        assert!(
            found.contains(&("/nodes/0/config/prompt", &format!("{bad}must not be empty"))),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|(path, message)| *path == "/nodes/0/config/input_schema"
                    && message.starts_with(&format!("{bad}is not a valid JSON Schema"))),
            "{found:?}"
        );
        assert!(
            found.contains(&(
                "/nodes/0/config/on_timeout",
                &format!("{bad}has no effect without `timeout_s`")
            )),
            "{found:?}"
        );
        assert!(
            found.contains(&("/nodes/1/config/on_timeout", "`nowhere` is not a node")),
            "{found:?}"
        );
    }

    #[tokio::test]
    async fn reaching_an_interrupt_stops_the_run_waiting_before_its_step() {
        let spec = json!({"nodes": [
            {"id": "first", "tool": "increment"},
            {"id": "ask", "tool": "interrupt", "config": {"prompt": "ok?", "key": "ok", "show": ["count", "absent"]}},
            {"id": "after", "tool": "increment"}
        ], "edges": [{"from": "first", "to": "ask"}, {"from": "ask", "to": "after"}]});
        let end = run_spec(&registry(), &spec, json!({})).await;
        assert_eq!(end.status, weft_app::wire::RunStatus::Waiting);
        assert_eq!(end.steps, 1, "the interrupt's step happens once answered");
        assert_eq!(Value::Object(end.state), json!({"count": 1}));
    }

    #[tokio::test]
    async fn an_answer_is_written_at_the_key_and_a_timeout_goes_where_it_says() {
        let tool = Interrupt::new()
            .configure(&json!({"prompt": "ok?", "key": "verdict", "timeout_s": 60, "on_timeout": "escalate"}))
            .unwrap()
            .unwrap();
        let call = |answer: Option<Answer>| {
            tool.call(ToolInput {
                state: Arc::new(State::new()),
                config: Arc::new(Value::Null),
                timeout: Duration::from_secs(1),
                missing: crate::engine::tool::MissingInput::Fail,
                answer: answer.map(Arc::new),
                progress: None,
            })
        };
        let asked = call(None).await.unwrap();
        let Next::Wait(pause) = asked.next else { panic!("asks") };
        assert_eq!(
            (pause.prompt.as_str(), pause.timeout),
            ("ok?", Some(Duration::from_secs(60)))
        );
        assert_eq!(pause.input_schema, json!({}));
        let answered = call(Some(Answer::Given {
            input: json!({"approved": true}),
            by: Some("alice".into()),
        }))
        .await
        .unwrap();
        assert_eq!(Value::Object(answered.update), json!({"verdict": {"approved": true}}));
        assert_eq!(
            (answered.next, answered.notes),
            (Next::Edge, vec!["answered by alice".to_owned()])
        );
        let late = call(Some(Answer::TimedOut)).await.unwrap();
        assert_eq!(late.next, Next::Node("escalate".into()));
        assert_eq!(late.notes, ["no answer within 60 s: going to `escalate`"]);

        let failing = Interrupt::new()
            .configure(&json!({"prompt": "ok?", "key": "v", "timeout_s": 5}))
            .unwrap()
            .unwrap();
        let err = failing
            .call(ToolInput {
                state: Arc::new(State::new()),
                config: Arc::new(Value::Null),
                timeout: Duration::from_secs(1),
                missing: crate::engine::tool::MissingInput::Fail,
                answer: Some(Arc::new(Answer::TimedOut)),
                progress: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "no answer within 5 s");
    }
}
