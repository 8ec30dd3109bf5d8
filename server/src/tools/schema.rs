//! JSON Schema, as the tools use it: checking a schema given in a node's config, and a
//! value against one, every problem with its JSON pointer (jsonschema, a well-kept
//! validator).

use serde_json::Value;
use weft_app::wire::Problem;

/// Why `schema` is not a JSON Schema, if it is not.
pub fn invalid(schema: &Value) -> Option<String> {
    jsonschema::validator_for(schema)
        .err()
        .map(|err| format!("is not a valid JSON Schema: {err}"))
}

/// The problems of `input` against `schema`, each at its JSON pointer in `input`; none
/// when it matches.
pub fn check(schema: &Value, input: &Value) -> Vec<Problem> {
    match jsonschema::validator_for(schema) {
        Ok(validator) => validator
            .iter_errors(input)
            .map(|err| Problem {
                path: err.instance_path.to_string(),
                message: err.to_string(),
            })
            .collect(),
        Err(err) => vec![Problem {
            path: String::new(),
            message: format!("the question's schema cannot be checked: {err}"),
        }],
    }
}

/// Problems in one line: `pointer: message; …`, the root written `/`.
pub fn summary(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", if p.path.is_empty() { "/" } else { &p.path }, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}
