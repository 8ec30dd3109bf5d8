//! Parallel execution, for graphs whose edges fan out, join or map: many branches of one
//! run at once over the shared state.
//!
//! - A fan-out edge (`{"from": "x", "to": ["a", "b"]}`) starts a branch per target.
//! - A join edge (`{"from": ["a", "b"], "to": "j"}`) ends each input's branch, and runs
//!   `j` once every input has run.
//! - A map edge runs its node once per element of a list, at most `max_concurrency` at
//!   once, each over its element at `as` and the keys named in `with`; once all are done,
//!   every key the runs wrote is collected, in the list's order, into a list at that key.
//!
//! A branch's step merges its update into the shared state as it finishes: a key with a
//! reducer (the graph's `reducers`) merges by it; a key without one that a second branch
//! writes while both are live fails the run, naming the key and both nodes. Each step is
//! committed as it finishes, with the [`Frontier`] (where every branch stands), so a
//! restart runs again only what had not finished: the branches then in flight, and the
//! map elements not yet done. Every step, in every branch, counts toward the step limit.
//!
//! A node that asks a question parks its branch; once nothing else can run, the run
//! waits for every parked question at once, and each answer resumes its own branch.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    future::Future,
    pin::Pin,
    sync::Arc,
    time::Instant,
};

use futures::{stream::FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_app::wire::{RunStatus, State, Usage};

use super::{
    executor::{
        ended, entry_bytes, raised, Bounds, Checkpoint, Control, Interruption, NodeFailure, NodeStart, RunEnd,
        RunError, SinkError, StateSize, StepSink, StepView, Waiting,
    },
    graph::{Graph, NodeId, Route},
    tool::{Answer, Next, Outcome, Pause, ToolError, ToolInput},
};

/// Where every branch of a parallel run stands: what its checkpoint keeps, as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Frontier {
    /// Branches about to run a node; in a checkpoint, also those that were running one
    /// (a restart runs it again).
    #[serde(default)]
    pub ready: VecDeque<At>,
    /// Branches whose node asked a question, until it is answered.
    #[serde(default)]
    pub parked: Vec<Parked>,
    /// Joins some of whose inputs have run: the join node, and those inputs.
    #[serde(default)]
    pub joins: BTreeMap<String, Vec<String>>,
    /// Maps under way.
    #[serde(default)]
    pub maps: Vec<MapState>,
    /// Who wrote each key while several branches were live.
    #[serde(default)]
    pub writers: BTreeMap<String, Writer>,
    /// The number the next new branch (or map) gets.
    #[serde(default)]
    pub next_branch: u64,
}

/// A branch about to run a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct At {
    /// The branch.
    pub branch: String,
    /// The node.
    pub node: String,
}

/// A branch waiting for the answer to its node's question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    /// The branch.
    pub branch: String,
    /// The node that asked.
    pub node: String,
    /// The step it asked at.
    pub step: u64,
}

/// The branch and node that wrote a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    /// The branch.
    pub branch: String,
    /// The node.
    pub node: String,
}

/// A map under way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapState {
    /// Its number, unique in the run.
    pub id: u64,
    /// The branch that goes on at `then` once every element is done; element `i` runs in
    /// branch `<branch>[i]`.
    pub branch: String,
    /// The node whose edge maps.
    pub from: String,
    /// The node run per element.
    pub node: String,
    /// Where the branch goes then (`None`: it ends).
    pub then: Option<String>,
    /// The key of the list: no branch may write it while the map runs, so a restart
    /// reads the same list from the state.
    pub over: String,
    /// The key each run sees its element at.
    pub as_key: String,
    /// The state keys each run sees besides, as they stand when it starts.
    #[serde(default)]
    pub with: Vec<String>,
    /// Runs at once, at most.
    pub max_concurrency: usize,
    /// How many elements the list has.
    pub len: usize,
    /// The step number its elements' steps start from: each of those step events holds
    /// its element's update (`output`), which a restart reads back.
    pub first_step: u64,
    /// The elements done, as ranges of indices `[start, end)`: a few ranges however long
    /// the list, so the checkpoint each step writes stays small.
    #[serde(default)]
    pub done: Vec<[usize; 2]>,
    /// The elements (the list at `over`).
    #[serde(skip)]
    pub items: Vec<Value>,
    /// The updates of the elements done, by index.
    #[serde(skip)]
    pub outputs: BTreeMap<usize, State>,
    /// The first element not started yet by this process.
    #[serde(skip)]
    cursor: usize,
}

impl MapState {
    /// Whether element `index` is done.
    pub fn is_done(&self, index: usize) -> bool {
        self.done.iter().any(|&[start, end]| (start..end).contains(&index))
    }

    /// Records element `index` as done, merging ranges that meet.
    fn mark_done(&mut self, index: usize) {
        if self.is_done(index) {
            return;
        }
        let at = self.done.partition_point(|&[start, _]| start <= index);
        self.done.insert(at, [index, index + 1]);
        let mut merged: Vec<[usize; 2]> = Vec::with_capacity(self.done.len());
        for range in self.done.drain(..) {
            match merged.last_mut() {
                Some(last) if last[1] >= range[0] => last[1] = last[1].max(range[1]),
                _ => merged.push(range),
            }
        }
        self.done = merged;
    }

    /// How many elements are done.
    fn done_count(&self) -> usize {
        self.done.iter().map(|[start, end]| end - start).sum()
    }

    /// The index of a branch label `<branch>[i]` of this map's elements.
    pub fn index_of(&self, label: &str) -> Option<usize> {
        label
            .strip_prefix(self.branch.as_str())?
            .strip_prefix('[')?
            .strip_suffix(']')?
            .parse()
            .ok()
    }
}

impl Frontier {
    /// One branch, `0`, at `node`; none when there is nothing to run.
    pub fn at(node: Option<String>) -> Self {
        Self {
            ready: node
                .map(|node| At {
                    branch: "0".into(),
                    node,
                })
                .into_iter()
                .collect(),
            next_branch: 1,
            ..Self::default()
        }
    }

    /// Every node the frontier names, to check against a graph.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.ready
            .iter()
            .map(|at| at.node.as_str())
            .chain(self.parked.iter().map(|parked| parked.node.as_str()))
            .chain(self.joins.keys().map(String::as_str))
            .chain(
                self.maps
                    .iter()
                    .flat_map(|map| std::iter::once(map.node.as_str()).chain(map.then.as_deref())),
            )
    }
}

/// What a node in flight is doing it for.
#[derive(Debug, Clone)]
enum Work {
    /// A branch's node.
    Branch(String),
    /// Element `index` of map `map`.
    Item {
        /// The map's id.
        map: u64,
        /// The element.
        index: usize,
    },
}

/// A node in flight.
struct Flight {
    work: Work,
    node: NodeId,
    step: u64,
    attempt: u32,
    started: Instant,
    /// The branch's label in events.
    label: String,
    /// The state a map element sees (the shared state is read afresh for a branch).
    input: Option<Arc<State>>,
    answer: Option<Arc<Answer>>,
    progress: Option<super::tool::Progress>,
}

/// How a flight's future ended.
enum Landed {
    /// The tool answered.
    Called(Result<Outcome, ToolError>),
    /// A retry's backoff is over.
    Slept,
}

type Task = Pin<Box<dyn Future<Output = (u64, Landed)> + Send>>;

/// One parallel run in progress.
struct Run<'g> {
    graph: &'g Graph,
    bounds: Bounds,
    frontier: Frontier,
    state: Arc<State>,
    size: StateSize,
    /// Steps started, in all.
    steps: u64,
    flights: HashMap<u64, Flight>,
    next_flight: u64,
    tasks: FuturesUnordered<Task>,
    /// Answers for branches about to run the node that asked.
    answers: HashMap<String, Answer>,
    /// The questions asked by parked branches, in this process.
    questions: Vec<(u64, NodeId, Pause)>,
}

/// Runs a parallel graph from `checkpoint` until every branch has ended (or the run
/// fails, is cancelled, or waits for answers).
pub(super) async fn execute<S: StepSink>(
    graph: &Graph,
    checkpoint: Checkpoint,
    bounds: Bounds,
    sink: &mut S,
) -> Result<RunEnd, SinkError> {
    let Checkpoint {
        state,
        next,
        steps,
        mut answers,
        frontier,
    } = checkpoint;
    let mut frontier = frontier.unwrap_or_else(|| Frontier::at(next.map(|next| graph.node(next).name.clone())));
    // Parked branches go on: with their answer, or (unanswered, as after a cancel) asking
    // again.
    let mut resumed = HashMap::new();
    for parked in std::mem::take(&mut frontier.parked) {
        if let Some(answer) = Checkpoint::take_answer(&mut answers, &parked.node, parked.step) {
            resumed.insert(parked.branch.clone(), answer);
        }
        frontier.ready.push_front(At {
            branch: parked.branch,
            node: parked.node,
        });
    }
    // A map under way reads its list again (no branch may write it while the map runs).
    for map in &mut frontier.maps {
        if map.items.is_empty() {
            match state.get(&map.over) {
                Some(Value::Array(items)) if items.len() == map.len => map.items.clone_from(items),
                _ => {
                    let error = RunError::MapOver {
                        node: map.from.clone(),
                        key: map.over.clone(),
                    };
                    return Ok(ended(RunStatus::Failed, Arc::new(state), steps, Some(error)));
                }
            }
        }
    }
    let mut run = Run {
        graph,
        bounds,
        frontier,
        size: StateSize::of(&state),
        state: Arc::new(state),
        steps,
        flights: HashMap::new(),
        next_flight: 0,
        tasks: FuturesUnordered::new(),
        answers: resumed,
        questions: Vec::new(),
    };
    let stop = sink.cancel_token();
    loop {
        if let Some(end) = run.start(sink).await? {
            return Ok(end);
        }
        if run.tasks.is_empty() {
            return run.rest(sink).await;
        }
        // Each branch's step is durable before the next one is awaited.
        sink.commit().await?;
        let landed = tokio::select! {
            landed = run.tasks.next() => landed,
            () = raised(&stop) => None,
        };
        let Some((id, landed)) = landed else {
            // Cancelled: the nodes in flight are dropped, their steps never happened.
            let steps = run.steps - run.flights.len() as u64;
            return Ok(ended(RunStatus::Cancelled, run.state, steps, None));
        };
        if let Some(end) = run.land(id, landed, sink).await? {
            return Ok(end);
        }
    }
}

impl Run<'_> {
    /// Starts every ready branch, and map elements up to each map's concurrency. Answers
    /// the run's end when the step limit stops it.
    async fn start<S: StepSink>(&mut self, sink: &mut S) -> Result<Option<RunEnd>, SinkError> {
        while let Some(at) = self.frontier.ready.pop_front() {
            let Some(node) = self.graph.find(&at.node) else {
                let error = RunError::UnknownNext {
                    node: at.branch.clone(),
                    target: at.node.clone(),
                };
                return Ok(Some(self.fail(error)));
            };
            if let Some(end) = self.count_step(node) {
                return Ok(Some(end));
            }
            let answer = self.answers.remove(&at.branch).map(Arc::new);
            self.launch(sink, Work::Branch(at.branch.clone()), node, at.branch, None, answer)
                .await?;
        }
        let mut starts = Vec::new();
        for map in &mut self.frontier.maps {
            let running = self
                .flights
                .values()
                .filter(|flight| matches!(flight.work, Work::Item { map: id, .. } if id == map.id))
                .count();
            let mut free = map.max_concurrency.saturating_sub(running);
            // Elements start in order, once each: everything below the cursor has started.
            while free > 0 && map.cursor < map.items.len() {
                let index = map.cursor;
                map.cursor += 1;
                if !map.is_done(index) {
                    starts.push((map.id, index));
                    free -= 1;
                }
            }
        }
        for (id, index) in starts {
            let Some(map) = self.frontier.maps.iter().find(|map| map.id == id) else {
                continue;
            };
            let Some(node) = self.graph.find(&map.node) else {
                continue;
            };
            let mut input: State = map
                .with
                .iter()
                .filter_map(|key| self.state.get(key).map(|value| (key.clone(), value.clone())))
                .collect();
            input.insert(map.as_key.clone(), map.items[index].clone());
            let label = format!("{}[{index}]", map.branch);
            if let Some(end) = self.count_step(node) {
                return Ok(Some(end));
            }
            self.launch(
                sink,
                Work::Item { map: id, index },
                node,
                label,
                Some(Arc::new(input)),
                None,
            )
            .await?;
        }
        Ok(None)
    }

    /// Counts a step about to start, or ends the run at the step limit.
    fn count_step(&mut self, node: NodeId) -> Option<RunEnd> {
        if self.steps >= u64::from(self.bounds.max_steps) {
            let error = RunError::StepLimit {
                limit: self.bounds.max_steps,
                cycle: vec![self.graph.node(node).name.clone()],
            };
            return Some(self.fail(error));
        }
        self.steps += 1;
        None
    }

    /// Ends the run `failed`, with what is in flight dropped.
    fn fail(&mut self, error: RunError) -> RunEnd {
        let state = std::mem::take(&mut self.state);
        ended(RunStatus::Failed, state, self.steps, Some(error))
    }

    /// Tells the sink a node starts and sets it going.
    async fn launch<S: StepSink>(
        &mut self,
        sink: &mut S,
        work: Work,
        node: NodeId,
        label: String,
        input: Option<Arc<State>>,
        answer: Option<Arc<Answer>>,
    ) -> Result<(), SinkError> {
        let id = self.next_flight;
        self.next_flight += 1;
        sink.node_started(NodeStart {
            step: self.steps,
            node: &self.graph.node(node).name,
            attempt: 1,
            branch: Some(&label),
        })
        .await?;
        let flight = Flight {
            work,
            node,
            step: self.steps,
            attempt: 1,
            started: Instant::now(),
            label,
            input,
            answer,
            progress: self
                .graph
                .node(node)
                .tool
                .streams()
                .then(|| sink.progress(self.steps, &self.graph.node(node).name))
                .flatten(),
        };
        self.call(id, &flight);
        self.flights.insert(id, flight);
        Ok(())
    }

    /// Calls a flight's tool, under its node's timeout.
    fn call(&self, id: u64, flight: &Flight) {
        let node = self.graph.node(flight.node);
        let call = node.tool.call(ToolInput {
            state: flight.input.clone().unwrap_or_else(|| Arc::clone(&self.state)),
            config: Arc::clone(&node.config),
            timeout: node.policy.timeout,
            missing: node.missing,
            answer: flight.answer.clone(),
            progress: flight.progress.clone(),
        });
        let timeout = node.policy.timeout;
        self.tasks.push(Box::pin(async move {
            let result = match tokio::time::timeout(timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(ToolError::TimedOut(timeout)),
            };
            (id, Landed::Called(result))
        }));
    }

    /// Handles a flight's future that finished. Answers the run's end, if it ended.
    async fn land<S: StepSink>(&mut self, id: u64, landed: Landed, sink: &mut S) -> Result<Option<RunEnd>, SinkError> {
        let Some(flight) = self.flights.get_mut(&id) else {
            return Ok(None);
        };
        let result = match landed {
            Landed::Slept => {
                flight.attempt += 1;
                let (step, attempt, node, label) = (flight.step, flight.attempt, flight.node, flight.label.clone());
                sink.node_started(NodeStart {
                    step,
                    node: &self.graph.node(node).name,
                    attempt,
                    branch: Some(&label),
                })
                .await?;
                let flight = &self.flights[&id];
                self.call(id, flight);
                return Ok(None);
            }
            Landed::Called(result) => result,
        };
        let node = self.graph.node(flight.node);
        match result {
            Ok(outcome) => {
                let flight = self.flights.remove(&id).expect("the flight landed");
                self.finished(flight, outcome, sink).await
            }
            Err(error) => {
                let retry_in = node.policy.retry.delay_after(flight.attempt);
                sink.node_failed(NodeFailure {
                    step: flight.step,
                    node: &node.name,
                    attempt: flight.attempt,
                    error: &error,
                    retry_in,
                    branch: Some(&flight.label),
                })
                .await?;
                if let Some(delay) = retry_in {
                    self.tasks.push(Box::pin(async move {
                        tokio::time::sleep(delay).await;
                        (id, Landed::Slept)
                    }));
                    return Ok(None);
                }
                let flight = self.flights.remove(&id).expect("the flight landed");
                let error = RunError::NodeFailed {
                    node: node.name.clone(),
                    source: error,
                    attempts: flight.attempt,
                };
                self.record(sink, &flight, (Vec::new(), Vec::new(), None, None), Some(error))
                    .await
            }
        }
    }

    /// Branches live now (a map counts as one), besides whatever just finished.
    fn live(&self) -> usize {
        let branches = self
            .flights
            .values()
            .filter(|flight| matches!(flight.work, Work::Branch(_)))
            .count();
        branches + self.frontier.ready.len() + self.frontier.parked.len() + self.frontier.maps.len()
    }

    /// A node finished: its update merged, its branch moved on, its step recorded.
    async fn finished<S: StepSink>(
        &mut self,
        flight: Flight,
        outcome: Outcome,
        sink: &mut S,
    ) -> Result<Option<RunEnd>, SinkError> {
        let Outcome {
            update,
            next,
            notes,
            usage,
        } = outcome;
        let graph = self.graph;
        let node = graph.node(flight.node);
        let mut output = None;
        let (changed, failure) = match &flight.work {
            Work::Branch(branch) => {
                if let Next::Wait(pause) = next {
                    self.frontier.parked.push(Parked {
                        branch: branch.clone(),
                        node: node.name.clone(),
                        step: flight.step,
                    });
                    self.questions.push((flight.step, flight.node, *pause));
                    return Ok(None);
                }
                let branch = branch.clone();
                // While other branches are live, a key written by two of them needs a reducer.
                let shared = self.live() > 0;
                match self.merge(&branch, flight.node, update, shared) {
                    Ok(changed) => match self.route(&branch, flight.node, next) {
                        Ok(()) => (changed, None),
                        Err(error) => (changed, Some(error)),
                    },
                    Err(error) => (Vec::new(), Some(error)),
                }
            }
            Work::Item { map, index } => {
                // Kept in its own step event: what a restart reads back.
                output = Some(update.clone());
                match self.item_done(*map, *index, update, next) {
                    Ok(changed) => (changed, None),
                    Err(error) => (Vec::new(), Some(error)),
                }
            }
        };
        self.record(sink, &flight, (notes, changed, output.as_ref(), usage), failure)
            .await
    }

    /// Merges `update` into the shared state as `branch`'s node `node` writes it: through
    /// each key's reducer, checking (when `shared`) that no other branch wrote a key with
    /// none. Answers the keys written.
    fn merge(&mut self, branch: &str, node: NodeId, update: State, shared: bool) -> Result<Vec<String>, RunError> {
        let name = &self.graph.node(node).name;
        let mut merged = Vec::with_capacity(update.len());
        for (key, value) in update {
            if self.frontier.maps.iter().any(|map| map.over == key) {
                return Err(RunError::MapChanged {
                    node: name.clone(),
                    key,
                });
            }
            let reducer = self.graph.reducer(&key);
            if reducer.is_none() {
                // Written by another branch since the branches split (and not joined since).
                match self.frontier.writers.get(&key) {
                    Some(writer) if writer.branch != branch => {
                        return Err(RunError::Conflict {
                            key,
                            first: writer.node.clone(),
                            second: name.clone(),
                        })
                    }
                    _ if shared => {
                        self.frontier.writers.insert(
                            key.clone(),
                            Writer {
                                branch: branch.to_owned(),
                                node: name.clone(),
                            },
                        );
                    }
                    _ => {}
                }
            }
            let value = match reducer {
                Some(reducer) => reducer
                    .reduce(self.state.get(&key).cloned(), value)
                    .map_err(|message| RunError::Reduce {
                        node: name.clone(),
                        key: key.clone(),
                        message,
                    })?,
                None => value,
            };
            merged.push((key, value));
        }
        let measured: Vec<(String, usize)> = merged
            .iter()
            .map(|(key, value)| (key.clone(), entry_bytes(key, value)))
            .collect();
        let bytes = self.size.after(&measured);
        if bytes > self.bounds.max_state_bytes {
            return Err(RunError::StateTooLarge {
                node: name.clone(),
                bytes,
                limit: self.bounds.max_state_bytes,
            });
        }
        self.size.apply(measured);
        let keys = merged.iter().map(|(key, _)| key.clone()).collect();
        let state = Arc::make_mut(&mut self.state);
        for (key, value) in merged {
            state.insert(key, value);
        }
        Ok(keys)
    }

    /// Moves `branch` on from `node`, as its tool or its edge says.
    fn route(&mut self, branch: &str, node: NodeId, next: Next) -> Result<(), RunError> {
        let graph = self.graph;
        let from = graph.node(node);
        let go = |frontier: &mut Frontier, to: NodeId| {
            frontier.ready.push_back(At {
                branch: branch.to_owned(),
                node: graph.node(to).name.clone(),
            });
        };
        match next {
            Next::End | Next::Wait(_) => {}
            Next::Node(target) => {
                let to = graph.find(&target).ok_or_else(|| RunError::UnknownNext {
                    node: from.name.clone(),
                    target,
                })?;
                go(&mut self.frontier, to);
            }
            Next::Edge => match &from.route {
                Route::To(to) => to.iter().for_each(|&to| go(&mut self.frontier, to)),
                Route::Branches { .. } => {
                    let to = from.route.next(&self.state).map_err(|message| RunError::Route {
                        node: from.name.clone(),
                        message,
                    })?;
                    to.iter().for_each(|&to| go(&mut self.frontier, to));
                }
                Route::FanOut(targets) => {
                    for &to in targets {
                        let branch = self.frontier.next_branch.to_string();
                        self.frontier.next_branch += 1;
                        self.frontier.ready.push_back(At {
                            branch,
                            node: graph.node(to).name.clone(),
                        });
                    }
                }
                Route::Join(join) => {
                    let join_name = graph.node(*join).name.clone();
                    let arrived = self.frontier.joins.entry(join_name.clone()).or_default();
                    if !arrived.contains(&from.name) {
                        arrived.push(from.name.clone());
                    }
                    let inputs = graph.join_inputs(*join);
                    if inputs.iter().all(|&input| arrived.contains(&graph.node(input).name)) {
                        self.frontier.joins.remove(&join_name);
                        go(&mut self.frontier, *join);
                        if self.live() <= 1 {
                            // One branch again: what the others wrote is settled.
                            self.frontier.writers.clear();
                        }
                    }
                }
                Route::Map(map) => {
                    let items = match self.state.get(&map.over) {
                        Some(Value::Array(items)) => items.clone(),
                        _ => {
                            return Err(RunError::MapOver {
                                node: from.name.clone(),
                                key: map.over.clone(),
                            })
                        }
                    };
                    if items.is_empty() {
                        map.then.iter().for_each(|&then| go(&mut self.frontier, then));
                        return Ok(());
                    }
                    let id = self.frontier.next_branch;
                    self.frontier.next_branch += 1;
                    self.frontier.maps.push(MapState {
                        id,
                        branch: branch.to_owned(),
                        from: from.name.clone(),
                        node: graph.node(map.to).name.clone(),
                        then: map.then.map(|then| graph.node(then).name.clone()),
                        over: map.over.clone(),
                        as_key: map.as_key.clone(),
                        with: map.with.clone(),
                        max_concurrency: map.max_concurrency,
                        len: items.len(),
                        first_step: self.steps + 1,
                        done: Vec::new(),
                        items,
                        outputs: BTreeMap::new(),
                        cursor: 0,
                    });
                }
            },
        }
        Ok(())
    }

    /// A map element is done: kept, and once every element is, collected into the state
    /// and the map's branch moved on. Answers the keys written to the state.
    fn item_done(&mut self, map: u64, index: usize, update: State, next: Next) -> Result<Vec<String>, RunError> {
        let Some(at) = self.frontier.maps.iter().position(|state| state.id == map) else {
            return Ok(Vec::new());
        };
        if matches!(next, Next::Wait(_)) {
            return Err(RunError::NodeFailed {
                node: self.frontier.maps[at].node.clone(),
                source: ToolError::Failed("a map's node cannot wait for an answer".into()),
                attempts: 1,
            });
        }
        let state = &mut self.frontier.maps[at];
        state.outputs.insert(index, update);
        state.mark_done(index);
        if state.done_count() < state.len {
            return Ok(Vec::new());
        }
        let done = self.frontier.maps.remove(at);
        // Every key any element wrote, in order of first writing, as a list in the
        // elements' order.
        let mut keys: Vec<&String> = Vec::new();
        for update in done.outputs.values() {
            for key in update.keys() {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        let collected: State = keys
            .iter()
            .map(|&key| {
                let values = done
                    .outputs
                    .values()
                    .map(|update| update.get(key).cloned().unwrap_or(Value::Null))
                    .collect();
                (key.clone(), Value::Array(values))
            })
            .collect();
        let node = self.graph.find(&done.from).unwrap_or(self.graph.start());
        let shared = self.live() > 0;
        let changed = self.merge(&done.branch, node, collected, shared)?;
        if let Some(then) = done.then.as_deref().and_then(|then| self.graph.find(then)) {
            self.frontier.ready.push_back(At {
                branch: done.branch,
                node: self.graph.node(then).name.clone(),
            });
        }
        Ok(changed)
    }

    /// What the frontier will be once the flights in progress are done: they are ready
    /// again (a restart runs them again), as JSON.
    fn checkpoint(&self) -> String {
        /// The frontier as [`Frontier`] reads it back, borrowed rather than copied.
        #[derive(Serialize)]
        struct Saved<'a> {
            ready: Vec<&'a At>,
            parked: &'a [Parked],
            joins: &'a BTreeMap<String, Vec<String>>,
            maps: &'a [MapState],
            writers: &'a BTreeMap<String, Writer>,
            next_branch: u64,
        }
        let mut flying: Vec<(&u64, &Flight)> = self.flights.iter().collect();
        flying.sort_by_key(|(id, _)| **id);
        let again: Vec<At> = flying
            .into_iter()
            .filter_map(|(_, flight)| match &flight.work {
                Work::Branch(branch) => Some(At {
                    branch: branch.clone(),
                    node: self.graph.node(flight.node).name.clone(),
                }),
                Work::Item { .. } => None,
            })
            .collect();
        let saved = Saved {
            ready: self.frontier.ready.iter().chain(&again).collect(),
            parked: &self.frontier.parked,
            joins: &self.frontier.joins,
            maps: &self.frontier.maps,
            writers: &self.frontier.writers,
            next_branch: self.frontier.next_branch,
        };
        serde_json::to_string(&saved).unwrap_or_default()
    }

    /// Hands a finished (or failed) node's step to the sink. Answers the run's end when
    /// this step ends it.
    async fn record<S: StepSink>(
        &mut self,
        sink: &mut S,
        flight: &Flight,
        (notes, changed, output, usage): (Vec<String>, Vec<String>, Option<&State>, Option<Usage>),
        failure: Option<RunError>,
    ) -> Result<Option<RunEnd>, SinkError> {
        let over = self.flights.is_empty()
            && self.frontier.ready.is_empty()
            && self.frontier.maps.is_empty()
            && self.frontier.parked.is_empty();
        let failure = match failure {
            None if over && !self.frontier.joins.is_empty() => {
                let (join, arrived) = self.frontier.joins.iter().next().expect("a join");
                Some(RunError::JoinUnmet {
                    join: join.clone(),
                    arrived: arrived.clone(),
                })
            }
            failure => failure,
        };
        let status = match (&failure, over) {
            (Some(_), _) => RunStatus::Failed,
            (None, true) => RunStatus::Completed,
            (None, false) => RunStatus::Running,
        };
        let next = self
            .frontier
            .ready
            .front()
            .map(|at| at.node.clone())
            .or_else(|| {
                self.flights
                    .values()
                    .next()
                    .map(|f| self.graph.node(f.node).name.clone())
            })
            .or_else(|| self.frontier.parked.first().map(|p| p.node.clone()))
            .or_else(|| self.frontier.maps.first().map(|m| m.node.clone()))
            .filter(|_| status == RunStatus::Running);
        let frontier = self.checkpoint();
        let message = failure.as_ref().map(RunError::to_string);
        let node = self.graph.node(flight.node);
        let control = sink
            .step(StepView {
                step: flight.step,
                node: &node.name,
                tool: &node.tool_name,
                state: &self.state,
                notes: &notes,
                changed: &changed,
                status,
                attempt: flight.attempt,
                next: next.as_deref(),
                duration: flight.started.elapsed(),
                error: message.as_deref(),
                branch: Some(&flight.label),
                started: self.steps,
                frontier: Some(&frontier),
                output,
                usage,
            })
            .await?;
        if let Some(error) = failure {
            return Ok(Some(self.fail(error)));
        }
        if over {
            let state = std::mem::take(&mut self.state);
            return Ok(Some(ended(RunStatus::Completed, state, self.steps, None)));
        }
        if control == Control::Cancel {
            let steps = self.steps - self.flights.len() as u64;
            let state = std::mem::take(&mut self.state);
            return Ok(Some(ended(RunStatus::Cancelled, state, steps, None)));
        }
        Ok(None)
    }

    /// Nothing is in flight and nothing can start: the run waits for its questions, or
    /// has ended.
    async fn rest<S: StepSink>(self, sink: &mut S) -> Result<RunEnd, SinkError> {
        if !self.questions.is_empty() {
            let frontier = self.checkpoint();
            let questions: Vec<Interruption<'_>> = self
                .questions
                .iter()
                .map(|(step, node, pause)| Interruption {
                    step: *step,
                    node: &self.graph.node(*node).name,
                    pause,
                })
                .collect();
            let control = sink
                .interrupted(Waiting {
                    questions: &questions,
                    started: self.steps,
                    frontier: Some(&frontier),
                })
                .await?;
            let status = match control {
                Control::Continue => RunStatus::Waiting,
                Control::Cancel => RunStatus::Cancelled,
            };
            drop(questions);
            return Ok(ended(status, self.state, self.steps, None));
        }
        if let Some((join, arrived)) = self.frontier.joins.iter().next() {
            let error = RunError::JoinUnmet {
                join: join.clone(),
                arrived: arrived.clone(),
            };
            return Ok(ended(RunStatus::Failed, self.state, self.steps, Some(error)));
        }
        Ok(ended(RunStatus::Completed, self.state, self.steps, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(branch: &str) -> MapState {
        MapState {
            id: 1,
            branch: branch.into(),
            from: "split".into(),
            node: "each".into(),
            then: None,
            over: "items".into(),
            as_key: "item".into(),
            with: Vec::new(),
            max_concurrency: 4,
            len: 10,
            first_step: 2,
            done: Vec::new(),
            items: Vec::new(),
            outputs: BTreeMap::new(),
            cursor: 0,
        }
    }

    #[test]
    fn done_elements_are_kept_as_a_few_ranges() {
        let mut map = map("0");
        for index in [3, 0, 1, 5, 2, 9, 4] {
            map.mark_done(index);
        }
        assert_eq!(map.done, [[0, 6], [9, 10]]);
        assert_eq!(map.done_count(), 7);
        assert!(map.is_done(5) && !map.is_done(6) && map.is_done(9));
        map.mark_done(5);
        assert_eq!(map.done_count(), 7, "once each");
        // Serialized, the checkpoint holds the ranges, not the elements.
        map.items = vec![Value::from(1); 10];
        let text = serde_json::to_string(&map).unwrap();
        assert!(
            text.contains(r#""done":[[0,6],[9,10]]"#) && !text.contains("items\":["),
            "{text}"
        );
    }

    #[test]
    fn an_elements_index_is_read_from_its_branch_label() {
        let map = map("2");
        assert_eq!(map.index_of("2[7]"), Some(7));
        assert_eq!(map.index_of("12[7]"), None);
        assert_eq!(map.index_of("2"), None);
        assert_eq!(map.index_of("2[x]"), None);
    }
}
