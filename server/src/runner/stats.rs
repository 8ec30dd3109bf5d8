//! How a graph's runs have gone, for its page: runs per day by status with the day's
//! median and 95th-percentile durations, and each node's mean step time and failure
//! rate. Read from the runs and their stored events; the windows are bounded
//! ([`GraphStats::MAX_RUNS`], [`GraphStats::MAX_NODE_RUNS`]) so a busy graph's page
//! costs the same as a quiet one's.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use weft_app::wire::{DayStats, GraphStats, NodeStats, RunStatus};

use super::{replay::Replay, Runner, RunnerError};
use crate::{
    auth::Access,
    ids::{GraphId, RunId},
    store::{Millis, RunFilter, StoredRun},
};

const DAY_MS: i64 = 86_400_000;
/// Runs read per page of the listing.
const PAGE: u32 = 500;

/// What the node figures need of an event.
#[derive(Deserialize)]
struct Timing {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    duration_us: Option<u64>,
    /// Set on the step a node failed for good (its `node_failed` counts the failure).
    #[serde(default)]
    error: Option<String>,
}

impl Runner {
    /// How the runs `access` sees of graph `id` went over the last `days` days, up to `now`.
    pub async fn graph_stats(
        &self,
        id: &GraphId,
        days: u32,
        now: Millis,
        access: &Access,
    ) -> Result<GraphStats, RunnerError> {
        self.visible_graph(id, access).await?;
        let since = (now - i64::from(days) * DAY_MS).div_euclid(DAY_MS) * DAY_MS + DAY_MS;
        let mut runs: Vec<StoredRun> = Vec::new();
        let mut before: Option<RunId> = None;
        // The store keeps to the window; pages are read up to MAX_RUNS.
        loop {
            let filter = RunFilter {
                graph_id: Some(id.clone()),
                status: None,
                created_by: access.creator_filter(),
                before: before.take(),
                created_since: Some(since),
                created_until: None,
                limit: PAGE,
            };
            let (page, next) = self.list_runs(&filter).await?;
            runs.extend(page);
            if runs.len() as u64 >= GraphStats::MAX_RUNS {
                runs.truncate(GraphStats::MAX_RUNS as usize);
                break;
            }
            match next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        let node_runs = runs.len().min(GraphStats::MAX_NODE_RUNS as usize);
        let nodes = self.node_stats(&runs[..node_runs]).await?;
        Ok(GraphStats {
            graph_id: id.to_string(),
            since,
            runs: runs.len() as u64,
            days: day_stats(&runs, now),
            nodes,
            node_runs: node_runs as u64,
        })
    }

    async fn node_stats(&self, runs: &[StoredRun]) -> Result<Vec<NodeStats>, RunnerError> {
        // Steps, their total time, and failed attempts, by node.
        let mut by_node: HashMap<String, (u64, u64, u64)> = HashMap::new();
        for run in runs {
            let mut pages = Replay::after(self.store.as_ref(), run, 0).await?;
            while let Some(page) = pages.next().await? {
                for event in page {
                    let Ok(timing) = serde_json::from_str::<Timing>(&event.event) else {
                        continue;
                    };
                    let Some(node) = timing.node else { continue };
                    let entry = by_node.entry(node).or_default();
                    match timing.kind.as_str() {
                        "step" if timing.error.is_none() => {
                            entry.0 += 1;
                            entry.1 += timing.duration_us.unwrap_or(0);
                        }
                        "node_failed" => entry.2 += 1,
                        _ => {}
                    }
                }
            }
        }
        let mut nodes: Vec<NodeStats> = by_node
            .into_iter()
            .map(|(node, (steps, total_us, failures))| NodeStats {
                node,
                steps,
                failures,
                mean_us: total_us.checked_div(steps).unwrap_or(0),
                failure_rate: match steps + failures {
                    0 => 0.0,
                    attempts => failures as f64 / attempts as f64,
                },
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(nodes)
    }
}

/// The runs by UTC day of creation, from the first run's day to `now`'s.
fn day_stats(runs: &[StoredRun], now: Millis) -> Vec<DayStats> {
    let Some(first) = runs.iter().map(|run| run.created_at).min() else {
        return Vec::new();
    };
    let mut days: BTreeMap<i64, (DayStats, Vec<u64>)> = BTreeMap::new();
    let mut day = first.div_euclid(DAY_MS);
    while day <= now.div_euclid(DAY_MS) {
        let stats = DayStats {
            day: weft_app::format::utc(day * DAY_MS)[..10].to_owned(),
            start: day * DAY_MS,
            completed: 0,
            failed: 0,
            cancelled: 0,
            other: 0,
            p50_ms: None,
            p95_ms: None,
        };
        days.insert(day, (stats, Vec::new()));
        day += 1;
    }
    for run in runs {
        let Some((stats, durations)) = days.get_mut(&run.created_at.div_euclid(DAY_MS)) else {
            continue;
        };
        match run.status {
            RunStatus::Completed => stats.completed += 1,
            RunStatus::Failed => stats.failed += 1,
            RunStatus::Cancelled => stats.cancelled += 1,
            _ => stats.other += 1,
        }
        if let Some(finished) = run.finished_at {
            durations.push(u64::try_from(finished - run.created_at).unwrap_or(0));
        }
    }
    days.into_values()
        .map(|(mut stats, mut durations)| {
            durations.sort_unstable();
            stats.p50_ms = percentile(&durations, 50);
            stats.p95_ms = percentile(&durations, 95);
            stats
        })
        .collect()
}

/// The nearest-rank percentile of sorted `values`.
fn percentile(values: &[u64], p: usize) -> Option<u64> {
    let rank = (p * values.len()).div_ceil(100);
    values.get(rank.max(1) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile(&values, 50), Some(10));
        assert_eq!(percentile(&values, 95), Some(19));
        assert_eq!(percentile(&[7], 95), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }
}
