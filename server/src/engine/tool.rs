//! Tools: the named units of work a graph's nodes run.
//!
//! A tool reads the run's shared state and answers with an [`Outcome`]: the keys to
//! write (merged into the state at the top level), an optional explicit next node, and
//! log notes. The state is handed over as an `Arc`, so a tool that only reads costs no
//! copy, and a CPU-heavy tool can move it to the [`CpuPool`] without cloning it.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, OnceLock,
    },
};

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use weft_app::wire::{Problem, State, ToolInfo};

/// The future a tool returns.
pub type ToolFuture = Pin<Box<dyn Future<Output = Result<Outcome, ToolError>> + Send>>;

/// What a node's tool is given.
#[derive(Clone)]
pub struct ToolInput {
    /// The run's state before the node.
    pub state: Arc<State>,
    /// The node's own configuration from the graph spec (`null` when it has none).
    pub config: Arc<Value>,
    /// The time this attempt may take (the node's timeout). The call is dropped when it
    /// runs out; a tool whose work cannot be dropped midway (a script on the CPU pool,
    /// say) should stop by itself within it.
    pub timeout: std::time::Duration,
    /// What to do with an input the state lacks (see [`MissingInput`]).
    pub missing: MissingInput,
    /// The answer to the question this node asked ([`Next::Wait`]), when the run goes on
    /// after it; `None` on a first call.
    pub answer: Option<Arc<Answer>>,
    /// Where the tool may tell its work as it goes (a model's answer, token by token),
    /// for whoever watches the run live; `None` when nobody can.
    pub progress: Option<Progress>,
}

/// Takes pieces of a node's output as they come (see [`ToolInput::progress`]).
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

impl std::fmt::Debug for ToolInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolInput")
            .field("config", &self.config)
            .field("timeout", &self.timeout)
            .field("answer", &self.answer)
            .field("progress", &self.progress.is_some())
            .finish_non_exhaustive()
    }
}

/// How a question a node asked was resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A person answered (with input matching the question's schema).
    Given {
        /// The answer.
        input: Value,
        /// Who answered, when known.
        by: Option<String>,
    },
    /// Nobody answered before its deadline.
    TimedOut,
}

/// A question for a person, which a node asks by answering [`Next::Wait`]: the run waits
/// (holding nothing) until it is answered, then calls the node again with the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    /// The question.
    pub prompt: String,
    /// The JSON Schema the answer must match.
    pub input_schema: Value,
    /// State values shown with the question.
    pub context: State,
    /// How long to wait for an answer; `None`: until one comes.
    pub timeout: Option<std::time::Duration>,
}

/// What a tool does with an input key the state lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingInput {
    /// Fail the node, saying what is missing: graphs in version 2 of the language.
    #[default]
    Fail,
    /// Read it as empty, as the prototype's tools did (`suggest` before `detect` scores
    /// an empty issue list), with a note in the run's log: graphs in the prototype's form.
    ReadAsEmpty,
}

/// Where the run goes after a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Next {
    /// Follow the graph's static edge (or end if the node has none).
    #[default]
    Edge,
    /// Go to the named node, whatever the edges say.
    Node(String),
    /// End the run here.
    End,
    /// Wait for a person's answer, then call the node again with it (see [`Pause`]).
    Wait(Box<Pause>),
}

/// What a tool answers.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Top-level keys to write into the state.
    pub update: State,
    /// Where to go next.
    pub next: Next,
    /// Lines for the run's log.
    pub notes: Vec<String>,
    /// What the tool's model calls used, if it made any.
    pub usage: Option<weft_app::wire::Usage>,
}

impl Outcome {
    /// An outcome that writes `update` and follows the edges.
    pub fn update(update: State) -> Self {
        Self {
            update,
            ..Self::default()
        }
    }

    /// Adds a log note.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// Sets where the run goes next.
    pub fn then(mut self, next: Next) -> Self {
        self.next = next;
        self
    }
}

/// Why a tool failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// The state lacks something the tool needs, or holds it in the wrong shape.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The tool ran and failed.
    #[error("{0}")]
    Failed(String),
    /// The tool took longer than the node's timeout.
    #[error("timed out after {} ms", .0.as_millis())]
    TimedOut(std::time::Duration),
    /// The tool panicked or its worker was lost; the details are in the server's log.
    #[error("the tool crashed")]
    Crashed,
    /// The tool stopped before finishing because its [`Cancel`] was raised: whoever
    /// waited for it had given up.
    #[error("stopped before finishing")]
    Stopped,
}

/// A unit of work a node can run.
pub trait Tool: Send + Sync + 'static {
    /// One line on what the tool does, listed by the tool registry.
    fn description(&self) -> &str;
    /// The config a node gives this tool: its JSON Schema (`GET /tools` lists it) and its
    /// check. By default, none.
    fn config(&self) -> &ConfigSpec {
        static NONE: OnceLock<ConfigSpec> = OnceLock::new();
        NONE.get_or_init(ConfigSpec::none)
    }
    /// Checks a node's `config` when its graph is parsed, answering every problem with a
    /// JSON pointer relative to the config. A tool that prepares something per node (a
    /// compiled script, say) answers the tool the node runs instead of this one.
    fn configure(&self, config: &Value) -> Result<Option<Arc<dyn Tool>>, Vec<Problem>> {
        self.config().check(config).map(|()| None)
    }
    /// Runs the tool over the state.
    fn call(&self, input: ToolInput) -> ToolFuture;
    /// The nodes, by name, this tool may send a run to instead of following the node's
    /// edge ([`Next::Node`]); drawn as jump edges where the graph has such a node.
    fn jumps(&self) -> &[String] {
        &[]
    }
    /// The nodes a node's config names as places to go, each with the JSON pointer of
    /// where in the config: unlike a preset tool's [`Tool::jumps`], the graph must have
    /// them, and parsing says so when it does not.
    fn named_targets(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Whether the tool tells its work as it goes ([`ToolInput::progress`]): only then is
    /// a progress hook made for its calls, which costs an allocation per call.
    fn streams(&self) -> bool {
        false
    }
    /// Why this node cannot run on this server as it is configured (a service it calls is
    /// not set up), or `None`. Asked when a graph is created, so that it is refused with
    /// the reason; a graph stored earlier still loads, and its runs fail saying the same.
    fn unavailable(&self) -> Option<String> {
        None
    }
}

/// A pooled job's stop signal. It is raised when whoever waits for the job gives up (the
/// node timed out, or the run was cancelled): the job's future is dropped, but its thread
/// cannot be, so a long computation checks [`Cancel::requested`] every so often and
/// stops there.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A signal that is never raised: for work run inline, which is dropped with its call.
    pub fn never() -> Self {
        Self::default()
    }

    /// Whether the job should stop.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Asks the job to stop.
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Raises a job's [`Cancel`] when dropped, unless the job's result was taken.
struct CancelOnDrop(Option<Cancel>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            cancel.request();
        }
    }
}

/// A bounded pool for CPU-heavy tools, so they never block the async runtime's workers
/// and never take more threads than the machine has cores for.
///
/// The bound holds for real: a job keeps its permit until its thread has finished, not
/// only while somebody waits for it, so a job whose caller gave up still counts until it
/// stops (which it does at its next [`Cancel`] check).
#[derive(Debug, Clone)]
pub struct CpuPool {
    permits: Arc<Semaphore>,
    /// Jobs run at most at once.
    threads: usize,
    /// Jobs whose threads are running now.
    busy: Arc<AtomicUsize>,
}

/// What a job's thread holds while it runs: its permit, and its place in the busy count.
struct Running {
    _permit: OwnedSemaphorePermit,
    busy: Arc<AtomicUsize>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl CpuPool {
    /// A pool running at most `threads` jobs at once.
    pub fn new(threads: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(threads.max(1))),
            threads: threads.max(1),
            busy: Arc::default(),
        }
    }

    /// A pool sized to the machine's cores.
    pub fn for_this_machine() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// How many jobs it runs at most at once.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// How many jobs' threads are running now, including jobs whose callers gave up and
    /// that have not reached their next stop check yet.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    /// Runs `job` on a blocking thread once a permit is free. Dropping the returned
    /// future raises the job's [`Cancel`].
    pub async fn run<T, F>(&self, job: F) -> Result<T, ToolError>
    where
        T: Send + 'static,
        F: FnOnce(&Cancel) -> T + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ToolError::Crashed)?;
        let cancel = Cancel::default();
        let mut on_drop = CancelOnDrop(Some(cancel.clone()));
        self.busy.fetch_add(1, Ordering::Relaxed);
        let running = Running {
            _permit: permit,
            busy: Arc::clone(&self.busy),
        };
        let result = tokio::task::spawn_blocking(move || {
            let _running = running;
            job(&cancel)
        })
        .await;
        on_drop.0 = None;
        result.map_err(|err| {
            tracing::error!(error = %err, "a CPU tool panicked");
            ToolError::Crashed
        })
    }
}

/// Problems found while checking something, each at its JSON pointer, in the order found.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Adds a problem at `path`.
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// A tool's typed configuration: read from a node's `config` with serde, described by
/// its OpenAPI schema, and checked further by [`ToolConfig::validate`].
pub trait ToolConfig: DeserializeOwned + utoipa::PartialSchema {
    /// Problems serde cannot see (bounds, say), with pointers relative to the config.
    fn validate(&self) -> Vec<Problem> {
        Vec::new()
    }
}

/// Reads a node's `config` (`null` reads as `{}`) as `C`, or answers every problem.
pub fn read_config<C: ToolConfig>(config: &Value) -> Result<C, Vec<Problem>> {
    let empty = Value::Object(serde_json::Map::new());
    let config = if config.is_null() { &empty } else { config };
    let parsed: C = serde_path_to_error::deserialize(config).map_err(|err| {
        let path = err.path().iter().fold(String::new(), |path, segment| match segment {
            serde_path_to_error::Segment::Map { key } => super::pointer(&path, key),
            serde_path_to_error::Segment::Seq { index } => super::pointer(&path, &index.to_string()),
            _ => path,
        });
        vec![Problem {
            path,
            message: err.into_inner().to_string(),
        }]
    })?;
    match parsed.validate() {
        problems if problems.is_empty() => Ok(parsed),
        problems => Err(problems),
    }
}

/// The schema of a tool's config and its check, as [`FnTool`]s declare them.
#[derive(Clone)]
pub struct ConfigSpec {
    schema: Value,
    check: fn(&Value) -> Result<(), Vec<Problem>>,
}

impl ConfigSpec {
    /// A tool that takes no config: `config` may be left out, `null` or `{}`.
    pub fn none() -> Self {
        Self {
            schema: serde_json::json!({
                "type": ["object", "null"],
                "description": "This tool takes no config.",
                "additionalProperties": false
            }),
            check: |config| match config {
                Value::Null => Ok(()),
                Value::Object(fields) if fields.is_empty() => Ok(()),
                _ => Err(vec![Problem {
                    path: String::new(),
                    message: "this tool takes no config".into(),
                }]),
            },
        }
    }

    /// The JSON Schema.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Checks a node's config.
    pub fn check(&self, config: &Value) -> Result<(), Vec<Problem>> {
        (self.check)(config)
    }

    /// A tool configured by `C`.
    pub fn of<C: ToolConfig>() -> Self {
        Self {
            schema: serde_json::to_value(C::schema()).unwrap_or(Value::Null),
            check: |config| read_config::<C>(config).map(drop),
        }
    }
}

type SyncFn = dyn Fn(&State, &Value, &Cancel) -> Result<Outcome, ToolError> + Send + Sync;

/// How much work a call will be, in the tool's own unit (bytes of input, say).
pub type Weigh = fn(&State) -> usize;

/// When a pooled tool goes to the pool: calls weighing at least `threshold` by `weigh`.
/// Lighter calls run inline, where a hop to another thread would cost more than the work.
#[derive(Debug, Clone, Copy)]
pub struct Heavy {
    /// Measures a call.
    pub weigh: Weigh,
    /// The weight from which a call goes to the pool.
    pub threshold: usize,
}

/// A state key a tool reads, with the empty value it reads as when the state lacks it
/// and the graph says [`MissingInput::ReadAsEmpty`].
pub type Input = (&'static str, fn() -> Value);

/// A tool made of a plain function, run either inline (for work that takes
/// microseconds) or on a [`CpuPool`] (for work that grows with the input).
pub struct FnTool {
    description: String,
    run: Arc<SyncFn>,
    pool: Option<(CpuPool, Option<Heavy>)>,
    jumps: Vec<String>,
    config: ConfigSpec,
    inputs: Vec<Input>,
}

impl FnTool {
    /// A cheap tool, run inline on the async runtime.
    pub fn inline<F>(description: &str, run: F) -> Self
    where
        F: Fn(&State, &Value) -> Result<Outcome, ToolError> + Send + Sync + 'static,
    {
        Self::new(
            description,
            Arc::new(move |state: &State, config: &Value, _: &Cancel| run(state, config)),
            None,
        )
    }

    fn new(description: &str, run: Arc<SyncFn>, pool: Option<(CpuPool, Option<Heavy>)>) -> Self {
        Self {
            description: description.to_owned(),
            run,
            pool,
            jumps: Vec::new(),
            config: ConfigSpec::none(),
            inputs: Vec::new(),
        }
    }

    /// Declares the state keys the tool reads and the empty value each reads as when
    /// missing and the node's graph says [`MissingInput::ReadAsEmpty`].
    pub fn reads(mut self, inputs: &[Input]) -> Self {
        self.inputs = inputs.to_vec();
        self
    }

    /// The state the tool sees: `state` with each missing input read as empty, when the
    /// graph asks for that, and a note for each.
    fn filled(&self, state: Arc<State>, missing: MissingInput) -> (Arc<State>, Vec<String>) {
        let absent = |key: &&'static str| !state.contains_key(*key);
        if missing == MissingInput::Fail || !self.inputs.iter().map(|(key, _)| key).any(absent) {
            return (state, Vec::new());
        }
        let mut filled = State::clone(&state);
        let mut notes = Vec::new();
        for (key, empty) in &self.inputs {
            if !filled.contains_key(*key) {
                let value = empty();
                notes.push(format!("`{key}` is missing: read as {value}"));
                filled.insert((*key).to_owned(), value);
            }
        }
        (Arc::new(filled), notes)
    }

    /// Declares the tool's config: nodes' configs are checked against `C` when their
    /// graph is parsed.
    pub fn with_config<C: ToolConfig>(mut self) -> Self {
        self.config = ConfigSpec::of::<C>();
        self
    }

    /// Declares the nodes the tool may jump to (see [`Tool::jumps`]).
    pub fn may_jump_to(mut self, nodes: &[&str]) -> Self {
        self.jumps = nodes.iter().map(|&node| node.to_owned()).collect();
        self
    }

    /// A CPU-heavy tool, always run on `pool`. A long computation checks its [`Cancel`]
    /// now and then, and stops when asked.
    pub fn on_pool<F>(description: &str, pool: CpuPool, run: F) -> Self
    where
        F: Fn(&State, &Value, &Cancel) -> Result<Outcome, ToolError> + Send + Sync + 'static,
    {
        Self::new(description, Arc::new(run), Some((pool, None)))
    }

    /// A tool whose cost grows with its input: run on `pool` when `heavy` says the call
    /// is heavy, inline otherwise.
    pub fn on_pool_when<F>(description: &str, pool: CpuPool, heavy: Heavy, run: F) -> Self
    where
        F: Fn(&State, &Value, &Cancel) -> Result<Outcome, ToolError> + Send + Sync + 'static,
    {
        Self::new(description, Arc::new(run), Some((pool, Some(heavy))))
    }
}

impl Tool for FnTool {
    fn description(&self) -> &str {
        &self.description
    }

    fn jumps(&self) -> &[String] {
        &self.jumps
    }

    fn config(&self) -> &ConfigSpec {
        &self.config
    }

    fn call(&self, input: ToolInput) -> ToolFuture {
        let run = Arc::clone(&self.run);
        let (state, notes) = self.filled(input.state, input.missing);
        let config = input.config;
        let pool = match &self.pool {
            Some((pool, None)) => Some(pool),
            Some((pool, Some(heavy))) if (heavy.weigh)(&state) >= heavy.threshold => Some(pool),
            _ => None,
        };
        let noted = move |outcome: Result<Outcome, ToolError>| {
            outcome.map(|mut outcome| {
                if !notes.is_empty() {
                    outcome.notes.splice(0..0, notes);
                }
                outcome
            })
        };
        match pool {
            None => Box::pin(std::future::ready(noted(run(&state, &config, &Cancel::never())))),
            Some(pool) => {
                let pool = pool.clone();
                Box::pin(async move { noted(pool.run(move |cancel| run(&state, &config, cancel)).await?) })
            }
        }
    }
}

/// The tools nodes may name, each with a one-line description.
#[derive(Clone, Default)]
pub struct Registry {
    tools: BTreeMap<String, Arc<dyn Tool>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `tool` under `name`, replacing any tool of that name.
    pub fn register(&mut self, name: &str, tool: impl Tool) -> &mut Self {
        self.tools.insert(name.to_owned(), Arc::new(tool));
        self
    }

    /// The tool registered as `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.get(name)
    }

    /// Every tool, sorted by name.
    pub fn list(&self) -> Vec<ToolInfo> {
        self.tools
            .iter()
            .map(|(name, tool)| ToolInfo {
                name: name.clone(),
                description: tool.description().to_owned(),
                config_schema: tool.config().schema().clone(),
            })
            .collect()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tools.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(state: State) -> ToolInput {
        ToolInput {
            state: Arc::new(state),
            config: Arc::new(Value::Null),
            timeout: crate::engine::policy::DEFAULT_TIMEOUT,
            missing: MissingInput::Fail,
            answer: None,
            progress: None,
        }
    }

    #[tokio::test]
    async fn pooled_tool_runs_off_the_runtime_and_returns_its_outcome() {
        let tool = FnTool::on_pool("doubles n", CpuPool::new(1), |state, _, _| {
            let n = state["n"].as_i64().unwrap_or(0);
            let mut update = State::new();
            update.insert("n".into(), (n * 2).into());
            Ok(Outcome::update(update).note("doubled"))
        });
        let mut state = State::new();
        state.insert("n".into(), 21.into());
        let outcome = tool.call(input(state)).await.unwrap();
        assert_eq!(outcome.update["n"], 42);
        assert_eq!(outcome.notes, vec!["doubled".to_owned()]);
        assert_eq!(outcome.next, Next::Edge);
    }

    #[tokio::test]
    async fn a_panicking_pooled_tool_becomes_a_crash_error() {
        let tool = FnTool::on_pool("panics", CpuPool::new(1), |_, _, _| panic!("boom"));
        let err = tool.call(input(State::new())).await.unwrap_err();
        assert_eq!(err, ToolError::Crashed);
    }

    #[tokio::test]
    async fn a_job_whose_caller_gives_up_is_asked_to_stop_and_keeps_its_permit_until_it_does() {
        let pool = CpuPool::new(1);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let job = pool.run(move |cancel| {
            started_tx.send(()).unwrap();
            // Work until asked to stop, then wait to be let go.
            while !cancel.requested() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            release_rx.recv().ok();
            "stopped"
        });
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(50), job).await;
        assert!(gave_up.is_err(), "the caller gave up");
        started_rx.recv().unwrap();
        // The thread is still running, so it still holds the pool's only permit.
        assert_eq!(pool.busy(), 1);
        let next = tokio::time::timeout(std::time::Duration::from_millis(50), pool.run(|_| 1)).await;
        assert!(next.is_err(), "a second job waits for the permit");
        release_tx.send(()).unwrap();
        assert_eq!(pool.run(|_| 2).await.unwrap(), 2);
        assert_eq!(pool.busy(), 0);
    }

    #[tokio::test]
    async fn a_job_awaited_to_the_end_is_never_asked_to_stop() {
        let pool = CpuPool::new(1);
        let asked = pool.run(|cancel| cancel.requested()).await.unwrap();
        assert!(!asked);
        assert_eq!(pool.busy(), 0);
    }

    #[tokio::test]
    async fn a_weighed_tool_goes_to_the_pool_only_when_heavy() {
        // A pool with no permits would never run a job: a light call must not need one.
        let pool = CpuPool {
            permits: Arc::new(Semaphore::new(0)),
            threads: 0,
            busy: Arc::default(),
        };
        let heavy = Heavy {
            weigh: |state| state.get("n").and_then(Value::as_u64).unwrap_or(0) as usize,
            threshold: 10,
        };
        let tool = FnTool::on_pool_when("echo", pool, heavy, |_, _, _| Ok(Outcome::default().note("ran")));
        let mut light = State::new();
        light.insert("n".into(), 3.into());
        assert_eq!(tool.call(input(light)).await.unwrap().notes, ["ran"]);
        let mut big = State::new();
        big.insert("n".into(), 10.into());
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), tool.call(input(big))).await;
        assert!(waiting.is_err(), "a heavy call waits for a pool permit");
    }

    #[tokio::test]
    async fn missing_inputs_read_as_empty_only_when_the_graph_says_so() {
        let tool = FnTool::inline("counts issues", |state, _| {
            let issues = state
                .get("issues")
                .and_then(Value::as_array)
                .ok_or_else(|| ToolError::InvalidInput("`issues` is missing".into()))?;
            let mut update = State::new();
            update.insert("count".into(), issues.len().into());
            Ok(Outcome::update(update).note("counted"))
        })
        .reads(&[("issues", || Value::Array(Vec::new())), ("code", || Value::from(""))]);

        let strict = tool.call(input(State::new())).await.unwrap_err();
        assert_eq!(strict, ToolError::InvalidInput("`issues` is missing".into()));

        let lenient = ToolInput {
            missing: MissingInput::ReadAsEmpty,
            answer: None,
            progress: None,
            ..input(State::new())
        };
        let outcome = tool.call(lenient).await.unwrap();
        assert_eq!(outcome.update["count"], 0);
        assert_eq!(
            outcome.notes,
            [
                "`issues` is missing: read as []",
                "`code` is missing: read as \"\"",
                "counted"
            ]
        );

        // A present input is read as it is, with no note.
        let mut state = State::new();
        state.insert("issues".into(), serde_json::json!([1, 2]));
        state.insert("code".into(), "x".into());
        let present = ToolInput {
            missing: MissingInput::ReadAsEmpty,
            answer: None,
            progress: None,
            ..input(state)
        };
        let outcome = tool.call(present).await.unwrap();
        assert_eq!(outcome.update["count"], 2);
        assert_eq!(outcome.notes, ["counted"]);
    }

    #[test]
    fn registry_lists_tools_sorted_with_descriptions() {
        let mut registry = Registry::new();
        registry
            .register("b", FnTool::inline("second", |_, _| Ok(Outcome::default())))
            .register("a", FnTool::inline("first", |_, _| Ok(Outcome::default())));
        let names: Vec<_> = registry.list().into_iter().map(|t| (t.name, t.description)).collect();
        assert_eq!(names, vec![("a".into(), "first".into()), ("b".into(), "second".into())]);
        assert!(registry.get("c").is_none());
    }
}
