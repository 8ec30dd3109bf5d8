//! A fake OpenAI-compatible provider on port 0 (axum), for the `llm` node's tests: it
//! answers each call with the next scripted [`Reply`] (server-sent events cut into small
//! pieces, as a real API streams them, or an error status), and records what it received.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use futures::StreamExt;
use serde_json::{json, Value};

/// What the fake answers next.
pub enum Reply {
    /// A streamed answer in these pieces, then the usage.
    Stream(Vec<String>),
    /// This status, with this `Retry-After`.
    Status(u16, Option<&'static str>),
    /// A piece every 200 ms, 50 of them: 10 s in all.
    Slow,
    /// These pieces, each after 150 ms.
    Paced(Vec<String>),
}

impl Reply {
    /// A streamed answer in these pieces.
    pub fn stream(pieces: &[&str]) -> Self {
        Self::Stream(pieces.iter().map(|&piece| piece.to_owned()).collect())
    }

    /// A streamed answer in these pieces, each after 150 ms.
    pub fn paced(pieces: &[&str]) -> Self {
        Self::Paced(pieces.iter().map(|&piece| piece.to_owned()).collect())
    }

    /// `answer` streamed in pieces of `size` characters (the last one shorter), each
    /// after 150 ms when `paced`.
    pub fn pieces(answer: &str, size: usize, paced: bool) -> Self {
        let chars: Vec<char> = answer.chars().collect();
        let pieces = chars.chunks(size).map(|piece| piece.iter().collect()).collect();
        if paced {
            Self::Paced(pieces)
        } else {
            Self::Stream(pieces)
        }
    }
}

/// Tells the fake, when dropped, that the stream it sent is gone: the client hung up.
struct HungUp(Arc<std::sync::atomic::AtomicBool>);

impl Drop for HungUp {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A call the fake received.
pub struct Received {
    /// The request body.
    pub body: Value,
    /// Its `Authorization` header.
    pub authorization: Option<String>,
    /// When it came.
    pub at: Instant,
}

/// The fake's script and record, shared with its handler.
#[derive(Clone, Default)]
pub struct Fake {
    /// What it answers next, in turn.
    pub replies: Arc<Mutex<VecDeque<Reply>>>,
    /// Every call it received, in order.
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Set once a slow stream's client has gone.
    pub hung_up: Arc<std::sync::atomic::AtomicBool>,
}

async fn completions(State(fake): State<Fake>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    fake.received.lock().expect("received").push(Received {
        body,
        authorization: headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        at: Instant::now(),
    });
    let reply = fake.replies.lock().expect("replies").pop_front();
    match reply {
        Some(Reply::Status(status, retry_after)) => {
            let mut response = (StatusCode::from_u16(status).expect("a status"), "slow down").into_response();
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", seconds.parse().expect("a header"));
            }
            response
        }
        Some(Reply::Stream(pieces)) => {
            let mut text = String::new();
            for piece in &pieces {
                let chunk = json!({"choices": [{"index": 0, "delta": {"content": piece}}]});
                text.push_str(&format!("data: {chunk}\n\n"));
            }
            let usage = json!({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": pieces.len()}});
            text.push_str(&format!("data: {usage}\n\ndata: [DONE]\n\n"));
            // In small pieces that cut lines, as a network does.
            let bytes = text.into_bytes();
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(7).map(|c| Ok(c.to_vec())).collect();
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(futures::stream::iter(chunks)))
                .expect("a response")
        }
        Some(Reply::Paced(pieces)) => {
            let count = pieces.len();
            let chunks = futures::stream::iter(pieces).then(|piece| async move {
                tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                let chunk = json!({"choices": [{"index": 0, "delta": {"content": piece}}]});
                Ok::<_, std::io::Error>(format!("data: {chunk}\n\n"))
            });
            let usage = json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": count}});
            let tail = futures::stream::iter([Ok(format!("data: {usage}\n\ndata: [DONE]\n\n"))]);
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(chunks.chain(tail)))
                .expect("a response")
        }
        Some(Reply::Slow) => {
            let guard = HungUp(Arc::clone(&fake.hung_up));
            let pieces = futures::stream::unfold((0, guard), |(n, guard)| async move {
                if n == 50 {
                    return None;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                let chunk = json!({"choices": [{"index": 0, "delta": {"content": "word "}}]});
                Some((Ok::<_, std::io::Error>(format!("data: {chunk}\n\n")), (n + 1, guard)))
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(pieces))
                .expect("a response")
        }
        None => (StatusCode::INTERNAL_SERVER_ERROR, "no reply scripted").into_response(),
    }
}

/// The fake, answering `replies` in turn, and the address of its API root.
pub async fn fake(replies: Vec<Reply>) -> (Fake, String) {
    let fake = Fake::default();
    fake.replies.lock().expect("replies").extend(replies);
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let address = format!("http://{}/v1", listener.local_addr().expect("an address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, address)
}
