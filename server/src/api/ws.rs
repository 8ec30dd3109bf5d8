//! `WS /ws/{run_id}`: a run's events from the start (or after `?since=<seq>`), then live
//! until the run ends, with no gap and no repeat however late the client attaches.
//!
//! The handler subscribes to the live channel *before* reading the store, so an event is
//! always in one or the other; sequence numbers drop what arrives twice. A client that
//! falls behind the live channel is resynced from the store rather than dropped, and a
//! slow client never holds up the run: the run only ever writes to a broadcast channel.
//! A run not in flight here (queued, or executing on another instance) is followed
//! through the store, read each time a [`watch`](crate::runner::watch) says it moved on.
//! When the server shuts down, every stream is closed with code 1012 (service restart),
//! and the client resumes with `?since=` once it is back.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{
        rejection::QueryRejection,
        ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket},
        Path, Query, State, WebSocketUpgrade,
    },
    response::Response,
    Extension,
};
use futures::{stream::SplitSink, SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{
    broadcast::{error::RecvError, Receiver},
    Mutex,
};
use utoipa::IntoParams;
use weft_app::wire::{ErrorEvent, EventKind, RunEvent};

use super::{
    docs::{BadRequest, Unavailable},
    error::ApiError,
    HeldOpen,
};
use crate::{
    auth::{Access, Principal},
    ids::RunId,
    runner::{
        end_event,
        hub::{LiveEvent, Subscription},
        token_message, Replay, Runner, Wake,
    },
    store::{StoreError, StoredRun},
};

/// How long a message may wait for the client to take it. A client that takes longer has
/// stopped reading: it is dropped, and may reconnect with `?since=`.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How often an open stream pings its client. A client that answers nothing (no pong,
/// no message) for three of these is dropped.
const PING_EVERY: Duration = Duration::from_secs(15);

/// The largest message a client may send. Clients send nothing but pings and the close;
/// a bigger message drops the connection (the run goes on; the client may reconnect).
const MAX_INBOUND_BYTES: usize = 4 * 1024;

/// `?since=<seq>`: send only events after this one.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Send only the events after the one with this `seq` (to resume after a drop).
    #[param(example = 4)]
    since: Option<u64>,
}

/// Upgrades to a WebSocket streaming the run's events.
#[utoipa::path(
    get,
    path = "/ws/{run_id}",
    summary = "Follow a run (WebSocket)",
    tag = "runs",
    description = "Upgrades to a WebSocket that streams the run's events as JSON text messages: every stored \
                   event after `since`, then each new one as it is committed, and closes after `end`. Exactly \
                   one `step` message per executed node, in order (the prototype's message). Every event \
                   but `error` has a `seq` one higher than the last; a client that reconnects with \
                   `?since=<last seq>` misses nothing and sees nothing twice. An `llm` node's answer streams \
                   as `token` messages while it comes (no `seq`, never stored: its step holds the whole \
                   text); a client that connects mid-answer first gets the answer so far as one `token` \
                   message, then the rest as it comes. An unknown run gets one `error` message, then the socket closes.",
    params(
        ("run_id" = String, Path, description = "The run's id.", example = "01a20f5e-f732-75ee-9f64-aa5f9c716fa8"),
        StreamQuery,
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol; each message is one `RunEvent`.", body = RunEvent,
         examples(
             ("run_queued" = (value = json!({"type": "run_queued", "run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "seq": 1, "graph_id": "01a20f5e-dfcc-76b1-a3c1-c36456f65bb5"}))),
             ("run_started" = (value = json!({"type": "run_started", "run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "seq": 2, "resumed": false}))),
             ("node_started" = (value = json!({"type": "node_started", "run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "seq": 3, "step": 1, "node": "extract", "attempt": 1}))),
             ("step" = (value = json!({"type": "step", "run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "seq": 4, "step": 1, "node": "extract", "state": {"code": "def f(): pass", "functions": ["f"]}, "update": {"functions": ["f"]}, "attempt": 1, "log": "[RUNNING] extract", "changed": ["functions"], "status": "running", "duration_us": 812}))),
             ("node_failed" = (value = json!({"type": "node_failed", "run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "seq": 5, "step": 2, "node": "fetch", "attempt": 1, "error": "timed out after 500 ms", "retry_in_ms": 100}))),
             ("interrupted" = (value = json!({"type": "interrupted", "run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "seq": 30, "interrupt_id": "01a20f5f-0c1d-7a52-8d6e-3f1f4c1e2b7a", "node": "approve", "step": 9, "prompt": "Approve the revised code?", "input_schema": {"type": "object", "required": ["approved"], "properties": {"approved": {"type": "boolean"}}}}))),
             ("token" = (value = json!({"type": "token", "run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "step": 3, "node": "review", "text": "Looks "}))),
             ("end" = (value = json!({"type": "end", "run_id": "01a20f5e-f732-75ee-9f64-aa5f9c716fa8", "seq": 17, "steps": 5, "status": "completed", "state": {"quality_score": 98}}))),
             ("error" = (value = json!({"type": "error", "detail": "no run with id `nope`"}))),
         )),
        (status = 400, response = BadRequest),
        (status = 503, response = Unavailable),
    )
)]
pub async fn stream(
    State(runner): State<Runner>,
    Extension(held_open): Extension<HeldOpen>,
    Extension(principal): Extension<Principal>,
    Path(run_id): Path<String>,
    query: Result<Query<StreamQuery>, QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|err| ApiError::BadRequest(format!("bad query: {}", err.body_text())))?;
    // Held until the stream ends.
    let place = held_open.take()?;
    let since = query.since.unwrap_or(0);
    // A client only ever closes: anything bigger than a close frame is refused.
    let upgrade = upgrade
        .max_message_size(MAX_INBOUND_BYTES)
        .max_frame_size(MAX_INBOUND_BYTES);
    Ok(upgrade.on_upgrade(move |socket| async move {
        let _place = place;
        let _client = WsClient::counted();
        let run_id = RunId::from(run_id);
        let (sender, mut receiver) = socket.split();
        let sender = Mutex::new(sender);
        let restarting = runner.shutdown_signal().clone();
        let ended = {
            let access = principal.access();
            let streaming = send_events(&runner, &run_id, &access, since, &sender);
            // The client only ever closes, and answers pings; reading lets us notice when it
            // closes, or stops answering (a peer gone without a word).
            let client_gone = async {
                while let Ok(Some(Ok(message))) = tokio::time::timeout(PING_EVERY * 3, receiver.next()).await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
            };
            // Keeps the connection alive through proxies that drop idle ones, and draws the
            // answers `client_gone` waits for.
            let pinging = async {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
                loop {
                    tick.tick().await;
                    if send_message(&sender, Message::Ping(Default::default())).await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                result = streaming => match result {
                    Ok(()) => Some(Ended::Streamed),
                    // Nothing more can be sent to it, a close frame included: drop it.
                    Err(err @ (StreamError::Stuck | StreamError::Gone)) => {
                        tracing::debug!(%run_id, error = %err, "client dropped");
                        None
                    }
                    Err(err) => {
                        tracing::debug!(%run_id, error = %err, "stream ended early");
                        Some(Ended::Streamed)
                    }
                },
                () = client_gone => None,
                () = pinging => None,
                () = restarting.cancelled() => Some(Ended::Restarting),
            }
        };
        match ended {
            Some(Ended::Streamed) => {
                let _ = tokio::time::timeout(SEND_TIMEOUT, sender.lock().await.close()).await;
            }
            // The server is shutting down: say so, so the client reconnects (`?since=`).
            Some(Ended::Restarting) => {
                let frame = CloseFrame {
                    code: close_code::RESTART,
                    reason: Utf8Bytes::from_static("service restart"),
                };
                let _ = send_message(&sender, Message::Close(Some(frame))).await;
            }
            None => {}
        }
    }))
}

/// A connected client, counted in `weft_ws_clients` while it lives.
struct WsClient;

impl WsClient {
    fn counted() -> Self {
        crate::meters::ws_clients(1.0);
        Self
    }
}

impl Drop for WsClient {
    fn drop(&mut self) {
        crate::meters::ws_clients(-1.0);
    }
}

/// Why the server ends a stream.
enum Ended {
    /// Every event up to the run's end was sent.
    Streamed,
    /// The server is shutting down (close code 1012).
    Restarting,
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("the client went away")]
    Gone,
    #[error("the client stopped reading")]
    Stuck,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The socket's sending half, shared by the stream and the pings.
type Sender = Mutex<SplitSink<WebSocket, Message>>;

/// Sends one message, or gives up on a client that has not taken it within
/// [`SEND_TIMEOUT`]: it stopped reading. The run never waits on a client; this frees the
/// connection.
async fn send(sender: &Sender, text: String) -> Result<(), StreamError> {
    send_message(sender, Message::Text(Utf8Bytes::from(text))).await
}

/// [`send`] for any message: a ping, a close frame.
async fn send_message(sender: &Sender, message: Message) -> Result<(), StreamError> {
    let mut sender = sender.lock().await;
    match tokio::time::timeout(SEND_TIMEOUT, sender.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(StreamError::Gone),
        Err(_) => Err(StreamError::Stuck),
    }
}

/// Sends every stored event after `last` (each step with its state, rebuilt from the
/// store); answers the new `last`, and whether the run's `end` was among them.
async fn replay(runner: &Runner, run: &StoredRun, last: u64, sender: &Sender) -> Result<(u64, bool), StreamError> {
    let mut pages = Replay::after(runner.store().as_ref(), run, last).await?;
    while let Some(page) = pages.next().await? {
        for event in page {
            let (seq, end) = (event.seq, event.kind == EventKind::End);
            send(sender, event.event).await?;
            if end {
                return Ok((seq, true));
            }
        }
    }
    Ok((pages.last().max(last), false))
}

/// Ends a stream whose run's `end` is not stored (runs recorded before it was).
async fn send_end(runner: &Runner, run: &StoredRun, sender: &Sender) -> Result<(), StreamError> {
    send(sender, end_event(runner.store().as_ref(), run).await?).await
}

/// Sends each model's answer in progress as far as it has come, one `token` message each,
/// before the stored events: its later tokens follow from the channel, and a client drops
/// an answer when the step it belongs to arrives (among the stored events, or later).
async fn send_answers(run_id: &RunId, live: Option<&mut Subscription>, sender: &Sender) -> Result<(), StreamError> {
    let Some(live) = live else {
        return Ok(());
    };
    let run_id = run_id.to_string();
    for answer in std::mem::take(&mut live.answers) {
        if let Some(text) = token_message(&run_id, answer.step, &answer.node, &answer.text) {
            send(sender, text).await?;
        }
    }
    Ok(())
}

async fn send_events(
    runner: &Runner,
    run_id: &RunId,
    access: &Access,
    since: u64,
    sender: &Sender,
) -> Result<(), StreamError> {
    // Subscribe (or watch) first, read second: see the module docs.
    let mut live = runner.hub().subscribe(run_id);
    let mut watch = runner.watch(run_id, Wake::OnEvents);
    // Another principal's run is no run at all, as over REST.
    let visible = runner.store().run(run_id).await?;
    let Some(mut run) = visible.filter(|run| access.sees(run.created_by.as_deref())) else {
        let event: RunEvent = RunEvent::Error(ErrorEvent {
            detail: format!("no run with id `{run_id}`"),
        });
        return send(sender, serde_json::to_string(&event).unwrap_or_default()).await;
    };
    send_answers(run_id, live.as_mut(), sender).await?;
    let (mut last, ended) = replay(runner, &run, since, sender).await?;
    if ended {
        return Ok(());
    }
    // Not in flight here: queued, executing on another instance, or ended. Each time the
    // watch says it moved on, read what it committed, until it is in flight here (claimed
    // by this instance) or has ended.
    loop {
        if let Some(channel) = live.take() {
            match follow(runner, &run, channel.events, last, sender).await? {
                // Ended: every event was sent.
                None => return Ok(()),
                // It stopped executing here without ending (it waits for an answer): watch
                // the store again.
                Some(seen) => last = seen,
            }
            run = runner
                .store()
                .run(run_id)
                .await?
                .ok_or(StoreError::Corrupt("run vanished".into()))?;
            continue;
        }
        if run.status.is_terminal() {
            if replay(runner, &run, last, sender).await?.1 {
                return Ok(());
            }
            return send_end(runner, &run, sender).await;
        }
        watch.changed().await;
        live = runner.hub().subscribe(run_id);
        send_answers(run_id, live.as_mut(), sender).await?;
        run = runner
            .store()
            .run(run_id)
            .await?
            .ok_or(StoreError::Corrupt("run vanished".into()))?;
        let (seen, ended) = replay(runner, &run, last, sender).await?;
        if ended {
            return Ok(());
        }
        last = seen;
    }
}

/// Sends a run in flight here, live from its channel, after event `last`. Answers `None`
/// once its end is sent, or the last event sent when it stopped executing here without
/// ending (it waits for an answer).
async fn follow(
    runner: &Runner,
    run: &StoredRun,
    mut live: Receiver<Arc<LiveEvent>>,
    mut last: u64,
    sender: &Sender,
) -> Result<Option<u64>, StreamError> {
    loop {
        match live.recv().await {
            // A token: sent as it comes, stored nowhere.
            Ok(event) if event.passing => send(sender, event.text.clone()).await?,
            Ok(event) if event.seq <= last => {}
            // A step published without its state (nobody listened then) is read from the store.
            Ok(event) if event.seq == last + 1 && event.full => {
                last = event.seq;
                send(sender, event.text.clone()).await?;
                if event.end {
                    return Ok(None);
                }
            }
            // A gap (we fell behind, or the channel dropped what we had not read): the store has it all.
            Ok(_) | Err(RecvError::Lagged(_)) => {
                let (seen, ended) = replay(runner, run, last, sender).await?;
                if ended {
                    return Ok(None);
                }
                last = seen;
            }
            Err(RecvError::Closed) => {
                // The run's task is gone; the store has the rest, including how it ended.
                let (seen, ended) = replay(runner, run, last, sender).await?;
                if ended {
                    return Ok(None);
                }
                let run = runner
                    .store()
                    .run(&run.id)
                    .await?
                    .ok_or(StoreError::Corrupt("run vanished".into()))?;
                if !run.status.is_terminal() {
                    return Ok(Some(seen));
                }
                send_end(runner, &run, sender).await?;
                return Ok(None);
            }
        }
    }
}
