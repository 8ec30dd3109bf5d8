//! The graph spec editor: the text with its line numbers, checked as it is typed. A
//! moment after the last key, the spec goes to `POST /graph/validate` (which stores
//! nothing), and each problem it answers is marked on the line it is about and listed
//! beside the text, before anyone presses Run. [`validate_as_typed`] does the same for a
//! preset's initial state, and [`LinedEditor`] (the text with its numbered, markable lines)
//! serves the Code Review's code editor too.

use std::collections::HashMap;

use leptos::prelude::*;

use crate::json_lines::{line_of, value_lines};
#[cfg(feature = "hydrate")]
use crate::wire::{ApiErrorBody, GraphValidated, Problem};

/// How long typing must pause before the spec is checked.
#[cfg(feature = "hydrate")]
const PAUSE: std::time::Duration = std::time::Duration::from_millis(300);

/// One problem the server found, placed on its line.
#[derive(Debug, Clone, PartialEq)]
pub struct Marked {
    /// The line (1-based) it is marked on.
    pub line: usize,
    /// Where in the spec, as a JSON pointer.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// A warning (the spec is valid) rather than an error.
    pub warning: bool,
}

/// Places each problem at its pointer on its line in `text`.
pub fn place(text: &str, problems: impl IntoIterator<Item = (String, String)>, warning: bool) -> Vec<Marked> {
    let lines = value_lines(text);
    problems
        .into_iter()
        .map(|(path, message)| Marked {
            line: line_of(&lines, &path).unwrap_or(1),
            path,
            message,
            warning,
        })
        .collect()
}

/// Sends `body()` to `POST /graph/validate` a moment after it last changed (when it is
/// `Some`), and hands the answer to `answered`; an answer about an older body is dropped.
#[cfg(feature = "hydrate")]
pub fn validate_as_typed(
    body: impl Fn() -> Option<serde_json::Value> + 'static,
    answered: impl Fn(Result<GraphValidated, ApiErrorBody>) + Copy + 'static,
) {
    let generation = StoredValue::new(0u64);
    Effect::new(move |_| {
        let body = body();
        generation.update_value(|n| *n += 1);
        let mine = generation.get_value();
        let Some(body) = body else {
            return;
        };
        set_timeout(
            move || {
                if generation.get_value() != mine {
                    return;
                }
                leptos::task::spawn_local(async move {
                    let answer = crate::api::post("/graph/validate", &body).await;
                    if generation.get_value() == mine {
                        answered(answer);
                    }
                });
            },
            PAUSE,
        );
    });
}

/// The spec editor over `text`; `marks` holds what the last check found.
#[component]
pub fn SpecEditor(
    /// The spec's text, as typed.
    text: RwSignal<String>,
    /// The problems the last check found, each on its line.
    marks: RwSignal<Vec<Marked>>,
) -> impl IntoView {
    #[cfg(feature = "hydrate")]
    validate_as_typed(
        move || match serde_json::from_str::<serde_json::Value>(&text.get()) {
            Ok(body) => Some(body),
            // Text that is not JSON: its first syntax error, on its line, at once.
            Err(err) => {
                marks.set(vec![Marked {
                    line: err.line().max(1),
                    path: String::new(),
                    message: format!("not JSON: {err}"),
                    warning: false,
                }]);
                None
            }
        },
        move |answer| {
            let spec = text.get_untracked();
            let pairs = |problems: Vec<Problem>| problems.into_iter().map(|p| (p.path, p.message));
            marks.set(match answer {
                Ok(valid) => place(&spec, pairs(valid.warnings), true),
                Err(err) if err.errors.is_empty() => place(&spec, [(String::new(), err.detail)], false),
                Err(err) => place(&spec, pairs(err.errors), false),
            });
        },
    );

    let listed = move || {
        marks
            .get()
            .into_iter()
            .map(|mark| {
                let class = if mark.warning { "warning" } else { "error" };
                view! {
                    <li class=class data-line=mark.line>
                        <strong>{format!("line {}", mark.line)}</strong>
                        {(!mark.path.is_empty()).then(|| view! { " " <code>{mark.path.clone()}</code> })}
                        " " {mark.message}
                    </li>
                }
            })
            .collect_view()
    };

    view! {
        <div class="spec-editor">
            <label class="field">
                <span>"Graph spec"</span>
                <LinedEditor text testid="spec-editor" marks/>
            </label>
            <ul class="spec-problems" data-testid="spec-problems">{listed}</ul>
        </div>
    }
}

/// A text area with its line numbers beside it (`{testid}-gutter`), each line with a
/// problem in `marks` marked; it grows with the text.
#[component]
pub fn LinedEditor(
    /// The text, as typed.
    text: RwSignal<String>,
    /// The text area's `data-testid`.
    testid: &'static str,
    /// Problems to mark on their lines, if any.
    #[prop(optional)]
    marks: Option<RwSignal<Vec<Marked>>>,
) -> impl IntoView {
    let gutter = move || {
        let count = text.with(|text| text.lines().count()).max(1);
        let mut by_line: HashMap<usize, Marked> = HashMap::new();
        if let Some(marks) = marks {
            marks.with(|marks| {
                for mark in marks.iter().rev() {
                    by_line.insert(mark.line, mark.clone());
                }
            });
        }
        (1..=count)
            .map(|line| {
                let mark = by_line.get(&line);
                let class = match mark {
                    Some(mark) if mark.warning => "ln warned",
                    Some(_) => "ln marked",
                    None => "ln",
                };
                view! {
                    <span class=class data-line=line title=mark.map(|m| m.message.clone())>{line}</span>
                }
            })
            .collect_view()
    };
    let rows = move || text.with(|text| text.lines().count()).clamp(12, 400) + 1;
    view! {
        <div class="code-editor">
            <pre class="gutter" aria-hidden="true" data-testid=format!("{testid}-gutter")>{gutter}</pre>
            <textarea
                data-testid=testid
                spellcheck="false"
                wrap="off"
                rows=rows
                prop:value=move || text.get()
                on:input=move |ev| text.set(event_target_value(&ev))
            ></textarea>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_land_on_the_lines_of_their_pointers() {
        let text = "{\n  \"nodes\": [\n    {\"id\": \"a\", \"tool\": \"teleport\"}\n  ],\n  \"edges\": []\n}";
        let marks = place(
            text,
            [
                ("/nodes/0/tool".to_owned(), "not a tool".to_owned()),
                ("/start".to_owned(), "missing".to_owned()),
            ],
            false,
        );
        assert_eq!(
            marks.iter().map(|m| (m.line, m.path.as_str())).collect::<Vec<_>>(),
            [(3, "/nodes/0/tool"), (1, "/start")]
        );
        assert!(!marks[0].warning);
    }
}
