//! Filters that every route composes: shared state, the caller's session,
//! the Origin check and JSON bodies. Failures become [`Problem`] rejections,
//! which `http::recover` turns into JSON errors.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use warp::http::HeaderMap;
use warp::http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use warp::{Filter, Rejection};

use super::State;
use super::listener::PeerAddr;
use super::reply::SESSION_COOKIE;
use crate::auth::sessions::Session;
use crate::error::ChatError;

/// Largest JSON body accepted by the API.
pub const MAX_BODY_BYTES: u64 = 16 * 1024;

/// A request refused before it reached its handler.
#[derive(Debug)]
pub struct Problem(pub ChatError);

impl warp::reject::Reject for Problem {}

pub fn reject(err: ChatError) -> Rejection {
    warp::reject::custom(Problem(err))
}

pub fn with_state(state: State) -> impl Filter<Extract = (State,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// The caller's live session, if any (activity is noted). On a miss in
/// this process the sessions store is asked, so this may wait; a store
/// that fails is a 500, not "logged out".
pub fn optional_session(state: State) -> impl Filter<Extract = (Option<Arc<Session>>,), Error = Rejection> + Clone {
    warp::cookie::optional::<String>(SESSION_COOKIE).and_then(move |raw: Option<String>| {
        let auth = state.auth.clone();
        async move {
            match raw {
                Some(raw) => auth.session(&raw).await.map_err(reject),
                None => Ok(None),
            }
        }
    })
}

/// The caller's live session, or a 401.
pub fn session(state: State) -> impl Filter<Extract = (Arc<Session>,), Error = Rejection> + Clone {
    optional_session(state).and_then(|session: Option<Arc<Session>>| async move {
        session.ok_or_else(|| reject(ChatError::Unauthorized))
    })
}

/// Refuses requests whose `Origin` is neither this server nor an allowed
/// origin. Requests without `Origin` (curl, scripts) pass: browsers always
/// send it on the requests that matter (POST, PUT, DELETE, WebSocket).
pub fn allowed_origin(state: State) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("origin")
        .and(warp::header::optional::<String>("host"))
        .and_then(move |origin: Option<String>, host: Option<String>| {
            let ok = origin.is_none_or(|o| state.origin_allowed(&o, host.as_deref()));
            async move { if ok { Ok(()) } else { Err(reject(ChatError::ForbiddenOrigin)) } }
        })
        .untuple_one()
}

/// Refuses every request (pages included) whose `Host` this server does
/// not answer to (see [`State::host_allowed`]).
pub fn allowed_host(state: State) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("host")
        .and_then(move |host: Option<String>| {
            let ok = state.host_allowed(host.as_deref());
            async move { if ok { Ok(()) } else { Err(reject(ChatError::ForbiddenHost(host.unwrap_or_default()))) } }
        })
        .untuple_one()
}

/// Requires `Content-Type: application/json`. Every state-changing request
/// must say it: a cross-site HTML form cannot, so this (with the Origin
/// check and SameSite cookies) shuts out cross-site request forgery.
pub fn json_request() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::headers_cloned()
        .and_then(|headers: HeaderMap| async move {
            if is_json(&headers) { Ok(()) } else { Err(reject(ChatError::UnsupportedMediaType)) }
        })
        .untuple_one()
}

/// Like [`json_request`], for routes that read no body: a request without
/// one passes too, with no Content-Type (what `curl -X POST` sends). A
/// declared non-JSON type (what an HTML form sends, even empty) or a body
/// that is not JSON is still refused.
pub fn json_or_empty_request() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::headers_cloned()
        .and_then(|headers: HeaderMap| async move {
            if is_json(&headers) || is_bodyless(&headers) { Ok(()) } else { Err(reject(ChatError::UnsupportedMediaType)) }
        })
        .untuple_one()
}

/// Whether the request says `Content-Type: application/json`.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|ct| ct.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether the request has no body and claims no type: no Content-Type,
/// no Transfer-Encoding, and no Content-Length or `Content-Length: 0`.
fn is_bodyless(headers: &HeaderMap) -> bool {
    let no_length = headers.get(CONTENT_LENGTH).is_none_or(|len| len.as_bytes() == b"0");
    no_length && !headers.contains_key(CONTENT_TYPE) && !headers.contains_key(TRANSFER_ENCODING)
}

/// A JSON body of type `T`: `Content-Type: application/json`, at most
/// [`MAX_BODY_BYTES`], well-formed.
pub fn json_body<T: DeserializeOwned + Send>() -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    json_request()
        .and(warp::body::content_length_limit(MAX_BODY_BYTES))
        .and(warp::body::bytes())
        .and_then(|body: bytes::Bytes| async move {
            serde_json::from_slice::<T>(&body)
                .map_err(|e| reject(ChatError::InvalidJson(format!("could not read the request body: {e}"))))
        })
}

/// The client's address: the TCP peer, or — with `--trust-proxy`, when a
/// reverse proxy in front of us appends the real client to
/// `X-Forwarded-For` — the last address in that header (the one our proxy
/// wrote; earlier ones came from the client and prove nothing).
pub fn client_ip(state: State) -> impl Filter<Extract = (Option<IpAddr>,), Error = Rejection> + Clone {
    warp::ext::optional::<PeerAddr>()
        .and(warp::header::optional::<String>("x-forwarded-for"))
        .map(move |peer: Option<PeerAddr>, forwarded: Option<String>| {
            let from_proxy = state.config.trust_proxy.then(|| last_forwarded(forwarded.as_deref())).flatten();
            from_proxy.or(peer.map(|PeerAddr(p)| p.ip()))
        })
}

fn last_forwarded(header: Option<&str>) -> Option<IpAddr> {
    header?.rsplit(',').next()?.trim().parse().ok()
}

/// Whether `origin` is `scheme://host` of the request itself.
pub fn is_same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    origin == format!("http://{host}") || origin == format!("https://{host}")
}

/// `host` without its port (`[::1]:3000` → `[::1]`, `Chat:80` → `chat`).
fn host_name(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name.to_string()
        }
        _ => host,
    }
}

/// Whether `host` names this machine's loopback interface: `localhost`,
/// a `*.localhost` name (RFC 6761: never resolved by DNS), an address in
/// 127.0.0.0/8 or `[::1]`. A DNS-rebinding page cannot use any of them.
pub fn is_loopback_host(host: &str) -> bool {
    let name = host_name(host);
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name.ends_with(".localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether the origin `scheme://host[:port]` has this `Host` (the port may
/// be left out where it is the scheme's default).
pub fn origin_has_host(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    let host = host.trim().to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    authority == host || format!("{authority}{default_port}") == host || authority == format!("{host}{default_port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "LOCALHOST:3000", "app.localhost:80", "127.0.0.1", "127.8.9.1:3000", "[::1]:3000", "[::1]"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["evil.example", "localhost.evil.example:3000", "10.0.0.1", "[::2]:3000", "", "127.0.0.1.nip.io"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn origins_and_hosts() {
        assert!(origin_has_host("https://chat.example.com", "chat.example.com"));
        assert!(origin_has_host("https://chat.example.com", "Chat.Example.com:443"));
        assert!(origin_has_host("http://chat.example.com:8080", "chat.example.com:8080"));
        assert!(!origin_has_host("http://chat.example.com:8080", "chat.example.com"));
        assert!(!origin_has_host("https://chat.example.com", "evil.example"));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (name.parse().unwrap(), value.parse().unwrap())).collect()
    }

    #[test]
    fn a_request_without_a_body_or_type_is_bodyless() {
        assert!(is_bodyless(&headers(&[])));
        assert!(is_bodyless(&headers(&[("content-length", "0")])));
        assert!(!is_bodyless(&headers(&[("content-length", "5")])));
        assert!(!is_bodyless(&headers(&[("transfer-encoding", "chunked")])));
        // An empty HTML form still says what it is.
        assert!(!is_bodyless(&headers(&[("content-type", "application/x-www-form-urlencoded"), ("content-length", "0")])));
    }

    #[test]
    fn json_is_recognised_with_parameters_and_any_case() {
        assert!(is_json(&headers(&[("content-type", "Application/JSON; charset=utf-8")])));
        assert!(!is_json(&headers(&[("content-type", "text/plain")])));
        assert!(!is_json(&headers(&[])));
    }
}
