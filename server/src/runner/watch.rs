//! Waiting on a run that is not in flight here: queued for any instance to claim, or
//! executing on another one.
//!
//! A [`RunWatch`] wakes its owner when the run may have moved on, and the owner reads the
//! store to see. Three things wake it: the store's notices (Postgres `NOTIFY`: another
//! instance committed the run's events), the run leaving this instance (claimed here,
//! then ended or handed back), and, since a notice can be lost, a poll. Like a live
//! subscription, a watch is made *before* its owner reads the store, so nothing that
//! happens after the read goes unnoticed.

use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};

use crate::{ids::RunId, store::Notice};

/// How often the store is asked when it tells of nothing (SQLite).
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How often the store is asked when it tells of changes: only a lost notice needs it.
const POLL_WITH_NOTICES: Duration = Duration::from_secs(2);

/// What wakes a [`RunWatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Any event of the run committed.
    OnEvents,
    /// Only its end.
    OnEnd,
}

/// Wakes whoever waits on one run when it may have moved on.
pub struct RunWatch {
    run_id: RunId,
    wake: Wake,
    departures: broadcast::Receiver<RunId>,
    notices: Option<broadcast::Receiver<Notice>>,
}

impl RunWatch {
    pub(super) fn new(
        run_id: RunId,
        wake: Wake,
        departures: broadcast::Receiver<RunId>,
        notices: Option<broadcast::Receiver<Notice>>,
    ) -> Self {
        Self {
            run_id,
            wake,
            departures,
            notices,
        }
    }

    /// Resolves when the run may have moved on since the last call (or since the watch
    /// was made): the caller reads the store to see.
    pub async fn changed(&mut self) {
        let poll = if self.notices.is_some() {
            POLL_WITH_NOTICES
        } else {
            POLL_EVERY
        };
        let departed = until_departed(&mut self.departures, &self.run_id);
        let told = until_told(&mut self.notices, &self.run_id, self.wake);
        tokio::select! {
            () = departed => {}
            () = told => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// Resolves when `run_id` leaves this instance (or when departures were missed).
async fn until_departed(departures: &mut broadcast::Receiver<RunId>, run_id: &RunId) {
    loop {
        match departures.recv().await {
            Ok(departed) if departed == *run_id => return,
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => return,
            // The hub is gone: the poll is all there is.
            Err(RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// Resolves when the store tells of `run_id`'s events (or of its end only), or when
/// notices were missed. Never resolves without notices: the poll does the work then.
async fn until_told(notices: &mut Option<broadcast::Receiver<Notice>>, run_id: &RunId, wake: Wake) {
    let Some(receiver) = notices else {
        return std::future::pending().await;
    };
    loop {
        match receiver.recv().await {
            Ok(Notice::Events {
                run_id: told, ended, ..
            }) if told == *run_id && (ended || wake == Wake::OnEvents) => return,
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => return,
            Err(RecvError::Closed) => {
                *notices = None;
                return;
            }
        }
    }
}
