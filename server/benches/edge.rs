//! What authentication and metrics cost per request (`cargo bench -p weft-server --bench
//! edge`): the whole router (edge checks, authentication, metrics, the handler) answering
//! `POST /tools` (a 405, the cheapest answer that passes every layer) in process, with no
//! socket:
//!
//! - `bare`: the API's routes alone, without the edge checks, authentication, metrics or
//!   the trace layer: the baseline;
//! - `open`: everything, with no token existing (the local default);
//! - `bearer`: a token exists and the request sends it (verified from the cache);
//! - `token_row_read`: reading a token's row from SQLite, which `bearer` pays once a
//!   second per token (when its cache entry expires);
//! - `metrics_record`: what the HTTP metrics middleware records per request, alone.
//!
//! `open − bare` is the edge's whole cost per request (host check, authentication,
//! metrics, tracing); `bearer − open`, checking a token.
//!
//! Results are recorded in `docs/benchmarks.md`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::{net::SocketAddr, sync::Arc};

use axum::{body::Body, http::Request};
use criterion::{criterion_group, criterion_main, Criterion};
use tower::ServiceExt;
use weft_server::{
    assets::Assets,
    auth::{new_token, Tokens},
    config::Settings,
    engine::CpuPool,
    runner::{RunLimits, Runner},
    startup::{open_store, router},
    tools::default_registry,
};

fn request(token: Option<&str>) -> Request<Body> {
    // A method the route does not take: the cheapest answer (405) that passes every layer.
    let mut request = Request::post("/tools").header("host", "127.0.0.1:3000");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(Body::empty()).unwrap()
}

fn edge(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("bench.db").to_string_lossy().into_owned();
    let settings = Settings::new(SocketAddr::from(([127, 0, 0, 1], 3000)), database.clone());
    let (bare, open, store) = runtime.block_on(async {
        let store = open_store(&database).await.unwrap();
        let pool = CpuPool::for_this_machine();
        let runner = Runner::new(Arc::clone(&store), default_registry(&pool), pool, RunLimits::default());
        weft_server::meters::handle();
        let tokens = Arc::new(Tokens::new(Arc::clone(&store)));
        let bare = weft_server::api::router(runner.clone(), &settings, Arc::clone(&tokens));
        let site = Assets::prepare(&settings.site_root.join("pkg"), "weft");
        (bare, router(runner, &settings, tokens, site), store)
    });
    let mut group = c.benchmark_group("edge");
    group.bench_function("bare", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = bare.clone().oneshot(request(None)).await.unwrap();
            assert_eq!(response.status(), 405);
        });
    });
    group.bench_function("open", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = open.clone().oneshot(request(None)).await.unwrap();
            assert_eq!(response.status(), 405);
        });
    });

    // A token exists from here on: requests without one would be refused.
    let token = new_token("bench", false, false);
    runtime.block_on(store.insert_token(token.record.clone())).unwrap();
    let protected = runtime.block_on(async {
        let pool = CpuPool::for_this_machine();
        let runner = Runner::new(Arc::clone(&store), default_registry(&pool), pool, RunLimits::default());
        let site = Assets::prepare(&settings.site_root.join("pkg"), "weft");
        router(runner, &settings, Arc::new(Tokens::new(Arc::clone(&store))), site)
    });
    group.bench_function("bearer", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = protected.clone().oneshot(request(Some(&token.text))).await.unwrap();
            assert_eq!(response.status(), 405);
        });
    });
    group.bench_function("token_row_read", |b| {
        b.to_async(&runtime).iter(|| async {
            assert!(store.token(&token.record.id).await.unwrap().is_some());
        });
    });
    group.bench_function("metrics_record", |b| {
        b.iter(|| {
            let labels = [
                ("method", "POST".to_owned()),
                ("route", "/tools".to_owned()),
                ("status", "405".to_owned()),
            ];
            metrics::counter!("weft_http_requests_total", &labels).increment(1);
            metrics::histogram!("weft_http_request_duration_seconds", &labels).record(0.000_1);
        });
    });
    group.finish();
}

criterion_group!(benches, edge);
criterion_main!(benches);
