//! Who may see what: private rooms, their members, and direct messages.
//!
//! A room is public (everyone may read it) or private (only its members).
//! [`Chat::readable`] is the one check every use case makes before it
//! touches a room: a non-member gets `RoomNotFound`, exactly what a room
//! that does not exist gets, so a private room's name gives nothing away.
//! Guests are never members (a guest's name is theirs only while the
//! session lasts). A member added or removed is a room event (`member`),
//! stored after the membership itself changed: from that event on, a
//! removed member's sockets stop receiving the room (`connection`).
//!
//! A direct message is a private room of two accounts whose name is made
//! from theirs (`dm-` and 16 hex digits of a hash), so opening it again
//! finds the same room; its members never change.

use std::net::IpAddr;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Actor, Chat};
use crate::error::ChatError;
use crate::model::{DM_PREFIX, NewEvent, RoomName, Username};
use crate::store::{PrivateRoom, RoomAccess, RoomInfo};

/// A private room's members, as listed by the API.
#[derive(Debug, Clone, Serialize)]
pub struct Members {
    pub room: String,
    pub created_by: String,
    pub members: Vec<String>,
}

/// A direct message as its member sees it.
#[derive(Debug, Clone, Serialize)]
pub struct DirectMessage {
    #[serde(flatten)]
    pub room: RoomInfo,
    /// The other member.
    pub with: String,
}

impl Chat {
    /// The room's access if the actor may read it; `RoomNotFound` if it
    /// does not exist or the actor is not a member.
    pub async fn readable(&self, actor: &Actor, room: &RoomName) -> Result<RoomAccess, ChatError> {
        let access = self.hub.access(room).await?;
        if admits(&access, actor) { Ok(access) } else { Err(ChatError::RoomNotFound(room.to_string())) }
    }

    /// Creates a room: public, or private with the actor as its first
    /// member (accounts only).
    pub async fn create_room(&self, actor: &Actor, name: &str, private: bool, from: Option<IpAddr>) -> Result<RoomInfo, ChatError> {
        let room = RoomName::parse(name)?;
        if room.as_str().starts_with(DM_PREFIX) {
            return Err(ChatError::InvalidRoomName(format!("names starting with '{DM_PREFIX}' are kept for direct messages")));
        }
        let creator = &actor.session.user;
        let created = if private {
            require_account(actor, "create a private room")?;
            let created = self.hub.create_private_room(&room, creator, PrivateRoom::Group, from).await?;
            self.log_member(&room, creator, creator, true).await?;
            created
        } else {
            self.hub.create_room(&room, creator, from).await?
        };
        tracing::info!(room = %room, by = %creator, private, "room created");
        Ok(created)
    }

    /// A private room's members (members only).
    pub async fn members(&self, actor: &Actor, room: &str) -> Result<Members, ChatError> {
        let room = RoomName::parse(room)?;
        let access = self.readable(actor, &room).await?;
        if !access.private {
            return Err(ChatError::NoMembers(format!("'{room}' is public: everyone may read it")));
        }
        Ok(Members { room: room.to_string(), created_by: access.created_by, members: access.members.into_values().collect() })
    }

    /// Adds an account to a private room or removes it (the room's creator
    /// only); the room's members after the change.
    pub async fn set_member(&self, actor: &Actor, room: &str, user: &str, added: bool) -> Result<Members, ChatError> {
        let room = RoomName::parse(room)?;
        let access = self.readable(actor, &room).await?;
        let by = &actor.session.user;
        if !access.private || access.dm {
            return Err(ChatError::NoMembers(format!("'{room}' has no members to change: it is public or a direct message")));
        }
        if access.created_by.to_lowercase() != by.key() {
            return Err(ChatError::Forbidden(format!("only {} may change who is in '{room}'", access.created_by)));
        }
        let member = self.auth.account(&Username::parse(user)?).await?.ok_or_else(|| ChatError::UserNotFound(user.to_string()))?;
        if !added && member.key() == by.key() {
            return Err(ChatError::Forbidden("the creator of a room stays in it".into()));
        }
        if self.hub.set_member(&room, &member, by, added).await? {
            if !added {
                self.auth.unsubscribe_account(&member, &room).await?;
            }
            self.log_member(&room, by, &member, added).await?;
            tracing::info!(room = %room, by = %by, member = %member, added, "members changed");
        }
        self.members(actor, room.as_str()).await
    }

    /// Opens the direct message of the actor and `user` (both accounts),
    /// creating it the first time.
    pub async fn open_dm(&self, actor: &Actor, user: &str, from: Option<IpAddr>) -> Result<DirectMessage, ChatError> {
        require_account(actor, "send direct messages")?;
        let me = &actor.session.user;
        let other = self.auth.account(&Username::parse(user)?).await?.ok_or_else(|| ChatError::UserNotFound(user.to_string()))?;
        if other.key() == me.key() {
            return Err(ChatError::BadRequest("a direct message needs someone else".into()));
        }
        let room = dm_room(me, &other);
        let info = match self.hub.create_private_room(&room, me, PrivateRoom::Direct(&other), from).await {
            Ok(info) => {
                self.log_member(&room, me, me, true).await?;
                self.log_member(&room, me, &other, true).await?;
                info
            }
            Err(ChatError::RoomExists(_)) => self.readable(actor, &room).await?.info(room.as_str()),
            Err(other) => return Err(other),
        };
        Ok(DirectMessage { room: info, with: other.to_string() })
    }

    /// The actor's direct messages, by room name.
    pub async fn dms(&self, actor: &Actor) -> Result<Vec<DirectMessage>, ChatError> {
        if actor.session.guest {
            return Ok(Vec::new());
        }
        let me = actor.session.user.key();
        let rooms = self.hub.private_rooms_of(&actor.session.user).await?;
        Ok(rooms
            .into_iter()
            .filter(|room| room.dm)
            .map(|room| {
                let with = room.members.iter().find(|m| m.to_lowercase() != me).cloned().unwrap_or_default();
                DirectMessage { room, with }
            })
            .collect())
    }

    /// The private rooms (not direct messages) the actor is a member of.
    pub async fn private_rooms(&self, actor: &Actor) -> Result<Vec<RoomInfo>, ChatError> {
        if actor.session.guest {
            return Ok(Vec::new());
        }
        Ok(self.hub.private_rooms_of(&actor.session.user).await?.into_iter().filter(|room| !room.dm).collect())
    }

    /// Stores the `member` event of a change already made.
    async fn log_member(&self, room: &RoomName, by: &Username, member: &Username, added: bool) -> Result<(), ChatError> {
        self.hub.send(room, NewEvent::Member { by: by.clone(), member: member.clone(), added }).await?;
        Ok(())
    }
}

/// Whether the actor may read a room with this access.
fn admits(access: &RoomAccess, actor: &Actor) -> bool {
    !access.private || (!actor.session.guest && access.admits(&actor.session.user.key()))
}

fn require_account(actor: &Actor, what: &str) -> Result<(), ChatError> {
    if actor.session.guest {
        return Err(ChatError::Forbidden(format!("guests cannot {what}; sign up first")));
    }
    Ok(())
}

/// The name of the direct message of two users: the same whoever opens it.
pub fn dm_room(a: &Username, b: &Username) -> RoomName {
    let (first, second) = if a.key() <= b.key() { (a.key(), b.key()) } else { (b.key(), a.key()) };
    let digest = Sha256::digest(format!("{first}\n{second}").as_bytes());
    RoomName::parse(&format!("{DM_PREFIX}{}", &hex::encode(digest)[..16])).expect("a dm name is a valid room name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dm_name_is_the_same_either_way_and_any_case() {
        let (ann, bob) = (Username::parse("Ann").unwrap(), Username::parse("bob").unwrap());
        let name = dm_room(&ann, &bob);
        assert_eq!(name, dm_room(&bob, &Username::parse("ANN").unwrap()));
        assert!(name.as_str().starts_with("dm-") && name.as_str().len() == 19, "{name}");
        assert_ne!(name, dm_room(&ann, &Username::parse("carol").unwrap()));
    }
}
