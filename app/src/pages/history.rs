//! `/history`: every run, newest first, filterable by status, graph and days.
//!
//! The filters are a plain GET form and the pages plain links, so the history reads the
//! same with or without JavaScript.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use crate::{
    api::{self, RunQuery},
    format::{day_start, millis, usage, utc},
    islands::DeleteRun,
    wire::RunSummary,
};

const DAY_MS: i64 = 86_400_000;

const STATUSES: [&str; 6] = ["queued", "running", "waiting", "completed", "failed", "cancelled"];

/// `/history`.
#[component]
pub fn HistoryPage() -> impl IntoView {
    let query = use_query_map();
    let filters = move || {
        query.with(|q| {
            // A range from the form's dates (`from`, `to`: whole UTC days), or as the
            // API takes it (`since`, `until`: milliseconds), as the next page's link has it.
            let millis = |key: &str| q.get(key).and_then(|value| value.parse::<i64>().ok());
            let day = |key: &str| q.get(key).and_then(|value| day_start(&value));
            RunQuery {
                status: q.get("status").filter(|s| !s.is_empty()),
                graph_id: q.get("graph_id").filter(|s| !s.is_empty()),
                before: q.get("before").filter(|s| !s.is_empty()),
                since: millis("since").or_else(|| day("from")),
                until: millis("until").or_else(|| day("to").map(|start| start + DAY_MS)),
            }
        })
    };
    let page = Resource::new(filters, api::runs);
    view! {
        <section class="history">
            <h1>"Runs"</h1>
            <form method="get" action="/history" class="filters">
                <label class="field inline">
                    <span>"Status"</span>
                    <select name="status" data-testid="status-filter">
                        <option value="">"any"</option>
                        {move || {
                            let current = filters().status.unwrap_or_default();
                            STATUSES
                                .iter()
                                .map(|status| view! { <option value=*status selected=current == *status>{*status}</option> })
                                .collect_view()
                        }}
                    </select>
                </label>
                <label class="field inline">
                    <span>"From"</span>
                    <input type="date" name="from" data-testid="from-filter"
                        value=move || filters().since.map(|ms| utc(ms)[..10].to_owned())/>
                </label>
                <label class="field inline">
                    <span>"To"</span>
                    <input type="date" name="to" data-testid="to-filter"
                        value=move || filters().until.map(|ms| utc(ms - DAY_MS)[..10].to_owned())/>
                </label>
                {move || filters().graph_id.map(|graph_id| view! {
                    <input type="hidden" name="graph_id" value=graph_id.clone()/>
                    <span class="chip">"graph " <code>{graph_id}</code> " " <a href="/history">"clear"</a></span>
                })}
                <button type="submit" class="secondary">"Filter"</button>
            </form>
            <Suspense fallback=|| view! { <p class="loading">"Loading runs…"</p> }>
                {move || Suspend::new(async move {
                    match page.await {
                        Ok(page) if page.runs.is_empty() => view! {
                            <p class="empty" data-testid="empty">"No runs yet. " <a href="/">"Start one"</a> "."</p>
                        }.into_any(),
                        Ok(page) => {
                            let next = page.next_before.map(|before| {
                                let mut query = filters();
                                query.before = Some(before);
                                format!("/history?{}", query.to_query_string())
                            });
                            view! {
                                <RunTable runs=page.runs/>
                                {next.map(|href| view! { <a class="next" href=href>"Older runs →"</a> })}
                            }.into_any()
                        }
                        Err(err) => view! { <p class="error-banner" data-testid="error">{err.detail}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn RunTable(runs: Vec<RunSummary>) -> impl IntoView {
    let rows = runs
        .into_iter()
        .map(|run| {
            let duration = run
                .finished_at
                .map(|end| millis(u64::try_from(end - run.created_at).unwrap_or(0)))
                .unwrap_or_else(|| "…".into());
            let graph = run.graph_name.clone().unwrap_or_else(|| "custom".into());
            // What its model calls used: tokens, and the cost when prices are configured.
            let used = run.usage.as_ref().map(usage);
            let ended = run.status.is_terminal();
            let run_id = run.run_id.clone();
            view! {
                <tr data-testid="run-row" data-status=run.status.as_str()>
                    <td><a href=format!("/run/{}", run.run_id)><code>{short(&run.run_id)}</code></a></td>
                    <td>
                        <a href=format!("/graph/{}", run.graph_id) data-testid="graph-link">{graph}</a>
                        " "
                        <a class="muted" href=format!("/history?graph_id={}", run.graph_id) title="Only this graph's runs">"runs"</a>
                    </td>
                    <td><span class=format!("status-badge {}", run.status.as_str())>{run.status.as_str()}</span></td>
                    <td class="num">{run.steps}</td>
                    <td>{utc(run.created_at)}</td>
                    <td class="num">{duration}</td>
                    <td class="num" data-testid="usage">{used}</td>
                    <td>{ended.then(|| view! { <DeleteRun run_id/> })}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <div class="table-wrap">
            <table class="runs" data-testid="runs">
                <thead>
                    <tr><th>"Run"</th><th>"Graph"</th><th>"Status"</th><th>"Steps"</th><th>"Started (UTC)"</th><th>"Took"</th><th>"Model use"</th><th></th></tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
    }
}

/// The tail of an id: enough to tell runs apart in a list.
fn short(id: &str) -> String {
    let tail: String = id
        .chars()
        .rev()
        .take(12)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}
