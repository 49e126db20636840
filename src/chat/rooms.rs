//! Rooms: create (within the creation pace), list and search, a user's
//! subscriptions; presence and typing for a socket that opened a room.

use std::net::IpAddr;

use super::{Actor, Chat};
use crate::error::ChatError;
use crate::model::RoomName;
use crate::store::RoomInfo;

/// Most rooms one search returns.
pub const MAX_ROOM_RESULTS: usize = 100;

impl Chat {
    /// Creates a room (connected from `from`, for the per-address pace).
    pub async fn create_room(&self, actor: &Actor, name: &str, from: Option<IpAddr>) -> Result<RoomInfo, ChatError> {
        let room = RoomName::parse(name)?;
        let created = self.hub.create_room(&room, &actor.session.user, from).await?;
        tracing::info!(room = %room, by = %actor.session.user, "room created");
        Ok(created)
    }

    /// Rooms whose name contains `filter`, best matches first.
    pub async fn list_rooms(&self, _actor: &Actor, filter: &str, limit: usize) -> Result<Vec<RoomInfo>, ChatError> {
        self.hub.list_rooms(filter, limit.clamp(1, MAX_ROOM_RESULTS)).await
    }

    /// The actor's subscribed rooms, alphabetically.
    pub async fn subscriptions(&self, actor: &Actor) -> Result<Vec<RoomInfo>, ChatError> {
        let names = self.auth.subscriptions(&actor.session).await?;
        Ok(names.into_iter().map(|name| RoomInfo::public(name)).collect())
    }

    /// Subscribes the actor to an existing room.
    pub async fn subscribe(&self, actor: &Actor, room: &str) -> Result<RoomInfo, ChatError> {
        let room = RoomName::parse(room)?;
        let info = self.hub.existing_room(&room).await?;
        self.auth.subscribe(&actor.session, &room).await?;
        Ok(info)
    }

    pub async fn unsubscribe(&self, actor: &Actor, room: &str) -> Result<(), ChatError> {
        let room = RoomName::parse(room)?;
        self.auth.unsubscribe(&actor.session, &room).await
    }

    /// Marks the actor present in a room their socket opened.
    pub async fn enter(&self, actor: &Actor, room: &RoomName) -> Result<(), ChatError> {
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
        self.hub.typing(room, actor.session.user.as_str()).await
    }
}
