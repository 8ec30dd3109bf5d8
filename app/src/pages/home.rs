//! The start page: the presets gallery and the form that starts a run.
//!
//! The gallery, with each preset's drawing, is rendered by the server only; the form is
//! the [`StartPanel`] island, which also picks the card clicked in the gallery.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::{
    api,
    components::{
        graph::GraphDiagram,
        spec_editor::{LinedEditor, SpecEditor},
    },
    islands::StartPanel,
    wire::{GraphCreated, PresetInfo, RunStarted},
};

/// A small Python file with something to find, for trying the Code Review.
pub const SAMPLE_CODE: &str = r##"def parse_config(path, strict, defaults, env, overrides, verbose):
    # TODO: split this into smaller functions
    config = {}
    with open(path) as handle:
        for line in handle:
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                if strict and key in config:
                    raise ValueError("duplicate key: " + key)
                config[key.strip()] = value.strip()
    for key, value in defaults.items():
        if key not in config:
            config[key] = value
    return config


def total(items):
    return sum(item.price for item in items)
"##;

/// The choice in the gallery.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Choice {
    Preset(String),
    Custom,
}

/// What the start form needs of a preset (the island's props: small, since they travel
/// in the page and the browser decodes them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartChoice {
    /// The preset's name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Its example input, as the state editor shows it.
    pub example: String,
}

impl From<&PresetInfo> for StartChoice {
    fn from(preset: &PresetInfo) -> Self {
        Self {
            name: preset.name.clone(),
            description: preset.description.clone(),
            example: serde_json::to_string_pretty(&preset.example).unwrap_or_default(),
        }
    }
}

/// What validating a JSON editor's text says.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonCheck {
    /// A JSON object.
    Object(Map<String, Value>),
    /// Anything else, with why.
    Invalid(String),
}

/// Checks that `text` is a JSON object (a state or a graph spec).
pub fn check_object(text: &str) -> JsonCheck {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => JsonCheck::Object(map),
        Ok(_) => JsonCheck::Invalid("must be a JSON object: { ... }".into()),
        Err(err) => JsonCheck::Invalid(format!("line {}, column {}: {err}", err.line(), err.column())),
    }
}

/// The Code Review's initial state from the form.
pub fn review_state(code: &str, language: &str, threshold: &str) -> Result<Value, String> {
    if code.trim().is_empty() {
        return Err("Paste or type some code to review.".into());
    }
    let threshold: f64 = threshold
        .trim()
        .parse()
        .ok()
        .filter(|t| (0.0..=100.0).contains(t))
        .ok_or("The threshold must be a number from 0 to 100.")?;
    let mut state = json!({"code": code, "threshold": threshold});
    if !language.is_empty() {
        state["language"] = language.into();
    }
    Ok(state)
}

/// `/`.
#[component]
pub fn HomePage() -> impl IntoView {
    let presets = Resource::new(|| (), |()| api::presets());
    view! {
        <section class="intro">
            <h1>"Start a run"</h1>
            <p class="muted">"Pick a graph, give it its input, and watch it run node by node."</p>
        </section>
        <Suspense fallback=|| view! { <p class="loading">"Loading presets…"</p> }>
            {move || Suspend::new(async move {
                match presets.await {
                    Ok(presets) => {
                        let choices: Vec<StartChoice> = presets.iter().map(StartChoice::from).collect();
                        view! { <Gallery presets/> <StartPanel presets=choices/> }.into_any()
                    }
                    Err(err) => view! { <p class="error-banner" data-testid="error">{err.detail}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// The start form (hydrated as [`crate::islands::StartPanel`]), which follows the card
/// picked in the gallery above it.
#[component]
pub fn StartView(
    /// Every preset, as the form needs it.
    presets: Vec<StartChoice>,
) -> impl IntoView {
    let choice = RwSignal::new(Choice::Preset("code_review".into()));
    #[cfg(feature = "hydrate")]
    pick_from_gallery(choice);
    view! { <StartForm presets choice/> }
}

/// Picks the card clicked in the (server-rendered) gallery, and marks it chosen.
#[cfg(feature = "hydrate")]
fn pick_from_gallery(choice: RwSignal<Choice>) {
    use leptos::{ev, wasm_bindgen::JsCast};

    let clicks = window_event_listener(ev::click, move |event| {
        let card = event
            .target()
            .and_then(|target| target.dyn_into::<web_sys::Element>().ok())
            .and_then(|target| target.closest("[data-testid=gallery] button").ok().flatten())
            .and_then(|button| button.closest("[data-preset]").ok().flatten())
            .and_then(|card| card.get_attribute("data-preset"));
        match card.as_deref() {
            Some("custom") => choice.set(Choice::Custom),
            Some(name) => choice.set(Choice::Preset(name.to_owned())),
            None => {}
        }
    });
    on_cleanup(move || clicks.remove());
    Effect::new(move |_| {
        let chosen = choice.with(|choice| match choice {
            Choice::Preset(name) => name.clone(),
            Choice::Custom => "custom".to_owned(),
        });
        let Ok(cards) = document().query_selector_all("[data-testid=gallery] [data-preset]") else {
            return;
        };
        for index in 0..cards.length() {
            if let Some(card) = cards
                .item(index)
                .and_then(|card| card.dyn_into::<web_sys::Element>().ok())
            {
                let is_chosen = card.get_attribute("data-preset").as_deref() == Some(chosen.as_str());
                let _ = card.class_list().toggle_with_force("chosen", is_chosen);
            }
        }
    });
}

/// The presets, each with its drawing, and the custom graph (rendered by the server
/// only: the form's island picks the card clicked). The Code Review is chosen first.
#[component]
fn Gallery(presets: Vec<PresetInfo>) -> impl IntoView {
    let cards = presets
        .into_iter()
        .map(|preset| {
            let name = preset.name.clone();
            let chosen = name == "code_review";
            let title = match preset.title.as_str() {
                "" => preset.name.replace('_', " "),
                title => title.to_owned(),
            };
            // A preset this server cannot run is shown, not offered: the line says what to set.
            let unavailable = preset.unavailable.clone();
            let disabled = unavailable.is_some();
            view! {
                <li class="card" class:chosen=chosen class:unavailable=disabled data-preset=name.clone()>
                    <button type="button" disabled=disabled>
                        <h3>{title}</h3>
                        <GraphDiagram view=preset.view state=Signal::stored(Vec::new()) compact=true/>
                        <p>{preset.description}</p>
                        {unavailable.map(|why| view! { <p class="why-unavailable" data-testid="unavailable">{why}</p> })}
                    </button>
                </li>
            }
        })
        .collect_view();
    view! {
        <ul class="gallery" data-testid="gallery">
            {cards}
            <li class="card" data-preset="custom">
                <button type="button">
                    <h3>"custom graph"</h3>
                    <p>"Write a graph spec yourself: nodes (each runs a tool), edges, a step limit."</p>
                </button>
            </li>
        </ul>
    }
}

/// Whether a preset is a Code Review, whose input the form asks for as code, language and
/// threshold rather than as JSON.
fn takes_code(preset: &str) -> bool {
    matches!(preset, "code_review" | "code_review_approval" | "code_review_llm")
}

/// Creates the graph (from a preset or a spec), starts the run, and goes to its page.
async fn start(graph: Value, state: Value) -> Result<String, crate::wire::ApiErrorBody> {
    let created: GraphCreated = api::post("/graph/create", &graph).await?;
    let started: RunStarted = api::post(
        "/graph/run",
        &json!({"graph_id": created.graph_id, "initial_state": state}),
    )
    .await?;
    Ok(started.run_id)
}

#[component]
fn StartForm(presets: Vec<StartChoice>, choice: RwSignal<Choice>) -> impl IntoView {
    let code = RwSignal::new(SAMPLE_CODE.to_owned());
    let language = RwSignal::new(String::new());
    let threshold = RwSignal::new("80".to_owned());
    let state_text = RwSignal::new("{\n  \n}".to_owned());
    let spec_text = RwSignal::new(
        serde_json::to_string_pretty(&json!({
            "name": "count to three",
            "start": "count",
            "nodes": [
                {"id": "count", "tool": "increment"},
                {"id": "wait", "tool": "sleep", "config": {"ms": 300}},
                {"id": "report", "tool": "script", "config": {
                    "script": "print(`counted to ${state.count}`); #{done: true}"
                }}
            ],
            "edges": [
                {"from": "count", "to": "wait"},
                {"from": "wait", "branches": [{"when": "state.count < 3", "to": "count"}], "default": "report"}
            ]
        }))
        .unwrap_or_default(),
    );
    let problems = RwSignal::new(Vec::<String>::new());
    let spec_marks = RwSignal::new(Vec::new());
    // A preset's initial state, checked against its input schema as it is typed.
    let state_problems = RwSignal::new(Vec::<String>::new());
    #[cfg(feature = "hydrate")]
    crate::components::spec_editor::validate_as_typed(
        move || {
            let checked = match choice.get() {
                Choice::Preset(name) if !takes_code(&name) => serde_json::from_str::<Value>(&state_text.get())
                    .ok()
                    .map(|state| json!({"preset": name, "initial_state": state})),
                _ => None,
            };
            if checked.is_none() {
                state_problems.set(Vec::new());
            }
            checked
        },
        move |answer| {
            state_problems.set(match answer {
                Ok(_) => Vec::new(),
                Err(err) if err.errors.is_empty() => vec![err.detail],
                Err(err) => err
                    .errors
                    .into_iter()
                    .map(|p| format!("{}: {}", p.path, p.message))
                    .collect(),
            })
        },
    );
    let busy = RwSignal::new(false);

    // Picking a preset puts its example input in the state editor.
    let examples: Vec<(String, String)> = presets.iter().map(|p| (p.name.clone(), p.example.clone())).collect();
    Effect::new(move |_| {
        if let Choice::Preset(name) = choice.get() {
            if let Some((_, example)) = examples.iter().find(|(n, _)| *n == name) {
                state_text.set(example.clone());
            }
        }
    });
    let is_review = move || matches!(choice.get(), Choice::Preset(name) if takes_code(&name));
    let description = move || match choice.get() {
        Choice::Preset(name) => presets.iter().find(|p| p.name == name).map(|p| p.description.clone()),
        Choice::Custom => None,
    };

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let request = match choice.get_untracked() {
            Choice::Preset(name) if takes_code(&name) => review_state(
                &code.get_untracked(),
                &language.get_untracked(),
                &threshold.get_untracked(),
            )
            .map(|state| (json!({"preset": name}), state)),
            Choice::Preset(name) => match check_object(&state_text.get_untracked()) {
                JsonCheck::Object(state) => Ok((json!({"preset": name}), Value::Object(state))),
                JsonCheck::Invalid(why) => Err(format!("Initial state: {why}")),
            },
            Choice::Custom => match (
                check_object(&spec_text.get_untracked()),
                check_object(&state_text.get_untracked()),
            ) {
                (JsonCheck::Object(spec), JsonCheck::Object(state)) => Ok((Value::Object(spec), Value::Object(state))),
                (JsonCheck::Invalid(why), _) => Err(format!("Graph spec: {why}")),
                (_, JsonCheck::Invalid(why)) => Err(format!("Initial state: {why}")),
            },
        };
        let (graph, state) = match request {
            Ok(request) => request,
            Err(why) => return problems.set(vec![why]),
        };
        busy.set(true);
        problems.set(Vec::new());
        leptos::task::spawn_local(async move {
            match start(graph, state).await {
                Ok(run_id) => super::go_to(&format!("/run/{run_id}")),
                Err(err) => {
                    let mut lines = vec![err.detail];
                    lines.extend(err.errors.into_iter().map(|p| format!("{}: {}", p.path, p.message)));
                    problems.set(lines);
                    busy.set(false);
                }
            }
        });
    };

    view! {
        <form class="start-form" on:submit=submit data-testid="start-form">
            <p class="muted">{description}</p>
            <Show
                when=is_review
                fallback=move || view! {
                    <Show when=move || choice.get() == Choice::Custom>
                        <SpecEditor text=spec_text marks=spec_marks/>
                    </Show>
                    <JsonEditor label="Initial state" text=state_text testid="state-editor"/>
                    <ul class="problems" data-testid="state-problems">
                        {move || state_problems.get().into_iter().map(|p| view! { <li>{p}</li> }).collect_view()}
                    </ul>
                }
            >
                <label class="field">
                    <span>"Code"</span>
                    <LinedEditor text=code testid="code"/>
                </label>
                <div class="row">
                    <label class="field">
                        <span>"Language"</span>
                        <select data-testid="language" on:change=move |ev| language.set(event_target_value(&ev))>
                            <option value="">"detect"</option>
                            <option value="python">"Python"</option>
                            <option value="rust">"Rust"</option>
                            <option value="javascript">"JavaScript"</option>
                            <option value="typescript">"TypeScript"</option>
                        </select>
                    </label>
                    <label class="field">
                        <span>"Threshold"</span>
                        <input
                            data-testid="threshold"
                            type="number"
                            min="0"
                            max="100"
                            prop:value=move || threshold.get()
                            on:input=move |ev| threshold.set(event_target_value(&ev))
                        />
                    </label>
                    <button type="button" class="secondary" on:click=move |_| code.set(SAMPLE_CODE.to_owned())>
                        "Load sample"
                    </button>
                </div>
            </Show>
            <ul class="problems" data-testid="problems">
                {move || problems.get().into_iter().map(|p| view! { <li>{p}</li> }).collect_view()}
            </ul>
            <button type="submit" class="primary" data-testid="run" disabled=move || busy.get()>
                {move || if busy.get() { "Starting…" } else { "Run" }}
            </button>
        </form>
    }
}

/// A JSON text area that says, as you type, whether it holds a JSON object.
#[component]
fn JsonEditor(label: &'static str, text: RwSignal<String>, testid: &'static str) -> impl IntoView {
    let verdict = move || match check_object(&text.get()) {
        JsonCheck::Object(map) => (true, format!("valid JSON object ({} key(s))", map.len())),
        JsonCheck::Invalid(why) => (false, why),
    };
    view! {
        <label class="field">
            <span>{label}</span>
            <textarea
                class="json"
                data-testid=testid
                spellcheck="false"
                rows="10"
                prop:value=move || text.get()
                on:input=move |ev| text.set(event_target_value(&ev))
            ></textarea>
            <small class=move || if verdict().0 { "check ok" } else { "check bad" } data-testid=format!("{testid}-check")>
                {move || verdict().1}
            </small>
        </label>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_editors_accept_objects_only_and_say_where_it_breaks() {
        assert!(matches!(check_object(r#"{"a": 1}"#), JsonCheck::Object(map) if map.len() == 1));
        assert_eq!(
            check_object("[1]"),
            JsonCheck::Invalid("must be a JSON object: { ... }".into())
        );
        let JsonCheck::Invalid(why) = check_object("{\n  \"a\": }") else {
            panic!()
        };
        assert!(why.starts_with("line 2, column 8"), "{why}");
    }

    #[test]
    fn the_review_form_builds_its_state_or_says_what_is_wrong() {
        assert_eq!(
            review_state("x = 1", "python", "75").unwrap(),
            json!({"code": "x = 1", "threshold": 75.0, "language": "python"})
        );
        assert_eq!(
            review_state("x = 1", "", "80").unwrap(),
            json!({"code": "x = 1", "threshold": 80.0})
        );
        assert!(review_state("  ", "", "80").is_err());
        assert!(review_state("x", "", "120").is_err());
        assert!(review_state("x", "", "high").is_err());
    }
}
