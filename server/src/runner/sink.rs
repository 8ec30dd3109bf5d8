//! Recording a run: each event serialized once, committed to the store with its effect
//! on the run (a step's checkpoint, the end), and only then published live. A step is
//! held back and written with the event that follows it, in one commit: the next node's
//! start (so it is stored before that node runs), or the run's ending (so no crash can
//! record the one without the other). A run that cannot go on is ended `failed`, durably.

use std::sync::Arc;

use serde::{ser::SerializeMap, Serialize};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use weft_app::wire::{
    EndEvent, EventKind, Interrupt, InterruptedEvent, NodeFailedEvent, NodeStartedEvent, RunEvent, RunStatus, State,
    StepEvent, TokenEvent,
};

use super::views::current_state;
use super::{
    hub::{LiveEvent, Publisher},
    Finished,
};
use crate::{
    engine::{Control, Interruption, NodeFailure, NodeStart, RunEnd, SinkError, StepSink, StepView, Waiting},
    ids::{OwnerId, RunId},
    lifecycle::Transition,
    store::{now_millis, EventRecord, NewInterrupt, RunEffect, Store, StoreError},
};

/// Serializes the state keys a node wrote, from the state after it, without copying them.
struct Pick<'a> {
    state: &'a State,
    keys: &'a [String],
}

impl Serialize for Pick<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.keys.len()))?;
        for key in self.keys {
            if let Some(value) = self.state.get(key) {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

fn raw(value: &impl Serialize) -> Result<Box<RawValue>, SinkError> {
    serde_json::value::to_raw_value(value).map_err(|err| SinkError(err.to_string()))
}

/// `{}`, for a run that ends without a state to show.
fn empty_state() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_default()
}

/// Records and publishes one run's events.
pub(super) struct RunSink {
    pub(super) run_id: RunId,
    /// This instance, which must still own the run for any event to be written.
    pub(super) owner: OwnerId,
    /// The run's status as stored, the start of its next move.
    pub(super) status: RunStatus,
    pub(super) store: Arc<dyn Store>,
    pub(super) publisher: Publisher,
    /// The number of the last event recorded.
    pub(super) seq: u64,
    /// The step whose "[RUNNING]" line was logged before a restart, not to be repeated.
    pub(super) announced: Option<u64>,
    /// Set when the first node's start was stored with the run itself (see
    /// [`RunSink::open`]): the engine's report of it is not written again.
    pub(super) opened: bool,
    /// Events numbered but not yet written: the run's start, or its last step, until the
    /// next event (a node's start, or the run's end) joins them.
    pub(super) held: Vec<Held>,
    /// Raised at shutdown: the run stops after the step it is in.
    pub(super) shutdown: CancellationToken,
    /// The size of the last state stored whole (a snapshot, or the initial state); 0 when
    /// unknown (a resumed run), which makes a snapshot of the first state after
    /// [`SNAPSHOT_GAP`] bytes of updates.
    pub(super) snapshot_bytes: usize,
    /// The bytes of updates stored since then.
    pub(super) unsnapshotted: usize,
    /// The run's span (`run_id`, `graph_id`), parent of its nodes' spans.
    pub(super) span: tracing::Span,
    /// The run's log as written so far, while it stays under [`LOG_IN_MEMORY`]: what
    /// `wait: true` answers with, without reading it back. `None` past that size (or after
    /// a restart), and then the log is read from the store.
    pub(super) log: Option<Vec<String>>,
    /// The bytes in `log`.
    pub(super) log_bytes: usize,
}

/// The most log text a run keeps in memory.
pub(super) const LOG_IN_MEMORY: usize = 64 * 1024;

/// The updates stored at least between two snapshots of a run's state: folding this much
/// to rebuild a state costs microseconds, and a short run over a small state (a code
/// review) then stores no snapshot but its end.
const SNAPSHOT_GAP: usize = 16 * 1024;

#[cfg(feature = "test-hooks")]
mod test_hooks {
    //! `WEFT_TEST_ABORT_AFTER_STEP=<node>` aborts the process right after the first commit
    //! that records a step of that node: a crash at the worst moment, for process tests.

    use std::sync::OnceLock;

    use weft_app::wire::EventKind;

    use crate::store::EventRecord;

    /// Whether the commit of `records` is the one to crash after.
    pub(super) fn crashes_after(records: &[EventRecord]) -> bool {
        static NODE: OnceLock<Option<String>> = OnceLock::new();
        let node = NODE.get_or_init(|| std::env::var("WEFT_TEST_ABORT_AFTER_STEP").ok());
        node.as_deref().is_some_and(|node| {
            records
                .iter()
                .any(|record| record.kind == EventKind::Step && record.node.as_deref() == Some(node))
        })
    }
}

/// The first pause before writing a run's ending again after a store error.
const STORE_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(50);
/// The longest pause between two tries.
const STORE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// An event serialized for the store and for live subscribers.
struct Texts {
    /// As stored.
    stored: String,
    /// As published, when that differs (a step stored without its state).
    live: Option<String>,
    /// Whether it is a step stored with its whole state.
    snapshot: bool,
}

/// How writing a run's ending went.
enum Ending {
    Written,
    /// The run is another instance's now.
    NotOurs,
    /// The run was asked to stop: only a `cancelled` ending can be written.
    CancelAsked,
}

/// An event held back to be written with the next one.
pub(super) struct Held {
    record: EventRecord,
    live: LiveEvent,
    /// Its log lines.
    lines: Vec<String>,
}

impl RunSink {
    /// Records `event` (numbered `self.seq + 1`) with its log lines and effect, then
    /// publishes it: nothing is streamed that the store could lose. Events held back
    /// (see [`RunSink::hold`]) are written in the same transaction, before it.
    async fn emit<S: Serialize>(
        &mut self,
        event: &RunEvent<S>,
        lines: &[String],
        effect: RunEffect,
    ) -> Result<(), StoreError> {
        self.hold(event, lines, effect)?;
        self.flush().await
    }

    /// Writes every held event in one transaction, then publishes them.
    async fn flush(&mut self) -> Result<(), StoreError> {
        let (records, written): (Vec<EventRecord>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .map(|held| (held.record, (held.live, held.lines)))
            .unzip();
        self.write(records).await?;
        self.publish(written);
        Ok(())
    }

    /// Publishes events once written, and adds their lines to the log.
    fn publish(&mut self, written: Vec<(LiveEvent, Vec<String>)>) {
        for (live, lines) in written {
            self.publisher.publish(live);
            self.remember(lines);
        }
    }

    /// Adds written lines to the log kept in memory, or stops keeping it past its bound.
    fn remember(&mut self, lines: Vec<String>) {
        let Some(log) = &mut self.log else { return };
        self.log_bytes += lines.iter().map(String::len).sum::<usize>();
        if self.log_bytes > LOG_IN_MEMORY {
            self.log = None;
        } else {
            log.extend(lines);
        }
    }

    /// Writes `records` in one transaction (one event, or several all or none).
    async fn write(&self, mut records: Vec<EventRecord>) -> Result<(), StoreError> {
        #[cfg(feature = "test-hooks")]
        let crash = test_hooks::crashes_after(&records);
        match records.len() {
            1 => self.store.append_event(records.swap_remove(0)).await?,
            _ => self.store.append_events(records).await?,
        }
        #[cfg(feature = "test-hooks")]
        if crash {
            std::process::abort();
        }
        Ok(())
    }

    /// Numbers `event` and keeps it, unwritten and unpublished, to be written with the
    /// next emitted event in one transaction.
    pub(super) fn hold<S: Serialize>(
        &mut self,
        event: &RunEvent<S>,
        lines: &[String],
        effect: RunEffect,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(event).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        let texts = Texts {
            stored: text,
            live: None,
            snapshot: false,
        };
        self.hold_texts((event.kind(), event.node()), lines, effect, texts)
    }

    /// [`RunSink::hold`] for an event already serialized.
    fn hold_texts(
        &mut self,
        (kind, node): (EventKind, Option<&str>),
        lines: &[String],
        effect: RunEffect,
        texts: Texts,
    ) -> Result<(), StoreError> {
        let seq = self.seq + 1;
        let end = matches!(effect, RunEffect::Ended { .. });
        let log = serde_json::to_string(lines).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        // Subscribers get the whole event; a step stored without its state is published
        // without it only when nobody was listening (see `LiveEvent::full`).
        let (text, full) = match texts.live {
            Some(live) => (live, true),
            None => (texts.stored.clone(), kind != EventKind::Step || texts.snapshot),
        };
        self.held.push(Held {
            record: EventRecord {
                run_id: self.run_id.clone(),
                owner: self.owner.clone(),
                seq,
                kind,
                node: node.map(str::to_owned),
                log,
                event: texts.stored,
                snapshot: texts.snapshot,
                effect,
            },
            live: LiveEvent {
                seq,
                end,
                full,
                text,
                passing: false,
            },
            lines: lines.to_vec(),
        });
        self.seq = seq;
        Ok(())
    }

    /// For a run admitted straight into a free slot: its start and its first node's start,
    /// numbered after event 1 (`run_queued`), for the store to write with the run in one
    /// commit. The engine's report of that node's start is then skipped.
    pub(super) fn open(&mut self, started: &RunEvent, first: NodeStart<'_>) -> Result<Vec<EventRecord>, StoreError> {
        self.hold(started, &[], RunEffect::Started)?;
        let (event, lines) = self.node_started_event(first);
        self.hold(&event, &lines, RunEffect::None)?;
        self.status = RunStatus::Running;
        self.opened = true;
        // Nobody can be listening yet: a subscriber reads these from the store.
        Ok(std::mem::take(&mut self.held)
            .into_iter()
            .map(|held| {
                self.remember(held.lines);
                held.record
            })
            .collect())
    }

    /// A node's start as an event, with its log lines.
    fn node_started_event(&self, start: NodeStart<'_>) -> (RunEvent, Vec<String>) {
        let event: RunEvent = RunEvent::NodeStarted(NodeStartedEvent {
            run_id: self.run_id.to_string(),
            seq: self.seq + 1,
            step: start.step,
            node: start.node.to_owned(),
            attempt: start.attempt,
            branch: start.branch.map(str::to_owned),
        });
        // The prototype's one "[RUNNING]" line per executed node: on its first attempt.
        let lines = if start.attempt == 1 && self.announced != Some(start.step) {
            vec![format!("[RUNNING] {}", start.node)]
        } else {
            Vec::new()
        };
        (event, lines)
    }

    pub(super) async fn finish(mut self, end: RunEnd) -> Finished {
        let RunEnd {
            mut status,
            state,
            steps,
            error,
        } = end;
        if status == RunStatus::Waiting {
            // Stored with its question (see `interrupted`): the run is no instance's now.
            return Finished {
                status,
                state: raw(&state).unwrap_or_else(|_| empty_state()),
                error: None,
                log: self.log,
            };
        }
        // No cancel is accepted past this point, and every one accepted before it (its
        // request answered 202) ends the run `cancelled`, whatever its last step did.
        if self.publisher.close() {
            status = RunStatus::Cancelled;
        }
        let mut error = error.map(|err| err.to_string());
        // Serialized once: for the `end` event, and for whoever waits on the run.
        let state = raw(&state).unwrap_or_else(|_| empty_state());
        loop {
            let lines: Vec<String> = error.iter().map(|error| format!("[FAILED] {error}")).collect();
            let event: RunEvent<&RawValue> = RunEvent::End(EndEvent {
                run_id: self.run_id.to_string(),
                seq: self.seq + 1,
                steps,
                status,
                state: &state,
                error: error.clone(),
            });
            let transition = match Transition::new(self.status, status) {
                Ok(transition) => transition,
                Err(err) => {
                    tracing::error!(run_id = %self.run_id, error = %err, "refused to end a run");
                    break;
                }
            };
            let effect = RunEffect::Ended {
                transition,
                steps,
                error: error.clone(),
            };
            if let Err(err) = self.hold(&event, &lines, effect) {
                tracing::error!(run_id = %self.run_id, error = %err, "could not record the end of a run");
                break;
            }
            match self.write_held_until_stored().await {
                Ending::Written | Ending::NotOurs => break,
                Ending::CancelAsked => {
                    // Asked to stop through another instance before this ending landed: the
                    // 202 it answered holds, and the run ends `cancelled`, with its last step.
                    self.held.pop();
                    self.seq -= 1;
                    status = RunStatus::Cancelled;
                    error = None;
                }
            }
        }
        Finished {
            status,
            state,
            error,
            log: self.log,
        }
    }

    /// Writes the held events (a run's ending, with its last step), retrying with backoff
    /// while the store fails: an ending is never dropped for a passing store error. Gives
    /// up when the run is no longer this instance's (another owns it now), and leaves the
    /// events held when the run was asked to stop and the ending is not `cancelled`.
    async fn write_held_until_stored(&mut self) -> Ending {
        let mut delay = STORE_RETRY_FIRST;
        loop {
            let records: Vec<EventRecord> = self.held.iter().map(|held| held.record.clone()).collect();
            match self.write(records).await {
                Ok(()) => break,
                Err(StoreError::CancelRequested(_)) => return Ending::CancelAsked,
                Err(err @ StoreError::NotOwned { .. }) => {
                    tracing::warn!(run_id = %self.run_id, error = %err, "the run is no longer ours: its ending is not written");
                    self.held.clear();
                    return Ending::NotOurs;
                }
                Err(err) => {
                    tracing::error!(run_id = %self.run_id, error = %err, retry_in_ms = delay.as_millis() as u64,
                        "could not record the end of a run; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(STORE_RETRY_MAX);
                }
            }
        }
        let written = std::mem::take(&mut self.held)
            .into_iter()
            .map(|held| (held.live, held.lines))
            .collect();
        self.publish(written);
        Ending::Written
    }

    /// The run stops here for the server's shutdown, its last step committed: it is
    /// handed back (`queued`) and the next start resumes it.
    pub(super) fn suspend(self) -> Finished {
        tracing::info!(run_id = %self.run_id, "run suspended for shutdown");
        Finished {
            status: RunStatus::Queued,
            state: empty_state(),
            error: None,
            log: None,
        }
    }

    /// The run cannot go on here: it is ended `failed` with `why`, durably.
    pub(super) async fn abandon(self, why: &str) -> Finished {
        // Nothing held is written: the store's last checkpoint is what the run reached.
        self.publisher.close();
        let status = fail_durably(self.store.as_ref(), &self.owner, &self.run_id, why).await;
        Finished {
            status,
            state: empty_state(),
            error: Some(why.to_owned()),
            log: None,
        }
    }
}

/// The `token` message for a piece of `node`'s answer at `step` (or for the answer so far).
pub fn token_message(run_id: &str, step: u64, node: &str, text: &str) -> Option<String> {
    let event: RunEvent = RunEvent::Token(TokenEvent {
        run_id: run_id.to_owned(),
        step,
        node: node.to_owned(),
        text: text.to_owned(),
    });
    serde_json::to_string(&event).ok()
}

fn sink_error(err: StoreError) -> SinkError {
    SinkError(err.to_string())
}

impl StepSink for RunSink {
    async fn node_started(&mut self, start: NodeStart<'_>) -> Result<(), SinkError> {
        if std::mem::take(&mut self.opened) {
            // Stored with the run.
            return Ok(());
        }
        let (event, lines) = self.node_started_event(start);
        self.emit(&event, &lines, RunEffect::None).await.map_err(sink_error)
    }

    async fn node_failed(&mut self, failure: NodeFailure<'_>) -> Result<(), SinkError> {
        let retry_in_ms = failure
            .retry_in
            .map(|delay| u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        let event: RunEvent = RunEvent::NodeFailed(NodeFailedEvent {
            run_id: self.run_id.to_string(),
            seq: self.seq + 1,
            step: failure.step,
            node: failure.node.to_owned(),
            attempt: failure.attempt,
            error: failure.error.to_string(),
            retry_in_ms,
            branch: failure.branch.map(str::to_owned),
        });
        // The last failure is told by the run's end; retried ones get a line of their own.
        let lines: Vec<String> = retry_in_ms
            .map(|ms| {
                format!(
                    "{}: attempt {} failed: {}; retrying in {ms} ms",
                    failure.node, failure.attempt, failure.error
                )
            })
            .into_iter()
            .collect();
        self.emit(&event, &lines, RunEffect::None).await.map_err(sink_error)
    }

    async fn interrupted(&mut self, waiting: Waiting<'_>) -> Result<Control, SinkError> {
        // From here no cancel is taken through this instance: one taken before ends the
        // run `cancelled` instead of waiting, and one asked later finds it waiting in the
        // store, and claims it to end it.
        if self.publisher.close() {
            return Ok(Control::Cancel);
        }
        let mut interrupts = Vec::with_capacity(waiting.questions.len());
        let held_before = self.held.len();
        for (i, &Interruption { step, node, pause }) in waiting.questions.iter().enumerate() {
            let deadline = pause
                .timeout
                .map(|timeout| now_millis().saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX)));
            let question = Interrupt {
                interrupt_id: RunId::generate().to_string(),
                node: node.to_owned(),
                step,
                prompt: pause.prompt.clone(),
                input_schema: pause.input_schema.clone(),
                context: pause.context.clone(),
                deadline,
            };
            let request = serde_json::to_string(&question).map_err(|err| SinkError(err.to_string()))?;
            interrupts.push(NewInterrupt {
                id: question.interrupt_id.clone(),
                node: node.to_owned(),
                step,
                request,
                deadline,
            });
            // The last question's event moves the run to `waiting`, with every question.
            let effect = if i + 1 == waiting.questions.len() {
                RunEffect::Waiting {
                    step_count: waiting.started,
                    next_node: node.to_owned(),
                    frontier: waiting.frontier.map(str::to_owned),
                    interrupts: std::mem::take(&mut interrupts),
                }
            } else {
                RunEffect::None
            };
            let lines = vec![format!("[WAITING] {node}: {}", pause.prompt)];
            let event: RunEvent = RunEvent::Interrupted(InterruptedEvent {
                run_id: self.run_id.to_string(),
                seq: self.seq + 1,
                interrupt: question,
            });
            self.hold(&event, &lines, effect).map_err(sink_error)?;
        }
        // Written with the step before them, in one commit, however long the store fails:
        // a run never waits without its questions, nor asks without waiting.
        match self.write_held_until_stored().await {
            Ending::Written => Ok(Control::Continue),
            Ending::NotOurs => Err(SinkError("the run is another instance's now".into())),
            Ending::CancelAsked => {
                // Asked to stop through another instance: it ends `cancelled` instead.
                let asked = self.held.len() - held_before;
                self.held.truncate(held_before);
                self.seq -= asked as u64;
                Ok(Control::Cancel)
            }
        }
    }

    async fn commit(&mut self) -> Result<(), SinkError> {
        if self.held.is_empty() {
            return Ok(());
        }
        self.flush().await.map_err(sink_error)
    }

    fn cancel_token(&self) -> Option<CancellationToken> {
        Some(self.publisher.cancel_token())
    }

    fn progress(&self, step: u64, node: &str) -> Option<crate::engine::tool::Progress> {
        let passing = self.publisher.passing();
        let (run_id, node) = (self.run_id.to_string(), node.to_owned());
        Some(Arc::new(move |text: &str| {
            // Serialized only for someone listening.
            passing.token(step, &node, text, || token_message(&run_id, step, &node, text));
        }))
    }

    fn span(&self) -> tracing::Span {
        self.span.clone()
    }

    async fn step(&mut self, step: StepView<'_>) -> Result<Control, SinkError> {
        // The step holds the whole answer: a subscriber from now on reads it there.
        self.publisher.answered(step.step, step.node);
        crate::meters::node_finished(step.tool, step.duration);
        let lines: Vec<String> = step.notes.iter().map(|note| format!("{}: {note}", step.node)).collect();
        let update = raw(&Pick {
            state: step.state,
            keys: step.changed,
        })?;
        // The store keeps the update; the whole state only once the updates since the last
        // snapshot add up to that snapshot's size (and to [`SNAPSHOT_GAP`]), so storage
        // stays proportional to the updates and rebuilding a state folds at most about one
        // state's worth of them.
        let snapshot = self.unsnapshotted + update.get().len() >= self.snapshot_bytes.max(SNAPSHOT_GAP);
        let listening = self.publisher.listening();
        let state = if snapshot || listening {
            Some(raw(step.state)?)
        } else {
            None
        };
        if snapshot {
            self.snapshot_bytes = state.as_ref().map_or(0, |state| state.get().len());
            self.unsnapshotted = 0;
        } else {
            self.unsnapshotted += update.get().len();
        }
        let output = step.output.map(raw).transpose()?;
        let mut event: RunEvent<Option<&RawValue>> = RunEvent::Step(StepEvent {
            run_id: self.run_id.to_string(),
            seq: self.seq + 1,
            step: step.step,
            node: step.node.to_owned(),
            state: None,
            update: Some(&update),
            attempt: step.attempt,
            log: format!("[RUNNING] {}", step.node),
            notes: step.notes.to_vec(),
            changed: step.changed.to_vec(),
            status: step.status,
            duration_us: u64::try_from(step.duration.as_micros()).unwrap_or(u64::MAX),
            error: step.error.map(str::to_owned),
            instance: Some(self.owner.to_string()),
            branch: step.branch.map(str::to_owned),
            output: output.as_deref().map(Some),
            usage: step.usage,
        });
        let text = |event: &RunEvent<Option<&RawValue>>| {
            serde_json::to_string(event).map_err(|err| SinkError(err.to_string()))
        };
        // Without its state, as stored between snapshots.
        let lite = if snapshot { None } else { Some(text(&event)?) };
        // With it, as stored in a snapshot and as subscribers get it.
        let whole = match (&mut event, state.as_deref()) {
            (RunEvent::Step(step_event), Some(state)) => {
                step_event.state = Some(state);
                Some(text(&event)?)
            }
            _ => None,
        };
        let texts = match lite {
            None => Texts {
                stored: whole.unwrap_or_default(),
                live: None,
                snapshot: true,
            },
            Some(lite) => Texts {
                stored: lite,
                live: whole,
                snapshot: false,
            },
        };
        let effect = RunEffect::Checkpoint {
            step_count: step.started,
            next_node: step.next.map(str::to_owned),
            frontier: step.frontier.map(str::to_owned),
            usage: step.usage,
        };
        self.hold_texts((EventKind::Step, Some(step.node)), &lines, effect, texts)
            .map_err(sink_error)?;
        let cancel = self.publisher.cancel_requested();
        if step.next.is_some() && !cancel && self.shutdown.is_cancelled() {
            // Shutting down: this step is committed, and the run stops here.
            self.flush().await.map_err(sink_error)?;
            return Err(SinkError("the server is shutting down".into()));
        }
        // The step stays held: the engine's next call, before anything else runs, is the
        // next node's start or the run's end, and the step is committed with it.
        Ok(if cancel { Control::Cancel } else { Control::Continue })
    }
}

/// Ends a run `failed` with `reason`, durably, from what the store holds (its last
/// checkpoint), when its task cannot go on: the tool panicked, the store failed mid-run,
/// or it could not be resumed. Retries with backoff until the store answers. Answers how
/// the run stands: `failed`, or as it was if it had ended already or is another
/// instance's now.
pub(super) async fn fail_durably(store: &dyn Store, owner: &OwnerId, run_id: &RunId, reason: &str) -> RunStatus {
    let mut delay = STORE_RETRY_FIRST;
    loop {
        match try_fail(store, owner, run_id, reason).await {
            Ok(status) => return status,
            Err(StoreError::NotOwned { .. }) => {
                tracing::warn!(%run_id, "the run is another instance's now: not failing it here");
                return RunStatus::Queued;
            }
            Err(err) => {
                tracing::error!(%run_id, error = %err, retry_in_ms = delay.as_millis() as u64,
                    "could not record a run's failure; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(STORE_RETRY_MAX);
            }
        }
    }
}

async fn try_fail(store: &dyn Store, owner: &OwnerId, run_id: &RunId, reason: &str) -> Result<RunStatus, StoreError> {
    let Some(run) = store.run(run_id).await? else {
        return Err(StoreError::Corrupt(format!("run {run_id} vanished")));
    };
    if run.status.is_terminal() {
        return Ok(run.status);
    }
    let transition =
        Transition::new(run.status, RunStatus::Failed).map_err(|err| StoreError::Corrupt(err.to_string()))?;
    let state = current_state(store, &run).await?;
    let error = Some(reason.to_owned());
    let event = RunEvent::End(EndEvent {
        run_id: run.id.to_string(),
        seq: run.last_seq + 1,
        steps: run.step_count,
        status: RunStatus::Failed,
        state: &*state,
        error: error.clone(),
    });
    let corrupt = |err: serde_json::Error| StoreError::Corrupt(err.to_string());
    store
        .append_event(EventRecord {
            run_id: run.id.clone(),
            owner: owner.clone(),
            seq: run.last_seq + 1,
            kind: EventKind::End,
            node: None,
            log: serde_json::to_string(&[format!("[FAILED] {reason}")]).map_err(corrupt)?,
            event: serde_json::to_string(&event).map_err(corrupt)?,
            snapshot: false,
            effect: RunEffect::Ended {
                transition,
                steps: run.step_count,
                error,
            },
        })
        .await?;
    Ok(RunStatus::Failed)
}
