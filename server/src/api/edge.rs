//! The edge: which requests reach Weft at all, whatever their route.
//!
//! A web page the user merely visits can send requests to a Weft on `127.0.0.1`. Two
//! checks, on every request, stop it:
//!
//! - **Host.** The `Host` must name this server: by default the listen address and the
//!   `localhost` names, else `WEFT_ALLOWED_HOSTS`. A page whose DNS name was rebound to
//!   `127.0.0.1` sends its own name and is refused.
//! - **Origin.** A request that says where it comes from (browsers say so on every
//!   WebSocket upgrade and every cross-site `POST`) must come from an allowed host too. A
//!   foreign page can neither follow a run's stream nor cancel it. Clients that are not
//!   browsers send no `Origin` and are not affected.
//!
//! Both are one [`ValidateRequest`] for tower-http's `ValidateRequestHeaderLayer`; a
//! refusal is a `403` with the API's JSON error body.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    body::Body,
    http::{header, Request, Response},
    response::IntoResponse,
};
use tower_http::validate_request::ValidateRequest;

use super::error::ApiError;

/// The host names requests may address Weft by (ports aside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHosts {
    /// Any: `WEFT_ALLOWED_HOSTS=*`, for a server behind a proxy that checks the host.
    Any,
    /// These names, lowercase; IPv6 addresses in brackets (`[::1]`).
    Only(Arc<[String]>),
}

impl AllowedHosts {
    /// The default for a server listening on `addr`: the `localhost` names, and the
    /// address itself when it is a specific one.
    pub fn for_address(addr: SocketAddr) -> Self {
        let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "[::1]".to_owned()];
        let ip = addr.ip();
        if !ip.is_unspecified() && !ip.is_loopback() {
            hosts.push(match ip {
                std::net::IpAddr::V4(v4) => v4.to_string(),
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            });
        }
        Self::Only(hosts.into())
    }

    /// `WEFT_ALLOWED_HOSTS`: `*`, or names separated by commas (`weft.example.com,10.0.0.5`).
    /// `None` when it names none.
    pub fn parse(value: &str) -> Option<Self> {
        if value.trim() == "*" {
            return Some(Self::Any);
        }
        let hosts: Vec<String> = value
            .split(',')
            .map(|host| host.trim().to_ascii_lowercase())
            .filter(|host| !host.is_empty())
            .collect();
        (!hosts.is_empty()).then(|| Self::Only(hosts.into()))
    }

    /// Whether `host` (a name, without its port) is allowed.
    pub fn allows(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Only(hosts) => hosts.iter().any(|allowed| allowed.eq_ignore_ascii_case(host)),
        }
    }
}

/// The host name of an authority (`host`, `host:port`, `[v6]:port`), without the port.
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The host name an `Origin` (`scheme://authority`) names; `None` for `null` or what is
/// not an origin.
fn origin_host(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    (!authority.is_empty()).then(|| host_of(authority))
}

fn refuse(code: &'static str, detail: String) -> Response<Body> {
    ApiError::Forbidden { code, detail }.into_response()
}

impl<B> ValidateRequest<B> for AllowedHosts {
    type ResponseBody = Body;

    fn validate(&mut self, request: &mut Request<B>) -> Result<(), Response<Body>> {
        let headers = request.headers();
        let host = headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .or_else(|| request.uri().authority().map(|authority| authority.as_str()))
            .map(host_of);
        match host {
            Some(host) if self.allows(host) => {}
            Some(host) => {
                return Err(refuse(
                    "host_not_allowed",
                    format!("this server does not answer to the host `{host}`; add it to WEFT_ALLOWED_HOSTS"),
                ))
            }
            None => return Err(refuse("host_not_allowed", "the request names no host".to_owned())),
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if !origin_host(origin).is_some_and(|host| self.allows(host)) {
                return Err(refuse(
                    "origin_not_allowed",
                    format!("requests from `{origin}` are not allowed"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_without_their_ports() {
        assert_eq!(host_of("localhost:3000"), "localhost");
        assert_eq!(host_of("weft.example"), "weft.example");
        assert_eq!(host_of("[::1]:3000"), "[::1]");
        assert_eq!(host_of("[::1]"), "[::1]");
        assert_eq!(origin_host("http://127.0.0.1:3000"), Some("127.0.0.1"));
        assert_eq!(origin_host("https://evil.example"), Some("evil.example"));
        assert_eq!(origin_host("http://[::1]:8080/x"), Some("[::1]"));
        assert_eq!(origin_host("null"), None);
    }

    #[test]
    fn the_default_allows_the_localhost_names_and_a_specific_listen_address() {
        let local = AllowedHosts::for_address(SocketAddr::from(([127, 0, 0, 1], 3000)));
        for host in ["localhost", "LOCALHOST", "127.0.0.1", "[::1]"] {
            assert!(local.allows(host), "{host}");
        }
        assert!(!local.allows("evil.example"));
        assert!(!local.allows("10.0.0.5"));
        let lan = AllowedHosts::for_address(SocketAddr::from(([10, 0, 0, 5], 3000)));
        assert!(lan.allows("10.0.0.5"));
        // Listening everywhere names no address of its own: only localhost, until told.
        let everywhere = AllowedHosts::for_address(SocketAddr::from(([0, 0, 0, 0], 3000)));
        assert!(!everywhere.allows("0.0.0.0"));
        assert!(everywhere.allows("localhost"));
    }

    #[test]
    fn the_setting_names_hosts_or_any() {
        assert_eq!(AllowedHosts::parse("*"), Some(AllowedHosts::Any));
        assert_eq!(AllowedHosts::parse(" , "), None);
        let named = AllowedHosts::parse("Weft.Example, 10.0.0.5").unwrap();
        assert!(named.allows("weft.example"));
        assert!(named.allows("10.0.0.5"));
        assert!(!named.allows("localhost"));
    }
}
