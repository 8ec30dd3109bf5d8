//! Pure helpers for showing data: state diffs, durations, dates, JSON previews.

use serde_json::Value;

/// One difference between two states.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Where, as a dotted path (`assessment.verdict`, `issues[3]`).
    pub path: String,
    /// What happened there.
    pub kind: ChangeKind,
    /// The value before (absent when added).
    pub before: Option<Value>,
    /// The value after (absent when removed).
    pub after: Option<Value>,
}

/// The kind of a [`Change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The key is new.
    Added,
    /// The key is gone.
    Removed,
    /// The value differs.
    Changed,
}

impl ChangeKind {
    /// The CSS class and label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Removed => "removed",
            Self::Changed => "changed",
        }
    }
}

/// How deep into nested objects [`diff`] looks before reporting a whole value.
const DIFF_DEPTH: usize = 3;

/// What differs between `before` and `after`: objects are compared key by key (a few
/// levels deep), anything else as a whole.
pub fn diff(before: &Value, after: &Value) -> Vec<Change> {
    let mut changes = Vec::new();
    diff_into(&mut changes, "", before, after, 0);
    changes
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn diff_into(changes: &mut Vec<Change>, path: &str, before: &Value, after: &Value, depth: usize) {
    match (before, after) {
        (Value::Object(old), Value::Object(new)) if depth < DIFF_DEPTH => {
            for (key, old_value) in old {
                match new.get(key) {
                    Some(new_value) => diff_into(changes, &join(path, key), old_value, new_value, depth + 1),
                    None => changes.push(Change {
                        path: join(path, key),
                        kind: ChangeKind::Removed,
                        before: Some(old_value.clone()),
                        after: None,
                    }),
                }
            }
            for (key, new_value) in new {
                if !old.contains_key(key) {
                    changes.push(Change {
                        path: join(path, key),
                        kind: ChangeKind::Added,
                        before: None,
                        after: Some(new_value.clone()),
                    });
                }
            }
        }
        _ if before == after => {}
        _ => changes.push(Change {
            path: if path.is_empty() {
                "(state)".into()
            } else {
                path.to_owned()
            },
            kind: ChangeKind::Changed,
            before: Some(before.clone()),
            after: Some(after.clone()),
        }),
    }
}

/// A value as short JSON text: at most `limit` characters, cut with an ellipsis.
pub fn preview(value: &Value, limit: usize) -> String {
    let text = value.to_string();
    if text.chars().count() <= limit {
        return text;
    }
    let cut: String = text.chars().take(limit.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// A duration in microseconds, for people: `850 µs`, `12.5 ms`, `3.2 s`, `2 min 5 s`.
pub fn micros(us: u64) -> String {
    match us {
        0..=999 => format!("{us} µs"),
        1_000..=999_999 => format!("{} ms", tenths(us, 1_000)),
        _ => millis(us / 1_000),
    }
}

/// `value / unit` to one decimal, rounded half up. Whole numbers only: the browser's
/// wasm then carries no float formatting (a fifth of what the run page added).
fn tenths(value: u64, unit: u64) -> String {
    let tenths = (value * 10 + unit / 2) / unit;
    format!("{}.{}", tenths / 10, tenths % 10)
}

/// A duration in milliseconds, for people.
pub fn millis(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{} s", tenths(ms, 1_000)),
        _ => format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1_000),
    }
}

/// What model calls used, for people: tokens, and the cost when prices are configured.
pub fn usage(usage: &crate::wire::Usage) -> String {
    let tokens = usage.prompt_tokens + usage.completion_tokens;
    match usage.cost_usd {
        Some(cost) => format!("{tokens} tok · ${cost:.4}"),
        None => format!("{tokens} tok"),
    }
}

/// The start of a UTC day written `YYYY-MM-DD`, in Unix milliseconds; `None` for
/// anything else.
pub fn day_start(day: &str) -> Option<i64> {
    let mut parts = day.trim().splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Howard Hinnant's days-from-civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400_000)
}

/// A Unix time in milliseconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1_000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3_600,
        (rest % 3_600) / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn diff_reports_added_removed_and_changed_keys_with_paths() {
        let before = json!({"a": 1, "b": {"c": 2, "d": 3}, "gone": true});
        let after = json!({"a": 1, "b": {"c": 5, "d": 3}, "new": [1]});
        let changes = diff(&before, &after);
        let summary: Vec<(&str, &str)> = changes.iter().map(|c| (c.path.as_str(), c.kind.as_str())).collect();
        assert_eq!(summary, [("b.c", "changed"), ("gone", "removed"), ("new", "added")]);
        assert_eq!(changes[0].before, Some(json!(2)));
        assert_eq!(changes[0].after, Some(json!(5)));
        assert!(diff(&after, &after).is_empty());
    }

    #[test]
    fn previews_are_cut_with_an_ellipsis() {
        assert_eq!(preview(&json!("abc"), 10), "\"abc\"");
        assert_eq!(preview(&json!("abcdefgh"), 5), "\"abc…");
    }

    #[test]
    fn durations_and_dates_read_naturally() {
        assert_eq!(micros(850), "850 µs");
        assert_eq!(micros(12_500), "12.5 ms");
        assert_eq!(micros(3_200_000), "3.2 s");
        assert_eq!(millis(125_000), "2 min 5 s");
        assert_eq!(millis(1_049), "1.0 s");
        assert_eq!(millis(1_050), "1.1 s");
        assert_eq!(millis(59_999), "60.0 s");
        assert_eq!(micros(999_949), "999.9 ms");
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_795_000_000_000), "2026-11-18 11:06:40");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn days_read_back_as_their_start() {
        assert_eq!(day_start("1970-01-01"), Some(0));
        assert_eq!(day_start("2026-11-30"), Some(1_795_996_800_000));
        assert_eq!(utc(day_start("2024-02-29").unwrap()), "2024-02-29 00:00:00");
        for bad in ["", "2026-13-01", "2026-11", "yesterday", "2026-11-32"] {
            assert_eq!(day_start(bad), None, "{bad}");
        }
    }
}
