//! The safe, automatic fixes the review loop applies between passes.
//!
//! Only changes that cannot alter what the code does are made: trailing whitespace is
//! removed, over-long line comments are wrapped at word boundaries, a missing final
//! newline is added, and a function with findings no tool can fix safely (complexity,
//! length, nesting, parameters) gets a comment above it saying so.
//!
//! Every fix is idempotent: refining already-refined code changes nothing. That is what
//! makes the review loop end by construction: a pass that changes nothing stops it.

use serde::Serialize;

use super::{
    issues::{Issue, MAX_LINE_CHARS},
    language::Language,
};

/// The marker that starts an annotation comment, after the comment prefix.
pub const ANNOTATION_MARKER: &str = "weft:";

/// One kind of fix applied in a pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fix {
    /// `trailing-whitespace`, `wrapped-comment`, `final-newline` or `annotated`.
    pub kind: &'static str,
    /// How many places it changed.
    pub count: usize,
}

/// The result of one refinement pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refined {
    /// The refined code.
    pub code: String,
    /// What changed, by kind (empty when nothing did).
    pub fixes: Vec<Fix>,
}

/// Function-level findings that only a person can fix.
const UNFIXABLE: &[&str] = &[
    "high-complexity",
    "long-function",
    "deep-nesting",
    "too-many-parameters",
];

/// Applies every safe fix to `code` once.
pub fn refine(code: &str, language: Language, issues: &[Issue]) -> Refined {
    let newline = if code.contains("\r\n") { "\r\n" } else { "\n" };
    let comment = language.comment_prefix();
    let (mut trimmed, mut wrapped, mut annotated) = (0, 0, 0);

    let mut out: Vec<String> = Vec::with_capacity(code.len() / 32 + 1);
    // The findings to annotate, by the line their function starts on, in line order.
    let mut notes = issues
        .iter()
        .filter(|issue| UNFIXABLE.contains(&issue.kind.as_str()))
        .peekable();

    for (index, line) in code.lines().enumerate() {
        let number = index + 1;
        let mut kinds: Vec<&str> = Vec::new();
        while let Some(issue) = notes.next_if(|issue| issue.line <= number) {
            if issue.line == number && !kinds.contains(&issue.kind.as_str()) {
                kinds.push(&issue.kind);
            }
        }
        if let (Some(prefix), false) = (comment, kinds.is_empty()) {
            let already = out.last().is_some_and(|previous| {
                previous
                    .trim_start()
                    .starts_with(&format!("{prefix} {ANNOTATION_MARKER}"))
            });
            if !already {
                let indent = &line[..line.len() - line.trim_start().len()];
                out.push(format!(
                    "{indent}{prefix} {ANNOTATION_MARKER} needs a person: {}",
                    kinds.join(", ")
                ));
                annotated += 1;
            }
        }

        let clean = line.trim_end_matches([' ', '\t']);
        if clean.len() != line.len() {
            trimmed += 1;
        }
        match comment.and_then(|prefix| wrap_comment(clean, prefix)) {
            Some(lines) => {
                wrapped += 1;
                out.extend(lines);
            }
            None => out.push(clean.to_owned()),
        }
    }

    let mut refined = out.join(newline);
    let had_final_newline = code.ends_with('\n');
    if !code.is_empty() {
        refined.push_str(newline);
    }
    let fixes = [
        ("trailing-whitespace", trimmed),
        ("wrapped-comment", wrapped),
        ("final-newline", usize::from(!code.is_empty() && !had_final_newline)),
        ("annotated", annotated),
    ]
    .into_iter()
    .filter(|(_, count)| *count > 0)
    .map(|(kind, count)| Fix { kind, count })
    .collect();
    Refined { code: refined, fixes }
}

/// Splits a whole-line comment longer than the limit into comment lines within it, at
/// spaces. `None` when the line is no comment, fits, or has a word too long to fit.
fn wrap_comment(line: &str, prefix: &str) -> Option<Vec<String>> {
    if line.chars().count() <= MAX_LINE_CHARS {
        return None;
    }
    let body = line.trim_start();
    if !body.starts_with(prefix) {
        return None;
    }
    let indent = &line[..line.len() - body.len()];
    // Keep `///`, `//!` or `##` markers whole: the lead is the prefix and what repeats it.
    let marker_len = body
        .char_indices()
        .find(|&(_, c)| c.is_whitespace() || !(prefix.contains(c) || c == '!'))
        .map_or(body.len(), |(at, _)| at);
    let lead = format!("{indent}{} ", &body[..marker_len]);
    let words: Vec<&str> = body[marker_len..].split_whitespace().collect();
    let room = MAX_LINE_CHARS.checked_sub(lead.chars().count())?;
    if words.iter().any(|word| word.chars().count() > room) {
        return None;
    }
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in words {
        if !current.is_empty() && current.chars().count() + 1 + word.chars().count() > room {
            lines.push(format!("{lead}{current}"));
            current.clear();
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    lines.push(format!("{lead}{current}"));
    Some(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::code_review::issues::Severity;

    fn finding(line: usize, kind: &str) -> Issue {
        Issue {
            line,
            kind: kind.into(),
            severity: Severity::Medium,
            text: String::new(),
            message: String::new(),
            function: Some("f".into()),
        }
    }

    #[test]
    fn trims_wraps_annotates_and_ends_with_a_newline() {
        let words = "word ".repeat(30);
        let code = format!("x = 1  \n    # {words}\n    def f(a):\n        return a");
        let issues = [
            finding(3, "high-complexity"),
            finding(3, "long-function"),
            finding(1, "todo/fixme"),
        ];
        let refined = refine(&code, Language::Python, &issues);
        let expected_words = "word ".repeat(23);
        let expected = format!(
            "x = 1\n    # {}\n    # {}\n    # weft: needs a person: high-complexity, long-function\n    def f(a):\n        return a\n",
            expected_words.trim_end(),
            "word ".repeat(7).trim_end()
        );
        assert_eq!(refined.code, expected);
        assert!(refined.code.lines().all(|l| l.chars().count() <= MAX_LINE_CHARS));
        assert_eq!(
            refined.fixes,
            vec![
                // The code line and the comment (which ends in a space).
                Fix {
                    kind: "trailing-whitespace",
                    count: 2
                },
                Fix {
                    kind: "wrapped-comment",
                    count: 1
                },
                Fix {
                    kind: "final-newline",
                    count: 1
                },
                Fix {
                    kind: "annotated",
                    count: 1
                },
            ]
        );
    }

    #[test]
    fn a_second_pass_changes_nothing() {
        let code = format!("fn f() {{ }}   \n/// {}\n", "doc ".repeat(40));
        let first = refine(&code, Language::Rust, &[finding(1, "deep-nesting")]);
        assert!(first
            .code
            .starts_with("// weft: needs a person: deep-nesting\nfn f() { }\n/// doc"));
        // The annotation moved the function down a line, as re-measuring would find.
        let second = refine(&first.code, Language::Rust, &[finding(2, "deep-nesting")]);
        assert_eq!(second.code, first.code);
        assert!(second.fixes.is_empty());
    }

    #[test]
    fn leaves_code_lines_and_unbreakable_comments_alone() {
        let long_code = format!("x = '{}'\n", "a".repeat(150));
        let long_word = format!("# {}\n", "b".repeat(150));
        for code in [long_code, long_word] {
            let refined = refine(&code, Language::Python, &[]);
            assert_eq!(refined.code, code);
            assert!(refined.fixes.is_empty());
        }
    }

    #[test]
    fn keeps_windows_line_endings_and_empty_input() {
        assert_eq!(
            refine("a = 1 \r\nb = 2\r\n", Language::Python, &[]).code,
            "a = 1\r\nb = 2\r\n"
        );
        assert_eq!(
            refine("", Language::Python, &[]),
            Refined {
                code: String::new(),
                fixes: vec![]
            }
        );
    }
}
