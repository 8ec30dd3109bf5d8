//! Calling language models: any OpenAI-compatible `/chat/completions` endpoint, streamed
//! (server-sent events), with retries on 429 and 5xx answers (honouring `Retry-After`)
//! and a limit on calls in flight per provider.
//!
//! Providers come from the environment only, so a key is never in a graph, a run, an
//! event or an error:
//!
//! | variable | meaning |
//! | --- | --- |
//! | `WEFT_LLM_BASE_URL` | the default provider's API root, e.g. `https://api.openai.com/v1` |
//! | `WEFT_LLM_API_KEY` | its key (sent as a bearer token) |
//! | `WEFT_LLM_MODEL` | its model when a node names none |
//! | `WEFT_LLM_MAX_CONCURRENT` | its calls in flight at most (default 4); more wait |
//! | `WEFT_LLM_PROVIDERS` | more providers, by name: `fast,local` |
//! | `WEFT_LLM_<NAME>_BASE_URL`, `_API_KEY`, `_MODEL`, `_MAX_CONCURRENT` | each one's settings |
//! | `WEFT_LLM_PRICES` | US dollars per million tokens, prompt:completion, by model: `gpt-4o-mini=0.15:0.6` |
//!
//! The client knows nothing of graphs: the `llm` tool (`tools::llm`) renders the messages
//! and reads the answer.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;

/// Calls in flight per provider when its settings give none.
pub const DEFAULT_MAX_CONCURRENT: usize = 4;
/// Tries of one call at most, when the provider answers 429 or 5xx.
pub const MAX_TRIES: u32 = 4;
/// The longest wait a `Retry-After` is honoured for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// An API key: shown as `***` wherever it is printed.
#[derive(Clone)]
pub struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// One configured endpoint.
#[derive(Debug)]
pub struct Provider {
    /// Its name (`default` for the one of `WEFT_LLM_BASE_URL`).
    pub name: String,
    /// Its API root, without a trailing `/`.
    pub base_url: String,
    key: Option<ApiKey>,
    /// Its model when a node names none.
    pub model: Option<String>,
    permits: Arc<Semaphore>,
}

/// Every configured provider, and the HTTP client they share.
#[derive(Debug, Default)]
pub struct Providers {
    default: Option<Arc<Provider>>,
    named: HashMap<String, Arc<Provider>>,
    client: reqwest::Client,
    /// US dollars per million tokens (prompt, completion), by model.
    prices: HashMap<String, (f64, f64)>,
}

/// What to set for a provider to be there.
pub const HOW_TO_CONFIGURE: &str =
    "no LLM provider is configured: set WEFT_LLM_BASE_URL (and WEFT_LLM_API_KEY, WEFT_LLM_MODEL)";

impl Providers {
    /// The providers the environment configures (none is fine: `llm` nodes then fail
    /// saying what to set).
    pub fn from_env() -> Result<Self, String> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The providers `var` configures.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let read = |prefix: &str, name: &str| -> Result<Option<Provider>, String> {
            let Some(base_url) = var(&format!("{prefix}BASE_URL")).filter(|url| !url.is_empty()) else {
                return Ok(None);
            };
            let max_concurrent = match var(&format!("{prefix}MAX_CONCURRENT")) {
                None => DEFAULT_MAX_CONCURRENT,
                Some(n) => n
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{prefix}MAX_CONCURRENT must be a whole number of at least 1"))?,
            };
            Ok(Some(Provider {
                name: name.to_owned(),
                base_url: base_url.trim_end_matches('/').to_owned(),
                key: var(&format!("{prefix}API_KEY"))
                    .filter(|key| !key.is_empty())
                    .map(ApiKey),
                model: var(&format!("{prefix}MODEL")).filter(|model| !model.is_empty()),
                permits: Arc::new(Semaphore::new(max_concurrent)),
            }))
        };
        let default = read("WEFT_LLM_", "default")?.map(Arc::new);
        let mut named = HashMap::new();
        for name in var("WEFT_LLM_PROVIDERS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            let prefix = format!("WEFT_LLM_{}_", name.to_uppercase());
            let provider = read(&prefix, name)?.ok_or_else(|| format!("provider `{name}` needs {prefix}BASE_URL"))?;
            named.insert(name.to_owned(), Arc::new(provider));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|err| format!("the HTTP client cannot start: {err}"))?;
        let prices = prices(&var("WEFT_LLM_PRICES").unwrap_or_default())?;
        Ok(Self {
            default,
            named,
            client,
            prices,
        })
    }

    /// What `completion` cost on `model`, when its price is configured.
    pub fn cost(&self, model: &str, prompt_tokens: u64, completion_tokens: u64) -> Option<f64> {
        let (prompt, completion) = self.prices.get(model)?;
        Some((prompt * prompt_tokens as f64 + completion * completion_tokens as f64) / 1_000_000.0)
    }

    /// The provider of this name (`None`: the default one), if configured.
    pub fn get(&self, name: Option<&str>) -> Option<&Arc<Provider>> {
        match name {
            None => self.default.as_ref(),
            Some(name) => self.named.get(name),
        }
    }

    /// Whether any provider is configured.
    pub fn any(&self) -> bool {
        self.default.is_some() || !self.named.is_empty()
    }
}

/// `WEFT_LLM_PRICES`: `model=prompt:completion,…`, US dollars per million tokens.
fn prices(text: &str) -> Result<HashMap<String, (f64, f64)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let bad = || format!("WEFT_LLM_PRICES: `{entry}` is not `model=prompt:completion`");
            let (model, price) = entry.split_once('=').ok_or_else(bad)?;
            let (prompt, completion) = price.split_once(':').ok_or_else(bad)?;
            let number = |text: &str| {
                text.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .ok_or_else(bad)
            };
            Ok((model.trim().to_owned(), (number(prompt)?, number(completion)?)))
        })
        .collect()
}

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: &'static str,
    /// The text.
    pub content: String,
}

/// A call's body, as the API takes it.
#[derive(Debug, Clone, Serialize)]
pub struct ChatRequest {
    /// The model.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Sampling temperature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// The longest answer, in tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Structured output: `{"type": "json_schema", "json_schema": {...}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
}

/// A finished call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The answer's text.
    pub text: String,
    /// Tokens of the prompt, as the provider counted them.
    pub prompt_tokens: u64,
    /// Tokens of the answer.
    pub completion_tokens: u64,
    /// Tries it took.
    pub tries: u32,
}

/// Why a call failed. Never holds the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// The provider could not be reached, or the connection broke.
    #[error("the provider `{provider}` could not be reached: {message}")]
    Unreachable {
        /// Its name.
        provider: String,
        /// What went wrong.
        message: String,
    },
    /// The provider refused the call.
    #[error("the provider `{provider}` answered {status}: {body}")]
    Refused {
        /// Its name.
        provider: String,
        /// The HTTP status.
        status: u16,
        /// The start of its answer.
        body: String,
    },
    /// The stream was not what the API sends.
    #[error("the provider `{provider}` sent a stream that cannot be read: {message}")]
    BadStream {
        /// Its name.
        provider: String,
        /// What was wrong.
        message: String,
    },
}

/// The body of `POST <base>/chat/completions`, streamed, with usage in the last chunk.
fn body(request: &ChatRequest) -> Value {
    let mut body = serde_json::to_value(request).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut body {
        fields.insert("stream".into(), Value::Bool(true));
        fields.insert("stream_options".into(), serde_json::json!({"include_usage": true}));
    }
    body
}

/// How long to wait before trying again after `response`, if it is worth trying again:
/// 429 and 5xx answers, after their `Retry-After` (seconds) or a doubling pause.
fn retry_after(status: reqwest::StatusCode, headers: &reqwest::header::HeaderMap, tries: u32) -> Option<Duration> {
    if !(status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error()) || tries >= MAX_TRIES {
        return None;
    }
    let told = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map(Duration::from_secs_f64);
    Some(
        told.unwrap_or_else(|| Duration::from_millis(500 * 2u64.pow(tries - 1)))
            .min(MAX_RETRY_AFTER),
    )
}

impl Providers {
    /// Calls `provider` with `request`, streaming; `on_token` gets each piece of text as
    /// it arrives. Waits for a permit of the provider's first. Dropping the future aborts
    /// the HTTP request at once (the connection is closed).
    pub async fn complete(
        &self,
        provider: &Provider,
        request: &ChatRequest,
        mut on_token: impl FnMut(&str),
    ) -> Result<Completion, LlmError> {
        let _permit = provider.permits.acquire().await.map_err(|_| LlmError::Unreachable {
            provider: provider.name.clone(),
            message: "the provider is closed".into(),
        })?;
        let url = format!("{}/chat/completions", provider.base_url);
        let body = body(request);
        let unreachable = |err: reqwest::Error| LlmError::Unreachable {
            provider: provider.name.clone(),
            // Without the URL's query or the headers: only what went wrong.
            message: err.without_url().to_string(),
        };
        let mut tries = 0;
        let response = loop {
            tries += 1;
            let mut call = self.client.post(&url).json(&body);
            if let Some(ApiKey(key)) = &provider.key {
                call = call.bearer_auth(key);
            }
            let response = call.send().await.map_err(unreachable)?;
            let status = response.status();
            if status.is_success() {
                break response;
            }
            if let Some(wait) = retry_after(status, response.headers(), tries) {
                tracing::info!(provider = %provider.name, status = status.as_u16(), wait_ms = wait.as_millis() as u64,
                    "the provider asked to wait; trying again");
                tokio::time::sleep(wait).await;
                continue;
            }
            let text = response.text().await.unwrap_or_default();
            return Err(LlmError::Refused {
                provider: provider.name.clone(),
                status: status.as_u16(),
                body: text.chars().take(300).collect(),
            });
        };
        let mut completion = Completion {
            text: String::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            tries,
        };
        let mut stream = response.bytes_stream();
        let mut pending: Vec<u8> = Vec::new();
        let bad = |message: String| LlmError::BadStream {
            provider: provider.name.clone(),
            message,
        };
        'stream: while let Some(chunk) = stream.next().await {
            pending.extend_from_slice(&chunk.map_err(unreachable)?);
            while let Some(end) = pending.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = std::str::from_utf8(&line).map_err(|err| bad(err.to_string()))?.trim();
                let Some(data) = line.strip_prefix("data:").map(str::trim) else {
                    continue;
                };
                if data == "[DONE]" {
                    break 'stream;
                }
                let event: Value = serde_json::from_str(data).map_err(|err| bad(format!("{err} in `{data}`")))?;
                if let Some(text) = event
                    .pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
                    .filter(|text| !text.is_empty())
                {
                    on_token(text);
                    completion.text.push_str(text);
                }
                if let Some(usage) = event.get("usage").filter(|usage| usage.is_object()) {
                    let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
                    completion.prompt_tokens = count("prompt_tokens");
                    completion.completion_tokens = count("completion_tokens");
                }
            }
        }
        Ok(completion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn providers_come_from_the_environment_and_never_print_their_key() {
        let providers = Providers::from_vars(vars(&[
            ("WEFT_LLM_BASE_URL", "http://127.0.0.1:9/v1/"),
            ("WEFT_LLM_API_KEY", "sk-secret"),
            ("WEFT_LLM_MODEL", "small"),
            ("WEFT_LLM_PROVIDERS", "fast"),
            ("WEFT_LLM_FAST_BASE_URL", "http://fast/v1"),
            ("WEFT_LLM_FAST_MAX_CONCURRENT", "2"),
        ]))
        .unwrap();
        let default = providers.get(None).unwrap();
        assert_eq!(
            (default.base_url.as_str(), default.model.as_deref()),
            ("http://127.0.0.1:9/v1", Some("small"))
        );
        assert!(!format!("{providers:?}").contains("sk-secret"));
        assert_eq!(providers.get(Some("fast")).unwrap().permits.available_permits(), 2);
        assert!(providers.get(Some("slow")).is_none());
        let priced = Providers::from_vars(vars(&[("WEFT_LLM_PRICES", "m1=1000:2000, m2=0.5:1")])).unwrap();
        assert_eq!(priced.cost("m1", 12, 3), Some(0.018));
        assert_eq!(priced.cost("m3", 12, 3), None);
        assert_eq!(
            Providers::from_vars(vars(&[("WEFT_LLM_PRICES", "m1=free")])).unwrap_err(),
            "WEFT_LLM_PRICES: `m1=free` is not `model=prompt:completion`"
        );
        assert!(!Providers::from_vars(vars(&[])).unwrap().any());
        assert_eq!(
            Providers::from_vars(vars(&[("WEFT_LLM_PROVIDERS", "x")])).unwrap_err(),
            "provider `x` needs WEFT_LLM_X_BASE_URL"
        );
    }

    #[test]
    fn only_429_and_5xx_are_tried_again_after_their_retry_after() {
        let mut headers = reqwest::header::HeaderMap::new();
        let status = |code| reqwest::StatusCode::from_u16(code).unwrap();
        assert_eq!(retry_after(status(400), &headers, 1), None);
        assert_eq!(retry_after(status(503), &headers, 1), Some(Duration::from_millis(500)));
        assert_eq!(
            retry_after(status(503), &headers, 2),
            Some(Duration::from_millis(1_000))
        );
        headers.insert(reqwest::header::RETRY_AFTER, "1".parse().unwrap());
        assert_eq!(retry_after(status(429), &headers, 1), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(status(429), &headers, MAX_TRIES), None, "the last try");
        headers.insert(reqwest::header::RETRY_AFTER, "3600".parse().unwrap());
        assert_eq!(retry_after(status(429), &headers, 1), Some(MAX_RETRY_AFTER));
    }
}
