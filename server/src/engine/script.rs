//! Sandboxed expressions and scripts, in [Rhai](https://rhai.rs): the conditions of
//! conditional edges and the `script` tool.
//!
//! Both see the run's state as `state`, read-only: `state.score >= 80`. A top-level key
//! is converted to a script value only when it is read, so a condition over one number
//! costs the same whatever else the state holds. A key the state lacks reads as `()`.
//!
//! The sandbox: no modules, no `eval`, no clock (`timestamp()` is an error), no file,
//! network or process access (Rhai has none unless given), only the packages scripts
//! need (no blobs, bit fields or time), bounded call depth, expression depth, variables,
//! functions and string, array and map sizes, and per evaluation an operation budget and
//! a deadline, both checked as the script runs ([`Budget`]). `print` and `debug` write to
//! the run's log instead of stdout.

use std::{
    cell::RefCell,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use rhai::{
    module_resolvers::DummyModuleResolver,
    packages::{
        BasicArrayPackage, BasicMapPackage, BasicMathPackage, CorePackage, LogicPackage, MoreStringPackage, Package,
    },
    Dynamic, Engine, EvalAltResult, ImmutableString, Map, Scope, AST,
};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use weft_app::wire::{Problem, State};

use super::tool::{read_config, ConfigSpec, CpuPool, Outcome, Tool, ToolConfig, ToolError, ToolFuture, ToolInput};

/// The operation budget of one condition.
pub const CONDITION_OPERATIONS: u64 = 10_000;
/// The time one condition may take.
pub const CONDITION_TIME: Duration = Duration::from_millis(100);
/// The highest operation budget a script may ask for.
pub const MAX_SCRIPT_OPERATIONS: u64 = 10_000_000;
/// The longest time a script may ask for.
pub const MAX_SCRIPT_TIME_MS: u64 = 60_000;
/// The longest source accepted for a condition or a script.
pub const MAX_SOURCE_BYTES: usize = 64 * 1024;
/// The most bytes of strings one value may hold (all its strings together).
pub const MAX_STRING_BYTES: usize = 4 * 1024 * 1024;
/// The most elements one value's arrays may hold (all together).
pub const MAX_ARRAY_LEN: usize = 100_000;
/// The most entries one value's maps may hold (all together).
pub const MAX_MAP_LEN: usize = 10_000;
/// The most variables a script may hold at once (its functions' included).
pub const MAX_SCRIPT_VARIABLES: usize = 1_024;
/// The most functions a script may define.
pub const MAX_SCRIPT_FUNCTIONS: usize = 64;
/// The most lines one evaluation's `print`s add to the run's log.
pub const MAX_PRINTED_LINES: usize = 100;
/// The longest line a `print` adds to the run's log, in characters.
pub const MAX_PRINTED_CHARS: usize = 1_000;

/// What one evaluation may spend: operations counted by the interpreter, and wall time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Interpreter operations (each expression node, loop turn or call counts one).
    pub operations: u64,
    /// Wall time.
    pub time: Duration,
}

impl Budget {
    /// The budget of a condition.
    pub const CONDITION: Self = Self {
        operations: CONDITION_OPERATIONS,
        time: CONDITION_TIME,
    };
}

/// The evaluation running on this thread: its budget and the lines it printed. Rhai
/// calls its hooks on the evaluating thread, and an evaluation never leaves it.
struct Running {
    max_operations: u64,
    deadline: Instant,
    printed: Vec<String>,
    /// Lines printed past [`MAX_PRINTED_LINES`], counted but not kept.
    dropped: usize,
}

thread_local! {
    static RUNNING: RefCell<Option<Running>> = const { RefCell::new(None) };
}

/// The run's state as scripts see it: `state.key` or `state["key"]`, read-only.
#[derive(Clone)]
struct StateView(Arc<State>);

impl StateView {
    fn get(&mut self, key: ImmutableString) -> Dynamic {
        match self.0.get(key.as_str()) {
            None | Some(Value::Null) => Dynamic::UNIT,
            Some(value) => rhai::serde::to_dynamic(value).unwrap_or(Dynamic::UNIT),
        }
    }
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        // Only what scripts over JSON state need: no blobs, bit fields or clock.
        let mut engine = Engine::new_raw();
        for package in [
            CorePackage::new().as_shared_module(),
            LogicPackage::new().as_shared_module(),
            BasicMathPackage::new().as_shared_module(),
            BasicArrayPackage::new().as_shared_module(),
            BasicMapPackage::new().as_shared_module(),
            MoreStringPackage::new().as_shared_module(),
        ] {
            engine.register_global_module(package);
        }
        engine
            .set_module_resolver(DummyModuleResolver::new())
            .set_max_variables(MAX_SCRIPT_VARIABLES)
            .set_max_functions(MAX_SCRIPT_FUNCTIONS)
            .disable_symbol("import")
            .disable_symbol("export")
            .disable_symbol("eval")
            .set_max_call_levels(32)
            .set_max_expr_depths(64, 32)
            .set_max_string_size(MAX_STRING_BYTES)
            .set_max_array_size(MAX_ARRAY_LEN)
            .set_max_map_size(MAX_MAP_LEN)
            // A ceiling for everything; each evaluation's own budget is lower.
            .set_max_operations(MAX_SCRIPT_OPERATIONS + 1)
            .on_progress(|operations| {
                RUNNING.with_borrow(|running| {
                    let running = running.as_ref()?;
                    // The token says which limit stopped the script (see `describe`).
                    if operations > running.max_operations {
                        return Some(Dynamic::from(Limit::Operations(running.max_operations)));
                    }
                    // Reading the clock costs more than an operation: look every 256.
                    if operations % 256 == 0 && Instant::now() > running.deadline {
                        return Some(Dynamic::from(Limit::Time));
                    }
                    None
                })
            })
            .on_print(note)
            .on_debug(|line, _, _| note(line))
            // No clock: a script's update depends on the state alone, so a run resumed
            // after a crash, which runs the interrupted node again, gets the same one.
            // (Functions registered here take precedence over Rhai's own.)
            .register_fn("timestamp", || -> Result<Dynamic, Box<EvalAltResult>> {
                Err("timestamp() is not available: a script's update depends on the state alone".into())
            })
            .register_type_with_name::<StateView>("State")
            .register_indexer_get(StateView::get)
            .register_fn("contains", |state: &mut StateView, key: ImmutableString| {
                state.0.contains_key(key.as_str())
            })
            .register_fn("keys", |state: &mut StateView| -> rhai::Array {
                state.0.keys().map(|key| Dynamic::from(key.clone())).collect()
            });
        engine
    })
}

fn note(line: &str) {
    RUNNING.with_borrow_mut(|running| {
        let Some(running) = running.as_mut() else { return };
        if running.printed.len() >= MAX_PRINTED_LINES {
            running.dropped += 1;
        } else if line.chars().count() > MAX_PRINTED_CHARS {
            let kept: String = line.chars().take(MAX_PRINTED_CHARS).collect();
            running.printed.push(format!("{kept}…"));
        } else {
            running.printed.push(line.to_owned());
        }
    });
}

/// Evaluates `ast` over `state` within `budget`: the value, and the lines it printed.
fn evaluate(ast: &AST, state: &Arc<State>, budget: Budget) -> (Result<Dynamic, ScriptError>, Vec<String>) {
    let previous = RUNNING.replace(Some(Running {
        max_operations: budget.operations,
        deadline: Instant::now() + budget.time,
        printed: Vec::new(),
        dropped: 0,
    }));
    let mut scope = Scope::new();
    scope.push_constant("state", StateView(Arc::clone(state)));
    let result = engine()
        .eval_ast_with_scope::<Dynamic>(&mut scope, ast)
        .map_err(|err| describe(&err));
    let mut printed = Vec::new();
    if let Some(running) = RUNNING.replace(previous) {
        printed = running.printed;
        if running.dropped > 0 {
            printed.push(format!("({} more printed line(s) not kept)", running.dropped));
        }
    }
    (result, printed)
}

/// A limit that stopped an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// Its operation budget, this many.
    Operations(u64),
    /// Its deadline.
    Time,
}

/// Why a condition or script gave no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// It used up its operation budget.
    #[error("stopped: operation limit of {0} reached")]
    OperationLimit(u64),
    /// It ran past its deadline.
    #[error("stopped: time limit reached")]
    TimeLimit,
    /// It failed, or gave a value of the wrong kind.
    #[error("{0}")]
    Failed(String),
}

fn describe(err: &EvalAltResult) -> ScriptError {
    match err {
        EvalAltResult::ErrorTerminated(token, _) => match token.clone().try_cast::<Limit>() {
            Some(Limit::Operations(operations)) => ScriptError::OperationLimit(operations),
            Some(Limit::Time) => ScriptError::TimeLimit,
            None => ScriptError::Failed(format!("stopped: {token}")),
        },
        EvalAltResult::ErrorTooManyOperations(_) => ScriptError::OperationLimit(MAX_SCRIPT_OPERATIONS),
        EvalAltResult::ErrorTooManyVariables(_) => {
            ScriptError::Failed(format!("stopped: more than {MAX_SCRIPT_VARIABLES} variables at once"))
        }
        other => ScriptError::Failed(other.to_string()),
    }
}

fn check_size(source: &str) -> Result<(), String> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(format!("must be at most {MAX_SOURCE_BYTES} bytes"));
    }
    Ok(())
}

/// A compiled condition: one expression that must give `true` or `false`.
#[derive(Debug)]
pub struct Condition {
    source: String,
    ast: AST,
}

impl Condition {
    /// Compiles `source`, or says why it does not compile.
    pub fn compile(source: &str) -> Result<Self, String> {
        check_size(source)?;
        let ast = engine()
            .compile_expression(source)
            .map_err(|err| format!("does not compile: {err}"))?;
        Ok(Self {
            source: source.to_owned(),
            ast,
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the condition holds for `state`.
    pub fn holds(&self, state: &Arc<State>) -> Result<bool, String> {
        let (value, _) = evaluate(&self.ast, state, Budget::CONDITION);
        value
            .map_err(|err| err.to_string())?
            .as_bool()
            .map_err(|kind| format!("gave a value of type {kind}, not true or false"))
    }
}

/// A compiled script: statements whose last value is the state update, a map of the
/// top-level keys to write (`#{count: state.count + 1}`), or `()` to write nothing.
#[derive(Debug)]
pub struct Script {
    ast: AST,
    budget: Budget,
}

/// What a script did.
#[derive(Debug)]
pub struct ScriptRun {
    /// The keys it wrote, or why it failed.
    pub update: Result<State, ScriptError>,
    /// The lines it printed.
    pub printed: Vec<String>,
}

impl Script {
    /// Compiles `source` to run within `budget`.
    pub fn compile(source: &str, budget: Budget) -> Result<Self, String> {
        check_size(source)?;
        let ast = engine()
            .compile(source)
            .map_err(|err| format!("does not compile: {err}"))?;
        Ok(Self { ast, budget })
    }

    /// The script's budget.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Runs the script over `state`.
    pub fn run(&self, state: &Arc<State>) -> ScriptRun {
        self.run_within(state, self.budget)
    }

    /// Runs the script over `state` within `budget` rather than its own.
    fn run_within(&self, state: &Arc<State>, budget: Budget) -> ScriptRun {
        let (value, printed) = evaluate(&self.ast, state, budget);
        ScriptRun {
            update: value.and_then(into_update),
            printed,
        }
    }
}

fn into_update(value: Dynamic) -> Result<State, ScriptError> {
    if value.is_unit() {
        return Ok(State::new());
    }
    let kind = value.type_name();
    let Some(map) = value.try_cast::<Map>() else {
        return Err(ScriptError::Failed(format!(
            "a script must end with a map of the keys to write, such as #{{count: 1}}, not a value of type {kind}"
        )));
    };
    map.into_iter()
        .map(|(key, value)| {
            let value = rhai::serde::from_dynamic::<Value>(&value)
                .map_err(|err| ScriptError::Failed(format!("the value of `{key}` cannot be stored as JSON: {err}")))?;
            Ok((key.to_string(), value))
        })
        .collect()
}

/// The default operation budget of a `script` node.
pub const DEFAULT_SCRIPT_OPERATIONS: u64 = 1_000_000;
/// The default time a `script` node's script may take.
pub const DEFAULT_SCRIPT_TIME_MS: u64 = 1_000;

/// `script`'s config.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"script": "#{count: (state.count ?? 0) + 1}", "max_operations": 10000}))]
pub struct ScriptConfig {
    /// Rhai statements over `state` whose last value is a map of the keys to write.
    pub script: String,
    /// The operations the script may take (default 1,000,000, at most 10,000,000).
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub max_operations: Option<u64>,
    /// The milliseconds the script may take (default 1,000, at most 60,000).
    #[schema(minimum = 1, maximum = 60_000)]
    pub time_limit_ms: Option<u64>,
}

impl ToolConfig for ScriptConfig {
    fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut bound = |field: &str, value: Option<u64>, max: u64| {
            if value.is_some_and(|value| !(1..=max).contains(&value)) {
                problems.push(Problem {
                    path: format!("/{field}"),
                    message: format!("must be a whole number from 1 to {max}"),
                });
            }
        };
        bound("max_operations", self.max_operations, MAX_SCRIPT_OPERATIONS);
        bound("time_limit_ms", self.time_limit_ms, MAX_SCRIPT_TIME_MS);
        problems
    }
}

/// The `script` tool: each node compiles its own script when its graph is parsed.
pub struct ScriptTool {
    pool: CpuPool,
    config: ConfigSpec,
}

impl ScriptTool {
    /// The tool, running scripts on `pool`.
    pub fn new(pool: CpuPool) -> Self {
        Self {
            pool,
            config: ConfigSpec::of::<ScriptConfig>(),
        }
    }
}

impl Tool for ScriptTool {
    fn description(&self) -> &str {
        "Runs `config.script`, a sandboxed Rhai script over `state` whose last value is a map of the keys to \
         write; `print` writes to the log. Limited to `max_operations` and `time_limit_ms`."
    }

    fn config(&self) -> &ConfigSpec {
        &self.config
    }

    fn configure(&self, config: &Value) -> Result<Option<Arc<dyn Tool>>, Vec<Problem>> {
        let config = read_config::<ScriptConfig>(config)?;
        let budget = Budget {
            operations: config.max_operations.unwrap_or(DEFAULT_SCRIPT_OPERATIONS),
            time: Duration::from_millis(config.time_limit_ms.unwrap_or(DEFAULT_SCRIPT_TIME_MS)),
        };
        let script = Script::compile(&config.script, budget).map_err(|message| {
            vec![Problem {
                path: "/script".into(),
                message,
            }]
        })?;
        Ok(Some(Arc::new(ScriptNode {
            script: Arc::new(script),
            pool: self.pool.clone(),
        })))
    }

    fn call(&self, _input: ToolInput) -> ToolFuture {
        // Every node gets its own compiled `ScriptNode` from `configure`.
        Box::pin(std::future::ready(Err(ToolError::Failed(
            "the script was not compiled".into(),
        ))))
    }
}

/// The operations a script may take inline, on the async runtime, before it is moved to
/// the CPU pool (about a millisecond at most).
pub const INLINE_OPERATIONS: u64 = 10_000;

fn outcome(run: ScriptRun) -> Result<Outcome, ToolError> {
    let update = run.update.map_err(|err| ToolError::Failed(err.to_string()))?;
    Ok(Outcome {
        update,
        notes: run.printed,
        ..Outcome::default()
    })
}

/// One node's compiled script.
struct ScriptNode {
    script: Arc<Script>,
    pool: CpuPool,
}

impl Tool for ScriptNode {
    fn description(&self) -> &str {
        "a compiled script"
    }

    fn call(&self, input: ToolInput) -> ToolFuture {
        // Most scripts are done in a few hundred operations, far less than a hop to the
        // pool costs: try inline with a small slice of the budget first. A script that
        // needs more is run again on the pool with its whole budget; a script only
        // computes its update from the state, so running it again is safe (what the
        // first try printed is dropped).
        // The script stops by itself at the node's timeout when that comes first: past
        // it, the call is dropped, but a script on the pool would keep its thread.
        let own = self.script.budget();
        let budget = Budget {
            time: own.time.min(input.timeout),
            ..own
        };
        let slice = Budget {
            operations: budget.operations.min(INLINE_OPERATIONS),
            ..budget
        };
        let quick = self.script.run_within(&input.state, slice);
        let sliced_off = quick.update == Err(ScriptError::OperationLimit(slice.operations));
        if slice.operations == budget.operations || !sliced_off {
            return Box::pin(std::future::ready(outcome(quick)));
        }
        let script = Arc::clone(&self.script);
        let pool = self.pool.clone();
        Box::pin(async move { outcome(pool.run(move |_| script.run_within(&input.state, budget)).await?) })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn state(value: Value) -> Arc<State> {
        Arc::new(value.as_object().cloned().unwrap_or_default())
    }

    #[test]
    fn conditions_read_the_state_by_key() {
        let state = state(json!({"score": 85, "tags": ["a", "b"], "user": {"name": "ada"}}));
        for (source, expected) in [
            ("state.score >= 80", true),
            ("state.score < 80", false),
            ("state[\"score\"] == 85", true),
            ("state.tags.len() == 2 && state.user.name == \"ada\"", true),
            ("state.missing == ()", true),
            ("state.contains(\"tags\") && !state.contains(\"nope\")", true),
        ] {
            let condition = Condition::compile(source).unwrap();
            assert_eq!(condition.holds(&state), Ok(expected), "{source}");
        }
    }

    #[test]
    fn a_condition_must_compile_and_give_a_boolean() {
        let err = Condition::compile("state.score >=").unwrap_err();
        assert!(err.starts_with("does not compile: "), "{err}");
        let err = Condition::compile("import \"fs\"").unwrap_err();
        assert!(err.starts_with("does not compile: "), "{err}");
        let number = Condition::compile("state.score + 1").unwrap();
        assert_eq!(
            number.holds(&state(json!({"score": 1}))),
            Err("gave a value of type i64, not true or false".into())
        );
    }

    #[test]
    fn a_script_returns_an_update_and_prints_to_the_log() {
        let script = Script::compile(
            "let total = 0; for n in state.items { total += n; } print(`sum ${total}`); #{total: total, done: true}",
            Budget::CONDITION,
        )
        .unwrap();
        let run = script.run(&state(json!({"items": [1, 2, 3.5]})));
        assert_eq!(Value::Object(run.update.unwrap()), json!({"total": 6.5, "done": true}));
        assert_eq!(run.printed, ["sum 6.5"]);
        let nothing = Script::compile("let x = 1;", Budget::CONDITION).unwrap();
        assert_eq!(nothing.run(&state(json!({}))).update, Ok(State::new()));
        let counter = Script::compile("#{count: (state.count ?? 0) + 1}", Budget::CONDITION).unwrap();
        assert_eq!(
            Value::Object(counter.run(&state(json!({}))).update.unwrap()),
            json!({"count": 1})
        );
        assert_eq!(
            Value::Object(counter.run(&state(json!({"count": 4}))).update.unwrap()),
            json!({"count": 5})
        );
        let wrong = Script::compile("42", Budget::CONDITION).unwrap();
        assert!(wrong
            .run(&state(json!({})))
            .update
            .unwrap_err()
            .to_string()
            .contains("not a value of type i64"));
    }

    #[test]
    fn values_are_bounded_in_size() {
        let budget = Budget {
            operations: 1_000,
            time: Duration::from_secs(10),
        };
        let big = Script::compile("let s = \"x\"; s.pad(5000000, \"y\"); #{n: s.len()}", budget).unwrap();
        let err = big.run(&state(json!({}))).update.unwrap_err().to_string();
        assert!(err.contains("Length of string too large"), "{err}");
        let many = Script::compile("let a = []; a.pad(200000, 0); #{n: a.len()}", budget).unwrap();
        let err = many.run(&state(json!({}))).update.unwrap_err().to_string();
        assert!(err.contains("Size of array/BLOB too large"), "{err}");
    }

    #[test]
    fn printing_is_bounded() {
        let script = Script::compile("for i in 0..150 { print(i); } #{}", Budget::CONDITION).unwrap();
        let printed = script.run(&state(json!({}))).printed;
        assert_eq!(printed.len(), MAX_PRINTED_LINES + 1);
        assert_eq!(printed[99], "99");
        assert_eq!(printed[100], "(50 more printed line(s) not kept)");
        let long = Script::compile("let s = \"x\"; s.pad(2000, \"y\"); print(s); #{}", Budget::CONDITION).unwrap();
        let line = &long.run(&state(json!({}))).printed[0];
        assert_eq!(line.chars().count(), MAX_PRINTED_CHARS + 1);
        assert!(line.ends_with("y…"));
    }

    #[test]
    fn a_runaway_script_is_stopped_by_its_operation_budget() {
        let budget = Budget {
            operations: 50_000,
            time: Duration::from_secs(60),
        };
        let script = Script::compile("let n = 0; loop { n += 1; }", budget).unwrap();
        let run = script.run(&state(json!({})));
        assert_eq!(run.update, Err(ScriptError::OperationLimit(50_000)));
        assert_eq!(
            run.update.unwrap_err().to_string(),
            "stopped: operation limit of 50000 reached"
        );
    }

    #[test]
    fn a_runaway_script_is_stopped_by_its_deadline() {
        let budget = Budget {
            operations: MAX_SCRIPT_OPERATIONS,
            time: Duration::from_millis(20),
        };
        let script = Script::compile("let n = 0; loop { n += 1; }", budget).unwrap();
        let run = script.run(&state(json!({})));
        assert_eq!(run.update, Err(ScriptError::TimeLimit));
    }

    fn node(config: Value) -> Arc<dyn Tool> {
        ScriptTool::new(CpuPool::new(1))
            .configure(&config)
            .expect("the config is valid")
            .expect("a node of its own")
    }

    async fn call(node: &Arc<dyn Tool>, state: Value) -> Result<Outcome, ToolError> {
        call_within(node, state, Duration::from_secs(60)).await
    }

    async fn call_within(node: &Arc<dyn Tool>, state: Value, timeout: Duration) -> Result<Outcome, ToolError> {
        node.call(ToolInput {
            state: Arc::new(state.as_object().cloned().unwrap_or_default()),
            config: Arc::new(Value::Null),
            timeout,
            missing: crate::engine::tool::MissingInput::Fail,
            answer: None,
            progress: None,
        })
        .await
    }

    #[tokio::test]
    async fn a_script_stops_by_the_node_s_timeout_when_that_is_sooner() {
        let spin = node(
            json!({"script": "let n = 0; loop { n += 1; }", "max_operations": 10_000_000, "time_limit_ms": 60_000}),
        );
        let started = std::time::Instant::now();
        let err = call_within(&spin, json!({}), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(err, ToolError::Failed("stopped: time limit reached".into()));
        // It stopped itself near the node's 50 ms, not at its own 60 s.
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[tokio::test]
    async fn a_script_past_its_inline_slice_finishes_on_the_pool_and_prints_once() {
        let source = "print(\"start\"); let t = 0; for i in 0..5000 { t += i; } #{t: t}";
        let slice = Budget {
            operations: INLINE_OPERATIONS,
            time: Duration::from_secs(60),
        };
        let sliced = Script::compile(source, slice).unwrap().run(&state(json!({})));
        assert_eq!(sliced.update, Err(ScriptError::OperationLimit(INLINE_OPERATIONS)));

        let long = node(json!({ "script": source }));
        let outcome = call(&long, json!({})).await.unwrap();
        assert_eq!(outcome.update["t"], 12_497_500);
        assert_eq!(outcome.notes, ["start"]);

        // With no more budget than the slice, the slice's verdict is final.
        let capped =
            node(json!({"script": "let t = 0; for i in 0..5000 { t += i; } #{t: t}", "max_operations": 10000}));
        let err = call(&capped, json!({})).await.unwrap_err();
        assert_eq!(
            err,
            ToolError::Failed("stopped: operation limit of 10000 reached".into())
        );
    }

    #[test]
    fn script_config_is_checked_and_compiled_when_the_graph_is_parsed() {
        let tool = ScriptTool::new(CpuPool::new(1));
        let problems = tool
            .configure(&json!({"script": "#{", "max_operations": 0}))
            .err()
            .unwrap();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["/max_operations"]);
        let problems = tool.configure(&json!({"script": "#{"})).err().unwrap();
        assert_eq!(problems[0].path, "/script");
        assert!(
            problems[0].message.starts_with("does not compile: "),
            "{}",
            problems[0].message
        );
        assert!(tool.configure(&json!({})).is_err(), "`script` is required");
    }

    #[test]
    fn the_sandbox_has_no_eval_no_clock_and_no_writable_state() {
        assert!(Script::compile("eval(\"1\")", Budget::CONDITION).is_err());
        let clock = Script::compile("let t = timestamp(); #{}", Budget::CONDITION).unwrap();
        let err = clock.run(&state(json!({}))).update.unwrap_err().to_string();
        assert!(err.contains("timestamp() is not available"), "{err}");
        let write = Script::compile("state.x = 1;", Budget::CONDITION).unwrap();
        assert!(write.run(&state(json!({"x": 0}))).update.is_err());
    }

    #[test]
    fn a_script_holds_a_bounded_number_of_functions_and_only_the_packages_it_needs() {
        let functions = |n: usize| (0..n).map(|i| format!("fn f{i}() {{ {i} }}")).collect::<String>();
        assert!(Script::compile(&format!("{} #{{}}", functions(MAX_SCRIPT_FUNCTIONS)), Budget::CONDITION).is_ok());
        let err = Script::compile(
            &format!("{} #{{}}", functions(MAX_SCRIPT_FUNCTIONS + 1)),
            Budget::CONDITION,
        )
        .err()
        .unwrap();
        assert!(
            err.starts_with("does not compile: Number of functions defined exceeds maximum limit"),
            "{err}"
        );
        // Strings, arrays, maps and maths are there; blobs are not.
        let used = Script::compile(
            r#"let words = "a b".split(" "); #{n: words.len() + abs(-1), top: [3, 1].sort_by(|a, b| a - b)}"#,
            Budget::CONDITION,
        )
        .unwrap();
        assert!(used.run(&state(json!({}))).update.is_ok());
        let blob = Script::compile("let b = blob(4); #{}", Budget::CONDITION).unwrap();
        let err = blob.run(&state(json!({}))).update.unwrap_err().to_string();
        assert!(err.contains("Function not found: blob"), "{err}");
    }
}
