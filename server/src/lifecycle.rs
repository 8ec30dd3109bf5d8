//! A run's life: its statuses and the only moves between them, in one place.
//!
//! ```text
//!   queued ──► running ──► completed | failed | cancelled
//!     │  ▲        │
//!     │  ├────────┘  handed back: released at shutdown, or claimed from an owner
//!     │  │           whose lease ran out
//!     │  │        ▼
//!     │  └─── waiting  at an `interrupt` node, with no owner and no lease, until its
//!     │                question is answered (or times out), or it is claimed to cancel
//!     └──► cancelled | failed   (cancelled while queued, or it could not resume)
//! ```
//!
//! The store applies every move as one conditional statement: the status it expects and
//! the owner it expects. Two processes sharing a database can never both move one run,
//! and a move from a status the run is no longer in is refused, not applied.

use weft_app::wire::RunStatus;

/// A legal move of a run's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The status the run must be in.
    pub from: RunStatus,
    /// The status it moves to.
    pub to: RunStatus,
}

/// A move the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a run cannot go from {} to {}", .from.as_str(), .to.as_str())]
pub struct IllegalTransition {
    /// Where it was.
    pub from: RunStatus,
    /// Where it was asked to go.
    pub to: RunStatus,
}

impl Transition {
    /// The move from `from` to `to`, if the lifecycle allows it.
    pub fn new(from: RunStatus, to: RunStatus) -> Result<Self, IllegalTransition> {
        use RunStatus::{Cancelled, Completed, Failed, Queued, Running, Waiting};
        let legal = matches!(
            (from, to),
            (Queued, Running | Cancelled | Failed)
                | (Running, Queued | Completed | Failed | Cancelled | Waiting)
                | (Waiting, Queued)
        );
        if legal {
            Ok(Self { from, to })
        } else {
            Err(IllegalTransition { from, to })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [RunStatus; 6] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Waiting,
    ];

    #[test]
    fn only_the_documented_moves_are_legal() {
        let legal: Vec<(&str, &str)> = ALL
            .iter()
            .flat_map(|&from| ALL.iter().map(move |&to| (from, to)))
            .filter(|&(from, to)| Transition::new(from, to).is_ok())
            .map(|(from, to)| (from.as_str(), to.as_str()))
            .collect();
        assert_eq!(
            legal,
            [
                ("queued", "running"),
                ("queued", "failed"),
                ("queued", "cancelled"),
                ("running", "queued"),
                ("running", "completed"),
                ("running", "failed"),
                ("running", "cancelled"),
                ("running", "waiting"),
                ("waiting", "queued"),
            ]
        );
    }

    #[test]
    fn an_ended_run_never_moves_again() {
        for from in [RunStatus::Completed, RunStatus::Failed, RunStatus::Cancelled] {
            for to in ALL {
                assert_eq!(Transition::new(from, to), Err(IllegalTransition { from, to }));
            }
        }
        assert_eq!(
            Transition::new(RunStatus::Completed, RunStatus::Running)
                .unwrap_err()
                .to_string(),
            "a run cannot go from completed to running"
        );
    }
}
