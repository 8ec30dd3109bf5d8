//! A waiting run's question, as a form: drawn from the question's JSON Schema when it is
//! an object of plain fields (a checkbox per boolean, a list per enum, a box per string or
//! number), else a JSON editor. Submitting answers it (`POST /runs/{id}/resume`); the
//! server checks the answer against the schema and names the fields that do not fit.

use leptos::prelude::*;
use serde_json::{Map, Value};

use crate::{format::preview, wire::Interrupt};

/// How one property of an object schema is drawn.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// A checkbox.
    Boolean,
    /// A choice among these strings.
    Choice(Vec<String>),
    /// A line of text (a box of several lines when `multiline`).
    Text {
        /// Whether to give it several lines.
        multiline: bool,
    },
    /// A number (`integer`: a whole one).
    Number {
        /// Whether only whole numbers fit.
        integer: bool,
    },
}

/// One drawn property.
#[derive(Debug, Clone, PartialEq)]
pub struct FormField {
    /// The property's name.
    pub name: String,
    /// Its label: its `title`, else its name.
    pub label: String,
    /// Its `description`.
    pub help: Option<String>,
    /// Whether the schema requires it.
    pub required: bool,
    /// How it is drawn.
    pub field: Field,
}

/// The fields a form draws for `schema`, or `None` when the form cannot draw it (not an
/// object of plain properties): the JSON editor takes it then.
pub fn form_fields(schema: &Value) -> Option<Vec<FormField>> {
    let schema = schema.as_object()?;
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return None;
    }
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let properties = schema.get("properties")?.as_object()?;
    properties
        .iter()
        .map(|(name, property)| {
            let field = field_of(property)?;
            Some(FormField {
                name: name.clone(),
                label: property.get("title").and_then(Value::as_str).unwrap_or(name).to_owned(),
                help: property.get("description").and_then(Value::as_str).map(str::to_owned),
                required: required.contains(&name.as_str()),
                field,
            })
        })
        .collect()
}

fn field_of(property: &Value) -> Option<Field> {
    if let Some(choices) = property.get("enum").and_then(Value::as_array) {
        let choices: Option<Vec<String>> = choices.iter().map(|c| c.as_str().map(str::to_owned)).collect();
        return choices.map(Field::Choice);
    }
    match property.get("type").and_then(Value::as_str)? {
        "boolean" => Some(Field::Boolean),
        "string" => Some(Field::Text {
            multiline: property
                .get("maxLength")
                .and_then(Value::as_u64)
                .is_none_or(|max| max > 200),
        }),
        "number" => Some(Field::Number { integer: false }),
        "integer" => Some(Field::Number { integer: true }),
        _ => None,
    }
}

/// The answer the form's values make: each field read as its type; empty optional fields
/// left out (so the server's check names a missing required one).
pub fn answer_of(fields: &[FormField], values: &Map<String, Value>) -> Result<Value, String> {
    let mut answer = Map::new();
    for field in fields {
        let raw = values.get(&field.name);
        let value = match (&field.field, raw) {
            (Field::Boolean, raw) => Value::Bool(raw.and_then(Value::as_bool).unwrap_or(false)),
            (_, None) => continue,
            (_, Some(Value::String(text))) if text.is_empty() => continue,
            (Field::Number { integer }, Some(Value::String(text))) => {
                let number: f64 = text
                    .trim()
                    .parse()
                    .map_err(|_| format!("{}: not a number", field.label))?;
                if *integer {
                    if number.fract() != 0.0 {
                        return Err(format!("{}: must be a whole number", field.label));
                    }
                    Value::from(number as i64)
                } else {
                    serde_json::Number::from_f64(number)
                        .map(Value::Number)
                        .ok_or_else(|| format!("{}: not a number", field.label))?
                }
            }
            (_, Some(value)) => value.clone(),
        };
        answer.insert(field.name.clone(), value);
    }
    Ok(Value::Object(answer))
}

/// A pending question with its form and Submit, as the server renders it: each control
/// is named after its property, and the form carries the question's id and schema, from
/// which the browser reads the answer ([`answer_of`]) and sends it
/// (`POST /runs/{id}/resume`, see [`crate::follow`]).
#[component]
pub fn QuestionForm(
    /// The question.
    question: Interrupt,
) -> impl IntoView {
    let fields = form_fields(&question.input_schema);
    let context = question
        .context
        .iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => text.clone(),
                other => serde_json::to_string_pretty(other).unwrap_or_else(|_| preview(other, 2_000)),
            };
            view! {
                <div class="question-context">
                    <h4><code>{key.clone()}</code></h4>
                    <pre data-testid="question-context" data-key=key.clone()>{text}</pre>
                </div>
            }
        })
        .collect_view();
    let inputs = match fields {
        Some(fields) => fields
            .into_iter()
            .map(|field| field_input(&question.interrupt_id, field))
            .collect_view()
            .into_any(),
        None => view! {
            <label class="field">
                <span>"Answer (JSON)"</span>
                <textarea class="state-editor" rows="6" data-testid="question-json" name="answer-json"
                    data-key=format!("answer-{}", question.interrupt_id)>"{}"</textarea>
            </label>
        }
        .into_any(),
    };
    view! {
        <section class="question" data-testid="question" data-node=question.node.clone()
            data-interrupt-id=question.interrupt_id.clone()>
            <h2>{format!("Waiting at {} for your answer", question.node)}</h2>
            <p class="prompt" data-testid="question-prompt">{question.prompt.clone()}</p>
            {context}
            <form data-action="answer" data-interrupt-id=question.interrupt_id.clone()
                data-schema=question.input_schema.to_string()>
                {inputs}
                <p class="error-banner" data-testid="question-error" data-role="problem" hidden></p>
                <button type="submit" data-testid="question-submit">"Submit"</button>
            </form>
        </section>
    }
}

/// One field's input, named after its property, and keyed by question and property (so
/// that what is typed in it survives the page's updates).
fn field_input(interrupt_id: &str, field: FormField) -> impl IntoView {
    let testid = format!("field-{}", field.name);
    let key = format!("answer-{interrupt_id}-{}", field.name);
    let name = field.name;
    let input = match field.field {
        Field::Boolean => view! { <input type="checkbox" data-testid=testid name=name data-key=key/> }.into_any(),
        Field::Choice(choices) => view! {
            <select data-testid=testid name=name data-key=key>
                <option value="">"—"</option>
                {choices.into_iter().map(|choice| view! { <option value=choice.clone()>{choice.clone()}</option> }).collect_view()}
            </select>
        }
        .into_any(),
        Field::Text { multiline: true } => {
            view! { <textarea rows="3" data-testid=testid name=name data-key=key></textarea> }.into_any()
        }
        Field::Text { multiline: false } | Field::Number { .. } => {
            view! { <input type="text" data-testid=testid name=name data-key=key/> }.into_any()
        }
    };
    view! {
        <label class="field">
            <span>{field.label}{field.required.then_some(" *")}</span>
            {input}
            {field.help.map(|help| view! { <small class="muted">{help}</small> })}
        </label>
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_object_of_plain_fields_is_drawn_and_anything_else_is_edited_as_json() {
        let schema = json!({"type": "object", "required": ["approved"], "properties": {
            "approved": {"type": "boolean", "title": "Approve"},
            "comment": {"type": "string", "description": "Why"},
            "severity": {"enum": ["low", "high"]},
            "rounds": {"type": "integer"}
        }});
        let fields = form_fields(&schema).unwrap();
        let drawn: Vec<(&str, &str, bool, &Field)> = fields
            .iter()
            .map(|f| (f.name.as_str(), f.label.as_str(), f.required, &f.field))
            .collect();
        assert_eq!(
            drawn,
            [
                ("approved", "Approve", true, &Field::Boolean),
                ("comment", "comment", false, &Field::Text { multiline: true }),
                (
                    "severity",
                    "severity",
                    false,
                    &Field::Choice(vec!["low".into(), "high".into()])
                ),
                ("rounds", "rounds", false, &Field::Number { integer: true }),
            ],
            "in the schema's order"
        );
        assert_eq!(form_fields(&json!({"type": "array"})), None);
        assert_eq!(
            form_fields(&json!({"type": "object", "properties": {"nested": {"type": "object"}}})),
            None
        );
    }

    #[test]
    fn the_answer_reads_each_field_as_its_type() {
        let schema = json!({"type": "object", "properties": {
            "approved": {"type": "boolean"}, "comment": {"type": "string"}, "rounds": {"type": "integer"}
        }});
        let fields = form_fields(&schema).unwrap();
        let values: Map<String, Value> = json!({"comment": "fine", "rounds": "3"}).as_object().unwrap().clone();
        assert_eq!(
            answer_of(&fields, &values).unwrap(),
            json!({"approved": false, "comment": "fine", "rounds": 3})
        );
        let empty: Map<String, Value> = json!({"comment": ""}).as_object().unwrap().clone();
        assert_eq!(answer_of(&fields, &empty).unwrap(), json!({"approved": false}));
        let bad: Map<String, Value> = json!({"rounds": "2.5"}).as_object().unwrap().clone();
        assert_eq!(answer_of(&fields, &bad).unwrap_err(), "rounds: must be a whole number");
    }
}
