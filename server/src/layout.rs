//! Drawing a graph: a layered (Sugiyama) layout of its nodes, flowing left to right.
//!
//! The layout is computed here, once per graph, rather than in the browser: the
//! `rust-sugiyama` crate (and `petgraph` under it) would otherwise double the wasm.
//! Edges that go back against the flow (loops) are laid out as if reversed, which is
//! what the crate does with a cycle's feedback edges; the browser draws them as arcs.

use std::collections::HashSet;

use rust_sugiyama::configure::Config;
use weft_app::wire::{EdgeKind, EdgeView, GraphView, NodeView};

use crate::engine::graph::{Graph, NodeId, Route};

/// Space between two layers (columns), edge to edge.
const LAYER_GAP: f64 = 56.0;
/// Space between two nodes of one layer (row), edge to edge.
const ROW_GAP: f64 = 28.0;
/// Space around the drawing, room for loop arcs above and below.
const MARGIN: f64 = 36.0;
/// Space between two unconnected parts of a graph.
const PART_GAP: f64 = 32.0;

impl Graph {
    /// The graph laid out for drawing: computed once, on first use, and kept with the
    /// graph (parsed graphs are cached, so a graph is laid out once, not per request).
    pub fn view(&self) -> &GraphView {
        self.view.get_or_init(|| self.draw())
    }

    fn draw(&self) -> GraphView {
        let mut edges = Vec::new();
        let mut seen = HashSet::new();
        for node in self.nodes() {
            let targets: Vec<(Option<NodeId>, EdgeKind, Option<String>)> = match &node.route {
                Route::To(to) => vec![(*to, EdgeKind::Next, None)],
                Route::Branches { branches, default } => branches
                    .iter()
                    .map(|branch| (branch.to, EdgeKind::Branch, Some(branch.when.source().to_owned())))
                    .chain(std::iter::once((*default, EdgeKind::Branch, Some("else".to_owned()))))
                    .collect(),
                Route::FanOut(to) => to
                    .iter()
                    .map(|&to| (Some(to), EdgeKind::Next, Some("parallel".to_owned())))
                    .collect(),
                Route::Join(to) => vec![(Some(*to), EdgeKind::Next, Some("join".to_owned()))],
                Route::Map(map) => vec![
                    (Some(map.to), EdgeKind::Next, Some(format!("map over {}", map.over))),
                    (map.then, EdgeKind::Next, Some("then".to_owned())),
                ],
            };
            for (next, kind, label) in targets {
                let Some(next) = next else { continue };
                let to = &self.node(next).name;
                if seen.insert((node.name.as_str(), to.as_str())) {
                    edges.push(EdgeView {
                        from: node.name.clone(),
                        to: to.clone(),
                        kind,
                        label,
                    });
                }
            }
        }
        for node in self.nodes() {
            for to in node.tool.jumps() {
                if self.find(to).is_some() && seen.insert((node.name.as_str(), to.as_str())) {
                    edges.push(EdgeView {
                        from: node.name.clone(),
                        to: to.clone(),
                        kind: EdgeKind::Jump,
                        label: None,
                    });
                }
            }
        }
        lay_out(self, edges)
    }
}

/// The edges that close a loop when the graph is walked depth-first from `start` (then
/// from each node not reached yet): those leading back to a node still on the walk.
fn back_edges(nodes: usize, edges: &[(u32, u32)], start: u32) -> HashSet<(u32, u32)> {
    let mut successors = vec![Vec::new(); nodes];
    for &(from, to) in edges {
        successors[from as usize].push(to);
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnWalk,
        Done,
    }
    let mut marks = vec![Mark::New; nodes];
    let mut back = HashSet::new();
    let roots = std::iter::once(start).chain(0..nodes as u32);
    for root in roots {
        if marks[root as usize] != Mark::New {
            continue;
        }
        marks[root as usize] = Mark::OnWalk;
        // (node, how many of its successors have been looked at)
        let mut walk = vec![(root, 0)];
        while let Some(&mut (node, ref mut seen)) = walk.last_mut() {
            match successors[node as usize].get(*seen).copied() {
                Some(next) => {
                    *seen += 1;
                    match marks[next as usize] {
                        Mark::New => {
                            marks[next as usize] = Mark::OnWalk;
                            walk.push((next, 0));
                        }
                        Mark::OnWalk => {
                            back.insert((node, next));
                        }
                        Mark::Done => {}
                    }
                }
                None => {
                    marks[node as usize] = Mark::Done;
                    walk.pop();
                }
            }
        }
    }
    back
}

fn lay_out(graph: &Graph, edges: Vec<EdgeView>) -> GraphView {
    let ids: Vec<u32> = (0..graph.len() as u32).collect();
    let index = |name: &str| graph.find(name).map(|id| id.0);
    // Nodes are placed along the static and conditional edges that lead away from the
    // start node; jumps, edges back to where a run came from (loops) and self-loops are
    // drawn as arcs over that and carry nothing for placing nodes.
    let forward: Vec<(u32, u32)> = edges
        .iter()
        .filter(|edge| edge.kind != EdgeKind::Jump && edge.from != edge.to)
        .filter_map(|edge| Some((index(&edge.from)?, index(&edge.to)?)))
        .collect();
    let back = back_edges(ids.len(), &forward, graph.start().0);
    let pairs: Vec<(u32, u32)> = forward.into_iter().filter(|pair| !back.contains(pair)).collect();
    // The crate lays out top to bottom; sizes are given turned by a quarter so that,
    // once x and y are swapped, layers become columns.
    let size = (GraphView::NODE_HEIGHT + ROW_GAP, GraphView::NODE_WIDTH + LAYER_GAP);
    let vertices: Vec<(u32, (f64, f64))> = ids.iter().map(|&id| (id, size)).collect();
    let config = Config {
        vertex_spacing: 1.0,
        ..Config::default()
    };
    let parts = rust_sugiyama::from_vertices_and_edges(&vertices, &pairs, &config);

    let mut centres = vec![(0.0, 0.0); ids.len()];
    let (mut width, mut height) = (0.0_f64, 0.0_f64);
    for (positions, _, _) in parts {
        if positions.is_empty() {
            continue;
        }
        // Swap axes: the crate's layers (rows, top to bottom) become columns.
        let turned: Vec<(usize, f64, f64)> = positions.iter().map(|&(id, (x, y))| (id, y, x)).collect();
        let min_x = turned.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let min_y = turned.iter().map(|p| p.2).fold(f64::INFINITY, f64::min);
        let max_x = turned.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let max_y = turned.iter().map(|p| p.2).fold(f64::NEG_INFINITY, f64::max);
        let top = if height > 0.0 { height + PART_GAP } else { 0.0 };
        for (id, x, y) in turned {
            if let Some(centre) = centres.get_mut(id) {
                *centre = (
                    MARGIN + GraphView::NODE_WIDTH / 2.0 + (x - min_x),
                    MARGIN + top + GraphView::NODE_HEIGHT / 2.0 + (y - min_y),
                );
            }
        }
        width = width.max(max_x - min_x + GraphView::NODE_WIDTH);
        height = top + (max_y - min_y) + GraphView::NODE_HEIGHT;
    }

    GraphView {
        nodes: graph
            .nodes()
            .zip(centres)
            .map(|(node, (x, y))| NodeView {
                id: node.name.clone(),
                tool: node.tool_name.clone(),
                x: x.round(),
                y: y.round(),
            })
            .collect(),
        edges,
        width: (width + 2.0 * MARGIN).round(),
        height: (height + 2.0 * MARGIN).round(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        engine::{tool::CpuPool, tool::Registry, Graph},
        tools::{builtin, code_review},
    };

    fn registry() -> Registry {
        let mut registry = Registry::default();
        builtin::register(&mut registry);
        code_review::register(&mut registry, &CpuPool::new(1));
        registry
    }

    #[test]
    fn a_chain_flows_left_to_right_on_one_row() {
        let spec = json!({"nodes": {"a": "noop", "b": "noop", "c": "noop"}, "edges": {"a": "b", "b": "c"}});
        let view = Graph::parse(&spec, &registry()).unwrap().view().clone();
        let xs: Vec<f64> = view.nodes.iter().map(|n| n.x).collect();
        let ys: Vec<f64> = view.nodes.iter().map(|n| n.y).collect();
        assert!(xs[0] < xs[1] && xs[1] < xs[2], "{xs:?}");
        assert_eq!(ys[0], ys[1]);
        assert_eq!(ys[1], ys[2]);
        assert!(view.width >= xs[2] + GraphView::NODE_WIDTH / 2.0);
        assert!(view.height >= ys[0] + GraphView::NODE_HEIGHT / 2.0);
        assert_eq!(view.edges.len(), 2);
    }

    #[test]
    fn a_conditional_loop_flows_from_the_start_node() {
        let spec = json!({
            "nodes": [{"id": "count", "tool": "increment"}, {"id": "wait", "tool": "noop"}, {"id": "report", "tool": "noop"}],
            "edges": [
                {"from": "count", "to": "wait"},
                {"from": "wait", "branches": [{"when": "state.count < 3", "to": "count"}], "default": "report"}
            ]
        });
        let graph = Graph::parse(&spec, &registry()).unwrap();
        let view = graph.view();
        let x = |id: &str| view.node(id).unwrap().x;
        assert!(x("count") < x("wait"), "the start node comes first");
        assert!(x("wait") < x("report"));
    }

    #[test]
    fn back_edges_are_those_that_return_to_the_walk() {
        // 0 → 1 → 2 → 0, 1 → 3, 3 → 1; started from 0.
        let edges = [(0, 1), (1, 2), (2, 0), (1, 3), (3, 1)];
        let back = back_edges(4, &edges, 0);
        assert_eq!(back, HashSet::from([(2, 0), (3, 1)]));
        // Started from 2, the loop closes on the edge back to 2 instead.
        assert_eq!(back_edges(4, &edges, 2), HashSet::from([(1, 2), (3, 1)]));
    }

    #[test]
    fn the_code_review_loop_is_a_jump_edge_back_to_complexity() {
        let spec = code_review::preset_spec();
        let view = Graph::parse(&spec, &registry()).unwrap().view().clone();
        let names: Vec<&str> = view.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(names, ["extract", "complexity", "detect", "suggest", "assess_loop"]);
        let jump = view.edges.iter().find(|e| e.kind == EdgeKind::Jump).unwrap();
        assert_eq!((jump.from.as_str(), jump.to.as_str()), ("assess_loop", "complexity"));
        assert_eq!(view.edges.iter().filter(|e| e.kind == EdgeKind::Next).count(), 4);
        // The loop does not disturb the flow: each node sits right of the one before.
        let xs: Vec<f64> = view.nodes.iter().map(|n| n.x).collect();
        assert!(xs.windows(2).all(|w| w[0] < w[1]), "{xs:?}");
    }

    #[test]
    fn unconnected_nodes_and_self_loops_still_get_places() {
        let spec = json!({"nodes": {"a": "noop", "b": "noop"}, "edges": {"a": "a"}});
        let view = Graph::parse(&spec, &registry()).unwrap().view().clone();
        assert_eq!(view.nodes.len(), 2);
        let (a, b) = (&view.nodes[0], &view.nodes[1]);
        assert!((a.x, a.y) != (b.x, b.y), "{view:?}");
        assert_eq!(view.edges.len(), 1);
    }
}
