//! Filters that every route composes: shared state, the caller's session,
//! the Origin check and JSON bodies. Failures become [`Problem`] rejections,
//! which `http::recover` turns into JSON errors.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use warp::{Filter, Rejection};

use super::State;
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

/// The caller's live session, if any (activity is noted).
pub fn optional_session(state: State) -> impl Filter<Extract = (Option<Arc<Session>>,), Error = Infallible> + Clone {
    warp::cookie::optional::<String>(SESSION_COOKIE)
        .map(move |raw: Option<String>| raw.and_then(|raw| state.auth.session(&raw)))
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

/// Requires `Content-Type: application/json`. Every state-changing request
/// must say it: a cross-site HTML form cannot, so this (with the Origin
/// check and SameSite cookies) shuts out cross-site request forgery.
pub fn json_request() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and_then(|ct: Option<String>| async move {
            let is_json = ct.is_some_and(|ct| {
                ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
            if is_json { Ok(()) } else { Err(reject(ChatError::UnsupportedMediaType)) }
        })
        .untuple_one()
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
    warp::addr::remote()
        .and(warp::header::optional::<String>("x-forwarded-for"))
        .map(move |peer: Option<SocketAddr>, forwarded: Option<String>| {
            let from_proxy = state.config.trust_proxy.then(|| last_forwarded(forwarded.as_deref())).flatten();
            from_proxy.or(peer.map(|p| p.ip()))
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
