//! Reading a graph spec, in either form, into a [`Graph`]: every problem is collected
//! with its JSON pointer rather than stopping at the first.
//!
//! Nodes are first *declared* (so that edges can name nodes whose own spec is broken
//! without a second, misleading error), then *built* (tool looked up, config checked),
//! then joined by their edges; the flow checks of [`super::flow`] run last.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use serde_json::{Map, Value};

use super::{
    flow, parse_max_steps, Branch, Graph, GraphError, MapRoute, Node, NodeId, Reducer, Route, DEFAULT_MAX_STEPS,
    MAX_BRANCHES, MAX_DESCRIPTION_LEN, MAX_GRAPH_NAME_LEN, MAX_NAME_LEN, MAX_NODES,
};
use crate::engine::{
    pointer,
    policy::NodePolicy,
    script::Condition,
    tool::{MissingInput, Problems, Registry, Tool},
};

/// A node as the spec declares it, before its tool and edges are resolved.
struct Declared<'a> {
    name: &'a str,
    path: String,
    spec: &'a Value,
}

/// A node whose tool and config checked out.
struct Built {
    tool_name: String,
    tool: Arc<dyn Tool>,
    config: Value,
    policy: NodePolicy,
}

/// A route whose targets are indices into the declared nodes.
enum Draft {
    To(Option<usize>),
    Branches(Vec<(Condition, Option<usize>)>, Option<usize>),
    FanOut(Vec<usize>),
    Join(usize),
    Map(DraftMap),
}

/// A map edge whose nodes are indices into the declared nodes.
struct DraftMap {
    over: String,
    as_key: String,
    with: Vec<String>,
    to: usize,
    max_concurrency: usize,
    then: Option<usize>,
}

/// The most elements a map runs at once, at most.
pub const MAX_MAP_CONCURRENCY: u64 = 64;

impl Draft {
    fn targets(&self) -> Vec<Option<usize>> {
        match self {
            Draft::To(to) => vec![*to],
            Draft::FanOut(to) => to.iter().map(|&to| Some(to)).collect(),
            Draft::Join(to) => vec![Some(*to)],
            Draft::Map(map) => vec![Some(map.to), map.then],
            Draft::Branches(branches, default) => branches
                .iter()
                .map(|(_, to)| *to)
                .chain(std::iter::once(*default))
                .collect(),
        }
    }
}

/// The parser's working set: what has been declared so far and what is wrong.
struct Parser<'a> {
    registry: &'a Registry,
    v2: bool,
    problems: Problems,
    warnings: Problems,
    /// Nodes whose tool cannot run on this server ([`Tool::unavailable`]).
    unavailable: Problems,
    declared: Vec<Declared<'a>>,
    names: HashMap<&'a str, usize>,
    built: Vec<Option<Built>>,
    routes: Vec<Option<Draft>>,
    route_paths: Vec<Option<String>>,
    /// Each join node's inputs, by index.
    joins: HashMap<usize, Vec<usize>>,
}

impl<'a> Parser<'a> {
    /// Where an edge's `value` leads: `Some(None)` for the end of the run, `Some(index)`
    /// for a declared node, and `None` when it names no node (the problem is added, at
    /// `path`, with `what` the edge is: "edge to", say).
    fn target(&mut self, value: &Value, path: &str, what: &str) -> Option<Option<usize>> {
        match value {
            Value::Null => Some(None),
            Value::String(name) => match self.names.get(name.as_str()) {
                Some(&index) => Some(Some(index)),
                None => {
                    self.problems.add(path, format!("{what} `{name}`, which is not a node"));
                    None
                }
            },
            _ => {
                self.problems.add(path, "must be a node name or null");
                None
            }
        }
    }

    fn declare_nodes(&mut self, nodes: &'a Value) {
        match nodes {
            Value::Object(nodes) => {
                for (name, spec) in nodes {
                    self.declare(name, pointer("/nodes", name), spec);
                }
            }
            Value::Array(nodes) => {
                for (i, spec) in nodes.iter().enumerate() {
                    let path = format!("/nodes/{i}");
                    match spec.get("id") {
                        Some(Value::String(id)) => {
                            if let Some(&first) = self.names.get(id.as_str()) {
                                let first = self.declared[first].path.clone();
                                self.problems.add(
                                    format!("{path}/id"),
                                    format!("duplicate node id `{id}` (first at {first})"),
                                );
                                continue;
                            }
                            self.declare(id, path, spec);
                        }
                        Some(_) => self.problems.add(format!("{path}/id"), "must be a string"),
                        None if spec.is_object() => self.problems.add(format!("{path}/id"), "is required"),
                        None => self
                            .problems
                            .add(&path, "a node must be an object with `id` and `tool`"),
                    }
                }
            }
            _ => self
                .problems
                .add("/nodes", "must be an object of node name to node spec"),
        }
        if self.declared.is_empty() && !self.problems.0.iter().any(|p| p.path.starts_with("/nodes")) {
            self.problems.add("/nodes", "a graph needs at least one node");
        }
        if self.declared.len() > MAX_NODES {
            self.problems
                .add("/nodes", format!("a graph may have at most {MAX_NODES} nodes"));
        }
    }

    fn declare(&mut self, name: &'a str, path: String, spec: &'a Value) {
        if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
            let at = if self.v2 { format!("{path}/id") } else { path.clone() };
            self.problems
                .add(at, format!("a node name must have 1 to {MAX_NAME_LEN} characters"));
        }
        self.names.insert(name, self.declared.len());
        self.declared.push(Declared { name, path, spec });
    }

    fn build_nodes(&mut self) {
        let fields: &[&str] = if self.v2 {
            &["id", "tool", "config", "timeout_ms", "retry"]
        } else {
            &["tool", "config", "timeout_ms", "retry"]
        };
        for index in 0..self.declared.len() {
            let Declared { name, path, spec } = &self.declared[index];
            let (name, path, spec) = (*name, path.clone(), *spec);
            let built = self.build(name, &path, spec, fields);
            for (at, target) in built.iter().flat_map(|built| built.tool.named_targets()) {
                if !self.names.contains_key(target.as_str()) {
                    self.problems
                        .add(format!("{path}/config{at}"), format!("`{target}` is not a node"));
                }
            }
            self.built.push(built);
        }
    }

    fn build(&mut self, name: &str, path: &str, spec: &Value, fields: &[&str]) -> Option<Built> {
        let (tool_name, config, policy, tool_path) = match spec {
            Value::Null if !self.v2 => (name.to_owned(), Value::Null, NodePolicy::default(), path.to_owned()),
            Value::String(tool) if !self.v2 => (tool.clone(), Value::Null, NodePolicy::default(), path.to_owned()),
            Value::Object(spec) => {
                self.unknown_fields(spec, path, fields);
                let policy = NodePolicy::parse(spec, path, &mut self.problems.0);
                let tool_path = format!("{path}/tool");
                let tool = match spec.get("tool") {
                    None | Some(Value::Null) if self.v2 => {
                        self.problems.add(&tool_path, "is required");
                        return None;
                    }
                    None | Some(Value::Null) => name.to_owned(),
                    Some(Value::String(tool)) => tool.clone(),
                    Some(_) => {
                        self.problems.add(&tool_path, "must be a tool name");
                        return None;
                    }
                };
                let tool_path = if spec.contains_key("tool") {
                    tool_path
                } else {
                    path.to_owned()
                };
                (
                    tool,
                    spec.get("config").cloned().unwrap_or(Value::Null),
                    policy,
                    tool_path,
                )
            }
            _ => {
                self.problems
                    .add(path, "a node spec must be an object, a tool name or null");
                return None;
            }
        };
        let Some(registered) = self.registry.get(&tool_name) else {
            self.problems.add(
                tool_path,
                format!("`{tool_name}` is not a registered tool (GET /tools lists them)"),
            );
            return None;
        };
        let tool = match registered.configure(&config) {
            Ok(tool) => tool.unwrap_or_else(|| Arc::clone(registered)),
            Err(problems) => {
                let config_path = format!("{path}/config");
                for problem in problems {
                    self.problems.add(
                        format!("{config_path}{}", problem.path),
                        format!("bad config for `{tool_name}`: {}", problem.message),
                    );
                }
                return None;
            }
        };
        if let Some(why) = tool.unavailable() {
            self.unavailable.add(path, why);
        }
        Some(Built {
            tool_name,
            tool,
            config,
            policy,
        })
    }

    /// Reads a conditional edge at `path`: its `branches` and its `default`.
    fn conditional(&mut self, path: &str, branches: &Value, default: Option<&Value>) -> Option<Draft> {
        let Value::Array(branches) = branches else {
            self.problems
                .add(format!("{path}/branches"), "must be a list of {\"when\", \"to\"}");
            return None;
        };
        if branches.is_empty() || branches.len() > MAX_BRANCHES {
            self.problems.add(
                format!("{path}/branches"),
                format!("must have 1 to {MAX_BRANCHES} branches"),
            );
        }
        let mut drafts = Vec::with_capacity(branches.len());
        let mut broken = false;
        for (i, branch) in branches.iter().enumerate() {
            let at = format!("{path}/branches/{i}");
            let Some(fields) = branch.as_object() else {
                self.problems.add(&at, "a branch must be an object {\"when\", \"to\"}");
                broken = true;
                continue;
            };
            for key in fields.keys().filter(|key| !["when", "to"].contains(&key.as_str())) {
                self.problems
                    .add(pointer(&at, key), "unknown field (expected `when` or `to`)");
            }
            let when = match fields.get("when") {
                Some(Value::String(source)) => Condition::compile(source)
                    .map_err(|message| self.problems.add(format!("{at}/when"), message))
                    .ok(),
                Some(_) => {
                    self.problems
                        .add(format!("{at}/when"), "must be an expression (a string)");
                    None
                }
                None => {
                    self.problems.add(format!("{at}/when"), "is required");
                    None
                }
            };
            let to = match fields.get("to") {
                Some(to) => self.target(to, &format!("{at}/to"), "branch to"),
                None => {
                    self.problems.add(format!("{at}/to"), "is required (null ends the run)");
                    None
                }
            };
            match (when, to) {
                (Some(when), Some(to)) => drafts.push((when, to)),
                _ => broken = true,
            }
        }
        let default = match default {
            Some(default) => self.target(default, &format!("{path}/default"), "default to"),
            None => {
                self.problems
                    .add(format!("{path}/default"), "is required (null ends the run)");
                None
            }
        };
        match default {
            Some(default) if !broken => Some(Draft::Branches(drafts, default)),
            _ => None,
        }
    }

    /// A fan-out edge's targets: two or more distinct nodes.
    fn fan_out(&mut self, path: &str, to: &[Value]) -> Option<Draft> {
        if to.len() < 2 {
            self.problems.add(
                format!("{path}/to"),
                "a fan-out needs two nodes or more (or give one name)",
            );
            return None;
        }
        let mut targets = Vec::with_capacity(to.len());
        for (i, target) in to.iter().enumerate() {
            let at = format!("{path}/to/{i}");
            if target.is_null() {
                self.problems.add(&at, "a branch must go to a node");
                continue;
            }
            let Some(Some(index)) = self.target(target, &at, "fan-out to") else {
                continue;
            };
            if targets.contains(&index) {
                self.problems
                    .add(&at, format!("`{}` is in this fan-out twice", self.declared[index].name));
                continue;
            }
            targets.push(index);
        }
        (targets.len() == to.len()).then_some(Draft::FanOut(targets))
    }

    /// A join edge: each node of `from` ends its branch there, and `to` runs once all have.
    fn join(&mut self, path: &str, from: &[Value], fields: &Map<String, Value>) {
        self.unknown_fields(fields, path, &["from", "to"]);
        let to = match fields.get("to") {
            Some(Value::String(_)) => fields
                .get("to")
                .and_then(|to| self.target(to, &format!("{path}/to"), "join to")),
            _ => {
                self.problems.add(format!("{path}/to"), "a join goes to one node");
                None
            }
        };
        if from.len() < 2 {
            self.problems
                .add(format!("{path}/from"), "a join needs two nodes or more");
        }
        let Some(Some(to)) = to else { return };
        let mut inputs = Vec::new();
        for (i, input) in from.iter().enumerate() {
            let at = format!("{path}/from/{i}");
            let Some(name) = input.as_str() else {
                self.problems.add(&at, "must be a node name");
                continue;
            };
            let Some(&index) = self.names.get(name) else {
                self.problems
                    .add(&at, format!("join from `{name}`, which is not a node"));
                continue;
            };
            if inputs.contains(&index) {
                self.problems.add(&at, format!("`{name}` is in this join twice"));
                continue;
            }
            inputs.push(index);
            self.set_route(name, at.clone(), path, Some(Draft::Join(to)));
        }
        if let Some(first) = self.joins.get(&to) {
            let first: Vec<&str> = first.iter().map(|&i| self.declared[i].name).collect();
            self.problems.add(
                path,
                format!("`{}` already joins {}", self.declared[to].name, first.join(", ")),
            );
            return;
        }
        self.joins.insert(to, inputs);
    }

    /// A map edge's `map` and `then`.
    fn map(&mut self, path: &str, map: &Value, then: Option<&Value>) -> Option<Draft> {
        let at = format!("{path}/map");
        let Some(fields) = map.as_object() else {
            self.problems
                .add(&at, "must be {\"over\", \"as\", \"to\", \"max_concurrency\"}");
            return None;
        };
        self.unknown_fields(fields, &at, &["over", "as", "to", "max_concurrency", "with"]);
        let with = match fields.get("with") {
            None => Vec::new(),
            Some(Value::Array(keys)) if keys.iter().all(Value::is_string) => {
                keys.iter().filter_map(Value::as_str).map(str::to_owned).collect()
            }
            Some(_) => {
                self.problems.add(format!("{at}/with"), "must be a list of state keys");
                Vec::new()
            }
        };
        let mut key = |field: &str| match fields.get(field) {
            Some(Value::String(key)) if !key.is_empty() => Some(key.clone()),
            _ => {
                self.problems
                    .add(format!("{at}/{field}"), "must be a state key (a string)");
                None
            }
        };
        let (over, as_key) = (key("over"), key("as"));
        let to = match fields.get("to") {
            Some(to @ Value::String(_)) => self.target(to, &format!("{at}/to"), "map to").flatten(),
            _ => {
                self.problems
                    .add(format!("{at}/to"), "must be the node to run per element");
                None
            }
        };
        let max_concurrency = match fields.get("max_concurrency") {
            None => 4,
            Some(value) => match value.as_u64().filter(|n| (1..=MAX_MAP_CONCURRENCY).contains(n)) {
                Some(n) => n as usize,
                None => {
                    self.problems.add(
                        format!("{at}/max_concurrency"),
                        format!("must be a whole number from 1 to {MAX_MAP_CONCURRENCY}"),
                    );
                    return None;
                }
            },
        };
        let then = match then {
            Some(then) => self.target(then, &format!("{path}/then"), "then to")?,
            None => {
                self.problems
                    .add(format!("{path}/then"), "is required (null ends the run)");
                return None;
            }
        };
        Some(Draft::Map(DraftMap {
            over: over?,
            as_key: as_key?,
            with,
            to: to?,
            max_concurrency,
            then,
        }))
    }

    fn set_route(&mut self, from: &str, from_path: String, path: &str, route: Option<Draft>) {
        let Some(&index) = self.names.get(from) else {
            self.problems
                .add(from_path, format!("edge from `{from}`, which is not a node"));
            return;
        };
        if let Some(first) = &self.route_paths[index] {
            let message = format!("`{from}` already has an edge (at {first}); give it branches instead");
            self.problems.add(from_path, message);
            return;
        }
        self.route_paths[index] = Some(path.to_owned());
        self.routes[index] = route;
    }

    fn read_edges(&mut self, edges: Option<&'a Value>) {
        self.routes = (0..self.declared.len()).map(|_| None).collect();
        self.route_paths = vec![None; self.declared.len()];
        match (edges, self.v2) {
            (None, false) => self
                .problems
                .add("/edges", "is required (use {} for a graph with no edges)"),
            (None, true) => {}
            (Some(Value::Object(edges)), false) => {
                for (from, to) in edges {
                    let path = pointer("/edges", from);
                    let route = match to {
                        Value::Object(fields) => {
                            self.unknown_fields(fields, &path, &["branches", "default"]);
                            let branches = fields.get("branches").unwrap_or(&Value::Null);
                            self.conditional(&path, branches, fields.get("default"))
                        }
                        _ => self.target(to, &path, "edge to").map(Draft::To),
                    };
                    self.set_route(from, path.clone(), &path, route);
                }
            }
            (Some(Value::Array(edges)), true) => {
                for (i, edge) in edges.iter().enumerate() {
                    let path = format!("/edges/{i}");
                    let Some(fields) = edge.as_object() else {
                        self.problems.add(
                            &path,
                            "an edge must be {\"from\", \"to\"} or {\"from\", \"branches\", \"default\"}",
                        );
                        continue;
                    };
                    if let Some(Value::Array(from)) = fields.get("from") {
                        self.join(&path, from, fields);
                        continue;
                    }
                    let route = if fields.contains_key("branches") {
                        self.unknown_fields(fields, &path, &["from", "branches", "default"]);
                        let branches = fields.get("branches").unwrap_or(&Value::Null);
                        self.conditional(&path, branches, fields.get("default"))
                    } else if let Some(map) = fields.get("map") {
                        self.unknown_fields(fields, &path, &["from", "map", "then"]);
                        self.map(&path, map, fields.get("then"))
                    } else if let Some(Value::Array(to)) = fields.get("to") {
                        self.unknown_fields(fields, &path, &["from", "to"]);
                        self.fan_out(&path, to)
                    } else {
                        self.unknown_fields(fields, &path, &["from", "to"]);
                        match fields.get("to") {
                            Some(to) => self.target(to, &format!("{path}/to"), "edge to").map(Draft::To),
                            None => {
                                self.problems
                                    .add(format!("{path}/to"), "is required (or give `branches` and `default`)");
                                None
                            }
                        }
                    };
                    match fields.get("from") {
                        Some(Value::String(from)) => self.set_route(from, format!("{path}/from"), &path, route),
                        Some(_) => self.problems.add(format!("{path}/from"), "must be a node name"),
                        None => self.problems.add(format!("{path}/from"), "is required"),
                    }
                }
            }
            (Some(_), false) => self
                .problems
                .add("/edges", "must be an object of node name to node name"),
            (Some(_), true) => self.problems.add("/edges", "must be a list of edges"),
        }
    }

    fn unknown_fields(&mut self, fields: &Map<String, Value>, path: &str, known: &[&str]) {
        for key in fields.keys().filter(|key| !known.contains(&key.as_str())) {
            let expected = known.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ");
            self.problems.add(
                pointer(path, key),
                format!("unknown field (expected one of {expected})"),
            );
        }
    }

    /// A map's node runs alone, once per element: an edge of its own would never be
    /// taken, so it is refused.
    fn check_map_nodes(&mut self) {
        let mapped: Vec<usize> = self
            .routes
            .iter()
            .flatten()
            .filter_map(|route| match route {
                Draft::Map(map) => Some(map.to),
                _ => None,
            })
            .collect();
        for index in mapped {
            if let Some(path) = self.route_paths[index].clone() {
                self.problems.add(
                    path,
                    format!(
                        "`{}` is run per element by a map, alone: it cannot have an edge of its own",
                        self.declared[index].name
                    ),
                );
            }
        }
    }

    /// Where each declared node may lead: its route's targets and its tool's jumps.
    fn successors(&self) -> Vec<Vec<Option<usize>>> {
        (0..self.declared.len())
            .map(|index| {
                let mut next: Vec<Option<usize>> = match &self.routes[index] {
                    Some(route) => route.targets(),
                    None => vec![None],
                };
                if let Some(built) = &self.built[index] {
                    next.extend(
                        built
                            .tool
                            .jumps()
                            .iter()
                            .filter_map(|name| self.names.get(name.as_str()).map(|&i| Some(i))),
                    );
                }
                next
            })
            .collect()
    }

    /// Nodes the start cannot reach (an error in version 2, a warning before), and
    /// loops no node can leave (a warning).
    fn check_flow(&mut self, start: usize, max_steps: u32) {
        let successors = self.successors();
        // A broken edge hides where it leads: judge reachability only over sound edges.
        let edges_sound = !self.problems.0.iter().any(|p| p.path.starts_with("/edges"));
        let reached = flow::reachable(&successors, start);
        let start_name = self.declared[start].name;
        let unreached = self
            .declared
            .iter()
            .zip(reached)
            .filter(|(_, reached)| edges_sound && !reached);
        for (declared, _) in unreached {
            let message = format!(
                "`{}` cannot be reached from the start node `{start_name}`",
                declared.name
            );
            let list = if self.v2 {
                &mut self.problems
            } else {
                &mut self.warnings
            };
            list.add(&declared.path, message);
        }

        let chooses: Vec<bool> = (0..self.declared.len())
            .map(|index| {
                let conditional = matches!(self.routes[index], Some(Draft::Branches(..)));
                let jumps = self.built[index]
                    .as_ref()
                    .is_some_and(|built| !built.tool.jumps().is_empty());
                conditional || jumps
            })
            .collect();
        for part in flow::loops_without_exit(&successors, &chooses) {
            let names: Vec<String> = part
                .iter()
                .map(|&index| format!("`{}`", self.declared[index].name))
                .collect();
            self.warnings.add(
                &self.declared[part[0]].path,
                format!(
                    "the loop through {} has no exit condition: a run that enters it ends only at the step \
                     limit ({max_steps})",
                    names.join(", ")
                ),
            );
        }
    }
}

fn optional_text(spec: &Map<String, Value>, key: &str, max: usize, problems: &mut Problems) -> Option<String> {
    match spec.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.chars().count() <= max => Some(text.clone()),
        Some(_) => {
            problems.add(
                format!("/{key}"),
                format!("must be a string of at most {max} characters"),
            );
            None
        }
    }
}

/// Checks `spec` against `registry` and builds the graph it describes.
pub(super) fn parse(spec: &Value, registry: &Registry) -> Result<Graph, GraphError> {
    let mut problems = Problems(Vec::new());
    let Some(spec) = spec.as_object() else {
        problems.add("", "a graph must be a JSON object");
        return Err(GraphError { problems: problems.0 });
    };
    let v2 = super::is_version_2(spec);
    if v2 {
        for key in spec.keys() {
            if ![
                "name",
                "description",
                "start",
                "max_steps",
                "nodes",
                "edges",
                "reducers",
            ]
            .contains(&key.as_str())
            {
                problems.add(
                    pointer("", key),
                    "unknown field (expected `name`, `description`, `start`, `max_steps`, `nodes`, `edges` or \
                     `reducers`)",
                );
            }
        }
    }

    let max_steps = match spec.get("max_steps") {
        None | Some(Value::Null) => DEFAULT_MAX_STEPS,
        Some(value) => parse_max_steps(value).unwrap_or_else(|message| {
            problems.add("/max_steps", message);
            DEFAULT_MAX_STEPS
        }),
    };
    let reducers = read_reducers(spec.get("reducers"), &mut problems);
    let name = optional_text(spec, "name", MAX_GRAPH_NAME_LEN, &mut problems);
    let description = optional_text(spec, "description", MAX_DESCRIPTION_LEN, &mut problems);

    let mut parser = Parser {
        registry,
        v2,
        problems,
        warnings: Problems(Vec::new()),
        unavailable: Problems(Vec::new()),
        declared: Vec::new(),
        names: HashMap::new(),
        built: Vec::new(),
        routes: Vec::new(),
        route_paths: Vec::new(),
        joins: HashMap::new(),
    };
    match spec.get("nodes") {
        Some(nodes) => parser.declare_nodes(nodes),
        None => parser.problems.add("/nodes", "is required"),
    }
    parser.build_nodes();
    parser.read_edges(spec.get("edges"));
    parser.check_map_nodes();

    let start = match spec.get("start") {
        Some(Value::String(start)) if v2 => match parser.names.get(start.as_str()) {
            Some(&index) => Some(index),
            None => {
                parser
                    .problems
                    .add("/start", format!("the start node `{start}` is not a node"));
                None
            }
        },
        Some(value) if v2 && !value.is_null() => {
            parser.problems.add("/start", "must be a node id");
            None
        }
        _ => (!parser.declared.is_empty()).then_some(0),
    };
    if let Some(start) = start {
        parser.check_flow(start, max_steps);
    }

    let Parser {
        problems,
        warnings,
        unavailable,
        declared,
        names,
        built,
        routes,
        joins,
        ..
    } = parser;
    let parallel = routes
        .iter()
        .flatten()
        .any(|route| matches!(route, Draft::FanOut(_) | Draft::Join(_) | Draft::Map(_)));
    if !problems.0.is_empty() {
        return Err(GraphError { problems: problems.0 });
    }
    let id = |index: Option<usize>| index.map(|index| NodeId(index as u32));
    let nodes = declared
        .iter()
        .zip(built)
        .zip(routes)
        .filter_map(|((declared, built), route)| {
            let built = built?;
            let route = match route {
                None => Route::To(None),
                Some(Draft::To(to)) => Route::To(id(to)),
                Some(Draft::Branches(branches, default)) => Route::Branches {
                    branches: branches
                        .into_iter()
                        .map(|(when, to)| Branch { when, to: id(to) })
                        .collect(),
                    default: id(default),
                },
                Some(Draft::FanOut(to)) => Route::FanOut(to.into_iter().map(|to| NodeId(to as u32)).collect()),
                Some(Draft::Join(to)) => Route::Join(NodeId(to as u32)),
                Some(Draft::Map(map)) => Route::Map(Box::new(MapRoute {
                    over: map.over,
                    as_key: map.as_key,
                    with: map.with,
                    to: NodeId(map.to as u32),
                    max_concurrency: map.max_concurrency,
                    then: id(map.then),
                })),
            };
            Some(Node {
                name: declared.name.to_owned(),
                tool_name: built.tool_name,
                tool: built.tool,
                config: Arc::new(built.config),
                policy: built.policy,
                missing: if v2 {
                    MissingInput::Fail
                } else {
                    MissingInput::ReadAsEmpty
                },
                route,
            })
        })
        .collect();
    Ok(Graph {
        nodes,
        index: names
            .into_iter()
            .map(|(name, index)| (name.to_owned(), NodeId(index as u32)))
            .collect(),
        start: NodeId(start.unwrap_or(0) as u32),
        max_steps,
        name,
        description,
        warnings: warnings.0,
        unavailable: unavailable.0,
        joins: joins
            .into_iter()
            .map(|(to, from)| (NodeId(to as u32), from.into_iter().map(|i| NodeId(i as u32)).collect()))
            .collect(),
        reducers,
        parallel,
        view: OnceLock::new(),
    })
}

/// A graph's `reducers`: state key to reducer name.
fn read_reducers(reducers: Option<&Value>, problems: &mut Problems) -> HashMap<String, Reducer> {
    let mut read = HashMap::new();
    match reducers {
        None | Some(Value::Null) => {}
        Some(Value::Object(reducers)) => {
            for (key, name) in reducers {
                match name.as_str().and_then(Reducer::parse) {
                    Some(reducer) => {
                        read.insert(key.clone(), reducer);
                    }
                    None => problems.add(
                        pointer("/reducers", key),
                        "must be `append`, `extend`, `sum`, `max`, `merge` or `last`",
                    ),
                }
            }
        }
        Some(_) => problems.add("/reducers", "must be an object of state key to reducer"),
    }
    read
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::engine::graph::Route;
    use crate::engine::tool::{FnTool, Outcome};

    fn registry() -> Registry {
        let mut registry = Registry::new();
        for name in ["a", "b", "c"] {
            registry.register(name, FnTool::inline("test", |_, _| Ok(Outcome::default())));
        }
        crate::tools::builtin::register(&mut registry);
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

    fn warnings(spec: Value) -> Vec<(String, String)> {
        Graph::parse(&spec, &registry())
            .unwrap()
            .warnings()
            .iter()
            .map(|p| (p.path.clone(), p.message.clone()))
            .collect()
    }

    fn to(graph: &Graph, name: &str) -> Option<NodeId> {
        match graph.node(graph.find(name).unwrap()).route {
            Route::To(to) => to,
            _ => panic!("`{name}` has no static edge"),
        }
    }

    #[test]
    fn parses_nodes_in_order_with_edges() {
        let spec = json!({"nodes": {"b": {}, "a": null, "x": "c"}, "edges": {"b": "a", "a": "x", "x": null}});
        let graph = Graph::parse(&spec, &registry()).unwrap();
        assert_eq!(graph.node_names().collect::<Vec<_>>(), ["b", "a", "x"]);
        assert_eq!(graph.node(graph.start()).name, "b");
        assert_eq!(to(&graph, "b"), graph.find("a"));
        assert_eq!(graph.node(graph.find("x").unwrap()).tool_name, "c");
        assert_eq!(to(&graph, "x"), None);
        assert_eq!(graph.max_steps(), DEFAULT_MAX_STEPS);
        assert!(graph.warnings().is_empty());
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
                ("/edges/b".into(), "must be a node name or null".into()),
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
            problems(json!({"nodes": 3})),
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
        // In a node's retry policy and its config too.
        let found = problems(json!({"nodes": {"a": {"retry": {"x/y": 1}}}, "edges": {}}));
        assert_eq!(found[0].0, "/nodes/a/retry/x~1y");
        let found = problems(json!({"nodes": {"a": {"tool": "sleep", "config": {"m~s": 1}}}, "edges": {}}));
        assert_eq!(found[0].0, "/nodes/a/config/m~0s");
    }

    #[test]
    fn accepts_a_custom_step_limit() {
        let graph = Graph::parse(&json!({"nodes": {"a": {}}, "edges": {}, "max_steps": 7}), &registry()).unwrap();
        assert_eq!(graph.max_steps(), 7);
    }

    #[test]
    fn parses_version_2_with_a_start_node_and_branches() {
        let spec = json!({
            "name": "triage",
            "description": "Routes by level.",
            "start": "classify",
            "max_steps": 9,
            "nodes": [
                {"id": "page", "tool": "noop", "timeout_ms": 500, "retry": {"attempts": 2}},
                {"id": "classify", "tool": "increment", "config": {"key": "level"}},
                {"id": "queue", "tool": "noop"}
            ],
            "edges": [
                {"from": "classify", "branches": [{"when": "state.level > 2", "to": "page"}], "default": "queue"},
                {"from": "page", "to": null}
            ]
        });
        let graph = Graph::parse(&spec, &registry()).unwrap();
        assert_eq!(graph.name(), Some("triage"));
        assert_eq!(graph.description(), Some("Routes by level."));
        assert_eq!(graph.node(graph.start()).name, "classify");
        assert_eq!(graph.max_steps(), 9);
        assert_eq!(graph.node(graph.find("page").unwrap()).policy.retry.attempts, 2);
        let route = &graph.node(graph.start()).route;
        let high = Arc::new(json!({"level": 3}).as_object().cloned().unwrap());
        let low = Arc::new(json!({"level": 1}).as_object().cloned().unwrap());
        assert_eq!(route.next(&high), Ok(graph.find("page")));
        assert_eq!(route.next(&low), Ok(graph.find("queue")));
        assert!(graph.warnings().is_empty());
    }

    #[test]
    fn every_mistake_is_reported_at_its_place() {
        let found = problems(json!({
            "start": "begin",
            "nodes": [
                {"id": "first", "tool": "teleport"},
                {"id": "second", "tool": "sleep", "config": {"ms": "soon"}},
                {"id": "first", "tool": "noop"}
            ],
            "edges": [
                {"from": "first", "branches": [{"when": "state.x >", "to": "second"}], "default": null},
                {"from": "second", "to": "third"}
            ]
        }));
        assert_eq!(
            found,
            vec![
                (
                    "/nodes/2/id".into(),
                    "duplicate node id `first` (first at /nodes/0)".into()
                ),
                (
                    "/nodes/0/tool".into(),
                    "`teleport` is not a registered tool (GET /tools lists them)".into()
                ),
                (
                    "/nodes/1/config/ms".into(),
                    "bad config for `sleep`: invalid type: string \"soon\", expected u64".into()
                ),
                (
                    "/edges/0/branches/0/when".into(),
                    "does not compile: Script is incomplete (line 1, position 10)".into()
                ),
                ("/edges/1/to".into(), "edge to `third`, which is not a node".into()),
                ("/start".into(), "the start node `begin` is not a node".into()),
            ]
        );
    }

    #[test]
    fn unreachable_nodes_are_errors_in_version_2_and_warnings_before() {
        let found = problems(json!({
            "nodes": [{"id": "a", "tool": "noop"}, {"id": "island", "tool": "noop"}],
            "edges": []
        }));
        assert_eq!(
            found,
            vec![(
                "/nodes/1".into(),
                "`island` cannot be reached from the start node `a`".into()
            )]
        );
        assert_eq!(
            warnings(json!({"nodes": {"a": {}, "island": "b"}, "edges": {}})),
            vec![(
                "/nodes/island".into(),
                "`island` cannot be reached from the start node `a`".into()
            )]
        );
    }

    #[test]
    fn a_loop_without_an_exit_condition_is_a_warning() {
        let spec = json!({
            "nodes": [{"id": "go", "tool": "noop"}, {"id": "spin", "tool": "noop"}, {"id": "again", "tool": "noop"}],
            "edges": [{"from": "go", "to": "spin"}, {"from": "spin", "to": "again"}, {"from": "again", "to": "spin"}]
        });
        assert_eq!(
            warnings(spec),
            vec![(
                "/nodes/1".into(),
                "the loop through `spin`, `again` has no exit condition: a run that enters it ends only at the \
                 step limit (100)"
                    .into()
            )]
        );
        let with_exit = json!({
            "nodes": [{"id": "spin", "tool": "increment"}],
            "edges": [{"from": "spin", "branches": [{"when": "state.count < 3", "to": "spin"}], "default": null}]
        });
        assert!(warnings(with_exit).is_empty());
    }

    #[test]
    fn config_is_checked_against_the_tool_s_schema() {
        assert_eq!(
            problems(json!({"nodes": {"a": {"tool": "sleep", "config": {"ms": 90000, "jitter": 1}}}, "edges": {}})),
            vec![(
                "/nodes/a/config/jitter".into(),
                "bad config for `sleep`: unknown field `jitter`, expected `ms`".into()
            )]
        );
        assert_eq!(
            problems(json!({"nodes": {"a": {"tool": "sleep", "config": {"ms": 90000}}}, "edges": {}})),
            vec![(
                "/nodes/a/config/ms".into(),
                "bad config for `sleep`: must be at most 60000".into()
            )]
        );
        assert_eq!(
            problems(json!({"nodes": {"a": {"config": {"x": 1}}}, "edges": {}})),
            vec![(
                "/nodes/a/config".into(),
                "bad config for `a`: this tool takes no config".into()
            )]
        );
    }

    #[test]
    fn a_node_has_one_edge_entry() {
        let found = problems(json!({
            "nodes": [{"id": "a", "tool": "noop"}, {"id": "b", "tool": "noop"}],
            "edges": [{"from": "a", "to": "b"}, {"from": "a", "to": null}]
        }));
        assert_eq!(
            found,
            vec![(
                "/edges/1/from".into(),
                "`a` already has an edge (at /edges/0); give it branches instead".into()
            )]
        );
    }
}
