//! Rooms: create (within the creation pace), list and search, a user's
//! subscriptions; presence and typing for a socket that opened a room.

use super::{Actor, Chat};
use crate::error::ChatError;
use crate::model::RoomName;
use crate::store::{RoomInfo, rank_rooms};

/// Most rooms one search returns.
pub const MAX_ROOM_RESULTS: usize = 100;

impl Chat {
    /// Rooms whose name contains `filter`, best matches first: public
    /// rooms and the actor's own private rooms (direct messages are
    /// listed apart, `Chat::dms`).
    pub async fn list_rooms(&self, actor: &Actor, filter: &str, limit: usize) -> Result<Vec<RoomInfo>, ChatError> {
        let limit = limit.clamp(1, MAX_ROOM_RESULTS);
        let mut found = self.hub.list_rooms(filter, limit).await?;
        let private = self.private_rooms(actor).await?;
        if private.is_empty() {
            return Ok(found);
        }
        found.extend(private);
        let ranked = rank_rooms(found.iter().map(|room| room.name.as_str()), filter, limit);
        Ok(ranked.into_iter().filter_map(|hit| found.iter().find(|room| room.name == hit.name).cloned()).collect())
    }

    /// The actor's subscribed rooms, alphabetically.
    pub async fn subscriptions(&self, actor: &Actor) -> Result<Vec<RoomInfo>, ChatError> {
        let names = self.auth.subscriptions(&actor.session).await?;
        Ok(names.into_iter().map(|name| RoomInfo::public(name)).collect())
    }

    /// Subscribes the actor to a room they may read.
    pub async fn subscribe(&self, actor: &Actor, room: &str) -> Result<RoomInfo, ChatError> {
        let room = RoomName::parse(room)?;
        let info = self.readable(actor, &room).await?.info(room.as_str());
        self.auth.subscribe(&actor.session, &room).await?;
        Ok(info)
    }

    pub async fn unsubscribe(&self, actor: &Actor, room: &str) -> Result<(), ChatError> {
        let room = RoomName::parse(room)?;
        self.auth.unsubscribe(&actor.session, &room).await
    }

    /// Marks the actor present in a room their socket opened.
    pub async fn enter(&self, actor: &Actor, room: &RoomName) -> Result<(), ChatError> {
        self.readable(actor, room).await?;
        self.hub.enter(room, actor.session.user.as_str()).await
    }

    /// Undoes one `enter`.
    pub fn exit(&self, actor: &Actor, room: &RoomName) {
        self.hub.exit(room, actor.session.user.as_str());
    }

    /// Who has the room open, on any node.
    pub async fn online(&self, room: &RoomName) -> Vec<String> {
        self.hub.online(room).await
    }

    /// Tells the others in the room that the actor is typing.
    pub async fn typing(&self, actor: &Actor, room: &RoomName) -> Result<(), ChatError> {
        self.readable(actor, room).await?;
        self.hub.typing(room, actor.session.user.as_str()).await
    }
}
