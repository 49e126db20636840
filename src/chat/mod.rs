//! The use cases: one method per action — send, edit, delete, history,
//! events, open a room, create and list rooms, subscribe — each taking the
//! acting user ([`Actor`]). This is where input is validated and the send
//! rate applied, once for every transport: the WebSocket connection and the
//! HTTP handlers only parse, call [`Chat`], and format the answer. No
//! transport reaches the store; `Chat` goes through the [`Hub`] (order,
//! storage, fan-out) and [`Auth`] (per-user state).
//!
//! - `messages`: send, edit, delete, history, events, opening a room.
//! - `threads`: reactions, thread pages, telling a thread of a reply.
//! - `members`: who may read a room (`Chat::readable`, checked by every
//!   use case), private rooms' members, direct messages.
//! - `mentions`: `@name`, `@here` and direct messages notify users.
//! - `rooms`: list, subscriptions, presence and typing.
//! - `search`: message search.

mod members;
mod mentions;
mod messages;
mod reading;
mod rooms;
mod search;
mod threads;

use std::sync::{Arc, Mutex};

pub use self::members::{DirectMessage, Members, dm_room};
pub use self::mentions::{Reason, mentioned, mentions_user};
pub use self::messages::{EventsPage, OpenedRoom};
pub use self::reading::{DmReadState, MAX_UNREAD_COUNTED, RoomReadState};
pub use self::rooms::MAX_ROOM_RESULTS;
pub use self::search::SearchRequest;
pub use self::threads::Thread;
use crate::auth::Auth;
use crate::auth::sessions::Session;
use crate::fanout::Fanout;
use crate::hub::Hub;
use crate::rate::{RateLimiter, SendRate};

/// Cheap to clone: handles on the hub and auth, and the send rate.
#[derive(Clone)]
pub struct Chat {
    hub: Hub,
    auth: Arc<Auth>,
    fanout: Arc<dyn Fanout>,
    send_rate: Option<SendRate>,
}

impl Chat {
    pub fn new(hub: Hub, auth: Arc<Auth>, fanout: Arc<dyn Fanout>, send_rate: Option<SendRate>) -> Self {
        Self { hub, auth, fanout, send_rate }
    }

    /// The pace for one socket: its own bucket of the send rate.
    pub fn connection_pace(&self) -> Pace {
        Pace::Connection(self.send_rate.map(|rate| Arc::new(Mutex::new(RateLimiter::new(rate)))))
    }

    /// Whether `actor` may store one more event now.
    fn within_rate(&self, actor: &Actor) -> bool {
        match (&actor.pace, self.send_rate) {
            (_, None) => true,
            (Pace::Connection(bucket), Some(_)) => bucket.as_ref().is_none_or(|b| b.lock().expect("send bucket").allow()),
            (Pace::Session, Some(rate)) => actor.session.allow_post(rate),
        }
    }
}

/// Who acts, and which bucket of the send rate their sends take from.
#[derive(Clone)]
pub struct Actor {
    pub session: Arc<Session>,
    pub pace: Pace,
    /// The socket acting, if any (it does not need its own news back).
    pub connection: Option<u64>,
}

impl Actor {
    /// An HTTP caller: posts, edits and deletes share one bucket per session.
    pub fn http(session: Arc<Session>) -> Self {
        Self { session, pace: Pace::Session, connection: None }
    }
}

/// The send-rate policy: one bucket per socket, one per session for HTTP.
#[derive(Clone)]
pub enum Pace {
    Connection(Option<Arc<Mutex<RateLimiter>>>),
    Session,
}
