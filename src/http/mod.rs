//! HTTP: the only module that knows warp. Routes, pages, the JSON API and
//! the WebSocket upgrade; every refusal becomes a JSON error here.
//!
//! Routes (one function each below; handlers in `api`, `ws`):
//! ```text
//! GET  /                       landing page (→ /home with a live session)
//! GET  /home                   chat page (→ / without a session)
//! GET  /{file}                 embedded front-end files
//! POST /api/guest              {"username"} → session cookie
//! POST /api/signup             {"username","password"} → session cookie
//! POST /api/login              {"username","password"} → session cookie
//! GET  /api/me
//! POST /api/logout             no body, or a JSON one
//! GET  /api/rooms?q=&limit=
//! POST /api/rooms              {"name","private"}
//! GET  /api/rooms/{room}/members
//! PUT  /api/rooms/{room}/members/{user}
//! DELETE /api/rooms/{room}/members/{user}
//! GET  /api/dms
//! POST /api/dms                {"user"}
//! GET  /api/rooms/{room}/messages?after=&before=&limit=
//! POST /api/rooms/{room}/messages {"text","client_id","thread"?}
//! PATCH /api/rooms/{room}/messages/{id} {"text"}
//! DELETE /api/rooms/{room}/messages/{id}
//! PUT  /api/rooms/{room}/messages/{id}/reactions {"emoji"}
//! GET  /api/rooms/{room}/threads/{id}?after=&limit=
//! GET  /api/rooms/{room}/events?after=&limit=
//! PUT  /api/rooms/{room}/read {"id"}
//! GET  /api/subscriptions
//! PUT  /api/subscriptions/{room}
//! DELETE /api/subscriptions/{room}
//! GET  /api/search?q=&room=&limit=&before=   message search (docs/PROTOCOL.md §15)
//! GET  /ws                     WebSocket
//! GET  /healthz                store and fan-out state (200, or 503: no sends)
//! GET  /metrics                Prometheus text (`--metrics on`; with
//!                              `--metrics ADDR` on a listener of its own)
//! ```
//!
//! `/healthz` and `/metrics` are answered whatever the Host: a load
//! balancer or a scraper names the node by its address.

mod api;
mod assets;
mod guard;
mod listener;
mod operations;
mod reply;
mod ws;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use warp::filters::BoxedFilter;
use warp::filters::path::FullPath;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use self::guard::{Problem, allowed_origin, json_body, json_or_empty_request, json_request, optional_session, session, with_state};
pub use self::reply::{CONTENT_SECURITY_POLICY, SESSION_COOKIE};
use self::reply::HttpResponse;
use crate::auth::Auth;
use crate::config::{Config, ConnectionLimits, MetricsEndpoint, normalize_origin};
use crate::error::ChatError;
use crate::chat::Chat;
use crate::health::Health;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct State {
    pub chat: Chat,
    pub auth: Arc<Auth>,
    pub config: Arc<Config>,
    /// Becomes `true` when the server starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Every open WebSocket, so shutdown can wait for them to close.
    pub connections: TaskTracker,
    /// What `/healthz` answers.
    pub health: Arc<Health>,
}

impl State {
    /// One of `--public-url` or `--allow-origin`; without `--public-url`,
    /// also the request's own origin (its Host having passed
    /// [`State::host_allowed`]).
    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let own = if self.config.public_urls.is_empty() {
            guard::is_same_origin(origin, host)
        } else {
            normalize_origin(origin).is_some_and(|o| self.config.public_urls.contains(&o))
                || (self.config.addr.ip().is_loopback() && guard::is_same_origin(origin, host) && host.is_some_and(guard::is_loopback_host))
        };
        own || self.is_extra_origin(origin)
    }

    /// Whether this server answers to the request's `Host`: a host of
    /// `--public-url`, or — on a loopback bind — a loopback name. With
    /// neither (a non-loopback bind without `--public-url`) any Host.
    /// This is what stops a DNS-rebinding page from driving a server that
    /// listens on 127.0.0.1.
    fn host_allowed(&self, host: Option<&str>) -> bool {
        let loopback_bind = self.config.addr.ip().is_loopback();
        if !loopback_bind && self.config.public_urls.is_empty() {
            return true;
        }
        let Some(host) = host else { return false };
        let public = self.config.public_urls.iter().any(|url| guard::origin_has_host(url, host));
        public || (loopback_bind && guard::is_loopback_host(host))
    }

    fn is_extra_origin(&self, origin: &str) -> bool {
        normalize_origin(origin).is_some_and(|o| self.config.allowed_origins.contains(&o))
    }

    fn with_session_cookie(&self, response: HttpResponse, raw_id: &str) -> HttpResponse {
        let max_age = self.config.session_limits.absolute.as_secs();
        reply::set_session_cookie(response, raw_id, max_age, self.config.secure_cookies)
    }
}

/// Serves every route on `listener` until `shutdown` resolves; then stops
/// accepting and lets open HTTP requests finish (WebSockets are closed by
/// their connections, which watch `State::shutdown`).
pub async fn serve(state: State, listener: tokio::net::TcpListener, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
    let limits = state.config.limits;
    listener::serve(routes(state), limits, listener, shutdown).await;
}

/// Serves only `GET /metrics` on `listener` (`--metrics ADDR`) until
/// `shutdown` resolves; anything else is a 404.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let routes = warp::path::full()
        .and(metrics().recover(recover).unify())
        .map(|path: FullPath, response| allow_header(path.as_str(), response))
        .with(warp::reply::with::headers(reply::security_headers()))
        .map(Reply::into_response)
        .boxed();
    listener::serve(routes, limits, listener, shutdown).await;
}

/// Every route, with errors turned into JSON and security headers added.
pub fn routes(state: State) -> BoxedFilter<(HttpResponse,)> {
    let api = guest(state.clone())
        .or(sign_up(state.clone()))
        .unify()
        .or(log_in(state.clone()))
        .unify()
        .or(me(state.clone()))
        .unify()
        .or(logout(state.clone()))
        .unify()
        .or(list_rooms(state.clone()))
        .unify()
        .or(create_room(state.clone()))
        .unify()
        .or(get_messages(state.clone()))
        .unify()
        .or(post_message(state.clone()))
        .unify()
        .or(edit_message(state.clone()))
        .unify()
        .or(delete_message(state.clone()))
        .unify()
        .or(react(state.clone()))
        .unify()
        .or(get_thread(state.clone()))
        .unify()
        .or(get_events(state.clone()))
        .unify()
        .or(mark_read(state.clone()))
        .unify()
        .or(subscriptions(state.clone()))
        .unify()
        .or(subscribe(state.clone()))
        .unify()
        .or(unsubscribe(state.clone()))
        .unify()
        .or(members(state.clone()))
        .unify()
        .or(set_member(state.clone()))
        .unify()
        .or(open_dm(state.clone()))
        .unify()
        .or(list_dms(state.clone()))
        .unify()
        .or(search(state.clone()))
        .unify()
        .boxed();
    let routes = websocket(state.clone())
        .or(api)
        .unify()
        .or(pages(state.clone()))
        .unify()
        .or(cors_preflight(state.clone()))
        .unify();
    let all = operations(&state)
        .or(guard::allowed_host(state.clone()).and(routes))
        .unify()
        .recover(recover)
        .unify();
    let cors_state = state;
    warp::header::optional::<String>("origin")
        .and(warp::path::full())
        .and(all)
        .map(move |origin: Option<String>, path: FullPath, response: HttpResponse| {
            cors_headers(&cors_state, origin, allow_header(path.as_str(), response))
        })
        .with(warp::reply::with::headers(reply::security_headers()))
        .map(Reply::into_response)
        .map(|response: HttpResponse| {
            crate::telemetry::http_response(response.status().as_u16());
            response
        })
        .boxed()
}

/// GET /healthz, and GET /metrics with `--metrics on`: outside the Host
/// check (see the module doc).
fn operations(state: &State) -> BoxedFilter<(HttpResponse,)> {
    let healthz = healthz(state.clone());
    match state.config.metrics {
        MetricsEndpoint::Main => healthz.or(metrics()).unify().boxed(),
        MetricsEndpoint::Off | MetricsEndpoint::Separate(_) => healthz,
    }
}

/// GET /healthz
fn healthz(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("healthz").and(warp::get()).and(with_state(state)).then(operations::healthz).boxed()
}

/// GET /metrics
fn metrics() -> BoxedFilter<(HttpResponse,)> {
    warp::path!("metrics").and(warp::get()).map(operations::metrics).boxed()
}

/// GET /ws
fn websocket(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("ws")
        .and(warp::get())
        .and(allowed_origin(state.clone()))
        .and(with_state(state.clone()))
        .and(optional_session(state))
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<warp::hyper::upgrade::OnUpgrade>())
        .and_then(ws::upgrade)
        .boxed()
}

/// POST /api/guest {"username"}
fn guest(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "guest")
        .and(warp::post())
        .and(allowed_origin(state.clone()))
        .and(with_state(state.clone()))
        .and(optional_session(state))
        .and(json_body())
        .and_then(api::guest)
        .boxed()
}

/// POST /api/signup {"username","password"}
fn sign_up(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "signup")
        .and(warp::post())
        .and(allowed_origin(state.clone()))
        .and(with_state(state.clone()))
        .and(optional_session(state))
        .and(json_body())
        .and_then(api::sign_up)
        .boxed()
}

/// POST /api/login {"username","password"}
fn log_in(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "login")
        .and(warp::post())
        .and(allowed_origin(state.clone()))
        .and(with_state(state.clone()))
        .and(guard::client_ip(state.clone()))
        .and(optional_session(state))
        .and(json_body())
        .and_then(api::log_in)
        .boxed()
}

/// GET /api/subscriptions
fn subscriptions(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "subscriptions")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(session(state))
        .and_then(api::subscriptions)
        .boxed()
}

/// PUT /api/subscriptions/{room}
fn subscribe(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "subscriptions" / String)
        .and(warp::put())
        .and(allowed_origin(state.clone()))
        .and(json_request())
        .and(with_state(state.clone()))
        .and(session(state))
        .and_then(|room, state, session| api::subscribe(state, room, session))
        .boxed()
}

/// DELETE /api/subscriptions/{room}
fn unsubscribe(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "subscriptions" / String)
        .and(warp::delete())
        .and(allowed_origin(state.clone()))
        .and(json_request())
        .and(with_state(state.clone()))
        .and(session(state))
        .and_then(|room, state, session| api::unsubscribe(state, room, session))
        .boxed()
}

/// GET /api/search?q=&room=&limit=&before=
fn search(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "search")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(session(state))
        .and(warp::query::<HashMap<String, String>>())
        .and_then(api::search)
        .boxed()
}

/// GET /api/me
fn me(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "me").and(warp::get()).and(session(state)).and_then(api::me).boxed()
}

/// POST /api/logout (a JSON body, or none at all)
fn logout(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "logout")
        .and(warp::post())
        .and(allowed_origin(state.clone()))
        .and(json_or_empty_request())
        .and(with_state(state.clone()))
        .and(session(state))
        .and_then(api::logout)
        .boxed()
}

/// GET /api/rooms?q=&limit=
fn list_rooms(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "rooms")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(session(state))
        .and(warp::query::<HashMap<String, String>>())
        .and_then(api::list_rooms)
        .boxed()
}

/// POST /api/rooms {"name"}
fn create_room(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "rooms")
        .and(warp::post())
        .and(allowed_origin(state.clone()))
        .and(with_state(state.clone()))
        .and(session(state.clone()))
        .and(guard::client_ip(state))
        .and(json_body())
        .and_then(api::create_room)
        .boxed()
}

/// GET /api/rooms/{room}/messages?after=&before=&limit=
fn get_messages(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "rooms" / String / "messages")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(session(state))
        .and(warp::query::<HashMap<String, String>>())
        .and_then(|room, state, session, query| api::get_messages(state, room, session, query))
        .boxed()
}

/// POST /api/rooms/{room}/messages {"text","client_id"}
fn post_message(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "rooms" / String / "messages")
        .and(warp::post())
        .and(allowed_origin(state.clone()))
        .and(with_state(state.clone()))
        .and(session(state))
        .and(json_body())
        .and_then(|room, state, session, body| api::post_message(state, room, session, body))
        .boxed()
}

/// PATCH /api/rooms/{room}/messages/{id} {"text"}
fn edit_message(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "rooms" / String / "messages" / u64)
        .and(warp::patch())
        .and(allowed_origin(state.clone()))
        .and(with_state(state.clone()))
        .and(session(state))
        .and(json_body())
        .and_then(|room, id, state, session, body| api::edit_message(state, room, id, session, body))
        .boxed()
}

/// DELETE /api/rooms/{room}/messages/{id}
fn delete_message(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "rooms" / String / "messages" / u64)
        .and(warp::delete())
        .and(allowed_origin(state.clone()))
        .and(guard::json_or_empty_request())
        .and(with_state(state.clone()))
        .and(session(state))
        .and_then(|room, id, state, session| api::delete_message(state, room, id, session))
        .boxed()
}

/// PUT /api/rooms/{room}/messages/{id}/reactions {"emoji"}
fn react(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "rooms" / String / "messages" / u64 / "reactions")
        .and(warp::put())
        .and(allowed_origin(state.clone()))
        .and(with_state(state.clone()))
        .and(session(state))
        .and(json_body())
        .and_then(|room, id, state, session, body| api::react(state, room, id, session, body))
        .boxed()
}

/// GET /api/rooms/{room}/threads/{id}?after=&limit=
fn get_thread(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "rooms" / String / "threads" / u64)
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(session(state))
        .and(warp::query::<HashMap<String, String>>())
        .and_then(|room, id, state, session, query| api::get_thread(state, room, id, session, query))
        .boxed()
}

/// PUT /api/rooms/{room}/read {"id"}
fn mark_read(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "rooms" / String / "read")
        .and(warp::put())
        .and(allowed_origin(state.clone()))
        .and(with_state(state.clone()))
        .and(session(state))
        .and(json_body())
        .and_then(|room, state, session, body| api::mark_read(state, room, session, body))
        .boxed()
}

/// GET /api/rooms/{room}/events?after=&limit=
fn get_events(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "rooms" / String / "events")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(session(state))
        .and(warp::query::<HashMap<String, String>>())
        .and_then(|room, state, session, query| api::get_events(state, room, session, query))
        .boxed()
}

/// GET /api/rooms/{room}/members
fn members(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "rooms" / String / "members")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(session(state))
        .and_then(|room, state, session| api::members(state, room, session))
        .boxed()
}

/// PUT (add) or DELETE (remove) /api/rooms/{room}/members/{user}
fn set_member(state: State) -> BoxedFilter<(HttpResponse,)> {
    let added = warp::put().map(|| true).or(warp::delete().map(|| false)).unify();
    warp::path!("api" / "rooms" / String / "members" / String)
        .and(added)
        .and(allowed_origin(state.clone()))
        .and(guard::json_or_empty_request())
        .and(with_state(state.clone()))
        .and(session(state))
        .and_then(|room, user, added, state, session| api::set_member(state, room, user, session, added))
        .boxed()
}

/// POST /api/dms {"user"}
fn open_dm(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "dms")
        .and(warp::post())
        .and(allowed_origin(state.clone()))
        .and(with_state(state.clone()))
        .and(session(state.clone()))
        .and(guard::client_ip(state))
        .and(json_body())
        .and_then(api::open_dm)
        .boxed()
}

/// GET /api/dms
fn list_dms(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path!("api" / "dms").and(warp::get()).and(with_state(state.clone())).and(session(state)).and_then(api::list_dms).boxed()
}

/// GET / , GET /home and the embedded files.
fn pages(state: State) -> BoxedFilter<(HttpResponse,)> {
    let landing = warp::path::end()
        .and(warp::get())
        .and(optional_session(state.clone()))
        .map(|session: Option<_>| match session {
            Some(_) => reply::redirect("/home"),
            None => assets::file("index.html").unwrap_or_else(|| reply::error(&ChatError::NotFound)),
        });
    let home = warp::path!("home")
        .and(warp::get())
        .and(optional_session(state))
        .map(|session: Option<_>| match session {
            Some(_) => assets::file("home.html").unwrap_or_else(|| reply::error(&ChatError::NotFound)),
            None => reply::redirect("/"),
        });
    let files = warp::path::param::<String>()
        .and(warp::path::end())
        .and(warp::get())
        .and_then(|name: String| async move { assets::file(&name).ok_or_else(warp::reject::not_found) });
    landing.or(home).unify().or(files).unify().boxed()
}

/// OPTIONS /api/... from an allowed cross-origin page (CORS preflight).
fn cors_preflight(state: State) -> BoxedFilter<(HttpResponse,)> {
    warp::path("api")
        .and(warp::method())
        .and_then(|method: warp::http::Method| async move {
            // Not `warp::options()`: its MethodNotAllowed would outrank the
            // other routes' NotFound and turn every unknown /api path into 405.
            if method == warp::http::Method::OPTIONS { Ok(()) } else { Err(warp::reject::not_found()) }
        })
        .untuple_one()
        .and(warp::header::optional::<String>("origin"))
        .map(move |origin: Option<String>| {
            let allowed = origin.as_deref().is_some_and(|o| state.is_extra_origin(o));
            if !allowed {
                return reply::error(&ChatError::ForbiddenOrigin);
            }
            let mut response = reply::no_content();
            let h = response.headers_mut();
            h.insert("access-control-allow-methods", "GET, POST, PUT, PATCH, DELETE".parse().expect("valid"));
            h.insert("access-control-allow-headers", "content-type".parse().expect("valid"));
            h.insert("access-control-max-age", "600".parse().expect("valid"));
            response
        })
        .boxed()
}

/// Lets allowed cross-origin pages read responses (with credentials).
fn cors_headers(state: &State, origin: Option<String>, mut response: HttpResponse) -> HttpResponse {
    if let Some(origin) = origin.filter(|o| state.is_extra_origin(o))
        && let Ok(value) = origin.parse()
    {
        let h = response.headers_mut();
        h.insert("access-control-allow-origin", value);
        h.insert("access-control-allow-credentials", "true".parse().expect("valid"));
        h.insert("vary", "Origin".parse().expect("valid"));
    }
    response
}

/// Adds `Allow` to a 405: the methods the request's path takes (RFC 9110
/// §15.5.6), from the route table at the top of this file.
fn allow_header(path: &str, mut response: HttpResponse) -> HttpResponse {
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(methods) = allowed_methods(path)
    {
        response.headers_mut().insert("allow", warp::http::HeaderValue::from_static(methods));
    }
    response
}

/// The methods the routes take on `path`; `None` where no route matches it.
fn allowed_methods(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    Some(match segments.as_slice() {
        ["api", "guest" | "signup" | "login" | "logout"] => "POST",
        ["api", "me" | "subscriptions" | "search"] | ["api", "rooms", _, "events" | "members"] | ["api", "rooms", _, "threads", _] => "GET",
        ["api", "dms"] => "GET, POST",
        ["api", "rooms", _, "members", _] => "PUT, DELETE",
        ["api", "rooms"] | ["api", "rooms", _, "messages"] => "GET, POST",
        ["api", "rooms", _, "messages", _] => "PATCH, DELETE",
        ["api", "rooms", _, "read"] | ["api", "rooms", _, "messages", _, "reactions"] => "PUT",
        ["api", "subscriptions", _] => "PUT, DELETE",
        // `/`, `/home`, `/ws`, `/healthz`, `/metrics` and the front-end files.
        [_] => "GET",
        _ => return None,
    })
}

/// Turns every rejection into a JSON error with a fitting status.
async fn recover(rejection: Rejection) -> Result<HttpResponse, Infallible> {
    let err = if let Some(Problem(err)) = rejection.find::<Problem>() {
        return Ok(reply::error(err));
    } else if rejection.is_not_found() {
        ChatError::NotFound
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ChatError::PayloadTooLarge
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        ChatError::BadRequest("a Content-Length header is required".into())
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        // `allow_header` adds the path's methods.
        return Ok(reply::json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": {"code": "method_not_allowed", "message": "that method is not allowed here"}}),
        ));
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        ChatError::BadRequest("the query string could not be read".into())
    } else if rejection.find::<warp::reject::MissingCookie>().is_some()
        || rejection.find::<warp::reject::InvalidHeader>().is_some()
    {
        ChatError::BadRequest("a request header could not be read".into())
    } else {
        tracing::debug!(?rejection, "unhandled rejection");
        ChatError::BadRequest("the request could not be handled".into())
    };
    Ok(reply::error(&err))
}
