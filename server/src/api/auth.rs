//! Authentication at the edge: who each request speaks for, before any route runs.
//!
//! [`Authenticate`] is tower-http's `AsyncRequireAuthorizationLayer` over
//! [`crate::auth::Tokens`]. A request brings a token as `Authorization: Bearer …` (API
//! clients) or in the `weft_session` cookie (the web UI, after `/signin`); the layer puts
//! the [`Principal`] it speaks for into the request's extensions, where handlers and the
//! server-rendered pages read it. The rules:
//!
//! - No token exists: Weft runs open, everyone is [`Principal::open`].
//! - Once one exists, every request needs one (`401`), except the sign-in page, the
//!   site's assets, the API docs, and `/health` and `/metrics` when configured so. A
//!   browser asking for a page is sent to `/signin` instead.
//! - A request that changes something and is authenticated by the cookie must come from
//!   Weft's own origin: its `Origin` names this very host and port (or the browser says
//!   `Sec-Fetch-Site: same-origin`). Another site, or another port on localhost, cannot
//!   act with a person's session.
//! - A read-only principal may read only (`403`).
//!
//! [`StartLimiter`] is the per-principal rate limit on starting runs (governor).

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderValue, Method, Request, Response},
    response::{IntoResponse, Redirect},
    Extension, Form, Json,
};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use futures::future::BoxFuture;
use governor::{clock::Clock, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use tower_http::auth::AsyncAuthorizeRequest;
use weft_app::wire::Session;

use super::error::ApiError;
use crate::auth::{Principal, Tokens};

/// The cookie the web UI's session lives in: the token itself, HttpOnly (no script reads
/// it) and SameSite=Strict (no other site's request carries it).
pub const SESSION_COOKIE: &str = "weft_session";

/// How long a sign-in lasts.
const SESSION_DAYS: i64 = 7;

/// Which routes answer without a token once tokens exist.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exempt {
    /// `GET /health` (`WEFT_PUBLIC_HEALTH=on`), for load balancers.
    pub health: bool,
    /// `GET /metrics` (`WEFT_PUBLIC_METRICS=on`), for a scraper without a token.
    pub metrics: bool,
}

/// The authentication layer's check (see the module docs).
#[derive(Clone)]
pub struct Authenticate {
    tokens: Arc<Tokens>,
    exempt: Exempt,
}

impl Authenticate {
    /// Checks requests against `tokens`.
    pub fn new(tokens: Arc<Tokens>, exempt: Exempt) -> Self {
        Self { tokens, exempt }
    }

    /// Whether `path` answers without a token: the way in, and what holds no one's data.
    fn public(&self, path: &str) -> bool {
        matches!(
            path,
            "/signin" | "/auth/signin" | "/auth/signout" | "/auth/session" | "/favicon.ico"
        ) || path.starts_with("/pkg/")
            || path == super::docs::OPENAPI_PATH
            || path.starts_with(super::docs::DOCS_PATH)
            || (self.exempt.health && path == "/health")
            || (self.exempt.metrics && path == "/metrics")
    }
}

/// The token a request brings, and whether it came in the session cookie.
fn credentials(headers: &HeaderMap) -> Option<(String, bool)> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or("");
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .unwrap_or(value);
        return Some((token.trim().to_owned(), false));
    }
    CookieJar::from_headers(headers)
        .get(SESSION_COOKIE)
        .map(|cookie| (cookie.value().to_owned(), true))
}

/// Whether a request comes from this very origin: its `Origin` names the host and port
/// it was sent to, or the browser vouches for it with `Sec-Fetch-Site: same-origin`.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|value: &HeaderValue| value.to_str().ok());
    if let (Some(origin), Some(host)) = (text(header::ORIGIN), text(header::HOST)) {
        let authority = origin.split_once("://").map(|(_, rest)| rest.trim_end_matches('/'));
        return authority.is_some_and(|authority| authority.eq_ignore_ascii_case(host));
    }
    text(header::HeaderName::from_static("sec-fetch-site")) == Some("same-origin")
}

/// Whether a person's browser asks for a page (so it is sent to sign in, not given JSON).
fn wants_page(request: &Request<Body>) -> bool {
    request.method() == Method::GET
        && request
            .headers()
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"))
}

/// `/signin?next=…`, for a page that needs a session.
fn to_sign_in(request: &Request<Body>, clear_cookie: bool) -> Response<Body> {
    let next = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("/signin?next={}", urlencode(next));
    let mut response = Redirect::to(&location).into_response();
    if clear_cookie {
        if let Ok(value) = HeaderValue::from_str(&expired_cookie().to_string()) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
    }
    response
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn unauthorized(code: &'static str) -> Response<Body> {
    let detail = match code {
        "invalid_token" => "the API token is not valid, or was revoked",
        _ => "this server needs an API token: send `Authorization: Bearer weft_…` (weft-server token create)",
    };
    ApiError::Unauthorized {
        code,
        detail: detail.to_owned(),
    }
    .into_response()
}

/// The tokens could not be read: logged, and a 500 for the client.
fn tokens_unreadable(err: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %err, "could not read API tokens");
    ApiError::Internal
}

/// [`tokens_unreadable`], as the layer's refusal.
fn store_failed(err: crate::store::StoreError) -> Response<Body> {
    tokens_unreadable(err).into_response()
}

impl AsyncAuthorizeRequest<Body> for Authenticate {
    type RequestBody = Body;
    type ResponseBody = Body;
    type Future = BoxFuture<'static, Result<Request<Body>, Response<Body>>>;

    fn authorize(&mut self, mut request: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let public = this.public(request.uri().path());
            let presented = credentials(request.headers());
            let by_cookie = presented.as_ref().is_some_and(|(_, cookie)| *cookie);
            let mut principal = None;
            if let Some((text, _)) = &presented {
                principal = this.tokens.verify(text).await.map_err(store_failed)?;
                if principal.is_none() && !public {
                    return Err(if wants_page(&request) {
                        to_sign_in(&request, by_cookie)
                    } else {
                        unauthorized("invalid_token")
                    });
                }
            }
            let principal = match principal {
                Some(principal) => principal,
                None => match this.tokens.required().await.map_err(store_failed)? {
                    false => Principal::open(),
                    true if public => Principal::nobody(),
                    true if wants_page(&request) => return Err(to_sign_in(&request, false)),
                    true => return Err(unauthorized("token_required")),
                },
            };
            // Checking a graph changes nothing either.
            let changes = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS)
                && request.uri().path() != "/graph/validate";
            if changes && (by_cookie || request.uri().path().starts_with("/auth/")) && !same_origin(request.headers()) {
                return Err(ApiError::Forbidden {
                    code: "cross_origin",
                    detail: "a request made with the session cookie must come from this server's own pages".to_owned(),
                }
                .into_response());
            }
            if changes && principal.read_only && !public {
                return Err(ApiError::Forbidden {
                    code: "read_only",
                    detail: format!(
                        "the token `{}` may only read",
                        principal.name.as_deref().unwrap_or("(none)")
                    ),
                }
                .into_response());
            }
            request.extensions_mut().insert(principal);
            Ok(request)
        })
    }
}

/// The session cookie holding `token`.
fn session_cookie(token: String) -> Cookie<'static> {
    Cookie::build((SESSION_COOKIE, token))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(time::Duration::days(SESSION_DAYS))
        .build()
}

/// The session cookie, expired: what signing out sets.
fn expired_cookie() -> Cookie<'static> {
    Cookie::build((SESSION_COOKIE, ""))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(time::Duration::ZERO)
        .build()
}

/// Where to go after signing in: a path on this site only (never `//elsewhere`).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(next) if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') => next,
        _ => "/",
    }
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct SignIn {
    token: String,
    next: Option<String>,
}

/// `POST /auth/signin` (a form: `token`, `next`): checks the token and keeps it in the
/// session cookie, then goes on to `next`; back to the form when it is not valid.
pub async fn sign_in(
    Extension(tokens): Extension<Arc<Tokens>>,
    jar: CookieJar,
    Form(form): Form<SignIn>,
) -> Result<(CookieJar, Redirect), ApiError> {
    let next = safe_next(form.next.as_deref());
    let token = form.token.trim().to_owned();
    match tokens.verify(&token).await.map_err(tokens_unreadable)? {
        Some(_) => Ok((jar.add(session_cookie(token)), Redirect::to(next))),
        None => Ok((
            jar,
            Redirect::to(&format!("/signin?error=invalid&next={}", urlencode(next))),
        )),
    }
}

/// `POST /auth/signout`: forgets the session cookie.
pub async fn sign_out(jar: CookieJar) -> (CookieJar, Redirect) {
    (jar.add(expired_cookie()), Redirect::to("/signin"))
}

/// `GET /auth/session`: whom this browser is signed in as, and whether it needs to be.
#[utoipa::path(
    get,
    path = "/auth/session",
    summary = "Who is signed in",
    tag = "service",
    responses((status = 200, description = "Whether this server needs a token, and whom the request's token speaks for.", body = Session))
)]
pub async fn session(
    Extension(tokens): Extension<Arc<Tokens>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(session_of(&tokens, &principal).await?))
}

/// The [`Session`] of `principal`.
pub async fn session_of(tokens: &Tokens, principal: &Principal) -> Result<Session, ApiError> {
    let required = tokens.required().await.map_err(tokens_unreadable)?;
    Ok(Session {
        required,
        name: principal.name.as_deref().map(str::to_owned),
        admin: principal.admin && principal.name.is_some(),
        read_only: principal.read_only && principal.name.is_some(),
    })
}

/// The per-principal rate limit on starting runs (`WEFT_RATE_LIMIT` runs a second, with
/// bursts as large); `None`: unlimited.
#[derive(Clone, Default)]
pub struct StartLimiter(Option<Arc<DefaultKeyedRateLimiter<String>>>);

impl StartLimiter {
    /// `per_second` runs a second per principal, at most; 0: unlimited.
    pub fn new(per_second: u32) -> Self {
        Self(NonZeroU32::new(per_second).map(|rate| Arc::new(RateLimiter::keyed(Quota::per_second(rate)))))
    }

    /// Counts a run started by `principal`; a 429 with `Retry-After` past the limit.
    pub fn check(&self, principal: &Principal) -> Result<(), ApiError> {
        let Some(limiter) = &self.0 else {
            return Ok(());
        };
        let key = principal.name.as_deref().unwrap_or("").to_owned();
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            let retry_after = u32::try_from(wait.as_secs()).unwrap_or(u32::MAX).saturating_add(1);
            ApiError::TooManyRequests {
                detail: format!("too many runs started; retry in {retry_after} s"),
                retry_after,
            }
        })
    }
}

/// How long a request may take, past which it is answered `408` (streams and
/// `wait: true` runs have their own caps).
#[derive(Debug, Clone, Copy)]
pub struct RequestTimeout(pub Duration);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_very_origin_may_act_with_the_cookie() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_static(value));
            }
            map
        };
        assert!(same_origin(&headers(&[
            ("origin", "http://127.0.0.1:3000"),
            ("host", "127.0.0.1:3000")
        ])));
        // Another port on the same machine is another origin (but the same site).
        assert!(!same_origin(&headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:3000")
        ])));
        assert!(!same_origin(&headers(&[
            ("origin", "null"),
            ("host", "127.0.0.1:3000")
        ])));
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[])));
    }

    #[test]
    fn sign_in_goes_on_only_to_this_site() {
        assert_eq!(safe_next(Some("/run/abc?x=1")), "/run/abc?x=1");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn bearer_headers_win_over_the_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("weft_session=from-cookie"));
        assert_eq!(credentials(&headers), Some(("from-cookie".to_owned(), true)));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer from-header"));
        assert_eq!(credentials(&headers), Some(("from-header".to_owned(), false)));
    }

    #[test]
    fn the_limiter_answers_429_past_the_rate() {
        let limiter = StartLimiter::new(2);
        let alice = Principal {
            name: Some("alice".into()),
            admin: false,
            read_only: false,
        };
        assert!(limiter.check(&alice).is_ok());
        assert!(limiter.check(&alice).is_ok());
        let refused = limiter.check(&alice).expect_err("the third within a second is refused");
        assert!(matches!(refused, ApiError::TooManyRequests { retry_after: 1, .. }));
        // Each principal has its own allowance.
        assert!(limiter.check(&Principal::open()).is_ok());
        assert!(StartLimiter::new(0).check(&alice).is_ok());
    }
}
