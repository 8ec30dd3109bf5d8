//! Ready-made graphs, created with `{"preset": NAME}`.

use serde_json::Value;
use weft_app::wire::PresetInfo;

use super::code_review;

/// A named, ready-made graph spec.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    /// The name to ask for.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    spec: fn() -> Value,
}

impl Preset {
    /// The graph spec, in the same form a client would post.
    pub fn spec(&self) -> Value {
        (self.spec)()
    }

    /// The preset as `GET /presets` lists it.
    pub fn info(&self) -> PresetInfo {
        let spec = self.spec();
        let nodes = spec["nodes"]
            .as_object()
            .map(|nodes| nodes.keys().cloned().collect())
            .unwrap_or_default();
        PresetInfo {
            name: self.name.to_owned(),
            description: self.description.to_owned(),
            nodes,
        }
    }
}

/// Every preset.
pub const PRESETS: &[Preset] = &[Preset {
    name: "code_review",
    description: "Extract functions, measure complexity, detect issues, suggest improvements, and refine \
                  until the quality score reaches `threshold` (default 80). Input: `code`, optional `language`.",
    spec: code_review::preset_spec,
}];

/// The preset of this name.
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|preset| preset.name == name)
}
