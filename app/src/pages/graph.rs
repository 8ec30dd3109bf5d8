//! `/graph/{id}`: a graph's drawing, shaded by how each node fares (mean step time and
//! failure rate), then its runs of the last 30 days: per day by status, and the median
//! and 95th-percentile durations. Everything is drawn on the server.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::{
    api::{self, GraphPageData},
    components::{
        charts::{DurationChart, RunsChart},
        graph::GraphDiagram,
    },
    format::micros,
};

/// `/graph/{id}`.
#[component]
pub fn GraphPage() -> impl IntoView {
    let params = use_params_map();
    let graph_id = move || params.read().get("id").unwrap_or_default();
    let data = Resource::new(graph_id, api::graph_page);
    view! {
        <Suspense fallback=|| view! { <p class="loading">"Loading the graph…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(data) => view! { <GraphView data/> }.into_any(),
                    Err(err) => {
                        if err.code.ends_with("not_found") {
                            api::mark_not_found();
                        }
                        view! {
                            <section class="error-state" data-testid="error">
                                <h1>{if err.code.ends_with("not_found") { "Graph not found" } else { "The graph cannot be shown" }}</h1>
                                <p>{err.detail}</p>
                                <a href="/history">"See all runs"</a>
                            </section>
                        }
                        .into_any()
                    }
                }
            })}
        </Suspense>
    }
}

#[component]
fn GraphView(data: GraphPageData) -> impl IntoView {
    let GraphPageData { graph, stats } = data;
    let title = graph.name.as_deref().unwrap_or("custom graph").replace('_', " ");
    let node_rows = stats
        .nodes
        .iter()
        .map(|node| {
            view! {
                <tr data-testid="node-row" data-node=node.node.clone()>
                    <td><code>{node.node.clone()}</code></td>
                    <td class="num">{node.steps}</td>
                    <td class="num">{micros(node.mean_us)}</td>
                    <td class="num">{node.failures}</td>
                    <td class="num">{format!("{:.0}%", node.failure_rate * 100.0)}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <section class="graph-page" data-testid="graph-page" data-graph-id=graph.graph_id.clone()>
            <header class="run-head">
                <div>
                    <h1>{title}</h1>
                    <p class="muted">
                        <code>{graph.graph_id.clone()}</code>
                        {graph.description.clone().map(|text| view! { " · " {text} })}
                    </p>
                </div>
                <a class="button secondary" href=format!("/history?graph_id={}", graph.graph_id)>"Its runs"</a>
            </header>
            <div class="panel diagram">
                <GraphDiagram view=graph.view state=Signal::derive(Vec::new) heat=stats.nodes.clone()/>
                <p class="muted">{format!(
                    "Nodes shaded by failure rate, with their mean step time, over the last {} run(s).",
                    stats.node_runs
                )}</p>
            </div>
            {if stats.runs == 0 {
                view! { <p class="empty" data-testid="no-runs">"No runs in the last 30 days."</p> }.into_any()
            } else {
                view! {
                    <div class="charts">
                        <div class="panel">
                            <h2>{format!("Runs per day ({} in the last 30 days)", stats.runs)}</h2>
                            <RunsChart days=stats.days.clone()/>
                        </div>
                        <div class="panel">
                            <h2>"Duration per day"</h2>
                            <DurationChart days=stats.days.clone()/>
                        </div>
                    </div>
                    <div class="panel">
                        <h2>"Nodes"</h2>
                        <table class="runs" data-testid="nodes">
                            <thead><tr><th>"Node"</th><th>"Steps"</th><th>"Mean"</th><th>"Failed attempts"</th><th>"Failure rate"</th></tr></thead>
                            <tbody>{node_rows}</tbody>
                        </table>
                    </div>
                }.into_any()
            }}
        </section>
    }
}
