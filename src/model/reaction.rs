//! Reactions: who reacted to a message with which emoji.
//!
//! A store keeps a message's reactions as a [`ReactionSet`]: one entry per
//! (emoji, user key), in the order they were added (by the `seq` of the
//! event that added them). Toggling an entry that is there removes it. The
//! set is shown grouped by emoji, each emoji in the order of its earliest
//! current reaction ([`ReactionSet::reactions`]); every backend groups
//! the same way, so they answer alike.
//!
//! What a client sees depends on who reads: [`Reaction::me`] is set by the
//! use-case layer for the reader ([`super::Message::seen_by`]); the live
//! `reacted` frame carries counts only ([`ReactionCount`]).

use serde::{Deserialize, Serialize};

use crate::error::ChatError;

/// Longest emoji, in characters.
pub const MAX_EMOJI_CHARS: usize = 32;
/// Longest emoji, in UTF-8 bytes.
pub const MAX_EMOJI_BYTES: usize = 64;

/// An emoji: 1–32 characters (at most 64 bytes), no whitespace or control
/// characters. Any such text is accepted (a shortcode like `:+1:` too):
/// which ones to show as pictures is the client's business.
pub fn validate_emoji(raw: &str) -> Result<String, ChatError> {
    let invalid = |why: &str| ChatError::InvalidEmoji(why.to_string());
    if raw.is_empty() {
        return Err(invalid("an emoji cannot be empty"));
    }
    if raw.chars().count() > MAX_EMOJI_CHARS || raw.len() > MAX_EMOJI_BYTES {
        return Err(invalid("an emoji has at most 32 characters (64 bytes)"));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("an emoji cannot contain whitespace or control characters"));
    }
    Ok(raw.to_string())
}

/// One emoji on a message, as a reader sees it: how many reacted with it
/// and whether the reader is one of them. `users` (lower-cased keys, in
/// the order they reacted) is what the store knows; it never leaves the
/// server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    pub emoji: String,
    pub count: u32,
    #[serde(default)]
    pub me: bool,
    #[serde(skip)]
    pub users: Vec<String>,
}

/// One emoji's count, as the live `reacted` frame carries it (the same for
/// every reader).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactionCount {
    pub emoji: String,
    pub count: u32,
}

/// One current reaction: `user` (a lower-cased key) reacted with `emoji`
/// in the event with this `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reacted {
    pub emoji: String,
    pub user: String,
    pub seq: u64,
}

/// A message's current reactions, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReactionSet(Vec<Reacted>);

impl ReactionSet {
    /// A set from its entries, in any order.
    pub fn from_entries(mut entries: Vec<Reacted>) -> Self {
        entries.sort_by_key(|r| r.seq);
        Self(entries)
    }

    pub fn entries(&self) -> &[Reacted] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `user` (a key) reacted with `emoji`.
    pub fn has(&self, emoji: &str, user: &str) -> bool {
        self.0.iter().any(|r| r.emoji == emoji && r.user == user)
    }

    /// Adds or removes `user`'s `emoji` (`seq`: the event doing it);
    /// whether it was added.
    pub fn toggle(&mut self, emoji: &str, user: &str, seq: u64) -> bool {
        self.set(emoji, user, seq, !self.has(emoji, user))
    }

    /// Adds (`added`) or removes `user`'s `emoji`, as a stored event says;
    /// returns `added`.
    pub fn set(&mut self, emoji: &str, user: &str, seq: u64, added: bool) -> bool {
        self.0.retain(|r| !(r.emoji == emoji && r.user == user));
        if added {
            self.0.push(Reacted { emoji: emoji.to_string(), user: user.to_string(), seq });
        }
        added
    }

    /// Grouped by emoji, each in the order of its earliest current
    /// reaction; users in the order they reacted; `me` unset.
    pub fn reactions(&self) -> Vec<Reaction> {
        let mut grouped: Vec<Reaction> = Vec::new();
        for r in &self.0 {
            match grouped.iter_mut().find(|g| g.emoji == r.emoji) {
                Some(group) => {
                    group.count += 1;
                    group.users.push(r.user.clone());
                }
                None => grouped.push(Reaction { emoji: r.emoji.clone(), count: 1, me: false, users: vec![r.user.clone()] }),
            }
        }
        grouped
    }

    /// The counts per emoji (what a `reacted` frame carries).
    pub fn counts(&self) -> Vec<ReactionCount> {
        self.reactions().into_iter().map(|r| ReactionCount { emoji: r.emoji, count: r.count }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emoji_are_short_and_have_no_blanks() {
        for ok in ["👍", "🎉", "👨‍👩‍👧‍👦", ":+1:", "❤️", &"x".repeat(32)] {
            assert!(validate_emoji(ok).is_ok(), "{ok:?} should be valid");
        }
        for bad in ["", " ", "👍 ", "a b", "a\nb", "\u{7}", &"x".repeat(33), &"👍".repeat(17)] {
            assert!(validate_emoji(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn toggles_group_by_emoji_in_the_order_of_their_earliest_current_reaction() {
        let mut set = ReactionSet::default();
        assert!(set.toggle("👍", "ann", 1));
        assert!(set.toggle("🎉", "bob", 2));
        assert!(set.toggle("👍", "cy", 3));
        assert!(!set.toggle("👍", "ann", 4));
        let shown: Vec<(String, u32, Vec<String>)> = set.reactions().into_iter().map(|r| (r.emoji, r.count, r.users)).collect();
        assert_eq!(shown, [("🎉".into(), 1, vec!["bob".into()]), ("👍".into(), 1, vec!["cy".into()])]);
        assert!(set.toggle("👍", "ann", 5));
        assert_eq!(set.counts(), [ReactionCount { emoji: "🎉".into(), count: 1 }, ReactionCount { emoji: "👍".into(), count: 2 }]);
    }
}
