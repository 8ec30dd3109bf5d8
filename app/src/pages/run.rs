//! The run page: the graph lighting up node by node, the timeline, the state after any
//! step with what changed (and "Fork from here", with that state in an editor), the run's
//! lineage, the log, Cancel, and the Code Review report.
//!
//! The server renders the run as stored (complete, readable without JavaScript); once
//! hydrated, the page follows the run over `WS /ws/{id}?since=<last event>`, and
//! reconnects with the same `since` if the socket drops, so no event is lost or doubled.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;
use serde_json::{Map, Value};

use crate::{
    api::{self, RunPageData},
    components::{
        graph::GraphDiagram,
        question::QuestionForm,
        report::{is_code_review, CodeReviewReport},
    },
    format::{diff, micros, millis, preview, usage, utc},
    islands::LiveRun,
    live::{Entry, RunModel, Streaming},
    wire::{ForkRequest, RunStarted, RunStatus, StepEvent},
};

/// The WebSocket's condition, as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// Not connected (yet): server-rendered, or the run had already ended.
    Idle,
    /// Receiving events.
    Live,
    /// The socket dropped; trying again.
    Reconnecting,
}

/// `/run/{id}`.
#[component]
pub fn RunPage() -> impl IntoView {
    let params = use_params_map();
    let run_id = move || params.read().get("id").unwrap_or_default();
    let data = Resource::new(run_id, api::run_page);
    view! {
        <Suspense fallback=|| view! { <p class="loading">"Loading the run…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(data) => view! { <LiveRun data/> }.into_any(),
                    Err(err) => {
                        if err.code.ends_with("not_found") {
                            api::mark_not_found();
                        }
                        view! {
                        <section class="error-state" data-testid="error">
                            <h1>{if err.code.ends_with("not_found") { "Run not found" } else { "The run cannot be shown" }}</h1>
                            <p>{err.detail}</p>
                            <a href="/history">"See all runs"</a>
                        </section>
                        }.into_any()
                    }
                }
            })}
        </Suspense>
    }
}

/// Elapsed time of a run, in milliseconds, given the clock.
fn elapsed(created_at: i64, finished_at: Option<i64>, now: i64) -> u64 {
    u64::try_from(finished_at.unwrap_or(now) - created_at).unwrap_or(0)
}

/// Everything on the run page, following the run live (hydrated as
/// [`crate::islands::LiveRun`]).
#[component]
pub fn RunView(
    /// The run as stored when the page was read, with its graph.
    data: RunPageData,
) -> impl IntoView {
    let RunPageData { detail, graph, read_at } = data;
    let node_names: Vec<String> = graph.view.nodes.iter().map(|node| node.id.clone()).collect();
    let finished_at = RwSignal::new(detail.run.finished_at);
    let created_at = detail.run.created_at;
    let run_id = detail.run.run_id.clone();
    let forked_from = detail.run.forked_from.clone();
    let forks = detail.forks.clone();
    let title = detail
        .run
        .graph_name
        .as_deref()
        .unwrap_or("custom graph")
        .replace('_', " ");
    let model = RwSignal::new(RunModel::new(detail, &node_names));
    let connection = RwSignal::new(Connection::Idle);
    let now = RwSignal::new(read_at);
    // The step whose state is shown; `None` follows the latest.
    let selected = RwSignal::new(None::<usize>);

    #[cfg(feature = "hydrate")]
    follow(run_id.clone(), model, connection, now, finished_at);

    let nodes_state = Signal::derive(move || {
        model.with(|m| {
            node_names
                .iter()
                .map(|name| {
                    let steps = m.finished_at_steps.get(name).cloned().unwrap_or_default();
                    (name.clone(), m.node_state(name), steps)
                })
                .collect::<Vec<_>>()
        })
    });
    let status = move || model.with(|m| m.status);
    let cancel_error = RwSignal::new(None::<String>);
    let cancel_id = run_id.clone();
    let cancel = move |_| {
        let run_id = cancel_id.clone();
        leptos::task::spawn_local(async move {
            let answer: Result<serde_json::Value, _> =
                api::post(&format!("/runs/{run_id}/cancel"), &serde_json::json!({})).await;
            cancel_error.set(answer.err().map(|err| err.detail));
        });
    };

    view! {
        <section class="run" data-testid="run" data-run-id=run_id.clone()>
            <header class="run-head">
                <div>
                    <h1>{title}</h1>
                    <p class="muted"><code>{run_id.clone()}</code> " · started " {utc(created_at)} " UTC"</p>
                    <Lineage forked_from forks/>
                </div>
                <div class="run-stats">
                    <span class=move || format!("status-badge {}", status().as_str()) data-testid="status">
                        {move || status().as_str()}
                    </span>
                    <span class="stat" data-testid="step-count">
                        {move || format!("{} step(s)", model.with(|m| m.steps.len()))}
                    </span>
                    <span class="stat" data-testid="elapsed">
                        {move || millis(elapsed(created_at, finished_at.get(), now.get()))}
                    </span>
                    {move || model.with(RunModel::usage).map(|used| view! {
                        <span class="stat" data-testid="run-usage" title="model tokens and cost">{usage(&used)}</span>
                    })}
                    <Show when=move || !status().is_terminal()>
                        <button class="danger" data-testid="cancel" on:click=cancel.clone()>"Cancel"</button>
                    </Show>
                </div>
            </header>
            <ConnectionBanner connection status=Signal::derive(status)/>
            {move || cancel_error.get().map(|err| view! { <p class="error-banner">{err}</p> })}
            {move || model.with(|m| m.error.clone()).map(|err| view! {
                <p class="error-banner" data-testid="run-error">{err}</p>
            })}
            {move || model.with(|m| m.streaming.clone()).into_iter().map(|Streaming { node, text, .. }| view! {
                <section class="streaming">
                    <h2>{format!("{node} is answering…")}</h2>
                    <pre data-testid="streaming" data-node=node.clone()>{text}</pre>
                </section>
            }).collect_view()}
            {
                let run_id = run_id.clone();
                move || {
                    let run_id = run_id.clone();
                    model
                        .with(|m| m.pending.clone())
                        .into_iter()
                        .map(move |question| view! { <QuestionForm run_id=run_id.clone() question/> })
                        .collect_view()
                }
            }
            <div class="graph-panel">
                {graph.description.clone().map(|text| view! { <p class="muted graph-description">{text}</p> })}
                <GraphDiagram view=graph.view.clone() state=nodes_state/>
                {(!graph.warnings.is_empty()).then(|| view! {
                    <ul class="graph-warnings" data-testid="graph-warnings">
                        {graph.warnings.iter().map(|warning| view! {
                            <li><code>{warning.path.clone()}</code> " " {warning.message.clone()}</li>
                        }).collect_view()}
                    </ul>
                })}
            </div>
            <div class="run-body">
                <Timeline model selected/>
                <StepDetail model selected run_id=run_id.clone()/>
            </div>
            <details class="log" open>
                <summary>"Log"</summary>
                <pre data-testid="log">{move || model.with(|m| m.log.join("\n"))}</pre>
            </details>
            {move || {
                let state = model.with(|m| m.ended().then(|| m.state.clone()));
                state.filter(is_code_review).map(|state| view! { <CodeReviewReport state/> })
            }}
        </section>
    }
}

#[component]
fn ConnectionBanner(connection: RwSignal<Connection>, status: Signal<RunStatus>) -> impl IntoView {
    move || match (connection.get(), status.get().is_terminal()) {
        (Connection::Reconnecting, false) => Some(
            view! {
                <p class="warning-banner" data-testid="reconnecting">"Connection lost: reconnecting…"</p>
            }
            .into_any(),
        ),
        (Connection::Live, false) => Some(
            view! {
                <p class="live-banner" data-testid="live"><span class="dot"></span>"Live"</p>
            }
            .into_any(),
        ),
        _ => None,
    }
}

#[component]
fn Timeline(model: RwSignal<RunModel>, selected: RwSignal<Option<usize>>) -> impl IntoView {
    let rows = move || {
        model.with(|m| {
            let latest = m.steps.len().checked_sub(1);
            let current = selected.get().or(latest);
            m.timeline
                .iter()
                .map(|entry| match entry {
                    Entry::Step(index) => {
                        let index = *index;
                        let step: &StepEvent = &m.steps[index];
                        let class = if current == Some(index) { "entry step selected" } else { "entry step" };
                        let failed = step.error.is_some();
                        view! {
                            <li class=class class:failed=failed data-testid="timeline-step" data-node=step.node.clone()>
                                <button on:click=move |_| selected.set(Some(index))>
                                    <span class="n">{format!("#{}", step.step)}</span>
                                    <span class="node">{step.node.clone()}</span>
                                    <span class="attempt">{(step.attempt > 1).then(|| format!("attempt {}", step.attempt))}</span>
                                    <span class="took">{micros(step.duration_us)}</span>
                                    {step.instance.as_deref().map(|id| view! {
                                        <span class="instance" title=format!("executed by instance {id}")>
                                            {format!("on …{}", id.get(id.len().saturating_sub(6)..).unwrap_or(id))}
                                        </span>
                                    })}
                                </button>
                            </li>
                        }
                        .into_any()
                    }
                    Entry::Question(question) => view! {
                        <li class="entry question" data-testid="timeline-question">
                            <span class="n">{format!("#{}", question.step)}</span>
                            <span class="node">{question.node.clone()}</span>
                            <span class="attempt">"asked"</span>
                            <p class="why">{question.prompt.clone()}</p>
                        </li>
                    }
                    .into_any(),
                    Entry::Failure(failure) => view! {
                        <li class="entry failure" data-testid="timeline-failure">
                            <span class="n">{format!("#{}", failure.step)}</span>
                            <span class="node">{failure.node.clone()}</span>
                            <span class="attempt">{format!("attempt {} failed", failure.attempt)}</span>
                            <span class="took">{failure.retry_in_ms.map(|ms| format!("retry in {}", millis(ms)))}</span>
                            <p class="why">{failure.error.clone()}</p>
                        </li>
                    }
                    .into_any(),
                })
                .collect_view()
        })
    };
    view! {
        <div class="timeline">
            <h2>"Timeline"</h2>
            <ol data-testid="timeline">{rows}</ol>
            <Show when=move || model.with(|m| m.timeline.is_empty())>
                <p class="muted">"No step has finished yet."</p>
            </Show>
        </div>
    }
}

/// Where this run came from, and the runs forked from it.
#[component]
fn Lineage(forked_from: Option<crate::wire::ForkOrigin>, forks: Vec<String>) -> impl IntoView {
    let parent = forked_from.map(|origin| {
        view! {
            <p class="lineage" data-testid="forked-from">
                "Forked from " <a href=format!("/run/{}", origin.run_id)><code>{origin.run_id.clone()}</code></a>
                {format!(" at step {}", origin.step)}
            </p>
        }
    });
    let children = (!forks.is_empty()).then(|| {
        view! {
            <p class="lineage" data-testid="forks">
                "Forks: "
                {forks
                    .into_iter()
                    .map(|fork| view! { <a href=format!("/run/{fork}")><code>{fork.clone()}</code></a> " " })
                    .collect_view()}
            </p>
        }
    });
    view! { {parent} {children} }
}

/// The merge patch (RFC 7396) that turns `before` into `after`, key by key at the top:
/// changed and new keys set, removed ones `null`.
fn merge_patch(before: &Value, after: &Map<String, Value>) -> Value {
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

/// "Fork from here": the state after step `step`, in an editor; submitting starts a run
/// from it (with the edits as a merge patch) and opens that run.
#[component]
fn ForkFromHere(run_id: String, step: u64, state: Value) -> impl IntoView {
    let text = RwSignal::new(serde_json::to_string_pretty(&state).unwrap_or_default());
    let problem = RwSignal::new(None::<String>);
    let submit = move |event: leptos::ev::SubmitEvent| {
        event.prevent_default();
        let edited = match serde_json::from_str::<Value>(&text.get_untracked()) {
            Ok(Value::Object(edited)) => edited,
            Ok(_) => {
                problem.set(Some("the state must be a JSON object".into()));
                return;
            }
            Err(err) => {
                problem.set(Some(format!("not JSON: {err}")));
                return;
            }
        };
        let request = ForkRequest {
            from_step: step,
            state_patch: merge_patch(&state, &edited),
            graph_id: None,
        };
        let run_id = run_id.clone();
        leptos::task::spawn_local(async move {
            let answer: Result<RunStarted, _> = api::post(&format!("/runs/{run_id}/fork"), &request).await;
            match answer {
                Ok(started) => super::go_to(&format!("/run/{}", started.run_id)),
                Err(err) => problem.set(Some(err.detail)),
            }
        });
    };
    view! {
        <details class="fork" data-testid="fork">
            <summary>"Fork from here"</summary>
            <form on:submit=submit>
                <p class="muted">"A new run from this state, going on from this node's edges. Edit the state first if you like."</p>
                <textarea class="state-editor" rows="10" data-testid="fork-state"
                    prop:value=move || text.get()
                    on:input=move |event| text.set(event_target_value(&event))></textarea>
                {move || problem.get().map(|p| view! { <p class="error-banner" data-testid="fork-error">{p}</p> })}
                <button type="submit" data-testid="fork-submit">"Start the fork"</button>
            </form>
        </details>
    }
}

#[component]
fn StepDetail(model: RwSignal<RunModel>, selected: RwSignal<Option<usize>>, run_id: String) -> impl IntoView {
    move || {
        let run_id = run_id.clone();
        model.with(|m| {
            let index = selected.get().or(m.steps.len().checked_sub(1))?;
            let step = m.steps.get(index)?;
            let changes = diff(m.state_before(index), &step.state);
            let change_rows = changes
                .into_iter()
                .map(|change| {
                    view! {
                        <li class=format!("change {}", change.kind.as_str())>
                            <code class="path">{change.path}</code>
                            <span class="kind">{change.kind.as_str()}</span>
                            {change.before.map(|v| view! { <code class="before">{preview(&v, 160)}</code> })}
                            {change.after.map(|v| view! { <code class="after">{preview(&v, 160)}</code> })}
                        </li>
                    }
                })
                .collect_view();
            let state = serde_json::to_string_pretty(&step.state).unwrap_or_default();
            Some(view! {
                <div class="step-detail" data-testid="step-detail">
                    <h2>{format!("After step #{} · {}", step.step, step.node)}</h2>
                    <h3>"What changed"</h3>
                    <ul class="changes" data-testid="changes">{change_rows}</ul>
                    <details>
                        <summary>"State after this step"</summary>
                        <pre class="state">{state}</pre>
                    </details>
                    <ForkFromHere run_id step=step.step state=step.state.clone()/>
                </div>
            })
        })
    }
}

/// Follows the run live: connects, applies events, reconnects after a drop, stops at
/// `end` or when the page goes away; ticks the clock meanwhile.
#[cfg(feature = "hydrate")]
fn follow(
    run_id: String,
    model: RwSignal<RunModel>,
    connection: RwSignal<Connection>,
    now: RwSignal<i64>,
    finished_at: RwSignal<Option<i64>>,
) {
    use futures::{future::AbortHandle, StreamExt};
    use gloo_net::websocket::{futures::WebSocket, Message};
    use gloo_timers::future::TimeoutFuture;

    use crate::wire::RunEvent;

    if model.with_untracked(RunModel::ended) {
        return;
    }
    let (abort, registration) = AbortHandle::new_pair();
    on_cleanup(move || abort.abort());

    let ticking = async move {
        while !model.with_untracked(RunModel::ended) {
            now.set(js_sys::Date::now() as i64);
            TimeoutFuture::new(500).await;
        }
    };
    let streaming = async move {
        let location = window().location();
        let scheme = if location.protocol().unwrap_or_default() == "https:" {
            "wss"
        } else {
            "ws"
        };
        let host = location.host().unwrap_or_default();
        let mut backoff = 250;
        loop {
            let since = model.with_untracked(|m| m.last_seq);
            let url = format!("{scheme}://{host}/ws/{run_id}?since={since}");
            if let Ok(mut socket) = WebSocket::open(&url) {
                connection.set(Connection::Live);
                // The server starts with each answer in progress as far as it has come.
                model.update(RunModel::connecting);
                while let Some(Ok(Message::Text(text))) = socket.next().await {
                    backoff = 250;
                    if let Ok(event) = serde_json::from_str::<RunEvent>(&text) {
                        let is_end = matches!(event, RunEvent::End(_));
                        model.update(|m| {
                            m.apply(event);
                        });
                        if is_end {
                            let at = js_sys::Date::now() as i64;
                            finished_at.set(Some(at));
                            now.set(at);
                            connection.set(Connection::Idle);
                            return;
                        }
                    }
                }
            }
            connection.set(Connection::Reconnecting);
            TimeoutFuture::new(backoff).await;
            backoff = (backoff * 2).min(8_000);
        }
    };
    leptos::task::spawn_local(async move {
        let both = futures::future::join(ticking, streaming);
        let _ = futures::future::Abortable::new(both, registration).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_counts_to_the_end_or_to_now() {
        assert_eq!(elapsed(1_000, Some(4_500), 99_999), 3_500);
        assert_eq!(elapsed(1_000, None, 2_000), 1_000);
        assert_eq!(elapsed(5_000, None, 1_000), 0);
    }
}
