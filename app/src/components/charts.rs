//! The graph page's charts, drawn as SVG in the page itself (rendered on the server like
//! the rest of it; no chart library): runs per day stacked by status, and the median
//! and 95th-percentile durations per day.

use leptos::prelude::*;

use crate::{format::millis, wire::DayStats};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 200.0;
/// Room for the y axis's labels on the left and the days under the plot.
const LEFT: f64 = 40.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 8.0;

/// The statuses a day's bar is stacked from, bottom up, with their CSS class.
const SEGMENTS: [&str; 4] = ["completed", "failed", "cancelled", "other"];

fn count(day: &DayStats, status: &str) -> u64 {
    match status {
        "completed" => day.completed,
        "failed" => day.failed,
        "cancelled" => day.cancelled,
        _ => day.other,
    }
}

/// One drawn segment of a stacked bar: its status, count and rectangle.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The day, `YYYY-MM-DD`.
    pub day: String,
    /// Its status.
    pub status: &'static str,
    /// Runs in it.
    pub count: u64,
    /// `x`, `y`, width and height.
    pub rect: (f64, f64, f64, f64),
}

/// The segments of every day's bar, scaled so the busiest day fills the plot.
pub fn stacked_bars(days: &[DayStats]) -> Vec<Segment> {
    let most = days
        .iter()
        .map(|day| SEGMENTS.iter().map(|status| count(day, status)).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = (WIDTH - LEFT) / days.len().max(1) as f64;
    let plot = HEIGHT - BOTTOM - TOP;
    let mut segments = Vec::new();
    for (i, day) in days.iter().enumerate() {
        let x = LEFT + slot * i as f64 + slot * 0.15;
        let mut base = HEIGHT - BOTTOM;
        for status in SEGMENTS {
            let n = count(day, status);
            if n == 0 {
                continue;
            }
            let height = plot * n as f64 / most as f64;
            base -= height;
            segments.push(Segment {
                day: day.day.clone(),
                status,
                count: n,
                rect: (x, base, slot * 0.7, height),
            });
        }
    }
    segments
}

/// Runs per day, stacked by status, with each status's total beside it.
#[component]
pub fn RunsChart(
    /// The days, oldest first.
    days: Vec<DayStats>,
) -> impl IntoView {
    let totals: Vec<(&str, u64)> = SEGMENTS
        .iter()
        .map(|status| (*status, days.iter().map(|day| count(day, status)).sum()))
        .collect();
    let most = days
        .iter()
        .map(|day| SEGMENTS.iter().map(|status| count(day, status)).sum::<u64>())
        .max()
        .unwrap_or(0);
    let bars = stacked_bars(&days)
        .into_iter()
        .map(|segment| {
            let (x, y, w, h) = segment.rect;
            view! {
                <rect class=format!("seg {}", segment.status) x=format!("{x:.1}") y=format!("{y:.1}")
                    width=format!("{w:.1}") height=format!("{h:.1}")
                    data-day=segment.day.clone() data-status=segment.status data-count=segment.count>
                    <title>{format!("{}: {} {}", segment.day, segment.count, segment.status)}</title>
                </rect>
            }
        })
        .collect_view();
    view! {
        <figure class="chart" data-testid="runs-chart">
            <svg viewBox=format!("0 0 {WIDTH} {HEIGHT}") role="img" aria-label="Runs per day by status">
                <Axes days=days.clone() top_label=most.to_string()/>
                {bars}
            </svg>
            <figcaption>
                <ul class="legend">
                    {totals.into_iter().map(|(status, total)| view! {
                        <li class=format!("key {status}") data-testid=format!("total-{status}")>
                            <span class="swatch"></span>{status}" "<strong>{total}</strong>
                        </li>
                    }).collect_view()}
                </ul>
            </figcaption>
        </figure>
    }
}

/// The points of one duration line: `(x, y, day, ms)` for each day that has a value.
pub fn duration_points(
    days: &[DayStats],
    pick: fn(&DayStats) -> Option<u64>,
    most: u64,
) -> Vec<(f64, f64, String, u64)> {
    let slot = (WIDTH - LEFT) / days.len().max(1) as f64;
    let plot = HEIGHT - BOTTOM - TOP;
    days.iter()
        .enumerate()
        .filter_map(|(i, day)| {
            let ms = pick(day)?;
            let x = LEFT + slot * (i as f64 + 0.5);
            let y = HEIGHT - BOTTOM - plot * ms as f64 / most.max(1) as f64;
            Some((x, y, day.day.clone(), ms))
        })
        .collect()
}

/// The median and 95th-percentile run durations per day.
#[component]
pub fn DurationChart(
    /// The days, oldest first.
    days: Vec<DayStats>,
) -> impl IntoView {
    let most = days.iter().filter_map(|day| day.p95_ms).max().unwrap_or(0);
    let lines = [
        ("p50", duration_points(&days, |day| day.p50_ms, most)),
        ("p95", duration_points(&days, |day| day.p95_ms, most)),
    ]
    .into_iter()
    .map(|(name, points)| {
        let path = points
            .iter()
            .map(|(x, y, ..)| format!("{x:.1},{y:.1}"))
            .collect::<Vec<_>>()
            .join(" ");
        let dots = points
            .into_iter()
            .map(|(x, y, day, ms)| {
                view! {
                    <circle class=format!("dot {name}") cx=format!("{x:.1}") cy=format!("{y:.1}") r="3"
                        data-day=day.clone() data-ms=ms>
                        <title>{format!("{day}: {name} {}", millis(ms))}</title>
                    </circle>
                }
            })
            .collect_view();
        view! {
            <polyline class=format!("line {name}") points=path data-testid=format!("line-{name}")/>
            {dots}
        }
    })
    .collect_view();
    view! {
        <figure class="chart" data-testid="duration-chart">
            <svg viewBox=format!("0 0 {WIDTH} {HEIGHT}") role="img" aria-label="Run duration per day: p50 and p95">
                <Axes days=days.clone() top_label=millis(most)/>
                {lines}
            </svg>
            <figcaption>
                <ul class="legend">
                    <li class="key p50"><span class="swatch"></span>"p50 (median)"</li>
                    <li class="key p95"><span class="swatch"></span>"p95"</li>
                </ul>
            </figcaption>
        </figure>
    }
}

/// The axes: a base line, the top value, and the days (some of them, when many).
#[component]
fn Axes(days: Vec<DayStats>, top_label: String) -> impl IntoView {
    let slot = (WIDTH - LEFT) / days.len().max(1) as f64;
    let every = days.len().div_ceil(8).max(1);
    let labels = days
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0)
        .map(|(i, day)| {
            let x = LEFT + slot * (i as f64 + 0.5);
            view! {
                <text class="tick" x=format!("{x:.1}") y=format!("{}", HEIGHT - 6.0) text-anchor="middle">
                    {day.day.get(5..).unwrap_or_default().to_owned()}
                </text>
            }
        })
        .collect_view();
    view! {
        <line class="axis" x1=LEFT y1=HEIGHT - BOTTOM x2=WIDTH y2=HEIGHT - BOTTOM/>
        <line class="axis" x1=LEFT y1=TOP x2=LEFT y2=HEIGHT - BOTTOM/>
        <text class="tick" x=LEFT - 4.0 y=TOP + 8.0 text-anchor="end">{top_label}</text>
        <text class="tick" x=LEFT - 4.0 y=HEIGHT - BOTTOM text-anchor="end">"0"</text>
        {labels}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(day: &str, completed: u64, failed: u64, p50: Option<u64>) -> DayStats {
        DayStats {
            day: day.into(),
            start: 0,
            completed,
            failed,
            cancelled: 0,
            other: 0,
            p50_ms: p50,
            p95_ms: p50.map(|ms| ms * 2),
        }
    }

    #[test]
    fn the_busiest_day_fills_the_plot_and_segments_stack_bottom_up() {
        let days = [day("2026-11-29", 2, 0, None), day("2026-11-30", 10, 2, Some(5))];
        let segments = stacked_bars(&days);
        let summary: Vec<(&str, &str, u64)> = segments.iter().map(|s| (s.day.as_str(), s.status, s.count)).collect();
        assert_eq!(
            summary,
            [
                ("2026-11-29", "completed", 2),
                ("2026-11-30", "completed", 10),
                ("2026-11-30", "failed", 2)
            ]
        );
        let plot = HEIGHT - BOTTOM - TOP;
        let (_, failed_y, _, failed_h) = segments[2].rect;
        let (_, completed_y, _, completed_h) = segments[1].rect;
        assert!((completed_h + failed_h - plot).abs() < 1e-9);
        assert!((failed_y - TOP).abs() < 1e-9, "the busiest bar reaches the top");
        assert!((completed_y - (failed_y + failed_h)).abs() < 1e-9);
    }

    #[test]
    fn duration_lines_skip_days_without_ended_runs() {
        let days = [day("2026-11-29", 1, 0, None), day("2026-11-30", 1, 0, Some(40))];
        let points = duration_points(&days, |d| d.p95_ms, 80);
        assert_eq!(points.len(), 1);
        assert_eq!((points[0].2.as_str(), points[0].3), ("2026-11-30", 80));
        assert!((points[0].1 - TOP).abs() < 1e-9);
    }
}
