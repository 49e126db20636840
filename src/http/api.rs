//! The JSON API handlers. Each is an async fn whose arguments arrive in the
//! order its route (in `http::routes`) extracts them; each returns a full
//! response, errors included.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use warp::http::StatusCode;

use super::State;
use super::reply::{self, HttpResponse};
use crate::auth::sessions::Session;
use crate::error::ChatError;
use crate::model::{NewMessage, RoomName, validate_client_id, validate_text};
use crate::store::{Appended, DEFAULT_PAGE, HistoryQuery, MAX_PAGE};

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

/// POST /api/guest {"username"}
pub async fn guest(state: State, current: Option<Arc<Session>>, body: NameBody) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(state.auth.guest_login(&body.username, current.as_ref()).map(|(raw, session)| {
        let response = reply::json(StatusCode::OK, &me_body(&session));
        state.with_session_cookie(response, &raw)
    })))
}

/// GET /api/me
pub async fn me(session: Arc<Session>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::json(StatusCode::OK, &me_body(&session)))
}

/// POST /api/logout
pub async fn logout(state: State, session: Arc<Session>) -> Result<HttpResponse, warp::Rejection> {
    state.auth.logout(&session);
    Ok(reply::clear_session_cookie(reply::no_content(), state.config.secure_cookies))
}

/// GET /api/rooms?q=&limit=
pub async fn list_rooms(state: State, _session: Arc<Session>, query: HashMap<String, String>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let filter = query.get("q").map(String::as_str).unwrap_or("");
        let limit = parse_limit(query.get("limit"), 20, MAX_ROOM_RESULTS)?;
        let rooms = state.hub.store().list_rooms(filter, limit).await?;
        Ok(reply::json(StatusCode::OK, &rooms))
    }.await))
}

/// POST /api/rooms {"name"}
pub async fn create_room(state: State, session: Arc<Session>, body: RoomBody) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let room = RoomName::parse(&body.name)?;
        let created = state.hub.store().create_room(&room, session.user.as_str()).await?;
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
        let message = NewMessage {
            user: session.user.clone(),
            text: validate_text(&body.text)?,
            client_id: validate_client_id(&body.client_id)?,
        };
        Ok(match state.hub.send(&room, message).await? {
            Appended::New(m) => reply::json(StatusCode::CREATED, &m),
            Appended::Duplicate(m) => reply::json(StatusCode::OK, &m),
        })
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
