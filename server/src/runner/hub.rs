//! The live side of runs: one broadcast channel per run in flight.
//!
//! Events are published only after the store has committed them, and a subscriber
//! subscribes *before* it reads the store. So every event is either in what it reads or
//! in what it receives (both, at worst, and sequence numbers drop the repeat): no gap.
//!
//! A model's answer passes as tokens that are never stored. The hub keeps each answer as
//! far as it has come until its step is written, and a subscriber gets it with its
//! channel, taken under the same lock the tokens are sent under: every piece of the
//! answer is either in what it is given or in what it receives, exactly once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::ids::RunId;

/// How many events a subscriber may fall behind before it must resync from the store.
pub const CHANNEL_CAPACITY: usize = 256;

/// One streamed event, serialized once for every subscriber.
#[derive(Debug)]
pub struct LiveEvent {
    /// The step's number; for the end event, the number of the last step.
    pub seq: u64,
    /// Whether this is the run's last event.
    pub end: bool,
    /// Whether `text` is the event as clients get it. A step published while nobody was
    /// listening is left without its state (it would have been serialized for no one); a
    /// subscriber that gets one anyway reads that step from the store.
    pub full: bool,
    /// The JSON text sent to clients.
    pub text: String,
    /// Sent as it comes and never stored (a token of a model's answer): it has no `seq`,
    /// and a client that misses it misses nothing the store keeps.
    pub passing: bool,
}

/// A model's answer as far as it has come: the text of the tokens passed so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The step the answering node is.
    pub step: u64,
    /// The node.
    pub node: String,
    /// The answer so far.
    pub text: String,
}

/// The answers coming now, shared by a run's publisher and its hub entry.
type Answers = Arc<Mutex<Vec<Answer>>>;

fn lock_answers(answers: &Answers) -> std::sync::MutexGuard<'_, Vec<Answer>> {
    answers.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A subscription to a live run: its channel, and the answers coming when it was made.
pub struct Subscription {
    /// The run's events from now on.
    pub events: broadcast::Receiver<Arc<LiveEvent>>,
    /// Each answer in progress, as far as it had come: its later tokens come on `events`.
    pub answers: Vec<Answer>,
}

struct Entry {
    sender: broadcast::Sender<Arc<LiveEvent>>,
    answers: Answers,
    /// Raised when someone asks the run to stop: a queued run stops waiting, a node in
    /// progress (or its retry backoff) is dropped at once.
    cancel: CancellationToken,
}

/// How many departures a waiter may fall behind before it must ask the store.
const DEPARTURES: usize = 1_024;

/// The runs in flight, by id.
#[derive(Clone)]
pub struct Hub {
    runs: Arc<Mutex<HashMap<RunId, Entry>>>,
    /// Each run that stops executing here (ended, or handed back), once its last write
    /// is committed: for whoever waits on a run it could not subscribe to.
    departures: broadcast::Sender<RunId>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            runs: Arc::default(),
            departures: broadcast::channel(DEPARTURES).0,
        }
    }
}

/// A run's handle in the hub, held by the task that executes it.
pub struct Publisher {
    hub: Hub,
    run_id: RunId,
    sender: broadcast::Sender<Arc<LiveEvent>>,
    answers: Answers,
    cancel: CancellationToken,
}

/// Passes a model's tokens to a run's subscribers (see [`LiveEvent::passing`]), keeping
/// the answer so far for those who subscribe later.
#[derive(Clone)]
pub struct Passing {
    sender: broadcast::Sender<Arc<LiveEvent>>,
    answers: Answers,
}

impl Passing {
    /// Adds `piece` to the answer of `node` at `step`, and sends the message `token`
    /// makes of it to whoever listens (`token` is not called when nobody does).
    pub fn token(&self, step: u64, node: &str, piece: &str, token: impl FnOnce() -> Option<String>) {
        let mut answers = lock_answers(&self.answers);
        match answers
            .iter_mut()
            .find(|answer| answer.step == step && answer.node == node)
        {
            Some(answer) => answer.text.push_str(piece),
            None => answers.push(Answer {
                step,
                node: node.to_owned(),
                text: piece.to_owned(),
            }),
        }
        // Sent under the lock: see the module docs.
        if self.sender.receiver_count() > 0 {
            if let Some(text) = token() {
                let _ = self.sender.send(Arc::new(LiveEvent {
                    seq: 0,
                    end: false,
                    full: true,
                    text,
                    passing: true,
                }));
            }
        }
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, Entry>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a run as live; it stays live until its [`Publisher`] is dropped.
    pub fn register(&self, run_id: &RunId) -> Publisher {
        let (sender, _) = broadcast::channel(CHANNEL_CAPACITY);
        let cancel = CancellationToken::new();
        let answers = Answers::default();
        self.lock().insert(
            run_id.clone(),
            Entry {
                sender: sender.clone(),
                answers: answers.clone(),
                cancel: cancel.clone(),
            },
        );
        Publisher {
            hub: self.clone(),
            run_id: run_id.clone(),
            sender,
            answers,
            cancel,
        }
    }

    /// Subscribes to a live run's events; `None` when the run is not in flight here.
    pub fn subscribe(&self, run_id: &RunId) -> Option<Subscription> {
        let runs = self.lock();
        let entry = runs.get(run_id)?;
        let answers = lock_answers(&entry.answers);
        Some(Subscription {
            events: entry.sender.subscribe(),
            answers: answers.clone(),
        })
    }

    /// Asks a live run to stop. `false` when it is not live here (or already ending: see
    /// [`Publisher::close`]); `true` means the run will end `cancelled`.
    pub fn cancel(&self, run_id: &RunId) -> bool {
        self.lock().get(run_id).map(|entry| entry.cancel.cancel()).is_some()
    }

    /// The runs that stop executing here from now on, each once its last write is
    /// committed.
    pub fn departures(&self) -> broadcast::Receiver<RunId> {
        self.departures.subscribe()
    }

    /// How many runs are in flight.
    pub fn live_runs(&self) -> usize {
        self.lock().len()
    }
}

impl Publisher {
    /// Whether anyone subscribes to the run's events now.
    pub fn listening(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// Sends a committed event to every subscriber (none listening is fine).
    pub fn publish(&self, event: LiveEvent) {
        let _ = self.sender.send(Arc::new(event));
    }

    /// Where a model's tokens go (see [`Passing`]).
    pub fn passing(&self) -> Passing {
        Passing {
            sender: self.sender.clone(),
            answers: self.answers.clone(),
        }
    }

    /// Forgets the answer of `node` at `step`: its step is being written, whole text
    /// and all.
    pub fn answered(&self, step: u64, node: &str) {
        lock_answers(&self.answers).retain(|answer| answer.step != step || answer.node != node);
    }

    /// Whether someone asked the run to stop.
    pub fn cancel_requested(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves once someone asks the run to stop.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// The run's stop signal, for the engine to drop a node in progress with.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Takes the run off the hub as it is about to write its end: no cancel is accepted
    /// after this. Answers whether one was accepted before, so that every accepted
    /// cancel ends the run `cancelled`. (Subscribers keep their channel for the end.)
    pub fn close(&self) -> bool {
        let mut runs = self.hub.lock();
        if runs
            .get(&self.run_id)
            .is_some_and(|entry| entry.sender.same_channel(&self.sender))
        {
            runs.remove(&self.run_id);
        }
        self.cancel.is_cancelled()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.close();
        // Nobody waiting is no error.
        let _ = self.hub.departures.send(self.run_id.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_events_until_the_publisher_goes() {
        let hub = Hub::default();
        let run = RunId::generate();
        assert!(hub.subscribe(&run).is_none());
        let mut departures = hub.departures();
        let publisher = hub.register(&run);
        let mut rx = hub.subscribe(&run).unwrap().events;
        publisher.publish(LiveEvent {
            seq: 1,
            end: false,
            full: true,
            text: "one".into(),
            passing: false,
        });
        assert!(hub.cancel(&run));
        assert!(publisher.cancel_requested());
        drop(publisher);
        assert_eq!(rx.recv().await.unwrap().text, "one");
        assert!(matches!(rx.recv().await, Err(broadcast::error::RecvError::Closed)));
        assert_eq!(departures.try_recv().unwrap(), run);
        assert!(departures.try_recv().is_err(), "one departure per run");
        assert!(hub.subscribe(&run).is_none());
        assert_eq!(hub.live_runs(), 0);
        assert!(!hub.cancel(&run));
    }

    #[tokio::test]
    async fn a_late_subscriber_gets_the_answer_so_far_then_the_rest_once() {
        let hub = Hub::default();
        let run = RunId::generate();
        let publisher = hub.register(&run);
        let passing = publisher.passing();
        let made = std::cell::Cell::new(0);
        let token = |piece: &str| {
            made.set(made.get() + 1);
            Some(piece.to_owned())
        };
        // Nobody listens: kept, not even serialized.
        passing.token(3, "review", "Looks ", || token("Looks "));
        passing.token(3, "review", "fine", || token("fine"));
        assert_eq!(made.get(), 0);
        let mut early = hub.subscribe(&run).unwrap();
        assert_eq!(
            early.answers,
            [Answer {
                step: 3,
                node: "review".into(),
                text: "Looks fine".into()
            }]
        );
        passing.token(3, "review", ", thanks", || token(", thanks"));
        assert_eq!(early.events.try_recv().unwrap().text, ", thanks");
        let late = hub.subscribe(&run).unwrap();
        assert_eq!(late.answers[0].text, "Looks fine, thanks");
        // Another node's answer is its own; a written step's answer is forgotten.
        passing.token(4, "summary", "Short", || token("Short"));
        publisher.answered(3, "review");
        let after = hub.subscribe(&run).unwrap();
        assert_eq!(
            after.answers,
            [Answer {
                step: 4,
                node: "summary".into(),
                text: "Short".into()
            }]
        );
    }

    #[tokio::test]
    async fn a_closed_run_takes_no_cancel_and_says_whether_it_took_one() {
        let hub = Hub::default();
        let (quiet, asked) = (RunId::generate(), RunId::generate());
        let (quiet_publisher, asked_publisher) = (hub.register(&quiet), hub.register(&asked));
        assert!(hub.cancel(&asked));
        assert!(!quiet_publisher.close(), "nobody asked");
        assert!(!hub.cancel(&quiet), "closed: the cancel is refused, not lost");
        assert!(asked_publisher.close());
        let waited = tokio::time::timeout(std::time::Duration::from_millis(10), asked_publisher.cancelled()).await;
        assert!(waited.is_ok(), "a raised signal resolves at once");
    }
}
