//! The run page in the browser: follows the run over its WebSocket and keeps the
//! server-rendered page current.
//!
//! The server renders the run page whole, from the stored run, readable without
//! JavaScript. The browser adds only what this module does, so that the page's wasm
//! stays small (it held a second copy of every view of the page before):
//!
//! - it opens `WS /ws/{id}?since=<last event>`, and on each event reads the page again
//!   and puts its live regions ([`REGIONS`]) in place: HTML over the wire, rendered by
//!   the server's own views. A burst of events costs one read; no region is replaced
//!   while a person types in it;
//! - it shows a model's answer as its tokens arrive (tokens are never stored, so the
//!   server's page cannot hold them), until the step holding the answer is written;
//! - it handles the page's buttons and forms by delegation (pick a step, Cancel, Fork
//!   from here, answer a question), so they work in regions put in place later;
//! - it reconnects after a drop with the same `since`, so no event is lost or doubled.

use leptos::prelude::*;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The ids of the page's elements that the server's page replaces as the run goes on.
pub const REGIONS: [&str; 2] = ["run-head", "run-main"];

/// The WebSocket's condition, as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// Not connected: server-rendered, or the run has ended.
    Idle,
    /// Receiving events.
    Live,
    /// The socket dropped; trying again.
    Reconnecting,
}

/// What the page reads of a WebSocket message: its kind and where it belongs. Everything
/// else in it (states, logs) is on the page the server renders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Seen {
    /// The event's `type`: `step`, `token`, `end`…
    #[serde(rename = "type")]
    pub kind: String,
    /// Its sequence number (0 for tokens and errors, which are not numbered).
    pub seq: u64,
    /// The node it is about.
    pub node: String,
    /// The step it is about.
    pub step: u64,
    /// A token's text.
    pub text: String,
}

/// A model's answer as far as it has streamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streaming {
    /// The step the answering node is.
    pub step: u64,
    /// The node.
    pub node: String,
    /// The text so far.
    pub text: String,
}

/// Adds a token to the answer of its node's step.
pub fn add_token(answers: &mut Vec<Streaming>, token: &Seen) {
    match answers
        .iter_mut()
        .find(|answer| answer.step == token.step && answer.node == token.node)
    {
        Some(answer) => answer.text.push_str(&token.text),
        None => answers.push(Streaming {
            step: token.step,
            node: token.node.clone(),
            text: token.text.clone(),
        }),
    }
}

/// Forgets the answer a written step holds whole. An earlier step of the same node (sent
/// after a later answer's start, on reconnecting) leaves that answer be.
pub fn step_written(answers: &mut Vec<Streaming>, node: &str, step: u64) {
    answers.retain(|answer| answer.node != node || answer.step > step);
}

/// The merge patch (RFC 7396) that turns `before` into `after`, key by key at the top:
/// changed and new keys set, removed ones `null`.
pub fn merge_patch(before: &Value, after: &Map<String, Value>) -> Value {
    let mut patch = Map::new();
    if let Value::Object(before) = before {
        for key in before.keys().filter(|key| !after.contains_key(*key)) {
            patch.insert(key.clone(), Value::Null);
        }
        for (key, value) in after {
            if before.get(key) != Some(value) {
                patch.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(patch)
}

/// What the run page adds to the server's regions (hydrated as
/// [`crate::islands::LiveRun`]): whether it is live, why an action failed, and each
/// model answer as it streams in.
#[component]
pub fn LiveStatus(
    /// The run.
    run_id: String,
    /// The latest event the page was rendered with.
    since: u64,
    /// Whether the run had ended then.
    ended: bool,
    /// When the run was created (Unix milliseconds), for the elapsed time.
    created_at: i64,
    /// The step picked in the timeline, if any.
    step: Option<u64>,
) -> impl IntoView {
    let connection = RwSignal::new(Connection::Idle);
    let answers = RwSignal::new(Vec::<Streaming>::new());
    let problem = RwSignal::new(None::<String>);
    #[cfg(feature = "hydrate")]
    browser::follow(run_id, since, ended, created_at, step, connection, answers, problem);
    #[cfg(not(feature = "hydrate"))]
    let _ = (run_id, since, ended, created_at, step);
    view! {
        {move || match connection.get() {
            Connection::Reconnecting => Some(view! {
                <p class="warning-banner" data-testid="reconnecting">"Connection lost: reconnecting…"</p>
            }.into_any()),
            Connection::Live => Some(view! {
                <p class="live-banner" data-testid="live"><span class="dot"></span>"Live"</p>
            }.into_any()),
            Connection::Idle => None,
        }}
        {move || problem.get().map(|why| view! { <p class="error-banner">{why}</p> })}
        {move || answers.get().into_iter().map(|Streaming { node, text, .. }| view! {
            <section class="streaming">
                <h2>{format!("{node} is answering…")}</h2>
                <pre data-testid="streaming" data-node=node>{text}</pre>
            </section>
        }).collect_view()}
    }
}

#[cfg(feature = "hydrate")]
mod browser {
    //! The parts that need a browser: the socket, the page reads, the DOM.

    use futures::{channel::mpsc, future::AbortHandle, StreamExt};
    use gloo_net::http::Request;
    use gloo_timers::future::TimeoutFuture;
    use leptos::{
        ev,
        prelude::*,
        wasm_bindgen::{closure::Closure, JsCast},
    };
    use serde_json::Value;
    use web_sys::{
        DomParser, Element, HtmlFormElement, HtmlInputElement, HtmlSelectElement, HtmlTextAreaElement, SupportedType,
    };

    use super::*;
    use crate::{
        components::question::{answer_of, form_fields},
        format::millis,
        wire::{ForkRequest, ResumeRequest, Resumed, RunStarted},
    };

    /// What the page knows when it starts following.
    #[derive(Clone)]
    struct Run {
        run_id: String,
        created_at: i64,
        /// The step picked in the timeline (`None`: the latest).
        selected: RwSignal<Option<u64>>,
        /// The latest event seen.
        last_seq: RwSignal<u64>,
        /// Whether the run has ended.
        ended: RwSignal<bool>,
        /// Asks for the page to be read again.
        wake: mpsc::UnboundedSender<()>,
    }

    /// Starts following run `run_id` from event `since` (nothing to follow once `ended`),
    /// and handling the page's buttons and forms.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn follow(
        run_id: String,
        since: u64,
        ended: bool,
        created_at: i64,
        selected: Option<u64>,
        connection: RwSignal<Connection>,
        answers: RwSignal<Vec<Streaming>>,
        problem: RwSignal<Option<String>>,
    ) {
        let (wake, woken) = mpsc::unbounded();
        let run = Run {
            run_id,
            created_at,
            selected: RwSignal::new(selected),
            last_seq: RwSignal::new(since),
            ended: RwSignal::new(ended),
            wake,
        };
        let clicks = {
            let run = run.clone();
            window_event_listener(ev::click, move |event| on_click(&run, event, problem))
        };
        let submits = {
            let run = run.clone();
            window_event_listener(ev::submit, move |event| on_submit(&run, event))
        };
        let (abort, registration) = AbortHandle::new_pair();
        on_cleanup(move || {
            abort.abort();
            clicks.remove();
            submits.remove();
        });
        let reading = refresher(run.clone(), woken);
        let watching = async move {
            if !run.ended.get_untracked() {
                futures::future::join(tick(&run), stream(&run, connection, answers)).await;
            }
        };
        leptos::task::spawn_local(async move {
            let all = futures::future::join(reading, watching);
            let _ = futures::future::Abortable::new(all, registration).await;
        });
    }

    /// Keeps the elapsed time going until the run ends.
    async fn tick(run: &Run) {
        while !run.ended.get_untracked() {
            let elapsed = u64::try_from(js_sys::Date::now() as i64 - run.created_at).unwrap_or(0);
            if let Ok(Some(shown)) = document().query_selector("[data-testid=elapsed]") {
                shown.set_text_content(Some(&millis(elapsed)));
            }
            TimeoutFuture::new(500).await;
        }
    }

    /// A WebSocket's text messages, as a stream that ends when the socket closes or
    /// fails. (Straight on `web_sys`: gloo-net's socket weighed 17 KB gzipped on every
    /// page, as its callbacks stay in the main module.)
    struct Socket {
        socket: web_sys::WebSocket,
        /// Each message's text; `None` once the socket is closed.
        messages: mpsc::UnboundedReceiver<Option<String>>,
        _on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
        _on_end: Closure<dyn FnMut(web_sys::Event)>,
    }

    impl Socket {
        fn open(url: &str) -> Option<Self> {
            let socket = web_sys::WebSocket::new(url).ok()?;
            let (sender, messages) = mpsc::unbounded();
            let on_message = {
                let sender = sender.clone();
                Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |event: web_sys::MessageEvent| {
                    if let Some(text) = event.data().as_string() {
                        let _ = sender.unbounded_send(Some(text));
                    }
                })
            };
            let on_end = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
                let _ = sender.unbounded_send(None);
            });
            socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
            socket.set_onclose(Some(on_end.as_ref().unchecked_ref()));
            socket.set_onerror(Some(on_end.as_ref().unchecked_ref()));
            Some(Self {
                socket,
                messages,
                _on_message: on_message,
                _on_end: on_end,
            })
        }
    }

    impl Drop for Socket {
        fn drop(&mut self) {
            self.socket.set_onmessage(None);
            self.socket.set_onclose(None);
            self.socket.set_onerror(None);
            let _ = self.socket.close();
        }
    }

    /// Reads the socket, reconnecting after a drop, until the run's `end`.
    async fn stream(run: &Run, connection: RwSignal<Connection>, answers: RwSignal<Vec<Streaming>>) {
        let location = window().location();
        let scheme = if location.protocol().unwrap_or_default() == "https:" {
            "wss"
        } else {
            "ws"
        };
        let host = location.host().unwrap_or_default();
        let mut backoff = 250;
        let mut dropped = false;
        loop {
            let since = run.last_seq.get_untracked();
            let url = format!("{scheme}://{host}/ws/{}?since={since}", run.run_id);
            if let Some(mut socket) = Socket::open(&url) {
                connection.set(Connection::Live);
                // The server starts with each answer in progress as far as it has come.
                answers.set(Vec::new());
                if dropped {
                    let _ = run.wake.unbounded_send(());
                }
                while let Some(Some(text)) = socket.messages.next().await {
                    backoff = 250;
                    let Ok(seen) = serde_json::from_str::<Seen>(&text) else {
                        continue;
                    };
                    if seen.kind == "token" {
                        answers.update(|answers| add_token(answers, &seen));
                        continue;
                    }
                    if seen.seq <= run.last_seq.get_untracked() {
                        continue;
                    }
                    run.last_seq.set(seen.seq);
                    if seen.kind == "step" {
                        answers.update(|answers| step_written(answers, &seen.node, seen.step));
                    }
                    if seen.kind == "end" {
                        answers.set(Vec::new());
                        run.ended.set(true);
                        connection.set(Connection::Idle);
                        let _ = run.wake.unbounded_send(());
                        return;
                    }
                    let _ = run.wake.unbounded_send(());
                }
            }
            dropped = true;
            connection.set(Connection::Reconnecting);
            TimeoutFuture::new(backoff).await;
            backoff = (backoff * 2).min(8_000);
        }
    }

    /// Reads the page again each time it is asked to (once for a burst of asks), and
    /// after the end until the page says so too.
    async fn refresher(run: Run, mut woken: mpsc::UnboundedReceiver<()>) {
        while woken.next().await.is_some() {
            let mut tries = 0;
            loop {
                while woken.try_recv().is_ok() {}
                while typing() {
                    TimeoutFuture::new(300).await;
                }
                let page_ended = match refresh(&run.run_id, run.selected.get_untracked()).await {
                    Ok(ended) => ended,
                    Err(why) => {
                        leptos::logging::warn!("could not read the run page again: {why}");
                        false
                    }
                };
                tries += 1;
                // The end is sent once it is stored; a page read as it happens may be
                // a moment behind it.
                if page_ended || !run.ended.get_untracked() || tries == 20 {
                    break;
                }
                TimeoutFuture::new(250).await;
            }
        }
    }

    /// Whether a person is typing in the run page (its regions are then left as they are).
    fn typing() -> bool {
        document().active_element().is_some_and(|element| {
            matches!(element.tag_name().as_str(), "TEXTAREA" | "INPUT" | "SELECT")
                && element.closest("[data-testid=run]").ok().flatten().is_some()
        })
    }

    /// Reads the run page (at `step`) and puts its regions in place, keeping which
    /// `<details>` are open. Answers whether the page shows the run ended.
    async fn refresh(run_id: &str, step: Option<u64>) -> Result<bool, String> {
        let url = match step {
            Some(step) => format!("/run/{run_id}?step={step}"),
            None => format!("/run/{run_id}"),
        };
        let response = Request::get(&url).send().await.map_err(|err| err.to_string())?;
        if !response.ok() {
            return Err(format!("the server answered {}", response.status()));
        }
        let html = response.text().await.map_err(|err| err.to_string())?;
        let fresh = DomParser::new()
            .and_then(|parser| parser.parse_from_string(&html, SupportedType::TextHtml))
            .map_err(|_| "the page could not be read".to_owned())?;
        let page = document();
        for id in REGIONS {
            let (Some(shown), Some(read)) = (page.get_element_by_id(id), fresh.get_element_by_id(id)) else {
                continue;
            };
            let kept = kept(&shown);
            shown.set_inner_html(&read.inner_html());
            restore(&shown, kept);
        }
        Ok(fresh
            .query_selector("[data-testid=status]")
            .ok()
            .flatten()
            .is_some_and(|status| status.get_attribute("data-ended").as_deref() == Some("true")))
    }

    /// What a person did in a region, kept across its replacement: for each keyed
    /// element, whether it is open (a `<details>`) and what it holds (a text box or a
    /// checkbox: an answer half typed, a state being edited for a fork).
    fn kept(region: &Element) -> Vec<(String, bool, Option<Value>)> {
        elements(region, "[data-key]")
            .into_iter()
            .filter_map(|element| {
                let held = value_of(&element);
                Some((element.get_attribute("data-key")?, element.has_attribute("open"), held))
            })
            .collect()
    }

    /// Puts back what [`kept`] read, on the elements with the same keys.
    fn restore(region: &Element, kept: Vec<(String, bool, Option<Value>)>) {
        for (key, open, held) in kept {
            let Ok(Some(element)) = region.query_selector(&format!("[data-key='{key}']")) else {
                continue;
            };
            match held {
                _ if element.tag_name() == "DETAILS" => {
                    let _ = if open {
                        element.set_attribute("open", "")
                    } else {
                        element.remove_attribute("open")
                    };
                }
                Some(Value::Bool(checked)) => {
                    if let Some(input) = element.dyn_ref::<HtmlInputElement>() {
                        input.set_checked(checked);
                    }
                }
                Some(Value::String(text)) => {
                    if let Some(input) = element.dyn_ref::<HtmlInputElement>() {
                        input.set_value(&text);
                    } else if let Some(area) = element.dyn_ref::<HtmlTextAreaElement>() {
                        area.set_value(&text);
                    } else if let Some(select) = element.dyn_ref::<HtmlSelectElement>() {
                        select.set_value(&text);
                    }
                }
                _ => {}
            }
        }
    }

    /// The elements under `root` that match `selector`, in document order.
    fn elements(root: &Element, selector: &str) -> Vec<Element> {
        let Ok(list) = root.query_selector_all(selector) else {
            return Vec::new();
        };
        (0..list.length())
            .filter_map(|index| list.item(index)?.dyn_into::<Element>().ok())
            .collect()
    }

    /// The element an event happened on, if it is in the run page and matches `selector`.
    fn on_page(event: &web_sys::Event, selector: &str) -> Option<Element> {
        let target = event.target()?.dyn_into::<Element>().ok()?;
        target.closest(&format!("[data-testid=run] {selector}")).ok().flatten()
    }

    fn on_click(run: &Run, event: web_sys::MouseEvent, problem: RwSignal<Option<String>>) {
        if let Some(button) = on_page(&event, "button[name=step]") {
            // Picking a step: shown in place, and kept in the address.
            let Some(step) = button.get_attribute("value").and_then(|value| value.parse().ok()) else {
                return;
            };
            event.prevent_default();
            run.selected.set(Some(step));
            if let Ok(history) = window().history() {
                let _ = history.replace_state_with_url(
                    &leptos::wasm_bindgen::JsValue::NULL,
                    "",
                    Some(&format!("?step={step}")),
                );
            }
            let _ = run.wake.unbounded_send(());
        } else if on_page(&event, "[data-action=cancel]").is_some() {
            let path = format!("/runs/{}/cancel", run.run_id);
            leptos::task::spawn_local(async move {
                let answer: Result<Value, _> = crate::api::post(&path, &serde_json::json!({})).await;
                problem.set(answer.err().map(|err| err.detail));
            });
        }
    }

    fn on_submit(run: &Run, event: web_sys::SubmitEvent) {
        let Some(form) = on_page(&event, "form[data-action]").and_then(|form| form.dyn_into::<HtmlFormElement>().ok())
        else {
            return;
        };
        event.prevent_default();
        leptos::task::spawn_local(act(run.run_id.clone(), form));
    }

    /// Shows why a form's action failed in its problem line (`None` hides it).
    fn say(form: &HtmlFormElement, why: Option<String>) {
        if let Ok(Some(line)) = form.query_selector("[data-role=problem]") {
            line.set_text_content(why.as_deref());
            let _ = match why {
                Some(_) => line.remove_attribute("hidden"),
                None => line.set_attribute("hidden", ""),
            };
        }
    }

    /// "Fork from here": starts a run from the step's state with the edits as a merge
    /// patch, and opens it.
    /// Does what a form of the page is for (its `data-action`). A chunk of its own,
    /// fetched when first used: no part of the page's first load.
    #[lazy]
    async fn act(run_id: String, form: HtmlFormElement) {
        match form.get_attribute("data-action").as_deref() {
            Some("fork") => fork(&run_id, &form).await,
            Some("answer") => answer(&run_id, &form).await,
            _ => {}
        }
    }

    async fn fork(run_id: &str, form: &HtmlFormElement) {
        let Some(step) = form.get_attribute("data-step").and_then(|step| step.parse().ok()) else {
            return;
        };
        let Some(editor) = form
            .query_selector("textarea")
            .ok()
            .flatten()
            .and_then(|editor| editor.dyn_into::<HtmlTextAreaElement>().ok())
        else {
            return;
        };
        let before: Value = editor
            .default_value()
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null);
        let edited = match serde_json::from_str::<Value>(&editor.value()) {
            Ok(Value::Object(edited)) => edited,
            Ok(_) => return say(form, Some("the state must be a JSON object".into())),
            Err(err) => return say(form, Some(format!("not JSON: {err}"))),
        };
        let request = ForkRequest {
            from_step: step,
            state_patch: merge_patch(&before, &edited),
            graph_id: None,
        };
        let answer: Result<RunStarted, _> = crate::api::post(&format!("/runs/{run_id}/fork"), &request).await;
        match answer {
            Ok(started) => crate::pages::go_to(&format!("/run/{}", started.run_id)),
            Err(err) => say(form, Some(err.detail)),
        }
    }

    /// The value a form control holds: a checkbox's as a boolean, any other's as text
    /// (`None` for an element that is no control).
    fn value_of(control: &Element) -> Option<Value> {
        if let Some(input) = control.dyn_ref::<HtmlInputElement>() {
            return Some(match input.type_().as_str() {
                "checkbox" => Value::Bool(input.checked()),
                _ => Value::String(input.value()),
            });
        }
        if let Some(area) = control.dyn_ref::<HtmlTextAreaElement>() {
            return Some(Value::String(area.value()));
        }
        control
            .dyn_ref::<HtmlSelectElement>()
            .map(|select| Value::String(select.value()))
    }

    /// Answers the question a form asks (`POST /runs/{id}/resume`).
    async fn answer(run_id: &str, form: &HtmlFormElement) {
        let Some(interrupt_id) = form.get_attribute("data-interrupt-id") else {
            return;
        };
        let schema: Value = form
            .get_attribute("data-schema")
            .and_then(|schema| serde_json::from_str(&schema).ok())
            .unwrap_or(Value::Null);
        let values: Map<String, Value> = elements(form, "[name]")
            .into_iter()
            .filter_map(|control| Some((control.get_attribute("name")?, value_of(&control)?)))
            .collect();
        let input = match form_fields(&schema) {
            Some(fields) => answer_of(&fields, &values),
            None => match values.get("answer-json") {
                Some(Value::String(text)) => serde_json::from_str(text).map_err(|err| format!("not JSON: {err}")),
                _ => Err("no answer".into()),
            },
        };
        let input = match input {
            Ok(input) => input,
            Err(why) => return say(form, Some(why)),
        };
        let request = ResumeRequest { interrupt_id, input };
        let answer: Result<Resumed, _> = crate::api::post(&format!("/runs/{run_id}/resume"), &request).await;
        match answer {
            Ok(_) => {
                say(form, None);
                if let Ok(Some(button)) = form.query_selector("button[type=submit]") {
                    button.set_text_content(Some("Sent"));
                    let _ = button.set_attribute("disabled", "");
                }
            }
            Err(err) => {
                let why = if err.errors.is_empty() {
                    err.detail
                } else {
                    err.errors
                        .iter()
                        .map(|p| format!("{}: {}", if p.path.is_empty() { "answer" } else { &p.path }, p.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                say(form, Some(why));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn token(step: u64, text: &str) -> Seen {
        serde_json::from_value(json!({"type": "token", "run_id": "r", "step": step, "node": "a", "text": text}))
            .unwrap()
    }

    #[test]
    fn messages_are_read_for_their_kind_and_place_only() {
        let step: Seen = serde_json::from_value(json!({
            "type": "step", "run_id": "r", "seq": 7, "step": 3, "node": "a",
            "state": {"big": [1, 2, 3]}, "update": {}, "attempt": 1
        }))
        .unwrap();
        assert_eq!(
            (step.kind.as_str(), step.seq, step.step, step.node.as_str()),
            ("step", 7, 3, "a")
        );
        let error: Seen = serde_json::from_str(r#"{"type": "error", "detail": "gone"}"#).unwrap();
        assert_eq!((error.kind.as_str(), error.seq), ("error", 0));
    }

    #[test]
    fn tokens_grow_a_nodes_text_until_its_step_is_written() {
        let mut answers = Vec::new();
        add_token(&mut answers, &token(1, "Hel"));
        add_token(&mut answers, &token(1, "lo"));
        assert_eq!(
            answers,
            [Streaming {
                step: 1,
                node: "a".into(),
                text: "Hello".into()
            }]
        );
        step_written(&mut answers, "a", 1);
        assert!(answers.is_empty());
        // Reconnected mid-answer: the answer so far comes first, then the stored events,
        // among them an earlier step of the same node, which leaves the answer be.
        add_token(&mut answers, &token(3, "So far"));
        step_written(&mut answers, "a", 1);
        step_written(&mut answers, "b", 3);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].text, "So far");
        step_written(&mut answers, "a", 3);
        assert!(answers.is_empty());
    }

    #[test]
    fn a_fork_sends_only_what_the_edits_changed() {
        let before = json!({"count": 2, "limit": 4, "gone": true});
        let edited = json!({"count": 2, "limit": 7, "new": "x"});
        assert_eq!(
            merge_patch(&before, edited.as_object().unwrap()),
            json!({"gone": null, "limit": 7, "new": "x"})
        );
    }
}
