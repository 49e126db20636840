//! The JSON API handlers. Each is an async fn whose arguments arrive in the
//! order its route (in `http::routes`) extracts them; each returns a full
//! response, errors included.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use warp::http::StatusCode;

use super::State;
use super::reply::{self, HttpResponse};
use crate::auth::NewSession;
use crate::auth::sessions::Session;
use crate::error::ChatError;
use crate::model::{NewEvent, RoomName, validate_client_id, validate_text};
use crate::protocol::ServerEvent;
use crate::store::{Appended, DEFAULT_PAGE, HistoryQuery, MAX_PAGE, RoomInfo};

/// Most rooms one search returns.
const MAX_ROOM_RESULTS: usize = 100;

#[derive(Debug, Deserialize)]
pub struct NameBody {
    pub username: String,
}

#[derive(Debug, Deserialize)]
pub struct RoomBody {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct EditBody {
    pub text: String,
}

/// `{"events":[…],"seq","has_more"}`: the log after `after`, as frames.
#[derive(Serialize)]
struct EventsBody {
    events: Vec<ServerEvent>,
    seq: u64,
    has_more: bool,
}

#[derive(Debug, Deserialize)]
pub struct PostMessageBody {
    pub text: String,
    pub client_id: String,
}

/// `{"messages":[...]}`, keeping each message's field order.
#[derive(Serialize)]
struct MessagesBody {
    messages: Vec<crate::model::Message>,
}

fn me_body(session: &Session) -> serde_json::Value {
    serde_json::json!({ "username": session.user.as_str(), "guest": session.guest })
}

#[derive(Debug, Deserialize)]
pub struct CredentialsBody {
    pub username: String,
    pub password: String,
}

/// A response for a new session: the user, and the cookie.
fn session_started(state: &State, status: StatusCode, (raw, session): NewSession) -> HttpResponse {
    state.with_session_cookie(reply::json(status, &me_body(&session)), &raw)
}

/// POST /api/guest {"username"}
pub async fn guest(state: State, current: Option<Arc<Session>>, body: NameBody) -> Result<HttpResponse, warp::Rejection> {
    let started = state.auth.guest_login(&body.username, current.as_ref()).await;
    Ok(reply::or_error(started.map(|s| session_started(&state, StatusCode::OK, s))))
}

/// POST /api/signup {"username","password"}
pub async fn sign_up(state: State, current: Option<Arc<Session>>, body: CredentialsBody) -> Result<HttpResponse, warp::Rejection> {
    let started = state.auth.sign_up(&body.username, body.password, current.as_ref()).await;
    Ok(reply::or_error(started.map(|s| session_started(&state, StatusCode::CREATED, s))))
}

/// POST /api/login {"username","password"}
pub async fn log_in(state: State, from: Option<IpAddr>, current: Option<Arc<Session>>, body: CredentialsBody) -> Result<HttpResponse, warp::Rejection> {
    let started = state.auth.log_in(&body.username, body.password, from, current.as_ref()).await;
    Ok(reply::or_error(started.map(|s| session_started(&state, StatusCode::OK, s))))
}

/// GET /api/me
pub async fn me(session: Arc<Session>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::json(StatusCode::OK, &me_body(&session)))
}

/// POST /api/logout
pub async fn logout(state: State, session: Arc<Session>) -> Result<HttpResponse, warp::Rejection> {
    if let Err(e) = state.auth.log_out(&session).await {
        return Ok(reply::error(&e));
    }
    Ok(reply::clear_session_cookie(reply::no_content(), state.config.secure_cookies))
}

/// GET /api/rooms?q=&limit=
pub async fn list_rooms(state: State, _session: Arc<Session>, query: HashMap<String, String>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let filter = query.get("q").map(String::as_str).unwrap_or("");
        let limit = parse_limit(query.get("limit"), 20, MAX_ROOM_RESULTS)?;
        let rooms = state.hub.list_rooms(filter, limit).await?;
        Ok(reply::json(StatusCode::OK, &rooms))
    }.await))
}

/// POST /api/rooms {"name"}
pub async fn create_room(state: State, session: Arc<Session>, from: Option<IpAddr>, body: RoomBody) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let room = RoomName::parse(&body.name)?;
        let created = state.hub.create_room(&room, &session.user, from).await?;
        tracing::info!(room = %room, by = %session.user, "room created");
        Ok(reply::json(StatusCode::CREATED, &created))
    }.await))
}

/// GET /api/rooms/{room}/messages?after=&before=&limit=
pub async fn get_messages(state: State, raw_room: String, _session: Arc<Session>, query: HashMap<String, String>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let room = RoomName::parse(&raw_room)?;
        let history = HistoryQuery {
            after: parse_id(query.get("after"), "after")?,
            before: parse_id(query.get("before"), "before")?,
            limit: parse_limit(query.get("limit"), DEFAULT_PAGE, MAX_PAGE)?,
        };
        let messages = state.hub.history(&room, history).await?;
        Ok(reply::json(StatusCode::OK, &MessagesBody { messages }))
    }.await))
}

/// POST /api/rooms/{room}/messages {"text","client_id"}
pub async fn post_message(state: State, raw_room: String, session: Arc<Session>, body: PostMessageBody) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let room = RoomName::parse(&raw_room)?;
        let post = NewEvent::Post {
            user: session.user.clone(),
            text: validate_text(&body.text)?,
            client_id: validate_client_id(&body.client_id)?,
        };
        Ok(match store_paced(&state, &session, &room, post).await? {
            Appended::New(stored) => reply::json(StatusCode::CREATED, &ServerEvent::from_stored(stored).without_type()),
            Appended::Duplicate(m) => reply::json(StatusCode::OK, &m),
        })
    }.await))
}

/// PATCH /api/rooms/{room}/messages/{id} {"text"}
pub async fn edit_message(state: State, raw_room: String, id: u64, session: Arc<Session>, body: EditBody) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let room = RoomName::parse(&raw_room)?;
        let edit = NewEvent::Edit { user: session.user.clone(), id, text: validate_text(&body.text)? };
        changed(store_paced(&state, &session, &room, edit).await?)
    }.await))
}

/// DELETE /api/rooms/{room}/messages/{id}
pub async fn delete_message(state: State, raw_room: String, id: u64, session: Arc<Session>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let room = RoomName::parse(&raw_room)?;
        let delete = NewEvent::Delete { user: session.user.clone(), id };
        changed(store_paced(&state, &session, &room, delete).await?)
    }.await))
}

/// GET /api/rooms/{room}/events?after=&limit=
pub async fn get_events(state: State, raw_room: String, _session: Arc<Session>, query: HashMap<String, String>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let room = RoomName::parse(&raw_room)?;
        let after = parse_id(query.get("after"), "after")?.unwrap_or(0);
        let limit = parse_limit(query.get("limit"), DEFAULT_PAGE, MAX_PAGE)?;
        let head = state.hub.last_seq(&room).await?;
        let mut events = state.hub.events(&room, after, limit + 1).await?;
        let has_more = events.len() > limit;
        events.truncate(limit);
        let seq = events.last().map_or(head.min(after), |e| e.seq);
        let events: Vec<ServerEvent> = events.into_iter().map(ServerEvent::from_stored).collect();
        Ok(reply::json(StatusCode::OK, &EventsBody { events, seq, has_more }))
    }.await))
}

/// Stores an event within the session's send rate (HTTP posts, edits and
/// deletes share one bucket per session).
async fn store_paced(state: &State, session: &Session, room: &RoomName, event: NewEvent) -> Result<Appended, ChatError> {
    let within_rate = state.config.send_rate.is_none_or(|rate| session.allow_post(rate));
    state.hub.send_paced(room, event, within_rate).await
}

/// 200 with the `edited`/`deleted` event, as the room's sockets got it.
fn changed(appended: Appended) -> Result<HttpResponse, ChatError> {
    match appended {
        Appended::New(stored) => Ok(reply::json(StatusCode::OK, &ServerEvent::from_stored(stored))),
        Appended::Duplicate(_) => Err(ChatError::Internal("an edit was answered as a repeated post".into())),
    }
}

/// GET /api/subscriptions
pub async fn subscriptions(state: State, session: Arc<Session>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let rooms: Vec<RoomInfo> = state.auth.subscriptions(&session).await?.into_iter().map(|name| RoomInfo { name }).collect();
        Ok(reply::json(StatusCode::OK, &rooms))
    }.await))
}

/// PUT /api/subscriptions/{room}
pub async fn subscribe(state: State, raw_room: String, session: Arc<Session>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let room = RoomName::parse(&raw_room)?;
        let info = state.hub.existing_room(&room).await?;
        state.auth.subscribe(&session, &room).await?;
        Ok(reply::json(StatusCode::OK, &info))
    }.await))
}

/// DELETE /api/subscriptions/{room}
pub async fn unsubscribe(state: State, raw_room: String, session: Arc<Session>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let room = RoomName::parse(&raw_room)?;
        state.auth.unsubscribe(&session, &room).await?;
        Ok(reply::no_content())
    }.await))
}

fn parse_id(raw: Option<&String>, name: &str) -> Result<Option<u64>, ChatError> {
    raw.filter(|r| !r.is_empty())
        .map(|r| r.parse::<u64>().map_err(|_| ChatError::BadRequest(format!("'{name}' must be a message id (a whole number)"))))
        .transpose()
}

fn parse_limit(raw: Option<&String>, default: usize, max: usize) -> Result<usize, ChatError> {
    match raw.filter(|r| !r.is_empty()) {
        None => Ok(default),
        Some(r) => match r.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n.min(max)),
            _ => Err(ChatError::BadRequest(format!("'limit' must be a whole number from 1 to {max}"))),
        },
    }
}
