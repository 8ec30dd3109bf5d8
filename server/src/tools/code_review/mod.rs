//! The Code Review preset: `extract` → `complexity` → `detect` → `suggest` →
//! `assess_loop`, looping back to `complexity` while the quality score is under the
//! threshold and a refinement pass still has something safe to fix.
//!
//! `code` is never modified, and the top-level keys (`functions`, `complexities`,
//! `issues`, `issues_count`, `suggestions`, `quality_score`) describe it as submitted.
//! Each refinement pass appends an entry to `revisions` and writes its code to
//! `revised_code`; on later passes `complexity`, `detect` and `suggest` measure that
//! latest revision and write into its entry, and `assess_loop` decides on its score.
//!
//! All five tools run on the [`CpuPool`]: their cost grows with the code.

pub mod analysis;
mod comments;
pub mod issues;
pub mod language;
pub mod refine;
pub mod with_llm;

use std::{
    collections::VecDeque,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex, OnceLock, PoisonError},
};

use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use weft_app::wire::State;

use self::{
    analysis::{analyze, Analysis, Function},
    issues::{detect, quality_score, suggestion, Issue},
    language::Language,
    refine::refine,
};
use crate::engine::tool::{Cancel, CpuPool, FnTool, Heavy, Input, Next, Outcome, Registry, ToolError};

/// The threshold when the initial state sets none.
pub const DEFAULT_THRESHOLD: f64 = 80.0;
/// Refinement passes at most, whatever happens (each pass must also change something).
pub const MAX_PASSES: usize = 5;

/// The preset's graph, in the prototype's spec form.
pub fn preset_spec() -> Value {
    json!({
        "nodes": {
            "extract": {},
            "complexity": {},
            "detect": {},
            "suggest": {},
            "assess_loop": {}
        },
        "edges": {
            "extract": "complexity",
            "complexity": "detect",
            "detect": "suggest",
            "suggest": "assess_loop",
            "assess_loop": null
        }
    })
}

/// The Code Review with approval preset: the review, then the diff of what the refine
/// loop changed, then a person approves or rejects it, with a comment, into `approval`.
pub fn approval_preset_spec() -> Value {
    let mut spec = preset_spec();
    spec["nodes"]["revision_diff"] = json!({});
    spec["nodes"]["approve"] = json!({
        "tool": "interrupt",
        "config": {
            "prompt": "Approve the revised code?",
            "key": "approval",
            "input_schema": {
                "type": "object",
                "required": ["approved"],
                "properties": {
                    "approved": {"type": "boolean", "title": "Approve", "description": "Checked: approve; unchecked: reject."},
                    "comment": {"type": "string", "title": "Comment"}
                },
                "additionalProperties": false
            },
            "show": ["revised_diff", "assessment"]
        }
    });
    // The review's end leads to the diff, then the question.
    spec["edges"]["assess_loop"] = json!("revision_diff");
    spec["edges"]["revision_diff"] = json!("approve");
    spec["edges"]["approve"] = Value::Null;
    spec
}

/// `revision_diff`: the unified diff from `code` to the latest revision.
fn revision_diff(state: &State, _: &Cancel) -> Result<Outcome, ToolError> {
    let code = state.get("code").and_then(Value::as_str).unwrap_or_default();
    let revised = state.get("revised_code").and_then(Value::as_str).unwrap_or(code);
    let diff = similar::TextDiff::from_lines(code, revised)
        .unified_diff()
        .header("code", "revised_code")
        .to_string();
    let changed = diff
        .lines()
        .filter(|line| line.starts_with(['+', '-']) && !line.starts_with("+++") && !line.starts_with("---"))
        .count();
    let mut update = State::new();
    update.insert("revised_diff".into(), diff.into());
    Ok(Outcome::update(update).note(format!("{changed} line(s) changed")))
}

/// What the Code Review presets take, as a JSON Schema (`GET /presets` lists it, and
/// `POST /graph/validate` checks an `initial_state` against it).
pub fn input_schema() -> Value {
    json!({
        "type": "object",
        "required": ["code"],
        "properties": {
            "code": {"type": "string", "minLength": 1, "description": "The source to review."},
            "language": {
                "type": ["string", "null"],
                "description": "python, rust, javascript, typescript or unknown (or an extension: py, rs, js, ts); detected when left out."
            },
            "threshold": {"type": "number", "minimum": 0, "maximum": 100, "description": "The quality score to reach (default 80)."}
        }
    })
}

/// An input to try the preset with.
pub fn example_input() -> Value {
    json!({"code": "def f(x):\n    # TODO: handle None\n    return x * 2\n", "threshold": 80})
}

/// A node's work: the state in, the outcome out, stopping early when cancelled.
type Step = fn(&State, &Cancel) -> Result<Outcome, ToolError>;

/// What an input the state lacks reads as, in the prototype's form of graph (as the
/// prototype's tools read them): no code, no issues, a score of 0.
const CODE: Input = ("code", || Value::from(""));
const ISSUES: Input = ("issues", super::empty_list);
const SCORE: Input = ("quality_score", || Value::from(0));

/// Registers the preset's five tools, `assess_review` (for the LLM preset) and `revision_diff`.
pub fn register(registry: &mut Registry, pool: &CpuPool) {
    let tools: [(&str, &str, Step, &[Input]); 7] = [
        (
            "extract",
            "Finds the functions in `state.code` by parsing it (Python, Rust, JavaScript, TypeScript).",
            extract,
            &[CODE],
        ),
        (
            "complexity",
            "Measures each function's cyclomatic complexity, length and nesting.",
            complexity,
            &[CODE],
        ),
        (
            "detect",
            "Lists issues with their lines and severity: TODOs, long lines, complex or long functions, ...",
            detect_issues,
            &[CODE],
        ),
        (
            "suggest",
            "Writes one suggestion per issue and the 0-100 quality score.",
            suggest,
            &[CODE, ISSUES],
        ),
        (
            "assess_loop",
            "Ends the review (following its edge) at the threshold, else applies safe fixes and loops back to \
             `complexity`.",
            assess_loop,
            &[CODE, SCORE],
        ),
        (
            "assess_review",
            "Code Review (LLM): puts the model's suggestions (`llm_review`) beside the score, then ends the review \
             (following its edge) at the threshold, after 3 passes, or when the model changed nothing; else \
             loops back to `complexity` with the model's code.",
            with_llm::assess_review,
            &[CODE],
        ),
        (
            "revision_diff",
            "Writes `revised_diff`: the unified diff from `code` to `revised_code` (empty when nothing was revised).",
            revision_diff,
            &[CODE],
        ),
    ];
    // Reviewing a few KiB takes microseconds: less than a hop to a pool thread.
    let heavy = Heavy {
        weigh: code_bytes,
        threshold: INLINE_BELOW_BYTES,
    };
    for (name, description, run, inputs) in tools {
        let mut tool = FnTool::on_pool_when(description, pool.clone(), heavy, move |state, _, cancel| {
            run(state, cancel)
        })
        .reads(inputs);
        if name == "assess_loop" || name == "assess_review" {
            tool = tool.may_jump_to(&["complexity"]);
        }
        registry.register(name, tool);
    }
}

/// Code smaller than this is reviewed inline on the runtime, larger on the CPU pool.
pub const INLINE_BELOW_BYTES: usize = 16 * 1024;

/// The bytes of code a node may read: the original and the latest revision.
fn code_bytes(state: &State) -> usize {
    ["code", "revised_code"]
        .iter()
        .filter_map(|key| state.get(*key).and_then(Value::as_str))
        .map(str::len)
        .sum()
}

/// The code a node looks at: the original, or the latest revision.
struct Subject<'a> {
    code: &'a str,
    /// The revision's index in `revisions`, or `None` for the original.
    revision: Option<usize>,
}

fn original_code(state: &State) -> Result<&str, ToolError> {
    match state.get("code") {
        Some(Value::String(code)) => Ok(code),
        Some(_) => Err(ToolError::InvalidInput("`code` must be a string".into())),
        None => Err(ToolError::InvalidInput(
            "`code` is missing: put the source to review in the initial state's `code`".into(),
        )),
    }
}

fn revisions(state: &State) -> &[Value] {
    state
        .get("revisions")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn subject(state: &State) -> Result<Subject<'_>, ToolError> {
    let revised = state.get("revised_code").and_then(Value::as_str);
    match (revised, revisions(state).len()) {
        (Some(code), count) if count > 0 => Ok(Subject {
            code,
            revision: Some(count - 1),
        }),
        _ => Ok(Subject {
            code: original_code(state)?,
            revision: None,
        }),
    }
}

/// Reads `key` of the subject's results (top level, or its revision entry).
fn read<T: DeserializeOwned>(state: &State, subject: &Subject<'_>, key: &str) -> Option<T> {
    let value = match subject.revision {
        None => state.get(key),
        Some(index) => revisions(state).get(index).and_then(|rev| rev.get(key)),
    }?;
    T::deserialize(value).ok()
}

/// Writes `values` as the subject's results: top-level keys for the original, keys of
/// its entry in `revisions` for a revision.
fn write(state: &State, subject: &Subject<'_>, values: Map<String, Value>) -> State {
    match subject.revision {
        None => values,
        Some(index) => {
            let mut all = revisions(state).to_vec();
            if let Some(Value::Object(entry)) = all.get_mut(index) {
                entry.extend(values);
            }
            let mut update = State::new();
            update.insert("revisions".into(), Value::Array(all));
            update
        }
    }
}

fn language(state: &State) -> Result<Language, ToolError> {
    match state.get("language") {
        None | Some(Value::Null) => Ok(Language::detect(original_code(state)?)),
        Some(Value::String(hint)) => Language::from_hint(hint).ok_or_else(|| {
            ToolError::InvalidInput(format!(
                "`language` is `{hint}`; use python, rust, javascript, typescript or unknown (or leave it out)"
            ))
        }),
        Some(_) => Err(ToolError::InvalidInput("`language` must be a string".into())),
    }
}

/// How many recent analyses are kept.
const CACHED_ANALYSES: usize = 8;

type CacheEntry = (u64, usize, Language, Arc<Analysis>);

/// The analysis of `code`, shared with any node that measured the same code lately:
/// `extract` and `complexity` look at the same code on the first pass, and parsing is
/// most of their cost.
fn analyzed(code: &str, language: Language, cancel: &Cancel) -> Result<Arc<Analysis>, ToolError> {
    static CACHE: OnceLock<Mutex<VecDeque<CacheEntry>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    code.hash(&mut hasher);
    let key = (hasher.finish(), code.len(), language);
    let hit = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|(hash, len, lang, _)| (*hash, *len, *lang) == key)
        .map(|(.., analysis)| Arc::clone(analysis));
    if let Some(analysis) = hit {
        return Ok(analysis);
    }
    let analysis = Arc::new(analyze(code, language, cancel).map_err(|_| ToolError::Stopped)?);
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= CACHED_ANALYSES {
        cache.pop_front();
    }
    cache.push_back((key.0, key.1, key.2, Arc::clone(&analysis)));
    Ok(analysis)
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// `extract`: parses the original code and lists its functions.
fn extract(state: &State, cancel: &Cancel) -> Result<Outcome, ToolError> {
    let code = original_code(state)?;
    let language = language(state)?;
    let analysis = analyzed(code, language, cancel)?;
    let names: Vec<&str> = analysis.functions.iter().map(|f| f.name.as_str()).collect();
    let details: Vec<Value> = analysis
        .functions
        .iter()
        .map(
            |f| json!({"name": f.name, "start_line": f.start_line, "end_line": f.end_line, "parameters": f.parameters}),
        )
        .collect();
    let note = format!(
        "found {} function(s) in {} lines of {language}",
        names.len(),
        code.lines().count()
    );
    let mut update = State::new();
    update.insert("language".into(), language.name().into());
    update.insert("functions".into(), to_value(&names));
    update.insert("function_details".into(), Value::Array(details));
    Ok(Outcome::update(update).note(note))
}

/// `complexity`: measures every function of the subject.
fn complexity(state: &State, cancel: &Cancel) -> Result<Outcome, ToolError> {
    let subject = subject(state)?;
    let analysis = analyzed(subject.code, language(state)?, cancel)?;
    let mut complexities = Map::new();
    for function in &analysis.functions {
        // Two functions of one name (overloads, redefinitions): report the worse.
        let worst = complexities.get(&function.name).and_then(Value::as_u64).unwrap_or(0);
        complexities.insert(function.name.clone(), u64::from(function.complexity).max(worst).into());
    }
    let metrics: Vec<Value> = analysis
        .functions
        .iter()
        .map(|f| {
            json!({"name": f.name, "start_line": f.start_line, "end_line": f.end_line, "length": f.length(), "code_lines": f.code_lines,
                   "complexity": f.complexity, "nesting": f.nesting, "parameters": f.parameters})
        })
        .collect();
    let most = analysis.functions.iter().max_by_key(|f| f.complexity);
    let note = match most {
        Some(f) => format!(
            "measured {} function(s); most complex: {} ({})",
            metrics.len(),
            f.name,
            f.complexity
        ),
        None => "no functions to measure".to_owned(),
    };
    let mut values = Map::new();
    values.insert("complexities".into(), Value::Object(complexities));
    values.insert("metrics".into(), Value::Array(metrics));
    values.insert("syntax_error_line".into(), to_value(&analysis.syntax_error_line));
    Ok(Outcome::update(write(state, &subject, values)).note(note))
}

/// `detect`: lists the subject's issues, using `complexity`'s measurements when present.
fn detect_issues(state: &State, cancel: &Cancel) -> Result<Outcome, ToolError> {
    let subject = subject(state)?;
    let measured: Option<Vec<Function>> = read(state, &subject, "metrics");
    let (functions, syntax_error_line) = match measured {
        Some(functions) => (functions, read(state, &subject, "syntax_error_line")),
        None => {
            let analysis = analyzed(subject.code, language(state)?, cancel)?;
            (analysis.functions.clone(), analysis.syntax_error_line)
        }
    };
    let findings = detect(subject.code, &functions, syntax_error_line);
    let note = format!("found {} issue(s)", findings.total);
    let mut values = Map::new();
    values.insert("issues".into(), to_value(&findings.issues));
    values.insert("issues_count".into(), findings.total.into());
    if findings.total > findings.issues.len() {
        values.insert("issues_omitted".into(), (findings.total - findings.issues.len()).into());
    }
    Ok(Outcome::update(write(state, &subject, values)).note(note))
}

/// `suggest`: one suggestion per issue, and the quality score.
fn suggest(state: &State, _: &Cancel) -> Result<Outcome, ToolError> {
    let subject = subject(state)?;
    let issues: Vec<Issue> = read(state, &subject, "issues")
        .ok_or_else(|| ToolError::InvalidInput("`issues` is missing: run `detect` before `suggest`".into()))?;
    let suggestions: Vec<Value> = issues
        .iter()
        .map(|issue| json!({"line": issue.line, "type": issue.kind, "suggestion": suggestion(issue)}))
        .collect();
    let score = quality_score(&issues);
    let mut values = Map::new();
    values.insert("suggestions".into(), Value::Array(suggestions));
    values.insert("quality_score".into(), score.into());
    Ok(Outcome::update(write(state, &subject, values)).note(format!("quality score {score}")))
}

fn threshold(state: &State) -> Result<f64, ToolError> {
    match state.get("threshold") {
        None | Some(Value::Null) => Ok(DEFAULT_THRESHOLD),
        Some(value) => value
            .as_f64()
            .filter(|t| (0.0..=100.0).contains(t))
            .ok_or_else(|| ToolError::InvalidInput("`threshold` must be a number from 0 to 100".into())),
    }
}

/// Where a review stands at the end of a pass: the subject's score, the threshold, and
/// the refinement passes made so far.
struct Standing {
    score: u32,
    threshold: f64,
    passes: usize,
}

impl Standing {
    fn of(state: &State, score: u32) -> Result<Self, ToolError> {
        Ok(Self {
            score,
            threshold: threshold(state)?,
            passes: revisions(state).len(),
        })
    }

    /// The review is over: `update` with the `assessment`; the edge says what follows
    /// (nothing, in the plain preset).
    fn verdict(&self, mut update: State, verdict: &str, why: String) -> Outcome {
        update.insert(
            "assessment".into(),
            json!({"verdict": verdict, "quality_score": self.score, "threshold": self.threshold, "passes": self.passes}),
        );
        Outcome::update(update).note(why)
    }

    /// The verdict, and why, when no further pass may be made whatever it would change:
    /// the threshold is met, or `max_passes` have been made.
    fn settled(&self, max_passes: usize) -> Option<(&'static str, String)> {
        let Self {
            score,
            threshold,
            passes,
        } = *self;
        if f64::from(score) >= threshold {
            return Some((
                "threshold_met",
                format!("score {score} meets the threshold {threshold}"),
            ));
        }
        (passes >= max_passes).then(|| {
            (
                "pass_limit",
                format!("score {score} after {passes} passes, the most allowed"),
            )
        })
    }
}

/// Another pass: `revised` becomes the latest revision, `entry` (its `pass` added) its
/// record in `all` (the revisions so far), and the run loops back to `complexity`.
fn revise(mut update: State, mut all: Vec<Value>, revised: String, mut entry: Map<String, Value>) -> Outcome {
    entry.insert("pass".into(), (all.len() + 1).into());
    all.push(Value::Object(entry));
    update.insert("revised_code".into(), revised.into());
    update.insert("revisions".into(), Value::Array(all));
    Outcome::update(update).then(Next::Node("complexity".into()))
}

/// `assess_loop`: ends the review, or refines the subject and loops back.
fn assess_loop(state: &State, _: &Cancel) -> Result<Outcome, ToolError> {
    let subject = subject(state)?;
    let score: u32 = read(state, &subject, "quality_score").ok_or_else(|| {
        ToolError::InvalidInput("`quality_score` is missing: run `suggest` before `assess_loop`".into())
    })?;
    let standing = Standing::of(state, score)?;
    if let Some((verdict, why)) = standing.settled(MAX_PASSES) {
        return Ok(standing.verdict(State::new(), verdict, why));
    }
    let issues: Vec<Issue> = read(state, &subject, "issues").unwrap_or_default();
    let refined = refine(subject.code, language(state)?, &issues);
    if refined.fixes.is_empty() {
        let threshold = standing.threshold;
        return Ok(standing.verdict(
            State::new(),
            "no_further_fixes",
            format!("score {score} is under the threshold {threshold}, and nothing more can be fixed automatically"),
        ));
    }
    let described: Vec<String> = refined
        .fixes
        .iter()
        .map(|f| format!("{} ×{}", f.kind, f.count))
        .collect();
    let mut entry = Map::new();
    entry.insert("fixes".into(), to_value(&refined.fixes));
    Ok(
        revise(State::new(), revisions(state).to_vec(), refined.code, entry).note(format!(
            "score {score} < {}: pass {} applied {}",
            standing.threshold,
            standing.passes + 1,
            described.join(", ")
        )),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::testing::run_spec;

    async fn review(initial: Value) -> (weft_app::wire::RunStatus, State, u64) {
        let mut registry = Registry::new();
        register(&mut registry, &CpuPool::new(2));
        let end = run_spec(&registry, &preset_spec(), initial).await;
        (end.status, end.state, end.steps)
    }

    #[tokio::test]
    async fn five_todos_end_at_once_with_a_clear_verdict() {
        let code = "# TODO one\n# TODO two\n# TODO three\n# FIXME four\n# TODO five\n";
        let (status, state, steps) = review(json!({"code": code})).await;
        assert_eq!(status, weft_app::wire::RunStatus::Completed);
        assert_eq!(steps, 5);
        assert_eq!(state["issues_count"], 5);
        assert_eq!(state["quality_score"], 90);
        assert_eq!(state["assessment"]["verdict"], "threshold_met");
        assert_eq!(state["code"], code);
    }

    #[tokio::test]
    async fn a_high_threshold_refines_then_stops_when_nothing_more_can_be_fixed() {
        let code = "def f(a):   \n    # TODO: tidy\n    return a";
        let (status, state, steps) = review(json!({"code": code, "threshold": 100})).await;
        assert_eq!(status, weft_app::wire::RunStatus::Completed);
        // One full pass, one refinement pass, then nothing left to fix.
        assert_eq!(steps, 5 + 4);
        assert_eq!(state["code"], code, "the submitted code is never modified");
        assert_eq!(state["revised_code"], "def f(a):\n    # TODO: tidy\n    return a\n");
        assert_eq!(state["functions"], json!(["f"]));
        assert_eq!(state["language"], "python");
        assert_eq!(state["issues_count"], 2);
        assert_eq!(state["quality_score"], 96);
        let revision = &state["revisions"][0];
        assert_eq!(revision["pass"], 1);
        assert_eq!(
            revision["fixes"],
            json!([{"kind": "trailing-whitespace", "count": 1}, {"kind": "final-newline", "count": 1}])
        );
        assert_eq!(revision["issues_count"], 1);
        assert_eq!(revision["quality_score"], 98);
        assert_eq!(
            state["assessment"],
            json!({"verdict": "no_further_fixes", "quality_score": 98, "threshold": 100.0, "passes": 1})
        );
    }

    #[tokio::test]
    async fn reports_complexities_issues_and_suggestions_for_the_submitted_code() {
        let branches: String = (0..12)
            .map(|i| format!("    if a == {i}:\n        return {i}\n"))
            .collect();
        let code = format!("def busy(a, b, c, d, e, f):\n{branches}    return -1\n\ndef calm():\n    return 0\n");
        let (_, state, _) = review(json!({"code": code, "language": "py"})).await;
        assert_eq!(state["functions"], json!(["busy", "calm"]));
        assert_eq!(state["complexities"], json!({"busy": 13, "calm": 1}));
        assert_eq!(
            state["issues"],
            json!([
                {"line": 1, "type": "high-complexity", "severity": "medium", "function": "busy",
                 "text": "def busy(a, b, c, d, e, f):",
                 "message": "`busy` has cyclomatic complexity 13 (limit 10)"},
                {"line": 1, "type": "too-many-parameters", "severity": "medium", "function": "busy",
                 "text": "def busy(a, b, c, d, e, f):",
                 "message": "`busy` takes 6 parameters (limit 5)"}
            ])
        );
        assert_eq!(
            state["suggestions"][1]["suggestion"],
            "Group related parameters of `busy` into one struct or object."
        );
        assert_eq!(state["quality_score"], 90);
    }

    #[tokio::test]
    async fn bad_input_fails_the_node_with_a_clear_error() {
        let mut registry = Registry::new();
        register(&mut registry, &CpuPool::new(1));
        let tool = registry.get("extract").unwrap();
        let input = |state: Value| crate::engine::tool::ToolInput {
            state: Arc::new(state.as_object().unwrap().clone()),
            config: Arc::new(Value::Null),
            timeout: crate::engine::policy::DEFAULT_TIMEOUT,
            missing: crate::engine::tool::MissingInput::Fail,
            answer: None,
            progress: None,
        };
        let missing = tool.call(input(json!({}))).await.unwrap_err();
        assert_eq!(
            missing.to_string(),
            "invalid input: `code` is missing: put the source to review in the initial state's `code`"
        );
        let wrong = tool
            .call(input(json!({"code": "x", "language": "cobol"})))
            .await
            .unwrap_err();
        assert!(wrong.to_string().contains("`language` is `cobol`"));
    }
}
