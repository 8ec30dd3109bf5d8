//! The Code Review (LLM) preset: the rule-based `extract`, `complexity` and `detect`,
//! then `review`, an `llm` node answering suggestions and a revised code as structured
//! output, then `assess_review`, which puts them where the report reads them and
//! decides whether the revision is measured again.
//!
//! The score stays the rule-based one of the code under review, never the model's own
//! word, and a pass is made only while the model changes the code: the loop ends by
//! construction, after [`LLM_MAX_PASSES`] revisions at most.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use weft_app::wire::State;

use super::{issues::quality_score, read, revise, revisions, subject, write, Issue, Standing};
use crate::engine::tool::{Cancel, Outcome, ToolError};

/// Revisions by the model at most: each is a paid call.
pub const LLM_MAX_PASSES: usize = 3;

/// The state key the model's answer is written to.
const ANSWER_KEY: &str = "llm_review";

/// The system message (a minijinja template over the state).
const SYSTEM: &str = "You review {{ language }} code. Answer with JSON only, matching the schema: \
`suggestions` holds one entry for each issue listed, with its `line` and `type`, then any other \
improvement worth making; `revised_code` is the whole code with your improvements made, or the \
code unchanged when it needs none; `summary` says in one sentence what you changed.";

/// The user message: the code under review (the original, or the latest revision) and
/// the issues `detect` found in it.
const PROMPT: &str = "{% set found = (revisions|last).issues if revisions else issues -%}
{{ 'Your revision from the last pass' if revisions else 'The code' }}, in {{ language }}:

```
{{ revised_code if revisions else code }}
```

Issues a linter finds in it:
{% for issue in found -%}
- line {{ issue.line }}, {{ issue.type }}: {{ issue.message }}
{% else -%}
- none
{% endfor %}";

/// The answer's JSON Schema, strict as OpenAI's structured outputs want it.
fn answer_schema() -> Value {
    json!({
        "type": "object",
        "required": ["suggestions", "revised_code", "summary"],
        "additionalProperties": false,
        "properties": {
            "suggestions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["line", "type", "suggestion"],
                    "additionalProperties": false,
                    "properties": {
                        "line": {"type": "integer", "minimum": 0},
                        "type": {"type": "string"},
                        "suggestion": {"type": "string"}
                    }
                }
            },
            "revised_code": {"type": "string"},
            "summary": {"type": "string"}
        }
    })
}

/// The preset's graph: the Code Review's first three nodes, then the model's review.
pub fn llm_preset_spec() -> Value {
    json!({
        "nodes": {
            "extract": {},
            "complexity": {},
            "detect": {},
            "review": {
                "tool": "llm",
                "config": {
                    "system": SYSTEM,
                    "prompt": PROMPT,
                    "temperature": 0.2,
                    "output_key": ANSWER_KEY,
                    "json_schema": answer_schema()
                },
                "timeout_ms": 120_000
            },
            "assess_review": {}
        },
        "edges": {
            "extract": "complexity",
            "complexity": "detect",
            "detect": "review",
            "review": "assess_review",
            "assess_review": null
        }
    })
}

/// The model's answer, as its schema has it.
#[derive(Deserialize)]
struct Answer {
    suggestions: Vec<Value>,
    revised_code: String,
    summary: String,
}

/// `assess_review`: writes the model's suggestions and the rule-based score where
/// `suggest` would, then ends the review or makes the model's code the next revision.
pub(super) fn assess_review(state: &State, _: &Cancel) -> Result<Outcome, ToolError> {
    let subject = subject(state)?;
    let answer: Answer = match state.get(ANSWER_KEY) {
        Some(value) => Answer::deserialize(value)
            .map_err(|err| ToolError::InvalidInput(format!("`{ANSWER_KEY}` is not a review: {err}")))?,
        None => {
            return Err(ToolError::InvalidInput(format!(
                "`{ANSWER_KEY}` is missing: run the `llm` review before `assess_review`"
            )))
        }
    };
    let issues: Vec<Issue> = read(state, &subject, "issues")
        .ok_or_else(|| ToolError::InvalidInput("`issues` is missing: run `detect` before `assess_review`".into()))?;
    let score = quality_score(&issues);
    let mut values = Map::new();
    values.insert("suggestions".into(), Value::Array(answer.suggestions));
    values.insert("quality_score".into(), score.into());
    let update = write(state, &subject, values);

    let standing = Standing::of(state, score)?;
    if let Some((verdict, why)) = standing.settled(LLM_MAX_PASSES) {
        return Ok(standing.verdict(update, verdict, why));
    }
    let threshold = standing.threshold;
    if answer.revised_code.trim().is_empty() || answer.revised_code == subject.code {
        return Ok(standing.verdict(
            update,
            "no_further_changes",
            format!("score {score} is under the threshold {threshold}, and the model changed nothing"),
        ));
    }
    // A revision's results were written into the list: build on that one.
    let all = match update.get("revisions") {
        Some(Value::Array(all)) => all.clone(),
        _ => revisions(state).to_vec(),
    };
    let mut entry = Map::new();
    entry.insert("by".into(), "llm".into());
    entry.insert("summary".into(), answer.summary.into());
    let pass = standing.passes + 1;
    Ok(revise(update, all, answer.revised_code, entry).note(format!(
        "score {score} < {threshold}: pass {pass} takes the model's revision"
    )))
}

#[cfg(test)]
mod tests {
    use minijinja::Environment;

    use super::*;
    use crate::engine::tool::Next;

    fn state(value: Value) -> State {
        value.as_object().cloned().unwrap_or_default()
    }

    fn answer(revised: &str) -> Value {
        json!({"suggestions": [{"line": 2, "type": "todo", "suggestion": "Handle None."}],
               "revised_code": revised, "summary": "Handled None."})
    }

    fn todo_issue() -> Value {
        json!([{"line": 2, "type": "todo", "severity": "low", "text": "# TODO", "message": "a TODO"}])
    }

    #[test]
    fn the_prompt_shows_the_code_under_review_and_its_issues() {
        let env = Environment::new();
        let render = |state: Value| env.render_str(PROMPT, state).unwrap();
        let first = render(json!({"language": "python", "code": "def f():\n    pass", "issues": todo_issue()}));
        assert_eq!(
            first,
            "The code, in python:\n\n```\ndef f():\n    pass\n```\n\nIssues a linter finds in it:\n- line 2, todo: a TODO\n"
        );
        let later = render(json!({"language": "python", "code": "old", "issues": todo_issue(),
                                  "revised_code": "new", "revisions": [{"pass": 1, "issues": []}]}));
        assert_eq!(
            later,
            "Your revision from the last pass, in python:\n\n```\nnew\n```\n\nIssues a linter finds in it:\n- none\n"
        );
        assert!(env
            .render_str(SYSTEM, json!({"language": "rust"}))
            .unwrap()
            .starts_with("You review rust code."));
    }

    #[test]
    fn a_changed_answer_under_the_threshold_becomes_the_next_revision() {
        let before = state(json!({"code": "a\n# TODO\n", "issues": todo_issue(), "threshold": 100,
                                  "llm_review": answer("a\n")}));
        let outcome = assess_review(&before, &Cancel::never()).unwrap();
        assert!(matches!(&outcome.next, Next::Node(node) if node == "complexity"));
        assert_eq!(outcome.update["suggestions"], answer("")["suggestions"]);
        assert_eq!(outcome.update["quality_score"], 98);
        assert_eq!(outcome.update["revised_code"], "a\n");
        assert_eq!(
            outcome.update["revisions"],
            json!([{"by": "llm", "summary": "Handled None.", "pass": 1}])
        );
        assert!(!outcome.update.contains_key("assessment"));
    }

    #[test]
    fn the_review_ends_at_the_threshold_when_the_model_changes_nothing_and_at_the_pass_cap() {
        let met = state(json!({"code": "a\n# TODO\n", "issues": todo_issue(), "llm_review": answer("b")}));
        let outcome = assess_review(&met, &Cancel::never()).unwrap();
        assert!(matches!(outcome.next, Next::Edge));
        assert_eq!(outcome.update["assessment"]["verdict"], "threshold_met");
        assert!(!outcome.update.contains_key("revised_code"));

        let same = state(json!({"code": "a\n# TODO\n", "issues": todo_issue(), "threshold": 100,
                                "llm_review": answer("a\n# TODO\n")}));
        let outcome = assess_review(&same, &Cancel::never()).unwrap();
        assert_eq!(outcome.update["assessment"]["verdict"], "no_further_changes");

        // Three revisions made: the latest one's results go into its entry, and the loop ends.
        let revisions: Vec<Value> = (1..=3)
            .map(|pass| json!({"pass": pass, "by": "llm", "issues": todo_issue()}))
            .collect();
        let capped = state(
            json!({"code": "a", "revised_code": "c", "revisions": revisions, "threshold": 100,
                                  "issues": [], "llm_review": answer("d")}),
        );
        let outcome = assess_review(&capped, &Cancel::never()).unwrap();
        assert_eq!(
            outcome.update["assessment"],
            json!({"verdict": "pass_limit", "quality_score": 98, "threshold": 100.0, "passes": 3})
        );
        assert_eq!(outcome.update["revisions"][2]["quality_score"], 98);
        assert_eq!(
            outcome.update["revisions"][2]["suggestions"][0]["suggestion"],
            "Handle None."
        );
        assert!(
            !outcome.update.contains_key("quality_score"),
            "the original's score is kept"
        );
    }

    #[test]
    fn a_missing_or_malformed_answer_fails_the_node_saying_so() {
        let missing = state(json!({"code": "a", "issues": []}));
        let err = assess_review(&missing, &Cancel::never()).unwrap_err();
        assert!(err.to_string().contains("`llm_review` is missing"), "{err}");
        let malformed = state(json!({"code": "a", "issues": [], "llm_review": "looks fine"}));
        let err = assess_review(&malformed, &Cancel::never()).unwrap_err();
        assert!(err.to_string().contains("`llm_review` is not a review"), "{err}");
    }
}
