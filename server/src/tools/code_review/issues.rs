//! What a reviewer flags, how much each finding costs the quality score, and what to
//! do about it.
//!
//! Line-level checks (`todo/fixme`, `long-line`, `trailing-whitespace`) read each line
//! once; function-level checks read the measured [`Function`]s. The score starts at 100
//! and loses each finding's weight, with each kind of finding costing at most
//! [`MAX_PENALTY_PER_TYPE`], so one noisy habit cannot hide every other finding.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::analysis::Function;

/// Lines longer than this many characters are flagged (the prototype's rule).
pub const MAX_LINE_CHARS: usize = 120;
/// Functions with more lines of code than this (comments and blank lines do not count)
/// are flagged.
pub const MAX_FUNCTION_LINES: usize = 50;
/// Functions more complex than this are flagged.
pub const MAX_COMPLEXITY: u32 = 10;
/// Functions nested deeper than this are flagged.
pub const MAX_NESTING: u32 = 4;
/// Functions with more parameters than this (not counting `self`) are flagged.
pub const MAX_PARAMETERS: usize = 5;
/// Most points one kind of finding can take off the score.
pub const MAX_PENALTY_PER_TYPE: u32 = 30;
/// Most findings of one kind listed in the state; the count covers them all.
pub const MAX_LISTED_PER_TYPE: usize = 200;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Style and hygiene.
    Low,
    /// Makes the code harder to change.
    Medium,
    /// Likely to hide bugs.
    High,
}

impl Severity {
    /// Points taken off the score.
    pub fn weight(self) -> u32 {
        match self {
            Self::Low => 2,
            Self::Medium => 5,
            Self::High => 10,
        }
    }
}

/// One finding, as the state lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// 1-based line.
    pub line: usize,
    /// The kind: `todo/fixme`, `long-line`, `high-complexity`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// How much it matters.
    pub severity: Severity,
    /// The offending line, stripped, as the prototype wrote it for every finding: a
    /// function-level finding's line is the one its function starts on.
    pub text: String,
    /// What is wrong with it, for a person.
    #[serde(default)]
    pub message: String,
    /// The function it is about, for function-level findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
}

/// Every finding in a piece of code.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Findings {
    /// The listed findings, by line (at most [`MAX_LISTED_PER_TYPE`] of each kind).
    pub issues: Vec<Issue>,
    /// All findings, listed or not.
    pub total: usize,
}

/// Gathers findings: each quotes its line (read once, so in constant time), and only the
/// first [`MAX_LISTED_PER_TYPE`] of each kind are built, the rest only counted. Each kind
/// is found in line order, so those are the first by line.
struct Collector<'a> {
    lines: Vec<&'a str>,
    issues: Vec<Issue>,
    per_kind: BTreeMap<&'static str, usize>,
    total: usize,
}

impl<'a> Collector<'a> {
    fn new(code: &'a str) -> Self {
        Self {
            lines: code.lines().collect(),
            issues: Vec::new(),
            per_kind: BTreeMap::new(),
            total: 0,
        }
    }

    /// A finding of `kind` at 1-based `line`; `message` is called only if it is listed.
    fn add(
        &mut self,
        line: usize,
        (kind, severity): (&'static str, Severity),
        message: impl FnOnce() -> String,
        function: Option<&str>,
    ) {
        self.total += 1;
        let count = self.per_kind.entry(kind).or_default();
        *count += 1;
        if *count > MAX_LISTED_PER_TYPE {
            return;
        }
        let text = line
            .checked_sub(1)
            .and_then(|index| self.lines.get(index))
            .map_or("", |text| text.trim());
        self.issues.push(Issue {
            line,
            kind: kind.to_owned(),
            severity,
            text: text.to_owned(),
            message: message(),
            function: function.map(str::to_owned),
        });
    }

    fn finish(mut self) -> Findings {
        self.issues.sort_by_key(|issue| issue.line);
        Findings {
            issues: self.issues,
            total: self.total,
        }
    }
}

/// Whether `line` holds `word` with no letter, digit or `_` right before or after it.
fn has_word(line: &str, word: &str) -> bool {
    let is_word_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    line.match_indices(word).any(|(at, _)| {
        let before = line.as_bytes()[..at].last().copied();
        let after = line.as_bytes().get(at + word.len()).copied();
        !before.is_some_and(is_word_byte) && !after.is_some_and(is_word_byte)
    })
}

/// Finds every issue in `code`, given its measured functions and first syntax error.
pub fn detect(code: &str, functions: &[Function], syntax_error_line: Option<usize>) -> Findings {
    let mut found = Collector::new(code);
    if let Some(line) = syntax_error_line {
        let message = || "the code does not parse here".to_owned();
        found.add(line, ("syntax-error", Severity::High), message, None);
    }
    for index in 0..found.lines.len() {
        let (number, line) = (index + 1, found.lines[index]);
        if has_word(line, "TODO") || has_word(line, "FIXME") {
            let message = || "a note left to resolve".to_owned();
            found.add(number, ("todo/fixme", Severity::Low), message, None);
        }
        let chars = line.chars().count();
        if chars > MAX_LINE_CHARS {
            let message = || format!("line is {chars} characters long (limit {MAX_LINE_CHARS})");
            found.add(number, ("long-line", Severity::Low), message, None);
        }
        if line.ends_with([' ', '\t']) {
            let message = || "whitespace at the end of the line".to_owned();
            found.add(number, ("trailing-whitespace", Severity::Low), message, None);
        }
    }
    for function in functions {
        let (name, line) = (function.name.as_str(), function.start_line);
        let graded = |value: usize, limit: usize| {
            if value > 2 * limit {
                Severity::High
            } else {
                Severity::Medium
            }
        };
        if function.complexity > MAX_COMPLEXITY {
            let severity = graded(function.complexity as usize, MAX_COMPLEXITY as usize);
            let message = || {
                format!(
                    "`{name}` has cyclomatic complexity {} (limit {MAX_COMPLEXITY})",
                    function.complexity
                )
            };
            found.add(line, ("high-complexity", severity), message, Some(name));
        }
        let code_lines = function.lines_of_code();
        if code_lines > MAX_FUNCTION_LINES {
            let severity = graded(code_lines, MAX_FUNCTION_LINES);
            let message = || format!("`{name}` has {code_lines} lines of code (limit {MAX_FUNCTION_LINES})");
            found.add(line, ("long-function", severity), message, Some(name));
        }
        if function.nesting > MAX_NESTING {
            let message = || format!("`{name}` nests blocks {} deep (limit {MAX_NESTING})", function.nesting);
            found.add(line, ("deep-nesting", Severity::Medium), message, Some(name));
        }
        let parameters = function.counted_parameters();
        if parameters > MAX_PARAMETERS {
            let message = || format!("`{name}` takes {parameters} parameters (limit {MAX_PARAMETERS})");
            found.add(line, ("too-many-parameters", Severity::Medium), message, Some(name));
        }
    }
    found.finish()
}

/// The quality score, 0 to 100, of code with these findings.
pub fn quality_score(issues: &[Issue]) -> u32 {
    let mut penalties: BTreeMap<&str, u32> = BTreeMap::new();
    for issue in issues {
        let penalty = penalties.entry(issue.kind.as_str()).or_default();
        *penalty = (*penalty + issue.severity.weight()).min(MAX_PENALTY_PER_TYPE);
    }
    100u32.saturating_sub(penalties.values().sum())
}

/// One actionable suggestion for a finding.
pub fn suggestion(issue: &Issue) -> String {
    let function = issue.function.as_deref().unwrap_or("this function");
    match issue.kind.as_str() {
        "todo/fixme" => format!("Resolve this note or move it to the issue tracker: {}", issue.text),
        "long-line" => format!("Break this line to at most {MAX_LINE_CHARS} characters."),
        "trailing-whitespace" => "Delete the whitespace at the end of the line.".into(),
        "syntax-error" => "Fix the syntax here: the rest of the review is less reliable until it parses.".into(),
        "high-complexity" => format!(
            "Split `{function}` into smaller functions, or replace branches with early returns or a lookup table."
        ),
        "long-function" => {
            format!("Extract the steps of `{function}` into helper functions of at most {MAX_FUNCTION_LINES} lines.")
        }
        "deep-nesting" => {
            format!("Flatten `{function}` with guard clauses (return early) or by extracting the inner blocks.")
        }
        "too-many-parameters" => format!("Group related parameters of `{function}` into one struct or object."),
        _ => "Review this finding.".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(line: usize, kind: &str, severity: Severity, text: &str, function: Option<&str>) -> Issue {
        Issue {
            line,
            kind: kind.to_owned(),
            severity,
            text: text.to_owned(),
            message: String::new(),
            function: function.map(str::to_owned),
        }
    }

    fn function(name: &str, start: usize, end: usize, complexity: u32, nesting: u32, params: usize) -> Function {
        Function {
            name: name.into(),
            start_line: start,
            end_line: end,
            parameters: (0..params).map(|i| format!("p{i}")).collect(),
            complexity,
            nesting,
            code_lines: 0,
        }
    }

    #[test]
    fn finds_line_level_issues_with_their_lines() {
        let long = format!("x = '{}'", "a".repeat(130));
        let code = format!("# TODO: tidy\nok = 1 \n{long}\nTODOS = 3  # not a note\n# FIXME later");
        let found = detect(&code, &[], None);
        let summary: Vec<_> = found
            .issues
            .iter()
            .map(|i| (i.line, i.kind.as_str(), i.severity))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, "todo/fixme", Severity::Low),
                (2, "trailing-whitespace", Severity::Low),
                (3, "long-line", Severity::Low),
                (5, "todo/fixme", Severity::Low),
            ]
        );
        // `text` is the line, stripped, as the prototype had it; `message` explains.
        assert_eq!(found.issues[0].text, "# TODO: tidy");
        assert_eq!(found.issues[0].message, "a note left to resolve");
        assert_eq!(found.issues[1].text, "ok = 1");
        assert_eq!(found.issues[2].text, long);
        assert_eq!(found.issues[2].message, "line is 136 characters long (limit 120)");
        assert_eq!(found.total, 4);
    }

    #[test]
    fn finds_function_level_issues_with_graded_severity() {
        let functions = [
            function("small", 1, 5, 3, 1, 2),
            function("big", 10, 130, 25, 6, 7),
            function("medium", 200, 260, 11, 4, 5),
        ];
        let found = detect("", &functions, Some(3));
        let summary: Vec<_> = found
            .issues
            .iter()
            .map(|i| (i.line, i.kind.as_str(), i.severity, i.function.as_deref()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (3, "syntax-error", Severity::High, None),
                (10, "high-complexity", Severity::High, Some("big")),
                (10, "long-function", Severity::High, Some("big")),
                (10, "deep-nesting", Severity::Medium, Some("big")),
                (10, "too-many-parameters", Severity::Medium, Some("big")),
                (200, "high-complexity", Severity::Medium, Some("medium")),
                (200, "long-function", Severity::Medium, Some("medium")),
            ]
        );
    }

    #[test]
    fn lists_a_bounded_number_of_each_kind_but_counts_all() {
        let code = "x = 1 \n".repeat(MAX_LISTED_PER_TYPE + 50);
        let found = detect(&code, &[], None);
        assert_eq!(found.issues.len(), MAX_LISTED_PER_TYPE);
        assert_eq!(found.total, MAX_LISTED_PER_TYPE + 50);
    }

    #[test]
    fn score_caps_each_kind_of_finding() {
        let todo = |line| issue(line, "todo/fixme", Severity::Low, "", None);
        assert_eq!(quality_score(&[]), 100);
        assert_eq!(quality_score(&(1..=5).map(todo).collect::<Vec<_>>()), 90);
        assert_eq!(quality_score(&(1..=100).map(todo).collect::<Vec<_>>()), 70);
        let mixed = vec![
            todo(1),
            issue(2, "high-complexity", Severity::High, "", None),
            issue(3, "long-function", Severity::Medium, "", None),
        ];
        assert_eq!(quality_score(&mixed), 83);
    }

    #[test]
    fn every_finding_gets_a_specific_suggestion() {
        let complex = issue(4, "high-complexity", Severity::Medium, "", Some("parse"));
        assert_eq!(
            suggestion(&complex),
            "Split `parse` into smaller functions, or replace branches with early returns or a lookup table."
        );
        let todo = issue(1, "todo/fixme", Severity::Low, "# TODO: x", None);
        assert_eq!(
            suggestion(&todo),
            "Resolve this note or move it to the issue tracker: # TODO: x"
        );
    }
}
