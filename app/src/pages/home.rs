//! The start page: the presets gallery and the form that starts a run.
//!
//! The gallery, with each preset's drawing, is rendered by the server only. Each card is
//! a link to the page with that card chosen (`/?preset=NAME`), and the form below is the
//! island for that kind of input, so a page loads the code of one form: the Code
//! Review's ([`ReviewForm`]), another preset's JSON state ([`StateForm`]), or a custom
//! graph's spec ([`CustomForm`]).

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;
use serde_json::{json, Map, Value};

use crate::{
    api,
    components::{
        graph::GraphDiagram,
        spec_editor::{LinedEditor, SpecEditor},
    },
    islands::{CustomForm, ReviewForm, StateForm},
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

/// What the start form is for: a preset, or a graph of the person's own.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Choice {
    /// A Code Review: code, language and threshold.
    Review(String),
    /// Another preset: its initial state as JSON.
    Preset(String),
    /// A spec written by hand, and its initial state.
    Custom,
}

impl Choice {
    /// The choice `?preset=` names (the Code Review when it names none, or one this
    /// server cannot run).
    fn of(name: Option<String>, presets: &[PresetInfo]) -> Self {
        let name = name.unwrap_or_else(|| "code_review".into());
        if name == "custom" {
            return Self::Custom;
        }
        match presets.iter().find(|p| p.name == name && p.unavailable.is_none()) {
            Some(_) if takes_code(&name) => Self::Review(name),
            Some(_) => Self::Preset(name),
            None => Self::Review("code_review".into()),
        }
    }

    /// The card's `data-preset`.
    fn card(&self) -> &str {
        match self {
            Self::Review(name) | Self::Preset(name) => name,
            Self::Custom => "custom",
        }
    }
}

/// `/`, with the card `?preset=NAME` chosen (else the Code Review).
#[component]
pub fn HomePage() -> impl IntoView {
    let query = use_query_map();
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
                        let choice = Choice::of(query.read().get("preset"), &presets);
                        let chosen = presets.iter().find(|p| p.name == choice.card());
                        let description = chosen.map(|p| p.description.clone());
                        let form = match &choice {
                            Choice::Review(name) => view! { <ReviewForm preset=name.clone()/> }.into_any(),
                            Choice::Preset(name) => {
                                let example = chosen
                                    .map(|p| serde_json::to_string_pretty(&p.example).unwrap_or_default())
                                    .unwrap_or_default();
                                view! { <StateForm preset=name.clone() example/> }.into_any()
                            }
                            Choice::Custom => view! { <CustomForm/> }.into_any(),
                        };
                        view! {
                            <Gallery presets chosen=choice.card().to_owned()/>
                            <div class="start-form" data-testid="start-form">
                                <p class="muted">{description}</p>
                                {form}
                            </div>
                        }
                        .into_any()
                    }
                    Err(err) => view! { <p class="error-banner" data-testid="error">{err.detail}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// The presets, each with its drawing, and the custom graph: each card a link to the
/// start page with that card chosen, so choosing needs no JavaScript, and each page
/// loads the code of its own form only.
#[component]
fn Gallery(presets: Vec<PresetInfo>, chosen: String) -> impl IntoView {
    let cards = presets
        .into_iter()
        .map(|preset| {
            let name = preset.name.clone();
            let title = match preset.title.as_str() {
                "" => preset.name.replace('_', " "),
                title => title.to_owned(),
            };
            let unavailable = preset.unavailable.is_some();
            let inner = view! {
                <h3>{title}</h3>
                <GraphDiagram view=preset.view state=Signal::stored(Vec::new()) compact=true/>
                <p>{preset.description}</p>
            };
            // A preset this server cannot run is shown, not offered: the line says what to set.
            let pick = match preset.unavailable {
                None => view! { <a class="pick" href=format!("/?preset={name}")>{inner}</a> }.into_any(),
                Some(why) => view! {
                    <div class="pick">
                        {inner}
                        <p class="why-unavailable" data-testid="unavailable">{why}</p>
                    </div>
                }
                .into_any(),
            };
            view! {
                <li class="card" class:chosen=name == chosen class:unavailable=unavailable data-preset=name.clone()>
                    {pick}
                </li>
            }
        })
        .collect_view();
    view! {
        <ul class="gallery" data-testid="gallery">
            {cards}
            <li class="card" class:chosen=chosen == "custom" data-preset="custom">
                <a class="pick" href="/?preset=custom">
                    <h3>"custom graph"</h3>
                    <p>"Write a graph spec yourself: nodes (each runs a tool), edges, a step limit."</p>
                </a>
            </li>
        </ul>
    }
}

/// Whether a preset is a Code Review, whose input the form asks for as code, language and
/// threshold rather than as JSON.
fn takes_code(preset: &str) -> bool {
    matches!(preset, "code_review" | "code_review_approval" | "code_review_llm")
}

/// Creates the graph (from a preset or a spec) and starts the run; answers its id. A
/// chunk of its own in the browser, fetched on the first Run: no part of the first load.
#[lazy]
async fn start(graph: Value, state: Value) -> Result<String, crate::wire::ApiErrorBody> {
    let created: GraphCreated = api::post("/graph/create", &graph).await?;
    let started: RunStarted = api::post(
        "/graph/run",
        &json!({"graph_id": created.graph_id, "initial_state": state}),
    )
    .await?;
    Ok(started.run_id)
}

/// What every start form ends with: the problems found, and Run.
#[derive(Clone, Copy)]
struct Launch {
    problems: RwSignal<Vec<String>>,
    busy: RwSignal<bool>,
}

impl Launch {
    fn new() -> Self {
        Self {
            problems: RwSignal::new(Vec::new()),
            busy: RwSignal::new(false),
        }
    }

    /// Starts the run `request` describes (graph, initial state) and opens its page, or
    /// lists why it cannot.
    fn submit(self, request: Result<(Value, Value), String>) {
        let (graph, state) = match request {
            Ok(request) => request,
            Err(why) => return self.problems.set(vec![why]),
        };
        self.busy.set(true);
        self.problems.set(Vec::new());
        leptos::task::spawn_local(async move {
            match start(graph, state).await {
                Ok(run_id) => super::go_to(&format!("/run/{run_id}")),
                Err(err) => {
                    let mut lines = vec![err.detail];
                    lines.extend(err.errors.into_iter().map(|p| format!("{}: {}", p.path, p.message)));
                    self.problems.set(lines);
                    self.busy.set(false);
                }
            }
        });
    }

    fn view(self) -> impl IntoView {
        view! {
            <ul class="problems" data-testid="problems">
                {move || self.problems.get().into_iter().map(|p| view! { <li>{p}</li> }).collect_view()}
            </ul>
            <button type="submit" class="primary" data-testid="run" disabled=move || self.busy.get()>
                {move || if self.busy.get() { "Starting…" } else { "Run" }}
            </button>
        }
    }
}

/// A Code Review's form: the code, a language hint, the threshold (hydrated as
/// [`crate::islands::ReviewForm`]).
#[component]
pub fn ReviewView(
    /// The Code Review preset.
    preset: String,
) -> impl IntoView {
    let code = RwSignal::new(SAMPLE_CODE.to_owned());
    let language = RwSignal::new(String::new());
    let threshold = RwSignal::new("80".to_owned());
    let launch = Launch::new();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let state = review_state(
            &code.get_untracked(),
            &language.get_untracked(),
            &threshold.get_untracked(),
        );
        launch.submit(state.map(|state| (json!({"preset": preset.clone()}), state)));
    };
    view! {
        <form on:submit=submit>
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
            {launch.view()}
        </form>
    }
}

/// Another preset's form: its initial state as JSON, checked against the preset's input
/// schema as it is typed (hydrated as [`crate::islands::StateForm`]).
#[component]
pub fn StateView(
    /// The preset.
    preset: String,
    /// Its example input, which the editor starts with.
    example: String,
) -> impl IntoView {
    let state_text = RwSignal::new(example);
    let state_problems = RwSignal::new(Vec::<String>::new());
    #[cfg(feature = "hydrate")]
    {
        let preset = preset.clone();
        crate::components::spec_editor::validate_as_typed(
            move || {
                let checked = serde_json::from_str::<Value>(&state_text.get())
                    .ok()
                    .map(|state| json!({"preset": preset.clone(), "initial_state": state}));
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
    }
    let launch = Launch::new();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        launch.submit(match check_object(&state_text.get_untracked()) {
            JsonCheck::Object(state) => Ok((json!({"preset": preset.clone()}), Value::Object(state))),
            JsonCheck::Invalid(why) => Err(format!("Initial state: {why}")),
        });
    };
    view! {
        <form on:submit=submit>
            <JsonEditor label="Initial state" text=state_text testid="state-editor"/>
            <ul class="problems" data-testid="state-problems">
                {move || state_problems.get().into_iter().map(|p| view! { <li>{p}</li> }).collect_view()}
            </ul>
            {launch.view()}
        </form>
    }
}

/// The sample spec the custom form starts with: count to three in a loop.
fn sample_spec() -> String {
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
    .unwrap_or_default()
}

/// The custom graph's form: its spec, checked by the server as it is typed, and its
/// initial state (hydrated as [`crate::islands::CustomForm`]).
#[component]
pub fn CustomView() -> impl IntoView {
    let spec_text = RwSignal::new(sample_spec());
    let spec_marks = RwSignal::new(Vec::new());
    let state_text = RwSignal::new("{\n  \n}".to_owned());
    let launch = Launch::new();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        launch.submit(
            match (
                check_object(&spec_text.get_untracked()),
                check_object(&state_text.get_untracked()),
            ) {
                (JsonCheck::Object(spec), JsonCheck::Object(state)) => Ok((Value::Object(spec), Value::Object(state))),
                (JsonCheck::Invalid(why), _) => Err(format!("Graph spec: {why}")),
                (_, JsonCheck::Invalid(why)) => Err(format!("Initial state: {why}")),
            },
        );
    };
    view! {
        <form on:submit=submit>
            <SpecEditor text=spec_text marks=spec_marks/>
            <JsonEditor label="Initial state" text=state_text testid="state-editor"/>
            {launch.view()}
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
