//! The Data Quality preset: profile a table, find anomalies, turn them into rules,
//! apply the rules, and loop until the anomaly count is at most `max_anomalies`.
//!
//! The profile is taken once, from the table as given: every rule's parameters (a
//! column's median or most common value, its outlier fences) come from it, so applying
//! the rules again changes nothing, and the loop ends by construction. A pass that
//! changes nothing ends the run (`no_further_fixes`), and so does the fifth pass.
//! The table given (`table` or `csv`) is never modified; the work happens in `rows`.

use std::collections::HashSet;

use serde_json::{json, Map, Value};
use weft_app::wire::State;

use super::empty_list;
use crate::engine::tool::{CpuPool, FnTool, Heavy, Next, Outcome, Registry, ToolError};

/// The most refine passes a run makes.
pub const MAX_PASSES: u64 = 5;
/// Share of a column's present values that must be numbers for it to count as numeric.
const NUMERIC_SHARE: f64 = 0.8;
/// Fewer numbers than this give no outlier fences.
const MIN_FOR_FENCES: usize = 4;

/// The preset's graph.
pub fn preset_spec() -> Value {
    json!({
        "nodes": {
            "profile": "profile_table",
            "detect": "find_anomalies",
            "rules": "generate_rules",
            "apply": "apply_rules",
            "assess": "assess_quality"
        },
        "edges": {"profile": "detect", "detect": "rules", "rules": "apply", "apply": "assess", "assess": null}
    })
}

/// What the preset takes, as a JSON Schema: the table as rows or as CSV.
pub fn input_schema() -> Value {
    json!({
        "type": "object",
        "anyOf": [{"required": ["table"]}, {"required": ["csv"]}],
        "properties": {
            "table": {"type": "array", "items": {"type": "object"}, "description": "The rows, each an object."},
            "csv": {"type": "string", "description": "The table as CSV text with a header row."},
            "max_anomalies": {"type": "integer", "minimum": 0, "description": "How many anomalies may remain (default 0)."}
        }
    })
}

/// An input to try the preset with.
pub fn example_input() -> Value {
    json!({
        "csv": "name,age,city\nann,30,Oslo\nbob,32,Oslo\ncy,31,\ndee,n/a,Rome\neve,29,Oslo\nfay,400,Rome\nbob,32,Oslo\n",
        "max_anomalies": 0
    })
}

/// Tables of at least this many rows are cleaned on the CPU pool, smaller ones inline.
pub const INLINE_BELOW_ROWS: usize = 2_000;

/// How many rows a call reads: the working copy, or the input table (a CSV counted by
/// its lines).
fn table_rows(state: &State) -> usize {
    let rows = |key: &str| state.get(key).and_then(Value::as_array).map(Vec::len);
    rows("rows")
        .or_else(|| rows("table"))
        .or_else(|| state.get("csv").and_then(Value::as_str).map(|csv| csv.lines().count()))
        .unwrap_or(0)
}

/// Registers the preset's five tools; large tables are worked on `pool`.
pub fn register(registry: &mut Registry, pool: &CpuPool) {
    let heavy = Heavy {
        weigh: table_rows,
        threshold: INLINE_BELOW_ROWS,
    };
    let tool = |description: &str, run: fn(&State) -> Result<Outcome, ToolError>| {
        FnTool::on_pool_when(description, pool.clone(), heavy, move |state, _, _| run(state))
    };
    registry
        .register(
            "profile_table",
            tool(
                "Reads `table` (rows as objects) or `csv`, and profiles each column: kind, missing values, \
                 median, quartiles and outlier fences, or the most common value.",
                profile,
            ),
        )
        .register(
            "find_anomalies",
            tool(
                "Lists missing values, non-numbers in numeric columns, outliers and duplicate rows.",
                detect,
            )
            .reads(&[("rows", empty_list), ("profile", empty_list)]),
        )
        .register(
            "generate_rules",
            tool("Turns the anomalies into cleaning rules.", rules)
                .reads(&[("profile", empty_list), ("anomalies", empty_list)]),
        )
        .register(
            "apply_rules",
            tool("Applies the rules to `rows`.", apply).reads(&[("rows", empty_list), ("profile", empty_list)]),
        )
        .register(
            "assess_quality",
            tool(
                "Ends when at most `max_anomalies` remain, else loops back to `detect`.",
                assess,
            )
            .may_jump_to(&["detect"]),
        );
}

/// A column's profile.
#[derive(Debug, Clone, PartialEq)]
struct Column {
    name: String,
    numeric: bool,
    missing: usize,
    /// Numeric columns: the median; text columns: the most common value.
    fill: Value,
    /// Numeric columns with enough values: values outside are outliers.
    fences: Option<(f64, f64)>,
}

fn is_missing(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(text)) => text.trim().is_empty(),
        _ => false,
    }
}

/// Reads the table: `table` as an array of objects, or `csv` with a header row (cells
/// that parse as numbers become numbers, empty cells become null).
fn read_table(state: &State) -> Result<Vec<Map<String, Value>>, ToolError> {
    if let Some(table) = state.get("table") {
        let rows = table
            .as_array()
            .ok_or_else(|| ToolError::InvalidInput("`table` must be an array of row objects".into()))?;
        return rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                row.as_object()
                    .cloned()
                    .ok_or_else(|| ToolError::InvalidInput(format!("`table[{i}]` must be an object")))
            })
            .collect();
    }
    let Some(csv) = state.get("csv") else {
        return Err(ToolError::InvalidInput(
            "give the data as `table` (an array of objects) or `csv` (text with a header row)".into(),
        ));
    };
    let csv = csv
        .as_str()
        .ok_or_else(|| ToolError::InvalidInput("`csv` must be a string".into()))?;
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(csv.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|err| ToolError::InvalidInput(format!("`csv`: {err}")))?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|err| ToolError::InvalidInput(format!("`csv`: {err}")))?;
        let row = headers
            .iter()
            .enumerate()
            .map(|(i, header)| {
                let cell = record.get(i).unwrap_or("").trim();
                let value = if cell.is_empty() {
                    Value::Null
                } else if let Ok(n) = cell.parse::<i64>() {
                    n.into()
                } else if let Some(n) = cell.parse::<f64>().ok().filter(|n| n.is_finite()) {
                    n.into()
                } else {
                    cell.into()
                };
                (header.clone(), value)
            })
            .collect();
        rows.push(row);
    }
    Ok(rows)
}

/// The median of sorted, non-empty `values`.
fn median(values: &[f64]) -> f64 {
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// Tukey's fences, from the quartiles as medians of the lower and upper halves.
fn fences(sorted: &[f64]) -> Option<(f64, f64)> {
    if sorted.len() < MIN_FOR_FENCES {
        return None;
    }
    let half = sorted.len() / 2;
    let q1 = median(&sorted[..half]);
    let q3 = median(&sorted[sorted.len() - half..]);
    let iqr = q3 - q1;
    Some((q1 - 1.5 * iqr, q3 + 1.5 * iqr))
}

fn number(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

fn profile_columns(rows: &[Map<String, Value>]) -> Vec<Column> {
    let mut names: Vec<String> = Vec::new();
    for row in rows {
        for key in row.keys() {
            if !names.contains(key) {
                names.push(key.clone());
            }
        }
    }
    names
        .into_iter()
        .map(|name| {
            let present: Vec<&Value> = rows
                .iter()
                .map(|row| row.get(&name))
                .filter(|value| !is_missing(*value))
                .flatten()
                .collect();
            let missing = rows.len() - present.len();
            let mut numbers: Vec<f64> = present.iter().filter_map(|v| v.as_f64()).collect();
            let numeric = !numbers.is_empty() && numbers.len() as f64 >= NUMERIC_SHARE * present.len() as f64;
            if numeric {
                numbers.sort_by(f64::total_cmp);
                Column {
                    fill: number(median(&numbers)),
                    fences: fences(&numbers),
                    name,
                    numeric,
                    missing,
                }
            } else {
                // The most common value; of equal counts, the first seen.
                let mut counts: Vec<(&Value, usize)> = Vec::new();
                for value in &present {
                    match counts.iter_mut().find(|(v, _)| v == value) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((value, 1)),
                    }
                }
                let best = counts.iter().map(|(_, n)| *n).max().unwrap_or(0);
                let fill = counts
                    .iter()
                    .find(|(_, n)| *n == best)
                    .map_or(Value::Null, |(v, _)| (*v).clone());
                Column {
                    name,
                    numeric,
                    missing,
                    fill,
                    fences: None,
                }
            }
        })
        .collect()
}

fn column_json(column: &Column) -> Value {
    let mut value = json!({
        "column": column.name,
        "kind": if column.numeric { "number" } else { "text" },
        "missing": column.missing,
    });
    if column.numeric {
        value["median"] = column.fill.clone();
        if let Some((low, high)) = column.fences {
            value["fences"] = json!([number(low), number(high)]);
        }
    } else {
        value["most_common"] = column.fill.clone();
    }
    value
}

fn columns_from_state(state: &State) -> Result<Vec<Column>, ToolError> {
    let profile = state
        .get("profile")
        .and_then(Value::as_array)
        .ok_or_else(|| ToolError::InvalidInput("`profile` is missing: run `profile` first".into()))?;
    Ok(profile
        .iter()
        .map(|column| Column {
            name: column["column"].as_str().unwrap_or_default().to_owned(),
            numeric: column["kind"] == "number",
            missing: column["missing"].as_u64().unwrap_or(0) as usize,
            fill: if column["kind"] == "number" {
                column["median"].clone()
            } else {
                column["most_common"].clone()
            },
            fences: column["fences"]
                .as_array()
                .and_then(|f| Some((f.first()?.as_f64()?, f.get(1)?.as_f64()?))),
        })
        .collect())
}

fn rows_from_state(state: &State) -> Result<Vec<Map<String, Value>>, ToolError> {
    let rows = state
        .get("rows")
        .and_then(Value::as_array)
        .ok_or_else(|| ToolError::InvalidInput("`rows` is missing: run `profile` first".into()))?;
    Ok(rows.iter().filter_map(Value::as_object).cloned().collect())
}

fn profile(state: &State) -> Result<Outcome, ToolError> {
    let rows = read_table(state)?;
    let columns = profile_columns(&rows);
    let note = format!("{} row(s), {} column(s)", rows.len(), columns.len());
    let mut update = State::new();
    update.insert("profile".into(), columns.iter().map(column_json).collect());
    update.insert("rows".into(), rows.into_iter().map(Value::Object).collect());
    update.insert("passes".into(), 0.into());
    Ok(Outcome::update(update).note(note))
}

/// Every anomaly in `rows`: per row, its cells in column order, then whether it repeats
/// an earlier row.
fn anomalies(rows: &[Map<String, Value>], columns: &[Column]) -> Vec<Value> {
    let mut found = Vec::new();
    let mut seen = HashSet::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        for column in columns {
            let value = row.get(&column.name);
            if is_missing(value) {
                found.push(json!({"row": i, "column": column.name, "kind": "missing"}));
            } else if column.numeric {
                match value.and_then(Value::as_f64) {
                    None => {
                        found.push(json!({"row": i, "column": column.name, "kind": "not_a_number", "value": value}))
                    }
                    Some(n) if column.fences.is_some_and(|(low, high)| n < low || n > high) => {
                        found.push(json!({"row": i, "column": column.name, "kind": "outlier", "value": value}));
                    }
                    Some(_) => {}
                }
            }
        }
        if !seen.insert(row_key(row)) {
            found.push(json!({"row": i, "kind": "duplicate"}));
        }
    }
    found
}

/// A row as text that two rows share exactly when they are equal as JSON (objects compare
/// whatever the order of their keys): duplicates are found through a set, in linear time.
fn row_key(row: &Map<String, Value>) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(fields) => {
                let mut keys: Vec<&String> = fields.keys().collect();
                keys.sort();
                out.push('{');
                for key in keys {
                    out.push_str(&Value::from(key.as_str()).to_string());
                    out.push(':');
                    write(&fields[key], out);
                    out.push(',');
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for item in items {
                    write(item, out);
                    out.push(',');
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(&Value::Object(row.clone()), &mut out);
    out
}

fn detect(state: &State) -> Result<Outcome, ToolError> {
    let found = anomalies(&rows_from_state(state)?, &columns_from_state(state)?);
    let count = found.len();
    let mut update = State::new();
    update.insert("anomalies".into(), found.into());
    update.insert("anomaly_count".into(), count.into());
    Ok(Outcome::update(update).note(format!("{count} anomal{}", if count == 1 { "y" } else { "ies" })))
}

fn rules(state: &State) -> Result<Outcome, ToolError> {
    let columns = columns_from_state(state)?;
    let found = state
        .get("anomalies")
        .and_then(Value::as_array)
        .ok_or_else(|| ToolError::InvalidInput("`anomalies` is missing: run `detect` first".into()))?;
    let has = |column: &str, kind: &str| found.iter().any(|a| a["column"] == column && a["kind"] == kind);
    let mut rules = Vec::new();
    for column in &columns {
        if has(&column.name, "not_a_number") {
            rules.push(json!({"rule": "set_missing_if_not_a_number", "column": column.name}));
        }
        if has(&column.name, "missing") && !column.fill.is_null() {
            rules.push(json!({"rule": "fill_missing", "column": column.name, "value": column.fill}));
        }
        if let (true, Some((low, high))) = (has(&column.name, "outlier"), column.fences) {
            rules.push(json!({"rule": "clamp", "column": column.name, "min": number(low), "max": number(high)}));
        }
    }
    if found.iter().any(|a| a["kind"] == "duplicate") {
        rules.push(json!({"rule": "drop_duplicates"}));
    }
    let count = rules.len();
    let mut update = State::new();
    update.insert("rules".into(), rules.into());
    Ok(Outcome::update(update).note(format!("{count} rule(s)")))
}

/// Applies one rule to `rows`; answers how many cells or rows it changed.
fn apply_rule(rows: &mut Vec<Map<String, Value>>, rule: &Value) -> usize {
    let column = rule["column"].as_str().unwrap_or_default();
    let mut changed = 0;
    match rule["rule"].as_str() {
        Some("set_missing_if_not_a_number") => {
            for row in rows.iter_mut() {
                if let Some(value) = row.get_mut(column) {
                    if !is_missing(Some(value)) && value.as_f64().is_none() {
                        *value = Value::Null;
                        changed += 1;
                    }
                }
            }
        }
        Some("fill_missing") => {
            for row in rows.iter_mut() {
                if is_missing(row.get(column)) {
                    row.insert(column.to_owned(), rule["value"].clone());
                    changed += 1;
                }
            }
        }
        Some("clamp") => {
            let (Some(low), Some(high)) = (rule["min"].as_f64(), rule["max"].as_f64()) else {
                return 0;
            };
            for row in rows.iter_mut() {
                if let Some(n) = row.get(column).and_then(Value::as_f64) {
                    let clamped = n.clamp(low, high);
                    if clamped != n {
                        row.insert(column.to_owned(), number(clamped));
                        changed += 1;
                    }
                }
            }
        }
        Some("drop_duplicates") => {
            let mut seen = HashSet::with_capacity(rows.len());
            let before = rows.len();
            rows.retain(|row| seen.insert(row_key(row)));
            changed += before - rows.len();
        }
        _ => {}
    }
    changed
}

fn apply(state: &State) -> Result<Outcome, ToolError> {
    let mut rows = rows_from_state(state)?;
    let columns = columns_from_state(state)?;
    let rules = state
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let changed: usize = rules.iter().map(|rule| apply_rule(&mut rows, rule)).sum();
    let remaining = anomalies(&rows, &columns).len();
    let passes = state.get("passes").and_then(Value::as_u64).unwrap_or(0) + 1;
    let mut update = State::new();
    update.insert("rows".into(), rows.into_iter().map(Value::Object).collect());
    update.insert("changed".into(), changed.into());
    update.insert("remaining_anomalies".into(), remaining.into());
    update.insert("passes".into(), passes.into());
    Ok(Outcome::update(update).note(format!(
        "pass {passes}: {changed} change(s), {remaining} anomalies left"
    )))
}

fn assess(state: &State) -> Result<Outcome, ToolError> {
    let max = match state.get("max_anomalies") {
        None | Some(Value::Null) => 0,
        Some(value) => value
            .as_u64()
            .ok_or_else(|| ToolError::InvalidInput("`max_anomalies` must be a whole number".into()))?,
    };
    let remaining = state.get("remaining_anomalies").and_then(Value::as_u64).unwrap_or(0);
    let changed = state.get("changed").and_then(Value::as_u64).unwrap_or(0);
    let passes = state.get("passes").and_then(Value::as_u64).unwrap_or(0);
    let verdict = if remaining <= max {
        "clean"
    } else if changed == 0 {
        "no_further_fixes"
    } else if passes >= MAX_PASSES {
        "pass_limit"
    } else {
        return Ok(Outcome::default()
            .note(format!("{remaining} > {max} anomalies: another pass"))
            .then(Next::Node("detect".into())));
    };
    let mut update = State::new();
    update.insert("verdict".into(), verdict.into());
    Ok(Outcome::update(update)
        .note(format!("{verdict}: {remaining} anomalies left (at most {max})"))
        .then(Next::End))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{testing::run_spec, RunEnd};

    #[test]
    fn rows_are_the_same_key_exactly_when_they_are_equal() {
        let row = |value: Value| value.as_object().unwrap().clone();
        let a = row(json!({"x": 1, "y": {"p": [1, "a"], "q": null}}));
        let reordered = row(json!({"y": {"q": null, "p": [1, "a"]}, "x": 1}));
        assert_eq!(a, reordered);
        assert_eq!(row_key(&a), row_key(&reordered));
        for other in [
            json!({"x": 1.0, "y": {"p": [1, "a"], "q": null}}),
            json!({"x": "1", "y": {"p": [1, "a"], "q": null}}),
            json!({"x": 1, "y": {"p": ["a", 1], "q": null}}),
            json!({"x": 1}),
        ] {
            let other = row(other);
            assert_ne!(a, other);
            assert_ne!(row_key(&a), row_key(&other), "{other:?}");
        }
    }

    async fn run(state: Value) -> RunEnd {
        let mut registry = Registry::new();
        register(&mut registry, &CpuPool::new(1));
        run_spec(&registry, &preset_spec(), state).await
    }

    #[tokio::test]
    async fn a_large_table_is_cleaned_on_the_pool_with_duplicates_found_in_one_pass() {
        // 5,000 rows, each of the first 2,500 repeated once: above the inline bound.
        let rows: Vec<Value> = (0..5_000).map(|i| json!({"id": i % 2_500, "city": "Oslo"})).collect();
        let end = run(json!({"table": rows})).await;
        let state = &end.state;
        let duplicates = state["anomalies"]
            .as_array()
            .map_or(0, |found| found.iter().filter(|a| a["kind"] == "duplicate").count());
        assert_eq!(end.status, weft_app::wire::RunStatus::Completed);
        assert_eq!(state["rows"].as_array().map(Vec::len), Some(2_500));
        assert_eq!(state["verdict"], "clean");
        assert_eq!(
            state["table"].as_array().map(Vec::len),
            Some(5_000),
            "the input is never modified"
        );
        // One detect pass found every repeat; applying the rule left none.
        assert_eq!(duplicates, 2_500);
        assert_eq!(state["remaining_anomalies"], 0);
    }

    #[test]
    fn fences_come_from_the_quartiles() {
        // Halves [29, 30, 31] and [32, 32, 400]: q1 30, q3 32, IQR 2.
        assert_eq!(fences(&[29.0, 30.0, 31.0, 32.0, 32.0, 400.0]), Some((27.0, 35.0)));
        assert_eq!(median(&[29.0, 30.0, 31.0, 32.0, 32.0, 400.0]), 31.5);
        assert_eq!(fences(&[1.0, 2.0, 3.0]), None);
    }

    #[tokio::test]
    async fn the_example_is_cleaned_in_two_passes() {
        let end = run(example_input()).await;
        let state = &end.state;
        // Age is numeric (6 of its 7 values are numbers), fences 27..35, median 31.5;
        // city's most common value is Oslo.
        assert_eq!(
            state["profile"][1],
            json!({"column": "age", "kind": "number", "missing": 0, "median": 31.5, "fences": [27.0, 35.0]})
        );
        assert_eq!(
            state["profile"][2],
            json!({"column": "city", "kind": "text", "missing": 1, "most_common": "Oslo"})
        );
        // Pass 1 fixes the missing city, the "n/a" age (now missing), the outlier and
        // the duplicate row; pass 2 fills the age it emptied.
        assert_eq!(state["passes"], 2);
        assert_eq!(state["verdict"], "clean");
        assert_eq!(state["remaining_anomalies"], 0);
        assert_eq!(
            Value::Array(state["rows"].as_array().unwrap().clone()),
            json!([
                {"name": "ann", "age": 30, "city": "Oslo"},
                {"name": "bob", "age": 32, "city": "Oslo"},
                {"name": "cy", "age": 31, "city": "Oslo"},
                {"name": "dee", "age": 31.5, "city": "Rome"},
                {"name": "eve", "age": 29, "city": "Oslo"},
                {"name": "fay", "age": 35.0, "city": "Rome"}
            ])
        );
        assert_eq!(end.steps, 9);
        assert_eq!(state["csv"], example_input()["csv"]);
    }

    #[test]
    fn the_first_pass_finds_each_kind_of_anomaly() {
        let rows = read_table(example_input().as_object().unwrap()).unwrap();
        let columns = profile_columns(&rows);
        let found: Vec<(u64, String)> = anomalies(&rows, &columns)
            .iter()
            .map(|a| (a["row"].as_u64().unwrap(), a["kind"].as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            found,
            [
                (2, "missing".to_owned()),
                (3, "not_a_number".to_owned()),
                (5, "outlier".to_owned()),
                (6, "duplicate".to_owned())
            ]
        );
    }

    #[tokio::test]
    async fn a_table_that_cannot_be_fixed_ends_without_looping_forever() {
        // An all-empty column has no value to fill with: the pass changes nothing.
        let end = run(json!({"table": [{"a": 1, "b": null}, {"a": 2, "b": null}]})).await;
        assert_eq!(end.state["verdict"], "no_further_fixes");
        assert_eq!(end.state["remaining_anomalies"], 2);
        assert_eq!(end.steps, 5);
    }

    #[tokio::test]
    async fn bad_input_is_a_clear_error() {
        let end = run(json!({"table": [1, 2]})).await;
        assert!(end.error.unwrap().to_string().contains("`table[0]` must be an object"));
    }
}
