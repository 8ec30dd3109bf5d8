//! The tools and presets Weft ships: users of the engine, like any tool of one's own.
//!
//! - [`builtin`]: small building blocks for custom graphs (`noop`, `increment`, `sleep`,
//!   `fail`).
//! - [`interrupt`]: a node that waits for a person's answer.
//! - [`llm`]: a node that asks a language model.
//! - [`schema`]: JSON Schema checks, for the tools' configs and answers.
//! - [`code_review`], [`summarize`] and [`data_quality`]: the three presets' tools.
//! - [`presets`]: the ready-made graphs built from them.

pub mod builtin;
pub mod code_review;
pub mod data_quality;
pub mod interrupt;
pub mod llm;
pub mod presets;
pub mod schema;
pub mod summarize;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;

use serde_json::Value;

use crate::engine::{script, CpuPool, Registry};

/// What a list input the state lacks reads as, in the prototype's form of graph.
pub(crate) fn empty_list() -> Value {
    Value::Array(Vec::new())
}

/// A registry with every tool Weft ships.
pub fn default_registry(pool: &CpuPool) -> Registry {
    let mut registry = Registry::new();
    builtin::register(&mut registry);
    code_review::register(&mut registry, pool);
    summarize::register(&mut registry, pool);
    data_quality::register(&mut registry, pool);
    registry.register("script", script::ScriptTool::new(pool.clone()));
    registry.register("interrupt", interrupt::Interrupt::new());
    let providers = crate::llm::Providers::from_env().unwrap_or_else(|err| {
        tracing::error!(error = %err, "the LLM providers are misconfigured: `llm` nodes will fail");
        crate::llm::Providers::default()
    });
    registry.register("llm", llm::Llm::new(std::sync::Arc::new(providers)));
    #[cfg(feature = "test-hooks")]
    test_hooks::register(&mut registry);
    registry
}
