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

/// A map edge: the node `to` runs once per element of the list at `over`, each run seeing
/// the element at `as_key` and the keys in `with` (only those: a copy of the whole state
/// per element would cost the list's length times the state), at most `max_concurrency`
/// at once; every key the runs write is then collected, in the list's order, into a list
/// at that key, and the run goes on at `then`.
#[derive(Debug)]
pub struct MapRoute {
    /// The state key holding the list.
    pub over: String,
    /// The key each run sees its element at.
    pub as_key: String,
    /// The state keys each run sees besides.
    pub with: Vec<String>,
    /// The node run per element.
    pub to: NodeId,
    /// Runs at once, at most.
    pub max_concurrency: usize,
    /// Where the run goes once every element is done (`None`: it ends).
    pub then: Option<NodeId>,
}

/// How concurrent writes to one state key merge, as a graph's `reducers` declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reducer {
    /// Add the value to the list at the key.
    Append,
    /// Add the value's elements (a list) to the list.
    Extend,
    /// Add the value (a number) to the number.
    Sum,
    /// Keep the greater number.
    Max,
    /// Merge the value's keys (an object) into the object.
    Merge,
    /// The last write wins.
    Last,
}

impl Reducer {
    /// The reducer of this name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "append" => Self::Append,
            "extend" => Self::Extend,
            "sum" => Self::Sum,
            "max" => Self::Max,
            "merge" => Self::Merge,
            "last" => Self::Last,
            _ => return None,
        })
    }

    /// `current` (the key's value, if any) with `value` merged in, or why they do not fit.
    pub fn reduce(self, current: Option<Value>, value: Value) -> Result<Value, String> {
        let current = current.filter(|current| !current.is_null());
        match (self, current) {
            (Self::Last, _) => Ok(value),
            (Self::Append, None) => Ok(Value::Array(vec![value])),
            (Self::Append, Some(Value::Array(mut list))) => {
                list.push(value);
                Ok(Value::Array(list))
            }
            (Self::Extend, current) => {
                let Value::Array(more) = value else {
                    return Err("`extend` takes a list".into());
                };
                match current {
                    None => Ok(Value::Array(more)),
                    Some(Value::Array(mut list)) => {
                        list.extend(more);
                        Ok(Value::Array(list))
                    }
                    Some(_) => Err("`extend` needs a list to extend".into()),
                }
            }
            (Self::Sum | Self::Max, current) => {
                let number = |value: &Value| value.as_f64().ok_or_else(|| "takes numbers".to_owned());
                let Some(current) = current else { return Ok(value) };
                let (a, b) = (number(&current)?, number(&value)?);
                let whole = current.is_i64() && value.is_i64();
                let result = if self == Self::Sum { a + b } else { a.max(b) };
                Ok(if whole {
                    Value::from(result as i64)
                } else {
                    serde_json::Number::from_f64(result).map_or(Value::Null, Value::Number)
                })
            }
            (Self::Merge, current) => {
                let Value::Object(more) = value else {
                    return Err("`merge` takes an object".into());
                };
                match current {
                    None => Ok(Value::Object(more)),
                    Some(Value::Object(mut object)) => {
                        object.extend(more);
                        Ok(Value::Object(object))
                    }
                    Some(_) => Err("`merge` needs an object to merge into".into()),
                }
            }
            (Self::Append, Some(_)) => Err("`append` needs a list to append to".into()),
        }
    }
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
    /// To every one of these at once, each a branch of its own.
    FanOut(Vec<NodeId>),
    /// This branch ends at a join: the node runs once every one of its inputs has.
    Join(NodeId),
    /// To a node per element of a list (see [`MapRoute`]).
    Map(Box<MapRoute>),
}

impl Route {
    /// Where the run goes from `state`, or why the conditions could not say.
    pub fn next(&self, state: &Arc<weft_app::wire::State>) -> Result<Option<NodeId>, String> {
        match self {
            Route::To(to) => Ok(*to),
            Route::FanOut(_) | Route::Join(_) | Route::Map(_) => {
                Err("a parallel edge runs only in a graph's parallel execution".into())
            }
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
    /// The nodes that cannot run on this server, each with why (see [`Graph::unavailable`]).
    unavailable: Vec<Problem>,
    /// Each join node's inputs: it runs once all of them have.
    joins: HashMap<NodeId, Vec<NodeId>>,
    /// How writes to each key merge, by key.
    reducers: HashMap<String, Reducer>,
    /// Whether any edge fans out, joins or maps: runs then take the parallel execution.
    parallel: bool,
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

    /// The nodes whose tool cannot run on this server as it is configured (an `llm` node
    /// with no provider set, say), each with its JSON pointer and what to set. A graph
    /// with any is refused when created; one stored earlier still loads.
    pub fn unavailable(&self) -> &[Problem] {
        &self.unavailable
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

    /// Whether runs of the graph may run branches at once (an edge fans out, joins or
    /// maps).
    pub fn is_parallel(&self) -> bool {
        self.parallel
    }

    /// The inputs of a join node.
    pub fn join_inputs(&self, join: NodeId) -> &[NodeId] {
        self.joins.get(&join).map_or(&[], Vec::as_slice)
    }

    /// How writes to `key` merge, if the graph says.
    pub fn reducer(&self, key: &str) -> Option<Reducer> {
        self.reducers.get(key).copied()
    }
}
