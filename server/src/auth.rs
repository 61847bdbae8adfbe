//! Who may call the API: the `Host` and `Origin` checks every route gets (a page in a browser
//! cannot reach the server through DNS rebinding or a cross-site request), and the bearer
//! token `/v1` needs. Both run as middleware, before any handler reads the request body.

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Loopback names always accepted in `Host` (with the bound port, or any port before the
/// server is bound).
const LOOPBACK_NAMES: &[&str] = &["127.0.0.1", "localhost", "[::1]"];

/// Splits `host[:port]` (IPv6 in brackets).
fn split_host(value: &str) -> (&str, Option<&str>) {
    if value.starts_with('[') {
        return match value.find(']') {
            Some(end) => {
                let port = value[end + 1..].strip_prefix(':');
                (&value[..=end], port)
            }
            None => (value, None),
        };
    }
    match value.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (value, None),
    }
}

/// Whether `value` (a `Host` header, or the authority of an `Origin`) names this server.
fn is_allowed_host(state: &AppState, value: &str) -> bool {
    let value = value.trim().to_ascii_lowercase();
    let (host, port) = split_host(&value);
    let bound = state.bound.get();
    let port_ok = |p: Option<&str>| match (p, bound) {
        (None, _) | (_, None) => true,
        (Some(p), Some(b)) => p.parse::<u16>().is_ok_and(|p| p == b.port()),
    };
    let bound_ip = bound.map(|b| match b.ip() {
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    });
    if (LOOPBACK_NAMES.contains(&host) || bound_ip.as_deref() == Some(host)) && port_ok(port) {
        return true;
    }
    state.settings.allowed_hosts.iter().any(|a| {
        let a = a.trim().to_ascii_lowercase();
        let (ah, ap) = split_host(&a);
        ah == host && (ap.is_none() || ap == port)
    })
}

/// Every route: the `Host` must name this server, and a browser's cross-site request is
/// refused (`Origin` of another site, or `Sec-Fetch-Site: cross-site`).
pub async fn check_host_and_origin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if let Some(host) = headers.get(HOST) {
        let host = String::from_utf8_lossy(host.as_bytes()).into_owned();
        if !is_allowed_host(&state, &host) {
            return ApiError::HostNotAllowed(host).into_response();
        }
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        let authority = origin.split_once("://").map(|(_, a)| a).unwrap_or("");
        if origin == "null" || !is_allowed_host(&state, authority) {
            return ApiError::CrossOrigin(origin).into_response();
        }
    }
    if headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"cross-site") {
        return ApiError::CrossOrigin("Sec-Fetch-Site: cross-site".into()).into_response();
    }
    next.run(request).await
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case), as sent.
/// Shared by the API token check and the admin API's.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&[u8]> {
    headers.get(AUTHORIZATION).map(|v| v.as_bytes()).and_then(|v| {
        let (scheme, rest) = v.split_at_checked(7)?;
        scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
    })
}

/// `/v1`: `Authorization: Bearer <token>` with the API token, checked before the body is read.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match bearer_token(request.headers()) {
        Some(token) if state.api_token.matches(token) => next.run(request).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::split_host;

    #[test]
    fn hosts_split_with_and_without_ports() {
        assert_eq!(split_host("127.0.0.1:8080"), ("127.0.0.1", Some("8080")));
        assert_eq!(split_host("localhost"), ("localhost", None));
        assert_eq!(split_host("[::1]:9"), ("[::1]", Some("9")));
        assert_eq!(split_host("[::1]"), ("[::1]", None));
        assert_eq!(split_host("evil.example"), ("evil.example", None));
    }
}
