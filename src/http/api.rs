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
use crate::chat::Actor;
use crate::chat::{MAX_ROOM_RESULTS, SearchRequest};
use crate::protocol::ServerEvent;
use crate::store::{Appended, DEFAULT_PAGE, HistoryQuery, MAX_PAGE};


#[derive(Debug, Deserialize)]
pub struct NameBody {
    pub username: String,
}

#[derive(Debug, Deserialize)]
pub struct RoomBody {
    pub name: String,
    /// Only members may find, read or join it.
    #[serde(default)]
    pub private: bool,
}

#[derive(Debug, Deserialize)]
pub struct DmBody {
    pub user: String,
}

#[derive(Debug, Deserialize)]
pub struct ReadBody {
    pub id: u64,
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
    /// The message this one replies to.
    #[serde(default)]
    pub thread: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct ReactBody {
    pub emoji: String,
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
pub async fn list_rooms(state: State, session: Arc<Session>, query: HashMap<String, String>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let filter = query.get("q").map(String::as_str).unwrap_or("");
        let limit = parse_limit(query.get("limit"), 20, MAX_ROOM_RESULTS)?;
        let rooms = state.chat.list_rooms(&Actor::http(session), filter, limit).await?;
        Ok(reply::json(StatusCode::OK, &rooms))
    }.await))
}

/// POST /api/rooms {"name","private"}
pub async fn create_room(state: State, session: Arc<Session>, from: Option<IpAddr>, body: RoomBody) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let created = state.chat.create_room(&Actor::http(session), &body.name, body.private, from).await?;
        Ok(reply::json(StatusCode::CREATED, &created))
    }.await))
}

/// GET /api/rooms/{room}/members
pub async fn members(state: State, room: String, session: Arc<Session>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let members = state.chat.members(&Actor::http(session), &room).await?;
        Ok(reply::json(StatusCode::OK, &members))
    }.await))
}

/// PUT or DELETE /api/rooms/{room}/members/{user} (`user` percent-encoded)
pub async fn set_member(state: State, room: String, user: String, session: Arc<Session>, added: bool) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let user = percent_decoded(&user)?;
        let members = state.chat.set_member(&Actor::http(session), &room, &user, added).await?;
        Ok(reply::json(StatusCode::OK, &members))
    }.await))
}

/// POST /api/dms {"user"}
pub async fn open_dm(state: State, session: Arc<Session>, from: Option<IpAddr>, body: DmBody) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let dm = state.chat.open_dm(&Actor::http(session), &body.user, from).await?;
        Ok(reply::json(StatusCode::OK, &dm))
    }.await))
}

/// GET /api/dms
pub async fn list_dms(state: State, session: Arc<Session>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let dms = state.chat.dms_read(&Actor::http(session)).await?;
        Ok(reply::json(StatusCode::OK, &dms))
    }.await))
}

/// A path segment as the text it encodes (`%C3%A9` → `é`).
fn percent_decoded(segment: &str) -> Result<String, ChatError> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| ChatError::BadRequest("the path is not valid percent-encoded UTF-8".into()))
}

/// GET /api/rooms/{room}/messages?after=&before=&limit=
pub async fn get_messages(state: State, room: String, session: Arc<Session>, query: HashMap<String, String>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let history = HistoryQuery {
            after: parse_id(query.get("after"), "after")?,
            before: parse_id(query.get("before"), "before")?,
            limit: parse_limit(query.get("limit"), DEFAULT_PAGE, MAX_PAGE)?,
        };
        let messages = state.chat.history(&Actor::http(session), &room, history).await?;
        Ok(reply::json(StatusCode::OK, &MessagesBody { messages }))
    }.await))
}

/// POST /api/rooms/{room}/messages {"text","client_id","thread"?}
pub async fn post_message(state: State, room: String, session: Arc<Session>, body: PostMessageBody) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        Ok(match state.chat.send(&Actor::http(session), &room, &body.text, &body.client_id, body.thread).await? {
            Appended::New(stored) => match stored.as_post() {
                Some(message) => reply::json(StatusCode::CREATED, message),
                None => return Err(ChatError::Internal("a post was stored as another kind of event".into())),
            },
            Appended::Duplicate(m) => reply::json(StatusCode::OK, &m),
        })
    }.await))
}

/// PATCH /api/rooms/{room}/messages/{id} {"text"}
pub async fn edit_message(state: State, room: String, id: u64, session: Arc<Session>, body: EditBody) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let edited = state.chat.edit(&Actor::http(session), &room, id, &body.text).await?;
        Ok(reply::json(StatusCode::OK, &ServerEvent::from_stored(edited)))
    }.await))
}

/// DELETE /api/rooms/{room}/messages/{id}
pub async fn delete_message(state: State, room: String, id: u64, session: Arc<Session>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let deleted = state.chat.delete(&Actor::http(session), &room, id).await?;
        Ok(reply::json(StatusCode::OK, &ServerEvent::from_stored(deleted)))
    }.await))
}

/// PUT /api/rooms/{room}/messages/{id}/reactions {"emoji"}: toggles the
/// caller's emoji; answers the `reacted` event (the new counts).
pub async fn react(state: State, room: String, id: u64, session: Arc<Session>, body: ReactBody) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let reacted = state.chat.react(&Actor::http(session), &room, id, &body.emoji).await?;
        Ok(reply::json(StatusCode::OK, &ServerEvent::from_stored(reacted)))
    }.await))
}

/// GET /api/rooms/{room}/threads/{id}?after=&limit=
pub async fn get_thread(state: State, room: String, id: u64, session: Arc<Session>, query: HashMap<String, String>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let after = parse_id(query.get("after"), "after")?.unwrap_or(0);
        let limit = parse_limit(query.get("limit"), DEFAULT_PAGE, MAX_PAGE)?;
        let thread = state.chat.thread(&Actor::http(session), &room, id, after, limit).await?;
        Ok(reply::json(StatusCode::OK, &thread))
    }.await))
}

/// GET /api/rooms/{room}/events?after=&limit=
pub async fn get_events(state: State, room: String, session: Arc<Session>, query: HashMap<String, String>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let after = parse_id(query.get("after"), "after")?.unwrap_or(0);
        let limit = parse_limit(query.get("limit"), DEFAULT_PAGE, MAX_PAGE)?;
        let page = state.chat.events(&Actor::http(session), &room, after, limit).await?;
        let events: Vec<ServerEvent> = page.events.into_iter().map(ServerEvent::from_stored).collect();
        Ok(reply::json(StatusCode::OK, &EventsBody { events, seq: page.seq, has_more: page.has_more }))
    }.await))
}

/// PUT /api/rooms/{room}/read {"id"}
pub async fn mark_read(state: State, room: String, session: Arc<Session>, body: ReadBody) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let id = state.chat.mark_read(&Actor::http(session), &room, body.id).await?;
        Ok(reply::json(StatusCode::OK, &serde_json::json!({ "room": room, "id": id })))
    }.await))
}

/// GET /api/subscriptions
pub async fn subscriptions(state: State, session: Arc<Session>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let rooms = state.chat.subscriptions_read(&Actor::http(session)).await?;
        Ok(reply::json(StatusCode::OK, &rooms))
    }.await))
}

/// PUT /api/subscriptions/{room}
pub async fn subscribe(state: State, room: String, session: Arc<Session>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let info = state.chat.subscribe(&Actor::http(session), &room).await?;
        Ok(reply::json(StatusCode::OK, &info))
    }.await))
}

/// DELETE /api/subscriptions/{room}
pub async fn unsubscribe(state: State, room: String, session: Arc<Session>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        state.chat.unsubscribe(&Actor::http(session), &room).await?;
        Ok(reply::no_content())
    }.await))
}

/// GET /api/search?q=&room=&limit=&before=
pub async fn search(state: State, session: Arc<Session>, query: HashMap<String, String>) -> Result<HttpResponse, warp::Rejection> {
    Ok(reply::or_error(async {
        let limit = match query.get("limit").filter(|l| !l.is_empty()) {
            None => None,
            Some(raw) => Some(raw.parse::<usize>().map_err(|_| ChatError::BadRequest("limit must be 1 to 100".into()))?),
        };
        let request = SearchRequest { q: query.get("q").cloned(), room: query.get("room").cloned(), limit, before: query.get("before").cloned() };
        let page = state.chat.search(&Actor::http(session), request).await?;
        Ok(reply::json(StatusCode::OK, &page))
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
