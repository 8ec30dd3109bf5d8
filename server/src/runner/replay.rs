//! Reading a run's stored events back as clients get them.
//!
//! A `step` event is stored with the keys its node wrote (`update`), and with the whole
//! state after it only now and then (a snapshot): storage grows with the updates, not
//! with the state. Reading rebuilds each step's state: it starts from the latest snapshot
//! at or before where the reader starts (or the run's initial state) and folds the
//! updates after it, so a reader that resumes mid-run folds at most about one state's
//! worth of updates before its first event.

use serde_json::{Map, Value};
use weft_app::wire::EventKind;

use crate::{
    ids::RunId,
    store::{Store, StoreError, StoredEvent, StoredRun},
};

/// Events read from the store per query when reading a run's events.
const EVENT_PAGE: u32 = 256;

/// A run's stored events after a given one, read a page at a time.
pub struct EventPages<'a> {
    store: &'a dyn Store,
    id: &'a RunId,
    last: u64,
    done: bool,
}

impl<'a> EventPages<'a> {
    /// The events of run `id` after the one numbered `after` (0: all of them).
    pub fn after(store: &'a dyn Store, id: &'a RunId, after: u64) -> Self {
        Self {
            store,
            id,
            last: after,
            done: false,
        }
    }

    /// The next page of events, in order, or `None` once all have been read.
    pub async fn next(&mut self) -> Result<Option<Vec<StoredEvent>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let page = self.store.events_after(self.id, self.last, EVENT_PAGE).await?;
        self.done = page.len() < EVENT_PAGE as usize;
        match page.last() {
            Some(event) => self.last = event.seq,
            None => return Ok(None),
        }
        Ok(Some(page))
    }

    /// The number of the last event read (or the one the pages started after).
    pub fn last(&self) -> u64 {
        self.last
    }
}

/// A run's events after a given one, a page at a time, each step with its state.
pub struct Replay<'a> {
    pages: EventPages<'a>,
    /// Only events after this one are answered; those before are only folded.
    after: u64,
    /// The state after the last event read.
    state: Map<String, Value>,
}

fn corrupt(err: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("stored event: {err}"))
}

impl<'a> Replay<'a> {
    /// The events of `run` after the one numbered `after` (0: all of them).
    pub async fn after(store: &'a dyn Store, run: &'a StoredRun, after: u64) -> Result<Self, StoreError> {
        let (state, from) = match store.latest_snapshot(&run.id, after).await? {
            Some(snapshot) => {
                let event: Value = serde_json::from_str(&snapshot.event).map_err(corrupt)?;
                match event.get("state") {
                    Some(Value::Object(state)) => (state.clone(), snapshot.seq),
                    _ => return Err(StoreError::Corrupt(format!("snapshot {} holds no state", snapshot.seq))),
                }
            }
            None => (serde_json::from_str(&run.initial_state).map_err(corrupt)?, 0),
        };
        Ok(Self {
            pages: EventPages::after(store, &run.id, from),
            after,
            state,
        })
    }

    /// The state of `run` after its event numbered `seq`.
    pub async fn state_after(store: &dyn Store, run: &StoredRun, seq: u64) -> Result<Map<String, Value>, StoreError> {
        let mut replay = Replay::after(store, run, seq).await?;
        while replay.fold_page(Some(seq)).await?.is_some() {}
        Ok(replay.state)
    }

    /// The next page of events, in order, as clients get them; `None` once all are read.
    pub async fn next(&mut self) -> Result<Option<Vec<StoredEvent>>, StoreError> {
        loop {
            match self.fold_page(None).await? {
                None => return Ok(None),
                Some(page) if page.is_empty() => {}
                Some(page) => return Ok(Some(page)),
            }
        }
    }

    /// Reads a page (up to event `until`, when given), folding every step into the state;
    /// answers the events after `self.after`, with their states.
    async fn fold_page(&mut self, until: Option<u64>) -> Result<Option<Vec<StoredEvent>>, StoreError> {
        if until.is_some_and(|until| self.pages.last() >= until) {
            return Ok(None);
        }
        let Some(page) = self.pages.next().await? else {
            return Ok(None);
        };
        let mut answer = Vec::new();
        for mut event in page {
            if until.is_some_and(|until| event.seq > until) {
                break;
            }
            let wanted = event.seq > self.after;
            if event.kind == EventKind::Step {
                if let Some(text) = self.fold(&event.event, wanted)? {
                    event.event = text;
                }
            }
            if wanted {
                answer.push(event);
            }
        }
        Ok(Some(answer))
    }

    /// Folds a stored step into the state; answers its text with the state filled in,
    /// when `wanted` and it was stored without it.
    fn fold(&mut self, text: &str, wanted: bool) -> Result<Option<String>, StoreError> {
        let mut event: Value = serde_json::from_str(text).map_err(corrupt)?;
        if let Some(Value::Object(state)) = event.get_mut("state") {
            self.state = std::mem::take(state);
            return Ok(None);
        }
        if let Some(Value::Object(update)) = event.get("update") {
            for (key, value) in update {
                self.state.insert(key.clone(), value.clone());
            }
        }
        if !wanted {
            return Ok(None);
        }
        event["state"] = Value::Object(self.state.clone());
        serde_json::to_string(&event).map(Some).map_err(corrupt)
    }

    /// The number of the last event read.
    pub fn last(&self) -> u64 {
        self.pages.last()
    }
}
