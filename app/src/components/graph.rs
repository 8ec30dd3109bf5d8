//! The graph drawn as SVG from its [`GraphView`], each node coloured by its state.

use leptos::prelude::*;

use crate::{
    format::micros,
    live::NodeState,
    wire::{EdgeKind, GraphView, NodeStats},
};

/// How far a loop arc bulges below the row of nodes it joins.
const ARC_DROP: f64 = 34.0;

/// The SVG path of an edge from `(x1, y1)` to `(x2, y2)` (node centres): a straight
/// line between facing sides when it goes forward, an arc under the nodes when it goes
/// back (a loop), and a small loop above the node for a self-edge.
pub fn edge_path(from: (f64, f64), to: (f64, f64)) -> String {
    let (half_w, half_h) = (GraphView::NODE_WIDTH / 2.0, GraphView::NODE_HEIGHT / 2.0);
    let ((x1, y1), (x2, y2)) = (from, to);
    if (x1, y1) == (x2, y2) {
        let (left, right, top) = (x1 - 16.0, x1 + 16.0, y1 - half_h);
        return format!(
            "M{right},{top} C{},{} {},{} {left},{top}",
            right + 10.0,
            top - 34.0,
            left - 10.0,
            top - 34.0
        );
    }
    if x2 > x1 {
        return format!("M{},{y1} L{},{y2}", x1 + half_w, x2 - half_w);
    }
    let bottom = y1.max(y2) + half_h;
    format!(
        "M{x1},{} C{x1},{} {x2},{} {x2},{}",
        y1 + half_h,
        bottom + ARC_DROP,
        bottom + ARC_DROP,
        y2 + half_h
    )
}

/// The graph, with `state` telling each node's state and `steps` the steps (1-based)
/// at which it finished, shown as a badge and kept in `data-steps`.
#[component]
pub fn GraphDiagram(
    /// The laid-out graph.
    view: GraphView,
    /// Each node's name, state, and the steps at which it finished.
    #[prop(into)]
    state: Signal<Vec<(String, NodeState, Vec<u64>)>>,
    /// A small drawing for galleries: no badges.
    #[prop(optional)]
    compact: bool,
    /// Each node's record over recent runs: its box is shaded from green to red by its
    /// failure rate, with its mean step time and the rate written under it.
    #[prop(optional)]
    heat: Vec<NodeStats>,
) -> impl IntoView {
    let height = view.height + ARC_DROP;
    let view_box = format!("0 0 {} {}", view.width, height);
    let nodes = view.nodes.clone();
    let edges = view
        .edges
        .iter()
        .filter_map(|edge| {
            let from = view.node(&edge.from)?;
            let to = view.node(&edge.to)?;
            let class = match edge.kind {
                EdgeKind::Next => "edge next",
                EdgeKind::Jump => "edge jump",
                EdgeKind::Branch => "edge branch",
            };
            let d = edge_path((from.x, from.y), (to.x, to.y));
            let label = format!("{} → {}", edge.from, edge.to);
            let title = edge.label.clone().map(|when| view! { <title>{when}</title> });
            Some(view! {
                <path class=class d=d marker-end="url(#arrow)" data-edge=label>{title}</path>
            })
        })
        .collect_view();
    let (w, h) = (GraphView::NODE_WIDTH, GraphView::NODE_HEIGHT);
    let node_views = nodes
        .into_iter()
        .map(|node| {
            let id = node.id.clone();
            // This node's state and steps, recomputed only when the states change.
            let current = Memo::new(move |_| {
                state.with(|all| {
                    all.iter()
                        .find(|(name, _, _)| *name == id)
                        .map(|(_, state, steps)| (*state, steps.clone()))
                        .unwrap_or((NodeState::Pending, Vec::new()))
                })
            });
            let heat = heat.iter().find(|stats| stats.node == node.id).map(|stats| {
                let hue = 140.0 * (1.0 - stats.failure_rate.clamp(0.0, 1.0));
                let style = format!("fill: hsl({hue:.0}, 70%, 84%)");
                let text = format!(
                    "{} · {:.0}% failed",
                    micros(stats.mean_us),
                    stats.failure_rate * 100.0
                );
                (style, text)
            });
            let label = if node.id.chars().count() > 16 {
                format!("{}…", node.id.chars().take(15).collect::<String>())
            } else {
                node.id.clone()
            };
            view! {
                <g
                    class=move || format!("node {}", current.read().0.as_str())
                    data-node=node.id.clone()
                    data-state=move || current.read().0.as_str()
                    data-steps=move || {
                        current.read().1.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
                    }
                >
                    <title>{format!("{} (tool {})", node.id, node.tool)}</title>
                    <rect x=node.x - w / 2.0 y=node.y - h / 2.0 width=w height=h rx="8"
                        style=heat.as_ref().map(|(style, _)| style.clone())/>
                    <text x=node.x y=node.y + 5.0 text-anchor="middle">{label}</text>
                    {heat.map(|(_, text)| view! {
                        <text class="heat" data-testid="heat" x=node.x y=node.y + h / 2.0 + 14.0 text-anchor="middle">{text}</text>
                    })}
                    {(!compact)
                        .then(|| {
                            view! {
                                <text class="badge" x=node.x + w / 2.0 - 6.0 y=node.y - h / 2.0 - 5.0 text-anchor="end">
                                    {move || {
                                        let steps = &current.read().1;
                                        match steps.len() {
                                            0 => String::new(),
                                            1 => format!("#{}", steps[0]),
                                            n => format!("#{} ×{n}", steps[n - 1]),
                                        }
                                    }}
                                </text>
                            }
                        })}
                </g>
            }
        })
        .collect_view();
    view! {
        <svg
            class=if compact { "graph compact" } else { "graph" }
            viewBox=view_box
            role="img"
            aria-label="The graph's nodes and edges"
            preserveAspectRatio="xMidYMid meet"
        >
            <defs>
                <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
                    <path d="M 0 0 L 10 5 L 0 10 z" class="arrowhead"/>
                </marker>
            </defs>
            {edges}
            {node_views}
        </svg>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_edges_join_facing_sides_and_back_edges_arc_below() {
        assert_eq!(edge_path((100.0, 50.0), (300.0, 50.0)), "M164,50 L236,50");
        let back = edge_path((300.0, 50.0), (100.0, 50.0));
        assert!(back.starts_with("M300,70 C300,104 100,104 100,70"), "{back}");
        assert!(edge_path((10.0, 50.0), (10.0, 50.0)).starts_with("M26,30"));
    }
}
