//! Read markers: how far a user has read in each room, shared by all of
//! their devices (an account) or kept for the session's life (a guest), and
//! the unread counts that follow from them.

use serde::Serialize;
use tokio::sync::broadcast;

use super::{Actor, Chat, DirectMessage, mentions_user};
use crate::error::ChatError;
use crate::fanout::UserEvent;
use crate::model::{EventKind, RoomName};
use crate::protocol::ServerEvent;
use crate::store::MAX_PAGE;

use std::sync::Arc;

/// Unread messages are counted up to this many (shown as "999+" beyond).
pub const MAX_UNREAD_COUNTED: u64 = 1000;

/// What a user has not read in a room.
#[derive(Debug, Clone, Copy, Default)]
struct Unread {
    unread: u64,
    mentions: u64,
}

/// A subscribed room with the user's read state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomReadState {
    pub name: String,
    /// The last message id read (0: none).
    pub read: u64,
    /// Messages after `read` that are not the user's own and not deleted,
    /// counted up to [`MAX_UNREAD_COUNTED`].
    pub unread: u64,
    /// Of those, the ones that mention the user by name.
    pub mentions: u64,
}

/// A direct message with the user's read state.
#[derive(Debug, Clone, Serialize)]
pub struct DmReadState {
    #[serde(flatten)]
    pub dm: DirectMessage,
    pub read: u64,
    pub unread: u64,
    pub mentions: u64,
}

impl Chat {
    /// Moves the actor's read marker in `room` forward to `id` (never past
    /// the room's newest message); tells the user's other sockets when it
    /// moved. The marker as it is now.
    pub async fn mark_read(&self, actor: &Actor, room: &str, id: u64) -> Result<u64, ChatError> {
        let room = RoomName::parse(room)?;
        self.readable(actor, &room).await?;
        let id = id.min(self.hub.last_seq(&room).await?);
        let moved = self.auth.advance_read_marker(&actor.session, &room, id).await?;
        let now = self.auth.read_marker(&actor.session, &room).await?;
        if moved {
            let event = ServerEvent::Read { room: room.to_string(), id: now };
            self.fanout.publish_to_user(&self.auth.subscriber(&actor.session), UserEvent::new(&event, actor.connection));
        }
        Ok(now)
    }

    /// The actor's read marker in `room` (0: none).
    pub async fn read_marker(&self, actor: &Actor, room: &RoomName) -> Result<u64, ChatError> {
        self.auth.read_marker(&actor.session, room).await
    }

    /// Events for all of the actor's sockets (their read markers moving,
    /// mentions).
    pub fn user_events(&self, actor: &Actor) -> broadcast::Receiver<Arc<UserEvent>> {
        self.fanout.subscribe_user(&self.auth.subscriber(&actor.session))
    }

    /// A guest's mentions: they come by name, and a guest's own channel is
    /// its session's (an account's channel is its name's: `None`).
    pub fn guest_name_events(&self, actor: &Actor) -> Option<broadcast::Receiver<Arc<UserEvent>>> {
        actor.session.guest.then(|| self.fanout.subscribe_user(&actor.session.user.key()))
    }

    /// The actor's subscribed rooms with their read markers and unread counts.
    pub async fn subscriptions_read(&self, actor: &Actor) -> Result<Vec<RoomReadState>, ChatError> {
        let markers = self.auth.read_markers(&actor.session).await?;
        let mut rooms = Vec::new();
        for info in self.subscriptions(actor).await? {
            let read = markers.get(&info.name).copied().unwrap_or(0);
            let Unread { unread, mentions } = match RoomName::parse(&info.name) {
                Ok(room) => self.count_unread(actor, &room, read).await?,
                Err(_) => Unread::default(),
            };
            rooms.push(RoomReadState { name: info.name, read, unread, mentions });
        }
        Ok(rooms)
    }

    /// The actor's direct messages with their read markers and unread
    /// counts.
    pub async fn dms_read(&self, actor: &Actor) -> Result<Vec<DmReadState>, ChatError> {
        let markers = self.auth.read_markers(&actor.session).await?;
        let mut dms = Vec::new();
        for dm in self.dms(actor).await? {
            let read = markers.get(&dm.room.name).copied().unwrap_or(0);
            let room = RoomName::parse(&dm.room.name)?;
            let Unread { unread, mentions } = self.count_unread(actor, &room, read).await?;
            dms.push(DmReadState { dm, read, unread, mentions });
        }
        Ok(dms)
    }

    /// Messages after `read` by others, not deleted, up to the cap, and
    /// how many of them mention the actor.
    async fn count_unread(&self, actor: &Actor, room: &RoomName, read: u64) -> Result<Unread, ChatError> {
        let me = actor.session.user.key();
        let (mut counts, mut after) = (Unread::default(), read);
        loop {
            let page = self.hub.events(room, after, MAX_PAGE).await?;
            let Some(last) = page.last() else { return Ok(counts) };
            after = last.seq;
            for event in &page {
                if let EventKind::Post(m) = &event.kind
                    && !m.deleted
                    && m.user.to_lowercase() != me
                {
                    counts.unread += 1;
                    counts.mentions += u64::from(mentions_user(&m.text, &me));
                }
            }
            if counts.unread >= MAX_UNREAD_COUNTED {
                counts.unread = MAX_UNREAD_COUNTED;
                return Ok(counts);
            }
        }
    }
}
