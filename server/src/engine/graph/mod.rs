//! Graphs: named nodes, each running a registered tool, joined by static and
//! conditional edges.
//!
//! [`Graph::parse`] is the only way to get a [`Graph`]: it checks a JSON spec against the
//! tool registry and answers either a graph that can run (with warnings, if any) or
//! every problem found, each with the JSON pointer of the place it was found.
//!
//! Two forms are accepted. The prototype's, whose key order is meaningful (the first
//! node is the start node):
//!
//! ```json
//! {"nodes": {"extract": {}, "complexity": {"config": {}}},
//!  "edges": {"extract": "complexity"},
//!  "max_steps": 100}
//! ```
//!
//! A node's spec may be `{}`/`null` (its name is the tool it runs), a string (the tool's
//! name), or an object with `tool`, `config`, `timeout_ms` and `retry`. An edge's target
//! may be `null` (end).
//!
//! And version 2, told apart by its `nodes` being a list:
//!
//! ```json
//! {"name": "triage", "description": "Pages on urgent tickets.", "start": "classify",
//!  "max_steps": 20,
//!  "nodes": [{"id": "classify", "tool": "script", "config": {"script": "#{urgent: state.level > 2}"}},
//!            {"id": "page", "tool": "noop", "timeout_ms": 500, "retry": {"attempts": 2}},
//!            {"id": "queue", "tool": "noop"}],
//!  "edges": [{"from": "classify", "branches": [{"when": "state.urgent", "to": "page"}], "default": "queue"},
//!            {"from": "page", "to": null}]}
//! ```
//!
//! A conditional edge tries its branches in order and follows the first whose `when`
//! (a Rhai expression over `state`, see [`super::script`]) holds, else `default`
//! (`null` ends the run). Both forms accept conditional edges; in the prototype's form
//! the edge's value is the `{"branches": [...], "default": ...}` object.
//!
//! Beyond the shape, parsing checks that every node can be reached from the start node
//! (an error in version 2, a warning in the prototype's form, which never checked it)
//! and warns of any loop no node can leave: such a run ends only at its step limit.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use serde_json::Value;
use weft_app::wire::{GraphView, Problem};

use super::{
    policy::NodePolicy,
    script::Condition,
    tool::{MissingInput, Registry, Tool},
};

mod flow;
mod parse;

/// The step limit of a graph that sets none.
pub const DEFAULT_MAX_STEPS: u32 = 100;
/// The highest step limit a graph or a run may ask for.
pub const MAX_STEPS_CEILING: u32 = 10_000;
/// The most nodes one graph may have.
pub const MAX_NODES: usize = 1_000;
/// The longest node name accepted.
pub const MAX_NAME_LEN: usize = 128;
/// The most branches one conditional edge may have.
pub const MAX_BRANCHES: usize = 64;
/// The longest graph name accepted.
pub const MAX_GRAPH_NAME_LEN: usize = 200;
/// The longest graph description accepted.
pub const MAX_DESCRIPTION_LEN: usize = 4_000;

/// A node's position in its graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(pub(crate) u32);

impl NodeId {
    fn index(self) -> usize {
        self.0 as usize
    }
}

/// One branch of a conditional edge.
#[derive(Debug)]
pub struct Branch {
    /// When the branch is taken.
    pub when: Condition,
    /// Where it goes (`None`: the run ends).
    pub to: Option<NodeId>,
}

/// Where a run goes after a node whose tool left the choice to the graph.
#[derive(Debug)]
pub enum Route {
    /// Always to this node (`None`: the run ends).
    To(Option<NodeId>),
    /// To the first branch whose condition holds, else to `default`.
    Branches {
        /// The branches, tried in order.
        branches: Vec<Branch>,
        /// Where to go when no condition holds.
        default: Option<NodeId>,
    },
}

impl Route {
    /// Where the run goes from `state`, or why the conditions could not say.
    pub fn next(&self, state: &Arc<weft_app::wire::State>) -> Result<Option<NodeId>, String> {
        match self {
            Route::To(to) => Ok(*to),
            Route::Branches { branches, default } => {
                for (index, branch) in branches.iter().enumerate() {
                    let holds = branch
                        .when
                        .holds(state)
                        .map_err(|err| format!("branch {index} (`{}`) {err}", branch.when.source()))?;
                    if holds {
                        return Ok(branch.to);
                    }
                }
                Ok(*default)
            }
        }
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
    /// What its tool does with an input the state lacks: read it as empty in the
    /// prototype's form, as the prototype did; fail in version 2.
    pub missing: MissingInput,
    /// Where the run goes after it.
    pub route: Route,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("tool", &self.tool_name)
            .field("route", &self.route)
            .finish()
    }
}

/// A graph that passed every check and can run.
#[derive(Debug)]
pub struct Graph {
    nodes: Vec<Node>,
    index: HashMap<String, NodeId>,
    start: NodeId,
    max_steps: u32,
    name: Option<String>,
    description: Option<String>,
    warnings: Vec<Problem>,
    /// The drawing, laid out on first use (see [`Graph::view`]).
    pub(crate) view: OnceLock<GraphView>,
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

/// Whether a spec is in version 2 of the graph language: its `nodes` are a list. (The
/// prototype's form has them as an object.)
pub fn is_version_2(spec: &serde_json::Map<String, Value>) -> bool {
    spec.get("nodes").is_some_and(Value::is_array)
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
    /// Checks `spec` against `registry` and builds the graph it describes, or answers
    /// every problem found, each at its JSON pointer.
    pub fn parse(spec: &Value, registry: &Registry) -> Result<Self, GraphError> {
        parse::parse(spec, registry)
    }

    /// The node a run starts at.
    pub fn start(&self) -> NodeId {
        self.start
    }

    /// The graph's name, if its spec gives one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The graph's description, if its spec gives one.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// What is suspicious but not wrong about the spec, each with its JSON pointer.
    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
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
