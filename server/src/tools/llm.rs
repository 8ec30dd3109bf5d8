//! `llm`: a node that asks a language model, through a provider of [`crate::llm`].
//!
//! `system` and `prompt` are minijinja templates over the state (`{{ code }}`), checked
//! when the graph is parsed. The answer goes to `output_key`: as text, or, with a
//! `json_schema`, as the JSON it must be (sent as `response_format`, and checked on
//! return: an answer that does not match is sent back once with the problems, and a
//! second miss fails the node). The step's notes say the tokens used.

use std::sync::Arc;

use minijinja::Environment;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use weft_app::wire::{Problem, State, Usage};

use super::schema;
use crate::{
    engine::tool::{read_config, ConfigSpec, Outcome, Problems, Tool, ToolConfig, ToolError, ToolFuture, ToolInput},
    llm::{ChatRequest, Message, Provider, Providers, HOW_TO_CONFIGURE},
};

/// `llm`'s config.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"model": "gpt-4o-mini", "system": "You review {{ language }} code.", "prompt": "Review this:\n{{ code }}", "output_key": "review", "temperature": 0.2}))]
pub struct LlmConfig {
    /// The model (default: the provider's `WEFT_LLM_MODEL`).
    pub model: Option<String>,
    /// The provider, by name (`WEFT_LLM_PROVIDERS`); default: `WEFT_LLM_BASE_URL`'s.
    pub provider: Option<String>,
    /// The system message: a minijinja template over the state.
    pub system: Option<String>,
    /// The user message: a minijinja template over the state.
    pub prompt: String,
    /// Sampling temperature, 0 to 2.
    pub temperature: Option<f64>,
    /// The longest answer, in tokens.
    pub max_tokens: Option<u32>,
    /// The state key the answer is written to.
    pub output_key: String,
    /// A JSON Schema the answer must match: it is then JSON, checked.
    pub json_schema: Option<Value>,
}

impl ToolConfig for LlmConfig {
    fn validate(&self) -> Vec<Problem> {
        let mut problems = Problems::default();
        for (path, source) in [("/prompt", Some(&self.prompt)), ("/system", self.system.as_ref())] {
            if let Some(source) = source {
                if let Err(err) = Environment::new().template_from_str(source) {
                    problems.add(path, format!("is not a valid template: {err}"));
                }
            }
        }
        if self.output_key.is_empty() {
            problems.add("/output_key", "must not be empty");
        }
        if self.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            problems.add("/temperature", "must be from 0 to 2");
        }
        if let Some(why) = self.json_schema.as_ref().and_then(schema::invalid) {
            problems.add("/json_schema", why);
        }
        problems.0
    }
}

/// Registered as `llm`; each node gets a [`Configured`] one.
pub struct Llm {
    config: ConfigSpec,
    providers: Arc<Providers>,
}

impl Llm {
    /// The tool, calling through `providers`.
    pub fn new(providers: Arc<Providers>) -> Self {
        Self {
            config: ConfigSpec::of::<LlmConfig>(),
            providers,
        }
    }
}

impl Tool for Llm {
    fn description(&self) -> &str {
        "Asks a language model (an OpenAI-compatible provider from WEFT_LLM_*): `config.system` and \
         `config.prompt` are templates over the state; the answer goes to `config.output_key`, as JSON \
         checked against `config.json_schema` when given."
    }

    fn config(&self) -> &ConfigSpec {
        &self.config
    }

    fn configure(&self, config: &Value) -> Result<Option<Arc<dyn Tool>>, Vec<Problem>> {
        let config: LlmConfig = read_config(config)?;
        let mut templates = Environment::new();
        let mut add = |name: &'static str, source: Option<&String>| {
            if let Some(source) = source {
                // Checked by `validate`: cannot fail here.
                let _ = templates.add_template_owned(name, source.clone());
            }
        };
        add("prompt", Some(&config.prompt));
        add("system", config.system.as_ref());
        Ok(Some(Arc::new(Configured {
            description: self.description().to_owned(),
            config: Arc::new(config),
            templates: Arc::new(templates),
            providers: Arc::clone(&self.providers),
        })))
    }

    fn call(&self, _input: ToolInput) -> ToolFuture {
        Box::pin(std::future::ready(Err(ToolError::Failed("unconfigured llm".into()))))
    }
}

/// One node's `llm`.
struct Configured {
    description: String,
    config: Arc<LlmConfig>,
    templates: Arc<Environment<'static>>,
    providers: Arc<Providers>,
}

impl Configured {
    /// The provider this node calls and the model it asks for, or what to set.
    fn target(&self) -> Result<(Arc<Provider>, String), String> {
        let provider =
            self.providers
                .get(self.config.provider.as_deref())
                .ok_or_else(|| match &self.config.provider {
                    Some(name) => format!("no LLM provider named `{name}` is configured (WEFT_LLM_PROVIDERS)"),
                    None => HOW_TO_CONFIGURE.to_owned(),
                })?;
        let model = self
            .config
            .model
            .clone()
            .or_else(|| provider.model.clone())
            .ok_or_else(|| "no model: set the node's `model`, or the provider's WEFT_LLM_MODEL".to_owned())?;
        Ok((Arc::clone(provider), model))
    }

    fn render(&self, name: &str, state: &State) -> Result<Option<String>, ToolError> {
        let Ok(template) = self.templates.get_template(name) else {
            return Ok(None);
        };
        template
            .render(state)
            .map(Some)
            .map_err(|err| ToolError::InvalidInput(format!("the `{name}` template: {err}")))
    }
}

impl Tool for Configured {
    fn description(&self) -> &str {
        &self.description
    }

    fn streams(&self) -> bool {
        true
    }

    fn unavailable(&self) -> Option<String> {
        self.target().err()
    }

    fn call(&self, input: ToolInput) -> ToolFuture {
        let prepared = (|| {
            let (provider, model) = self.target().map_err(ToolError::Failed)?;
            let mut messages = Vec::new();
            if let Some(system) = self.render("system", &input.state)? {
                messages.push(Message {
                    role: "system",
                    content: system,
                });
            }
            messages.push(Message {
                role: "user",
                content: self.render("prompt", &input.state)?.unwrap_or_default(),
            });
            let response_format = self.config.json_schema.as_ref().map(|schema| {
                json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}})
            });
            Ok((
                provider,
                ChatRequest {
                    model,
                    messages,
                    temperature: self.config.temperature,
                    max_tokens: self.config.max_tokens,
                    response_format,
                },
            ))
        })();
        let (config, providers) = (Arc::clone(&self.config), Arc::clone(&self.providers));
        let progress = input.progress.clone();
        Box::pin(async move {
            let (provider, mut request) = prepared?;
            let failed = |err: crate::llm::LlmError| ToolError::Failed(err.to_string());
            let mut notes = Vec::new();
            let mut usage = Usage::default();
            let mut attempt = 0;
            loop {
                attempt += 1;
                let answer = providers
                    .complete(&provider, &request, |text| {
                        if let Some(progress) = &progress {
                            progress(text);
                        }
                    })
                    .await
                    .map_err(failed)?;
                notes.push(format!(
                    "{}: {} prompt + {} completion tokens",
                    request.model, answer.prompt_tokens, answer.completion_tokens
                ));
                let used = Usage {
                    prompt_tokens: answer.prompt_tokens,
                    completion_tokens: answer.completion_tokens,
                    cost_usd: providers.cost(&request.model, answer.prompt_tokens, answer.completion_tokens),
                };
                crate::meters::llm_used(&request.model, &used);
                usage = usage + used;
                let Some(json_schema) = &config.json_schema else {
                    let mut update = State::new();
                    update.insert(config.output_key.clone(), Value::String(answer.text));
                    return Ok(Outcome {
                        notes,
                        usage: Some(usage),
                        ..Outcome::update(update)
                    });
                };
                let problems = match serde_json::from_str::<Value>(&answer.text) {
                    Ok(value) => {
                        let problems = schema::check(json_schema, &value);
                        if problems.is_empty() {
                            let mut update = State::new();
                            update.insert(config.output_key.clone(), value);
                            return Ok(Outcome {
                                notes,
                                usage: Some(usage),
                                ..Outcome::update(update)
                            });
                        }
                        schema::summary(&problems)
                    }
                    Err(err) => format!("not JSON: {err}"),
                };
                if attempt >= 2 {
                    return Err(ToolError::Failed(format!(
                        "the model's answer did not match `json_schema` twice; last: {problems}"
                    )));
                }
                notes.push(format!(
                    "the answer did not match `json_schema` ({problems}); asking again"
                ));
                request.messages.push(Message {
                    role: "assistant",
                    content: answer.text,
                });
                request.messages.push(Message {
                    role: "user",
                    content: format!(
                        "Your answer did not match the required JSON Schema: {problems}. Answer again with JSON \
                         that matches it, and nothing else."
                    ),
                });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Graph, Registry};

    #[test]
    fn templates_and_schemas_are_checked_when_the_graph_is_parsed() {
        let mut registry = Registry::new();
        registry.register("llm", Llm::new(Arc::new(Providers::default())));
        let spec = json!({"nodes": [{"id": "ask", "tool": "llm", "config": {
            "prompt": "Review {{ code ", "output_key": "", "temperature": 3, "json_schema": {"type": 1}
        }}]});
        let err = Graph::parse(&spec, &registry).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/nodes/0/config/prompt",
                "/nodes/0/config/output_key",
                "/nodes/0/config/temperature",
                "/nodes/0/config/json_schema"
            ]
        );
        assert!(
            err.problems[0].message.contains("is not a valid template"),
            "{}",
            err.problems[0].message
        );
    }

    #[tokio::test]
    async fn without_a_provider_the_node_says_what_to_set() {
        let tool = Llm::new(Arc::new(Providers::default()))
            .configure(&json!({"prompt": "hi {{ name }}", "output_key": "out"}))
            .unwrap()
            .unwrap();
        let err = tool
            .call(ToolInput {
                state: Arc::new(State::new()),
                config: Arc::new(Value::Null),
                timeout: std::time::Duration::from_secs(1),
                missing: crate::engine::tool::MissingInput::Fail,
                answer: None,
                progress: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), HOW_TO_CONFIGURE);
    }
}
