//! Graphs: named nodes, each running a registered tool, joined by static edges.
//!
//! [`Graph::parse`] is the only way to get a [`Graph`]: it checks a JSON spec against the
//! tool registry and answers either a graph that can run or every problem found, each
//! with the JSON pointer of the place it was found.
//!
//! The spec is the prototype's form, whose key order is meaningful (the first node is
//! the start node):
//!
//! ```json
//! {"nodes": {"extract": {}, "complexity": {"config": {}}},
//!  "edges": {"extract": "complexity"},
//!  "max_steps": 100}
//! ```
//!
//! A node's spec may be `{}`/`null` (its name is the tool it runs), a string (the tool's
//! name), or an object with `tool` and `config`. An edge's target may be `null` (end).

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use serde_json::Value;
use weft_app::wire::{GraphView, Problem};

use super::{
    policy::NodePolicy,
    tool::{Registry, Tool},
};

/// The step limit of a graph that sets none.
pub const DEFAULT_MAX_STEPS: u32 = 100;
/// The highest step limit a graph or a run may ask for.
pub const MAX_STEPS_CEILING: u32 = 10_000;
/// The most nodes one graph may have.
pub const MAX_NODES: usize = 1_000;
/// The longest node name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// A node's position in its graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(pub(crate) u32);

impl NodeId {
    fn index(self) -> usize {
        self.0 as usize
    }
}

/// One node of a parsed graph.
pub struct Node {
    /// The node's name, unique in its graph.
    pub name: String,
    /// The registered tool's name.
    pub tool_name: String,
    pub(crate) tool: Arc<dyn Tool>,
    pub(crate) config: Arc<Value>,
    /// Its timeout and retry policy.
    pub policy: NodePolicy,
    pub(crate) edge: Option<NodeId>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("tool", &self.tool_name)
            .field("edge", &self.edge)
            .finish()
    }
}

/// A graph that passed every check and can run.
#[derive(Debug)]
pub struct Graph {
    nodes: Vec<Node>,
    index: HashMap<String, NodeId>,
    max_steps: u32,
    /// The drawing, laid out on first use (see [`Graph::view`]).
    pub(super) view: OnceLock<GraphView>,
}

/// Why a spec is not a runnable graph: every problem found, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the graph has {} problem(s): {}", .problems.len(), summary(.problems))]
pub struct GraphError {
    /// Each problem, with where it is.
    pub problems: Vec<Problem>,
}

fn summary(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Escapes a key for use in a JSON pointer (RFC 6901).
fn pointer(parent: &str, key: &str) -> String {
    format!("{parent}/{}", key.replace('~', "~0").replace('/', "~1"))
}

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Reads a step limit: a whole number from 1 to [`MAX_STEPS_CEILING`].
pub fn parse_max_steps(value: &Value) -> Result<u32, String> {
    value
        .as_u64()
        .filter(|n| (1..=u64::from(MAX_STEPS_CEILING)).contains(n))
        .map(|n| n as u32)
        .ok_or_else(|| format!("must be a whole number from 1 to {MAX_STEPS_CEILING}"))
}

impl Graph {
    /// Checks `spec` against `registry` and builds the graph it describes.
    pub fn parse(spec: &Value, registry: &Registry) -> Result<Self, GraphError> {
        let mut problems = Problems(Vec::new());
        let Some(spec) = spec.as_object() else {
            problems.add("", "a graph must be a JSON object");
            return Err(GraphError { problems: problems.0 });
        };

        let max_steps = match spec.get("max_steps") {
            None | Some(Value::Null) => DEFAULT_MAX_STEPS,
            Some(value) => parse_max_steps(value).unwrap_or_else(|message| {
                problems.add("/max_steps", message);
                DEFAULT_MAX_STEPS
            }),
        };

        let empty = serde_json::Map::new();
        let nodes_spec = match spec.get("nodes") {
            Some(Value::Object(nodes)) => nodes,
            Some(_) => {
                problems.add("/nodes", "must be an object of node name to node spec");
                &empty
            }
            None => {
                problems.add("/nodes", "is required");
                &empty
            }
        };
        if spec.get("nodes").is_some_and(Value::is_object) && nodes_spec.is_empty() {
            problems.add("/nodes", "a graph needs at least one node");
        }
        if nodes_spec.len() > MAX_NODES {
            problems.add("/nodes", format!("a graph may have at most {MAX_NODES} nodes"));
        }

        let mut nodes = Vec::with_capacity(nodes_spec.len());
        let mut index = HashMap::with_capacity(nodes_spec.len());
        for (name, node_spec) in nodes_spec {
            let path = pointer("/nodes", name);
            if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
                problems.add(&path, format!("a node name must have 1 to {MAX_NAME_LEN} characters"));
            }
            let (tool_name, config, policy) = match node_spec {
                Value::Null => (name.clone(), Value::Null, NodePolicy::default()),
                Value::String(tool) => (tool.clone(), Value::Null, NodePolicy::default()),
                Value::Object(fields) => {
                    for key in fields.keys() {
                        if !["tool", "config", "timeout_ms", "retry"].contains(&key.as_str()) {
                            problems.add(
                                pointer(&path, key),
                                "unknown field (expected `tool`, `config`, `timeout_ms` or `retry`)",
                            );
                        }
                    }
                    let policy = NodePolicy::parse(fields, &path, &mut problems.0);
                    let tool = match fields.get("tool") {
                        None | Some(Value::Null) => name.clone(),
                        Some(Value::String(tool)) => tool.clone(),
                        Some(_) => {
                            problems.add(format!("{path}/tool"), "must be a tool name");
                            continue;
                        }
                    };
                    (tool, fields.get("config").cloned().unwrap_or(Value::Null), policy)
                }
                _ => {
                    problems.add(&path, "a node spec must be an object, a tool name or null");
                    continue;
                }
            };
            let Some(tool) = registry.get(&tool_name) else {
                problems.add(
                    &path,
                    format!("`{tool_name}` is not a registered tool (GET /tools lists them)"),
                );
                continue;
            };
            index.insert(name.clone(), NodeId(nodes.len() as u32));
            nodes.push(Node {
                name: name.clone(),
                tool_name,
                tool: Arc::clone(tool),
                config: Arc::new(config),
                policy,
                edge: None,
            });
        }

        match spec.get("edges") {
            None => problems.add("/edges", "is required (use {} for a graph with no edges)"),
            Some(Value::Object(edges)) => {
                for (from, to) in edges {
                    let path = pointer("/edges", from);
                    let source = index.get(from).copied();
                    if source.is_none() && !nodes_spec.contains_key(from) {
                        problems.add(&path, format!("edge from `{from}`, which is not a node"));
                    }
                    let target = match to {
                        Value::Null => None,
                        Value::String(to) => match index.get(to) {
                            Some(id) => Some(*id),
                            None => {
                                if !nodes_spec.contains_key(to) {
                                    problems.add(&path, format!("edge to `{to}`, which is not a node"));
                                }
                                None
                            }
                        },
                        _ => {
                            problems.add(&path, "an edge's target must be a node name or null");
                            None
                        }
                    };
                    if let Some(source) = source {
                        nodes[source.index()].edge = target;
                    }
                }
            }
            Some(_) => problems.add("/edges", "must be an object of node name to node name"),
        }

        if !problems.0.is_empty() {
            return Err(GraphError { problems: problems.0 });
        }
        Ok(Self {
            nodes,
            index,
            max_steps,
            view: OnceLock::new(),
        })
    }

    /// The node a run starts at: the first in the spec.
    pub fn start(&self) -> NodeId {
        NodeId(0)
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// The node of this name.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.index.get(name).copied()
    }

    /// The graph's step limit.
    pub fn max_steps(&self) -> u32 {
        self.max_steps
    }

    /// The nodes, in spec order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter()
    }

    /// How many nodes the graph has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph has no nodes (never true of a parsed graph).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The nodes' names, in spec order.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|node| node.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::engine::tool::{FnTool, Outcome};

    fn registry() -> Registry {
        let mut registry = Registry::new();
        for name in ["a", "b", "c"] {
            registry.register(name, FnTool::inline("test", |_, _| Ok(Outcome::default())));
        }
        registry
    }

    fn problems(spec: Value) -> Vec<(String, String)> {
        Graph::parse(&spec, &registry())
            .unwrap_err()
            .problems
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect()
    }

    #[test]
    fn parses_nodes_in_order_with_edges() {
        let spec = json!({"nodes": {"b": {}, "a": null, "x": "c"}, "edges": {"b": "a", "a": "x", "x": null}});
        let graph = Graph::parse(&spec, &registry()).unwrap();
        assert_eq!(graph.node_names().collect::<Vec<_>>(), ["b", "a", "x"]);
        assert_eq!(graph.node(graph.start()).name, "b");
        assert_eq!(graph.node(graph.start()).edge, graph.find("a"));
        assert_eq!(graph.node(graph.find("x").unwrap()).tool_name, "c");
        assert_eq!(graph.node(graph.find("x").unwrap()).edge, None);
        assert_eq!(graph.max_steps(), DEFAULT_MAX_STEPS);
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let found = problems(json!({
            "nodes": {"a": {}, "nope": {}, "b": 5},
            "edges": {"a": "ghost", "phantom": "a", "b": 3},
            "max_steps": 0
        }));
        assert_eq!(
            found,
            vec![
                ("/max_steps".into(), "must be a whole number from 1 to 10000".into()),
                (
                    "/nodes/nope".into(),
                    "`nope` is not a registered tool (GET /tools lists them)".into()
                ),
                (
                    "/nodes/b".into(),
                    "a node spec must be an object, a tool name or null".into()
                ),
                ("/edges/a".into(), "edge to `ghost`, which is not a node".into()),
                (
                    "/edges/phantom".into(),
                    "edge from `phantom`, which is not a node".into()
                ),
                ("/edges/b".into(), "an edge's target must be a node name or null".into()),
            ]
        );
    }

    #[test]
    fn rejects_empty_and_missing_parts() {
        assert_eq!(
            problems(json!({"nodes": {}, "edges": {}})),
            vec![("/nodes".into(), "a graph needs at least one node".into())]
        );
        assert_eq!(
            problems(json!({"nodes": []})),
            vec![
                ("/nodes".into(), "must be an object of node name to node spec".into()),
                ("/edges".into(), "is required (use {} for a graph with no edges)".into()),
            ]
        );
        assert_eq!(
            problems(json!([1])),
            vec![("".into(), "a graph must be a JSON object".into())]
        );
    }

    #[test]
    fn escapes_pointer_segments() {
        let found = problems(json!({"nodes": {"a/b~": {}}, "edges": {}}));
        assert_eq!(found[0].0, "/nodes/a~1b~0");
    }

    #[test]
    fn accepts_a_custom_step_limit() {
        let graph = Graph::parse(&json!({"nodes": {"a": {}}, "edges": {}, "max_steps": 7}), &registry()).unwrap();
        assert_eq!(graph.max_steps(), 7);
    }
}
