//! The Code Review report: the score as a gauge, functions by complexity, the issues
//! marked on the code with their suggestions, the refine passes, and the revised code
//! as a diff against the original.

use std::collections::HashMap;

use leptos::prelude::*;
use serde_json::Value;
use similar::{ChangeTag, TextDiff};

/// Whether a state is a Code Review's (so the report applies).
pub fn is_code_review(state: &Value) -> bool {
    state.get("code").is_some_and(Value::is_string) && state.get("quality_score").is_some()
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn number(value: &Value, key: &str) -> f64 {
    value.get(key).and_then(Value::as_f64).unwrap_or_default()
}

fn list<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// The SVG arc of a half-circle gauge filled to `score` out of 100.
pub fn gauge_arc(score: f64) -> String {
    let fraction = (score / 100.0).clamp(0.0, 1.0);
    let angle = std::f64::consts::PI * (1.0 - fraction);
    let (x, y) = (60.0 + 50.0 * angle.cos(), 60.0 - 50.0 * angle.sin());
    format!("M10,60 A50,50 0 0 1 {x:.1},{y:.1}")
}

/// The whole report, from a Code Review run's final state.
#[component]
pub fn CodeReviewReport(
    /// The run's final state.
    state: Value,
) -> impl IntoView {
    let score = number(&state, "quality_score");
    let threshold = state
        .get("assessment")
        .map(|a| number(a, "threshold"))
        .filter(|t| *t > 0.0)
        .unwrap_or(80.0);
    let verdict = state
        .get("assessment")
        .map(|a| text(a, "verdict").replace('_', " "))
        .unwrap_or_default();
    let grade = if score >= threshold { "good" } else { "poor" };
    let language = text(&state, "language").to_owned();

    let metrics = list(&state, "metrics").to_vec();
    let worst = metrics.iter().map(|m| number(m, "complexity")).fold(1.0, f64::max);
    let functions = metrics
        .iter()
        .map(|m| {
            let complexity = number(m, "complexity");
            let width = format!("width: {:.0}%", 100.0 * complexity / worst);
            let class = if complexity > 10.0 { "bar high" } else { "bar" };
            view! {
                <li class="function" data-function=text(m, "name").to_owned()>
                    <span class="name"><code>{text(m, "name").to_owned()}</code></span>
                    <span class="lines">{format!("lines {}–{}", number(m, "start_line"), number(m, "end_line"))}</span>
                    <span class="meter"><span class=class style=width></span></span>
                    <span class="value" data-testid="complexity">{complexity}</span>
                </li>
            }
        })
        .collect_view();

    let issues = list(&state, "issues").to_vec();
    let suggestions = list(&state, "suggestions").to_vec();
    let suggestion_for = |line: f64, kind: &str| {
        suggestions
            .iter()
            .find(|s| number(s, "line") == line && text(s, "type") == kind)
            .map(|s| text(s, "suggestion").to_owned())
            .unwrap_or_default()
    };
    let issue_rows = issues
        .iter()
        .map(|issue| {
            let line = number(issue, "line");
            let kind = text(issue, "type").to_owned();
            let severity = text(issue, "severity").to_owned();
            let suggestion = suggestion_for(line, &kind);
            let class = format!("issue {severity}");
            view! {
                <li class=class data-testid="issue">
                    <a class="line-ref" href=format!("#L{line}")>{format!("line {line}")}</a>
                    <span class="kind">{kind}</span>
                    <span class="severity">{severity}</span>
                    // What is wrong, then the line it is on (runs from before `message`
                    // existed only have the line).
                    <p class="text">{match text(issue, "message") {
                        "" => text(issue, "text").to_owned(),
                        message => message.to_owned(),
                    }}</p>
                    {(!text(issue, "message").is_empty()).then(|| view! {
                        <code class="quote">{text(issue, "text").to_owned()}</code>
                    })}
                    <p class="suggestion">{suggestion}</p>
                </li>
            }
        })
        .collect_view();

    // Suggestions about no listed issue (a model's own, say), listed after the issues.
    let more = suggestions
        .iter()
        .filter(|s| {
            !issues
                .iter()
                .any(|issue| number(issue, "line") == number(s, "line") && text(issue, "type") == text(s, "type"))
        })
        .map(|s| {
            let line = number(s, "line");
            view! {
                <li class="issue" data-testid="more-suggestion">
                    {(line > 0.0).then(|| view! { <a class="line-ref" href=format!("#L{line}")>{format!("line {line}")}</a> })}
                    <span class="kind">{text(s, "type").to_owned()}</span>
                    <p class="suggestion">{text(s, "suggestion").to_owned()}</p>
                </li>
            }
        })
        .collect::<Vec<_>>();

    let code = text(&state, "code").to_owned();
    // The issue kinds on each line, gathered once.
    let mut marked: HashMap<u64, Vec<String>> = HashMap::new();
    for issue in &issues {
        let line = issue.get("line").and_then(Value::as_u64).unwrap_or_default();
        marked.entry(line).or_default().push(text(issue, "type").to_owned());
    }
    let code_lines = code
        .lines()
        .zip(1u64..)
        .map(|(source, number)| {
            let kinds = marked.remove(&number).unwrap_or_default();
            let class = if kinds.is_empty() {
                "code-line"
            } else {
                "code-line marked"
            };
            view! {
                <div class=class id=format!("L{number}")>
                    <span class="gutter">{number}</span>
                    <span class="source">{source.to_owned()}</span>
                    {(!kinds.is_empty()).then(|| view! { <span class="marker">{kinds.join(", ")}</span> })}
                </div>
            }
        })
        .collect_view();

    let passes = list(&state, "revisions")
        .iter()
        .map(|revision| {
            // A rule pass lists its fixes; a model's pass says what it changed.
            let fixes = match text(revision, "by") {
                "llm" => format!("the model: {}", text(revision, "summary")),
                _ => list(revision, "fixes")
                    .iter()
                    .map(|fix| format!("{} × {}", text(fix, "kind"), number(fix, "count")))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            view! {
                <li>
                    <strong>{format!("Pass {}", number(revision, "pass"))}</strong>
                    " · " {fixes} " · " {format!("{} issue(s) left", list(revision, "issues").len())}
                </li>
            }
        })
        .collect_view();

    let revised = state.get("revised_code").and_then(Value::as_str).map(|revised| {
        let diff = TextDiff::from_lines(code.as_str(), revised);
        diff.iter_all_changes()
            .map(|change| {
                let (class, sign) = match change.tag() {
                    ChangeTag::Delete => ("diff-line removed", "-"),
                    ChangeTag::Insert => ("diff-line added", "+"),
                    ChangeTag::Equal => ("diff-line", " "),
                };
                view! { <div class=class><span class="sign">{sign}</span>{change.value().trim_end_matches('\n').to_owned()}</div> }
            })
            .collect_view()
    });

    view! {
        <section class="report" data-testid="report">
            <h2>"Code review"</h2>
            <div class="report-top">
                <figure class=format!("gauge {grade}") data-testid="score">
                    <svg viewBox="0 0 120 70" role="img" aria-label=format!("quality score {score}")>
                        <path class="track" d="M10,60 A50,50 0 0 1 110,60"/>
                        <path class="fill" d=gauge_arc(score)/>
                        <text x="60" y="58" text-anchor="middle" class="score">{score}</text>
                    </svg>
                    <figcaption>{format!("quality score · threshold {threshold} · {verdict}")}</figcaption>
                </figure>
                <div class="functions">
                    <h3>{format!("Functions ({language})")}</h3>
                    <ul class="bars">{functions}</ul>
                </div>
            </div>
            <div class="review-body">
                <div class="code-view">
                    <h3>"Code"</h3>
                    <div class="code">{code_lines}</div>
                </div>
                <div class="issues">
                    <h3>{format!("Issues ({})", number(&state, "issues_count"))}</h3>
                    <ul>{issue_rows}</ul>
                    {(!more.is_empty()).then(|| view! {
                        <h3>"More suggestions"</h3>
                        <ul>{more}</ul>
                    })}
                </div>
            </div>
            {(!list(&state, "revisions").is_empty()).then(|| view! {
                <div class="passes">
                    <h3>"Refine passes"</h3>
                    <ul>{passes}</ul>
                </div>
            })}
            {revised.map(|diff| view! {
                <div class="revised">
                    <h3>"Revised code"</h3>
                    <div class="diff" data-testid="revised-diff">{diff}</div>
                </div>
            })}
        </section>
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_gauge_arc_ends_where_the_score_points() {
        assert_eq!(gauge_arc(0.0), "M10,60 A50,50 0 0 1 10.0,60.0");
        assert_eq!(gauge_arc(50.0), "M10,60 A50,50 0 0 1 60.0,10.0");
        assert_eq!(gauge_arc(100.0), "M10,60 A50,50 0 0 1 110.0,60.0");
        assert_eq!(gauge_arc(250.0), gauge_arc(100.0));
    }

    #[test]
    fn only_review_states_get_a_report() {
        assert!(is_code_review(&json!({"code": "x", "quality_score": 90})));
        assert!(!is_code_review(&json!({"code": "x"})));
        assert!(!is_code_review(&json!({"count": 3})));
    }
}
