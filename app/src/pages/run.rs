//! The run page: the graph lighting up node by node, the timeline, the state after any
//! step with what changed (and "Fork from here", with that state in an editor), the run's
//! lineage, the log, Cancel, and the Code Review report.
//!
//! The server renders it, whole, from the run as stored: readable without JavaScript, a
//! timeline step is a link to the page at that step (`?step=N`). In the browser the
//! [`LiveRun`] island follows the run and puts the server's newer rendering of the page's
//! regions in place as events arrive (see [`crate::follow`]); it also handles the buttons
//! and forms, which carry what their action needs in `data-` attributes.

use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::{
    api::{self, RunPageData},
    components::{
        graph::GraphDiagram,
        question::QuestionForm,
        report::{is_code_review, CodeReviewReport},
    },
    format::{diff, micros, millis, preview, usage, utc},
    islands::LiveRun,
    live::{Entry, RunModel},
    wire::StepEvent,
};

/// `/run/{id}`, at the step `?step=N` (else the latest).
#[component]
pub fn RunPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let run_id = move || params.read().get("id").unwrap_or_default();
    let selected = move || query.read().get("step").and_then(|step| step.parse::<u64>().ok());
    let data = Resource::new(run_id, api::run_page);
    view! {
        <Suspense fallback=|| view! { <p class="loading">"Loading the run…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(data) => view! { <RunView data selected=selected()/> }.into_any(),
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

/// Everything on the run page, as the run stands (the island [`LiveRun`] keeps it
/// current in the browser).
#[component]
pub fn RunView(
    /// The run as stored when the page was read, with its graph.
    data: RunPageData,
    /// The step whose state is shown (by number); `None` shows the latest.
    selected: Option<u64>,
) -> impl IntoView {
    let RunPageData { detail, graph, read_at } = data;
    let node_names: Vec<String> = graph.view.nodes.iter().map(|node| node.id.clone()).collect();
    let finished_at = detail.run.finished_at;
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
    let model = RunModel::new(detail, &node_names);
    let nodes_state: Vec<_> = node_names
        .iter()
        .map(|name| {
            let steps = model.finished_at_steps.get(name).cloned().unwrap_or_default();
            (name.clone(), model.node_state(name), steps)
        })
        .collect();
    let status = model.status;
    let ended = model.ended();
    // The step shown: the one picked, else the latest.
    let shown = selected
        .and_then(|step| model.steps.iter().rposition(|s| s.step == step))
        .or(model.steps.len().checked_sub(1));
    let report = ended
        .then(|| model.state.clone())
        .filter(is_code_review)
        .map(|state| view! { <CodeReviewReport state/> });
    let questions = model
        .pending
        .iter()
        .cloned()
        .map(|question| view! { <QuestionForm question/> })
        .collect_view();

    view! {
        <section class="run" data-testid="run" data-run-id=run_id.clone()>
            <header class="run-head" id="run-head">
                <div>
                    <h1>{title}</h1>
                    <p class="muted"><code>{run_id.clone()}</code> " · started " {utc(created_at)} " UTC"</p>
                    <Lineage forked_from forks/>
                </div>
                <div class="run-stats">
                    <span class=format!("status-badge {}", status.as_str()) data-testid="status"
                        data-ended=ended.to_string()>
                        {status.as_str()}
                    </span>
                    <span class="stat" data-testid="step-count">{format!("{} step(s)", model.steps.len())}</span>
                    <span class="stat" data-testid="elapsed">{millis(elapsed(created_at, finished_at, read_at))}</span>
                    {model.usage().map(|used| view! {
                        <span class="stat" data-testid="run-usage" title="model tokens and cost">{usage(&used)}</span>
                    })}
                    {(!ended).then(|| view! {
                        <button class="danger" data-testid="cancel" data-action="cancel">"Cancel"</button>
                    })}
                </div>
            </header>
            <LiveRun run_id=run_id.clone() since=model.last_seq ended created_at step=selected/>
            <div id="run-main">
                {model.error.clone().map(|err| view! {
                    <p class="error-banner" data-testid="run-error">{err}</p>
                })}
                {questions}
                <div class="graph-panel">
                    {graph.description.clone().map(|text| view! { <p class="muted graph-description">{text}</p> })}
                    <GraphDiagram view=graph.view.clone() state=Signal::stored(nodes_state)/>
                    {(!graph.warnings.is_empty()).then(|| view! {
                        <ul class="graph-warnings" data-testid="graph-warnings">
                            {graph.warnings.iter().map(|warning| view! {
                                <li><code>{warning.path.clone()}</code> " " {warning.message.clone()}</li>
                            }).collect_view()}
                        </ul>
                    })}
                </div>
                <div class="run-body">
                    {timeline(&model, shown)}
                    {shown.map(|index| step_detail(&model, index))}
                </div>
                <details class="log" open data-key="log">
                    <summary>"Log"</summary>
                    <pre data-testid="log">{model.log.join("\n")}</pre>
                </details>
                {report}
            </div>
        </section>
    }
}

/// The finished steps, failed attempts and questions, in order. Each step is a button
/// of a `GET` form: without JavaScript it opens the page at that step.
fn timeline(model: &RunModel, shown: Option<usize>) -> impl IntoView {
    let rows = model
        .timeline
        .iter()
        .map(|entry| match entry {
            Entry::Step(index) => {
                let step: &StepEvent = &model.steps[*index];
                let class = if shown == Some(*index) { "entry step selected" } else { "entry step" };
                let failed = step.error.is_some();
                view! {
                    <li class=class class:failed=failed data-testid="timeline-step" data-node=step.node.clone()>
                        <button type="submit" name="step" value=step.step.to_string()>
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
        .collect_view();
    view! {
        <div class="timeline">
            <h2>"Timeline"</h2>
            <form method="get">
                <ol data-testid="timeline">{rows}</ol>
            </form>
            {model.timeline.is_empty().then(|| view! { <p class="muted">"No step has finished yet."</p> })}
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

/// "Fork from here": the state after step `step`, in an editor; submitting starts a run
/// from it (with the edits as a merge patch against the editor's first text) and opens
/// that run.
#[component]
fn ForkFromHere(step: u64, state: String) -> impl IntoView {
    view! {
        <details class="fork" data-testid="fork" data-key=format!("fork-{step}")>
            <summary>"Fork from here"</summary>
            <form data-action="fork" data-step=step.to_string()>
                <p class="muted">"A new run from this state, going on from this node's edges. Edit the state first if you like."</p>
                <textarea class="state-editor" rows="10" data-testid="fork-state" data-key=format!("fork-state-{step}")>{state}</textarea>
                <p class="error-banner" data-testid="fork-error" data-role="problem" hidden></p>
                <button type="submit" data-testid="fork-submit">"Start the fork"</button>
            </form>
        </details>
    }
}

/// What step `index` changed, the state after it, and "Fork from here".
fn step_detail(model: &RunModel, index: usize) -> impl IntoView {
    let step = &model.steps[index];
    let change_rows = diff(model.state_before(index), &step.state)
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
    view! {
        <div class="step-detail" data-testid="step-detail">
            <h2>{format!("After step #{} · {}", step.step, step.node)}</h2>
            <h3>"What changed"</h3>
            <ul class="changes" data-testid="changes">{change_rows}</ul>
            <details data-key=format!("state-{}", step.step)>
                <summary>"State after this step"</summary>
                <pre class="state">{state.clone()}</pre>
            </details>
            <ForkFromHere step=step.step state/>
        </div>
    }
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
