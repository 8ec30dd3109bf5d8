//! The Summarization preset: split a text into chunks, summarize each, merge, and refine
//! until the summary fits a length limit.
//!
//! Rule-based and deterministic: a sentence's weight is the mean frequency, over the
//! whole text, of its meaningful words; a chunk's summary keeps its heavier half of
//! sentences in their original order. The refine loop drops the lightest sentence per
//! pass, so it ends by construction: after at most as many passes as the summary has
//! sentences, a single sentence too long for the limit is cut at a word boundary.
//! `text` is never modified.

use std::collections::HashMap;

use serde_json::{json, Value};
use weft_app::wire::State;

use super::empty_list;
use crate::engine::tool::{CpuPool, FnTool, Heavy, Next, Outcome, Registry, ToolError};

/// The summary's length limit when the state gives none, in characters.
pub const DEFAULT_MAX_CHARS: u64 = 300;
/// A chunk's size when the state gives none, in characters.
pub const DEFAULT_CHUNK_CHARS: u64 = 600;
/// The smallest length limit accepted.
const MIN_MAX_CHARS: u64 = 20;

/// Words too common to say what a text is about.
const STOPWORDS: &[&str] = &[
    "the", "and", "for", "are", "but", "not", "you", "all", "any", "can", "had", "her", "was", "one", "our", "out",
    "has", "have", "his", "its", "they", "them", "this", "that", "with", "from", "into", "than", "then", "there",
    "their", "which", "while", "were", "what", "when", "will", "would", "also", "been", "being", "each", "more",
    "most", "such", "only", "some", "very",
];

/// The preset's graph.
pub fn preset_spec() -> Value {
    json!({
        "nodes": {
            "split": "split_text",
            "summarize": "summarize_chunks",
            "merge": "merge_summaries",
            "refine": "refine_summary"
        },
        "edges": {"split": "summarize", "summarize": "merge", "merge": "refine", "refine": null}
    })
}

/// What the preset takes, as a JSON Schema.
pub fn input_schema() -> Value {
    json!({
        "type": "object",
        "required": ["text"],
        "properties": {
            "text": {"type": "string", "minLength": 1, "description": "The text to summarize."},
            "max_chars": {"type": "integer", "minimum": MIN_MAX_CHARS, "description": "The longest summary, in characters (default 300)."},
            "chunk_chars": {"type": "integer", "minimum": 1, "description": "How long each chunk is, in characters (default 600)."}
        }
    })
}

/// An input to try the preset with.
pub fn example_input() -> Value {
    json!({
        "text": "Weft runs graphs of nodes over a shared JSON state. Each run is stored as it goes. \
                 The weather was fine that day. A run that stops with the server resumes from its last step. \
                 Every event of a run reaches every client that watches it. Lunch was late.",
        "max_chars": 100
    })
}

/// Texts of at least this many bytes are summarized on the CPU pool, shorter ones inline.
pub const INLINE_BELOW_BYTES: usize = 64 * 1024;

/// The bytes of text a call reads.
fn text_bytes(state: &State) -> usize {
    ["text", "summary"]
        .iter()
        .filter_map(|key| state.get(*key).and_then(Value::as_str))
        .map(str::len)
        .sum()
}

/// Registers the preset's four tools; long texts are worked on `pool`.
pub fn register(registry: &mut Registry, pool: &CpuPool) {
    let heavy = Heavy {
        weigh: text_bytes,
        threshold: INLINE_BELOW_BYTES,
    };
    let tool = |description: &str, run: fn(&State) -> Result<Outcome, ToolError>| {
        FnTool::on_pool_when(description, pool.clone(), heavy, move |state, _, _| run(state))
    };
    registry
        .register(
            "split_text",
            tool(
                "Splits `text` into sentences and groups them into chunks of about `chunk_chars`.",
                split,
            ),
        )
        .register(
            "summarize_chunks",
            tool("Keeps the heavier half of each chunk's sentences, in order.", summarize)
                .reads(&[("chunks", empty_list)]),
        )
        .register(
            "merge_summaries",
            tool("Joins the chunk summaries into `summary`.", merge).reads(&[("chunk_summaries", empty_list)]),
        )
        .register(
            "refine_summary",
            tool(
                "Ends when `summary` fits `max_chars`, else drops its lightest sentence and loops.",
                refine,
            )
            .reads(&[("summary", || Value::from(""))])
            .may_jump_to(&["refine"]),
        );
}

fn text(state: &State) -> Result<&str, ToolError> {
    match state.get("text") {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text),
        Some(Value::String(_)) => Err(ToolError::InvalidInput("`text` is empty".into())),
        Some(_) => Err(ToolError::InvalidInput("`text` must be a string".into())),
        None => Err(ToolError::InvalidInput(
            "`text` is missing: put the text to summarize in it".into(),
        )),
    }
}

fn limit(state: &State, key: &str, default: u64, min: u64) -> Result<u64, ToolError> {
    match state.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value
            .as_u64()
            .filter(|n| *n >= min)
            .ok_or_else(|| ToolError::InvalidInput(format!("`{key}` must be a whole number of at least {min}"))),
    }
}

fn strings(state: &State, key: &str) -> Result<Vec<String>, ToolError> {
    state
        .get(key)
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .ok_or_else(|| ToolError::InvalidInput(format!("`{key}` is missing: run the step that writes it first")))
}

/// The text's sentences: each ends at `.`, `!` or `?` followed by a space (or at the
/// end of the text), with its whitespace collapsed.
pub fn sentences(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for word in words {
        current.push(word);
        if word.ends_with(['.', '!', '?']) {
            out.push(current.join(" "));
            current.clear();
        }
    }
    if !current.is_empty() {
        out.push(current.join(" "));
    }
    out
}

fn words(sentence: &str) -> impl Iterator<Item = String> + '_ {
    sentence
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| word.chars().count() >= 3)
        .map(str::to_lowercase)
        .filter(|word| !STOPWORDS.contains(&word.as_str()))
}

/// How often each meaningful word occurs in the text.
fn frequencies(text: &str) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    for word in words(text) {
        *counts.entry(word).or_insert(0) += 1;
    }
    counts
}

/// A sentence's weight: the mean frequency of its meaningful words (0 with none).
fn weight(sentence: &str, counts: &HashMap<String, u32>) -> f64 {
    let (sum, n) = words(sentence).fold((0u32, 0u32), |(sum, n), word| {
        (sum + counts.get(&word).copied().unwrap_or(0), n + 1)
    });
    if n == 0 {
        0.0
    } else {
        f64::from(sum) / f64::from(n)
    }
}

fn split(state: &State) -> Result<Outcome, ToolError> {
    let chunk_chars = limit(state, "chunk_chars", DEFAULT_CHUNK_CHARS, 1)? as usize;
    let mut chunks: Vec<String> = Vec::new();
    let sentences = sentences(text(state)?);
    for sentence in &sentences {
        match chunks.last_mut() {
            Some(chunk) if chunk.chars().count() + 1 + sentence.chars().count() <= chunk_chars => {
                chunk.push(' ');
                chunk.push_str(sentence);
            }
            _ => chunks.push(sentence.clone()),
        }
    }
    let note = format!("{} sentence(s) in {} chunk(s)", sentences.len(), chunks.len());
    let mut update = State::new();
    update.insert("chunks".into(), json!(chunks));
    Ok(Outcome::update(update).note(note))
}

/// The heavier half (rounded up) of `sentences`, in their original order.
fn keep_heavier_half(sentences: &[String], counts: &HashMap<String, u32>) -> Vec<String> {
    let keep = sentences.len().div_ceil(2);
    let mut ranked: Vec<(usize, f64)> = sentences
        .iter()
        .enumerate()
        .map(|(i, s)| (i, weight(s, counts)))
        .collect();
    // Heaviest first; of equal weight, the earlier sentence first.
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut kept: Vec<usize> = ranked.into_iter().take(keep).map(|(i, _)| i).collect();
    kept.sort_unstable();
    kept.into_iter().map(|i| sentences[i].clone()).collect()
}

fn summarize(state: &State) -> Result<Outcome, ToolError> {
    let counts = frequencies(text(state)?);
    let summaries: Vec<String> = strings(state, "chunks")?
        .iter()
        .map(|chunk| keep_heavier_half(&sentences(chunk), &counts).join(" "))
        .collect();
    let mut update = State::new();
    update.insert("chunk_summaries".into(), json!(summaries));
    Ok(Outcome::update(update).note(format!("summarized {} chunk(s)", summaries.len())))
}

fn merge(state: &State) -> Result<Outcome, ToolError> {
    let summary = strings(state, "chunk_summaries")?.join(" ");
    let chars = summary.chars().count();
    let mut update = State::new();
    update.insert("summary".into(), summary.into());
    update.insert("summary_chars".into(), chars.into());
    update.insert("refine_passes".into(), 0.into());
    Ok(Outcome::update(update).note(format!("merged summary: {chars} characters")))
}

fn refine(state: &State) -> Result<Outcome, ToolError> {
    let max_chars = limit(state, "max_chars", DEFAULT_MAX_CHARS, MIN_MAX_CHARS)? as usize;
    let summary = state
        .get("summary")
        .and_then(Value::as_str)
        .ok_or_else(|| ToolError::InvalidInput("`summary` is missing: run `merge` first".into()))?;
    let passes = state.get("refine_passes").and_then(Value::as_u64).unwrap_or(0);
    let chars = summary.chars().count();
    let mut update = State::new();
    if chars <= max_chars {
        update.insert("verdict".into(), "within_limit".into());
        return Ok(Outcome::update(update)
            .note(format!("{chars} characters fit the limit of {max_chars}"))
            .then(Next::End));
    }
    let parts = sentences(summary);
    if parts.len() <= 1 {
        // One sentence still too long: cut it at the last word that fits, and stop.
        let mut cut = String::new();
        for word in summary.split_whitespace() {
            let next = if cut.is_empty() {
                word.to_owned()
            } else {
                format!("{cut} {word}")
            };
            if next.chars().count() + 1 > max_chars {
                break;
            }
            cut = next;
        }
        cut.push('…');
        update.insert("summary_chars".into(), cut.chars().count().into());
        update.insert("summary".into(), cut.into());
        update.insert("verdict".into(), "truncated".into());
        return Ok(Outcome::update(update)
            .note("one sentence left, cut to the limit")
            .then(Next::End));
    }
    let counts = frequencies(text(state)?);
    // The lightest sentence goes; of equal weight, the later one.
    let lightest = parts
        .iter()
        .enumerate()
        .map(|(i, s)| (i, weight(s, &counts)))
        .min_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
        .map_or(0, |(i, _)| i);
    let kept: Vec<&str> = parts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != lightest)
        .map(|(_, s)| s.as_str())
        .collect();
    let summary = kept.join(" ");
    let note = format!("{chars} > {max_chars} characters: dropped sentence {}", lightest + 1);
    update.insert("summary_chars".into(), summary.chars().count().into());
    update.insert("summary".into(), summary.into());
    update.insert("refine_passes".into(), (passes + 1).into());
    Ok(Outcome::update(update).note(note).then(Next::Node("refine".into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{testing::run_spec, RunEnd};

    async fn run(state: Value) -> RunEnd {
        let mut registry = Registry::new();
        register(&mut registry, &CpuPool::new(1));
        run_spec(&registry, &preset_spec(), state).await
    }

    const TEXT: &str = "Rust makes systems programming safe. The weather was nice. \
                        Rust ownership makes memory safe. Lunch was late.";

    #[test]
    fn sentences_end_at_their_marks_and_keep_a_trailing_fragment() {
        assert_eq!(sentences("One.  Two!\nThree? four"), ["One.", "Two!", "Three?", "four"]);
        assert_eq!(sentences("   "), Vec::<String>::new());
    }

    #[test]
    fn each_chunk_keeps_its_heavier_half() {
        let counts = frequencies(TEXT);
        assert_eq!(counts["rust"], 2);
        assert_eq!(counts["safe"], 2);
        let all = sentences(TEXT);
        assert_eq!(
            keep_heavier_half(&all, &counts),
            [
                "Rust makes systems programming safe.",
                "Rust ownership makes memory safe."
            ]
        );
    }

    #[tokio::test]
    async fn the_preset_summarizes_then_refines_to_the_limit() {
        // Chunks of at most 40 characters: every sentence (36, 21, 33 and 15 characters)
        // is a chunk of its own, and a one-sentence chunk keeps its sentence, so the merged
        // summary is the whole text (108 characters). Weights are 1.6, 1, 1.6 and 1: the
        // limit of 80 drops "Lunch was late." (the later of the two light ones), leaving
        // 92 characters, then "The weather was nice.", leaving 70.
        let end = run(json!({"text": TEXT, "chunk_chars": 40, "max_chars": 80})).await;
        let state = end.state;
        assert_eq!(state["chunks"].as_array().unwrap().len(), 4);
        assert_eq!(
            state["summary"],
            "Rust makes systems programming safe. Rust ownership makes memory safe."
        );
        assert_eq!(state["summary_chars"], 70);
        assert_eq!(state["refine_passes"], 2);
        assert_eq!(state["verdict"], "within_limit");
        assert_eq!(state["text"], TEXT);
        assert_eq!(end.steps, 3 + 3);
    }

    #[tokio::test]
    async fn a_single_sentence_over_the_limit_is_cut_at_a_word() {
        let end = run(json!({"text": "Alpha beta gamma delta epsilon zeta eta theta.", "max_chars": 20})).await;
        assert_eq!(end.state["summary"], "Alpha beta gamma…");
        assert_eq!(end.state["verdict"], "truncated");
    }

    #[tokio::test]
    async fn missing_text_is_a_clear_input_error() {
        let end = run(json!({"txt": "x"})).await;
        let error = end.error.unwrap().to_string();
        assert!(error.contains("`text` is missing"), "{error}");
    }
}
