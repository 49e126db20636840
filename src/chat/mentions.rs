//! Mentions: `@name` in a message notifies that user on every socket they
//! have open, even when none of them opened the room; `@here` notifies
//! everyone online in the room but the author; in a direct message, the
//! other member is notified of every message; a reply notifies its thread's
//! participants (`threads`). The notification is a user event,
//! `{"type":"mention","room","id","user","text","thread"?,"reason"}`, sent
//! through the fan-out (so it reaches every node). Only people who may read
//! the room are notified.
//!
//! How many messages mention a user since their read marker is counted from
//! the log itself (`reading`), so the count survives restarts and is the
//! same on every device.

use std::collections::BTreeSet;

use super::{Actor, Chat};
use crate::fanout::UserEvent;
use crate::model::{Message, RoomName};
use crate::protocol::ServerEvent;
use crate::store::RoomAccess;

/// Why a user is notified of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `@name`.
    Mention,
    /// `@here`, while online in the room.
    Here,
    /// A message in their direct message.
    Dm,
    /// A reply in a thread they took part in.
    Thread,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Mention => "mention",
            Reason::Here => "here",
            Reason::Dm => "dm",
            Reason::Thread => "thread",
        }
    }
}

/// The lower-cased names a text mentions with `@name` (a name runs to the
/// next blank; punctuation that ends a sentence is not part of it), and
/// whether it says `@here`.
pub fn mentioned(text: &str) -> (BTreeSet<String>, bool) {
    let mut names = BTreeSet::new();
    let mut here = false;
    for word in text.split(char::is_whitespace) {
        let Some(at) = word.find('@') else { continue };
        // "@ann" and "(@ann", not "mail@ann.example".
        if !word[..at].chars().all(|c| "([{\"'".contains(c)) {
            continue;
        }
        let name = word[at + 1..].trim_end_matches(|c: char| ".,;:!?)]}\"'".contains(c)).to_lowercase();
        match name.as_str() {
            "" => {}
            "here" => here = true,
            _ => {
                names.insert(name);
            }
        }
    }
    (names, here)
}

/// Whether `text` mentions the user with this lower-cased key by name.
pub fn mentions_user(text: &str, user_key: &str) -> bool {
    text.contains('@') && mentioned(text).0.contains(user_key)
}

impl Chat {
    /// Notifies everyone a new message concerns: the names it mentions, the
    /// people online for `@here`, the other member of a direct message.
    /// Returns who was notified, the author included (so a thread's
    /// notification does not tell them twice).
    pub(super) async fn notify_mentions(&self, actor: &Actor, room: &RoomName, access: &RoomAccess, message: &Message) -> BTreeSet<String> {
        let author = actor.session.user.key();
        let (names, here) = if message.text.contains('@') { mentioned(&message.text) } else { Default::default() };
        let mut notified = BTreeSet::from([author.clone()]);
        for name in names {
            if access.admits(&name) && notified.insert(name.clone()) {
                self.notify(&name, room, message, Reason::Mention);
            }
        }
        if here {
            for name in self.hub.online(room).await {
                let key = name.to_lowercase();
                if notified.insert(key.clone()) {
                    self.notify(&key, room, message, Reason::Here);
                }
            }
        }
        if access.dm {
            for key in access.members.keys() {
                if notified.insert(key.clone()) {
                    self.notify(key, room, message, Reason::Dm);
                }
            }
        }
        notified
    }

    /// Sends one `mention` event to every socket of the user with this key.
    pub(super) fn notify(&self, user_key: &str, room: &RoomName, message: &Message, reason: Reason) {
        let event = ServerEvent::Mention {
            room: room.to_string(),
            id: message.id,
            user: message.user.clone(),
            text: message.text.clone(),
            thread: message.thread,
            reason: reason.as_str().to_string(),
        };
        self.fanout.publish_to_user(user_key, UserEvent::new(&event, None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        mentioned(text).0.into_iter().collect()
    }

    #[test]
    fn names_run_to_a_blank_and_lose_closing_punctuation() {
        assert_eq!(names("hi @Ann, and (@bob)! cc @zoë."), ["ann", "bob", "zoë"]);
        assert_eq!(names("mail ann@example.com or @ alone"), Vec::<String>::new());
        assert_eq!(mentioned("@here look"), (BTreeSet::new(), true));
        assert!(mentions_user("thanks @ANN!", "ann"));
        assert!(!mentions_user("thanks @annie", "ann"));
    }
}
