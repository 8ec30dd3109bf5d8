//! Ready-made graphs, created with `{"preset": NAME}`.

use serde_json::Value;
use weft_app::wire::PresetInfo;

use super::{code_review, data_quality, summarize};
use crate::engine::{Graph, GraphError, Registry};

/// A named, ready-made graph spec.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    /// The name to ask for.
    pub name: &'static str,
    /// Its name for people.
    pub title: &'static str,
    /// What it does.
    pub description: &'static str,
    spec: fn() -> Value,
    example: fn() -> Value,
    input: fn() -> Value,
}

impl Preset {
    /// The graph spec, in the same form a client would post.
    pub fn spec(&self) -> Value {
        (self.spec)()
    }

    /// What the preset takes, as a JSON Schema.
    pub fn input_schema(&self) -> Value {
        (self.input)()
    }

    /// The preset as `GET /presets` lists it, its graph laid out for drawing.
    pub fn info(&self, registry: &Registry) -> Result<PresetInfo, GraphError> {
        let spec = self.spec();
        let graph = Graph::parse(&spec, registry)?;
        Ok(PresetInfo {
            name: self.name.to_owned(),
            title: self.title.to_owned(),
            unavailable: graph.unavailable().first().map(|problem| problem.message.clone()),
            description: self.description.to_owned(),
            nodes: graph.node_names().map(str::to_owned).collect(),
            spec,
            view: graph.view().clone(),
            example: (self.example)(),
            input_schema: (self.input)(),
        })
    }
}

/// Every preset.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "code_review",
        title: "Code Review",
        description: "Extract functions, measure complexity, detect issues, suggest improvements, and refine \
                  until the quality score reaches `threshold` (default 80). Input: `code`, optional `language`.",
        spec: code_review::preset_spec,
        example: code_review::example_input,
        input: code_review::input_schema,
    },
    Preset {
        name: "code_review_approval",
        title: "Code Review with approval",
        description: "The Code Review, then a person's approval: after the refine loop the run waits, showing \
                  the diff of the revised code, until someone approves or rejects it with a comment \
                  (`approval`). Input: as Code Review.",
        spec: code_review::approval_preset_spec,
        example: code_review::example_input,
        input: code_review::input_schema,
    },
    Preset {
        name: "code_review_llm",
        title: "Code Review (LLM)",
        description: "Extract functions, measure complexity and detect issues as Code Review does, then a language \
                  model writes the suggestions and a revised code (structured output); the revision is measured \
                  again until the score reaches `threshold` (default 80), the model changes nothing, or 3 passes. \
                  Input: `code`, optional `language`. Needs an LLM provider (WEFT_LLM_BASE_URL).",
        spec: code_review::with_llm::llm_preset_spec,
        example: code_review::example_input,
        input: code_review::input_schema,
    },
    Preset {
        name: "summarize",
        title: "Summarization",
        description: "Split `text` into chunks, summarize each, merge, and refine until the summary is at most \
                  `max_chars` characters (default 300). Optional `chunk_chars` (default 600).",
        spec: summarize::preset_spec,
        example: summarize::example_input,
        input: summarize::input_schema,
    },
    Preset {
        name: "data_quality",
        title: "Data Quality",
        description: "Profile a table (`table`: rows as objects, or `csv`), find anomalies, generate cleaning \
                  rules, apply them, and loop until at most `max_anomalies` (default 0) remain.",
        spec: data_quality::preset_spec,
        example: data_quality::example_input,
        input: data_quality::input_schema,
    },
];

/// The preset of this name.
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|preset| preset.name == name)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::tools::schema;

    #[test]
    fn every_preset_s_example_matches_its_input_schema_and_a_wrong_input_does_not() {
        for preset in PRESETS {
            let input = preset.input_schema();
            assert_eq!(schema::invalid(&input), None, "{}", preset.name);
            assert_eq!(schema::check(&input, &(preset.example)()), [], "{}", preset.name);
            // Each takes an object, and needs something in it.
            assert!(!schema::check(&input, &json!([])).is_empty(), "{}", preset.name);
            assert!(!schema::check(&input, &json!({})).is_empty(), "{}", preset.name);
        }
        let summarize = find("summarize").unwrap().input_schema();
        let paths: Vec<String> = schema::check(&summarize, &json!({"text": "x", "max_chars": 5}))
            .into_iter()
            .map(|problem| problem.path)
            .collect();
        assert_eq!(paths, ["/max_chars"]);
    }
}
