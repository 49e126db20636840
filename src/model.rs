//! Plain data: room names, usernames, message text and stored messages.
//!
//! Every value that comes from a user is validated here, once, when it is
//! turned into one of these types. The rest of the server only ever sees
//! validated values, so a hostile name can never reach the file system.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::ChatError;

pub mod event;
pub mod reaction;
pub use self::event::{EventKind, NewEvent, StoredEvent};
pub use self::reaction::{Reaction, ReactionCount, ReactionSet, validate_emoji};


/// The room every server has; newcomers are subscribed to it.
pub const DEFAULT_ROOM: &str = "general";

/// Names of direct messages start with this; no one can create a room so
/// named (`RoomName::parse_new`).
pub const DM_PREFIX: &str = "dm-";

/// Longest room name, in characters (like Slack channel names).
pub const MAX_ROOM_NAME: usize = 80;
/// Longest username, in characters.
pub const MAX_USERNAME: usize = 32;
/// Longest message text, in characters, after trimming.
pub const MAX_TEXT: usize = 4000;
/// Longest client-chosen message id.
pub const MAX_CLIENT_ID: usize = 64;

/// A validated room name: 1–80 characters of `a-z 0-9 - _`.
///
/// Names are also safe file names on every common file system: device names
/// reserved by Windows (`con`, `nul`, `com1`, …) are refused too, so a data
/// directory can be copied anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RoomName(String);

impl RoomName {
    pub fn parse(raw: &str) -> Result<Self, ChatError> {
        let invalid = |why: &str| ChatError::InvalidRoomName(why.to_string());
        if raw.is_empty() {
            return Err(invalid("a room name cannot be empty"));
        }
        if raw.chars().count() > MAX_ROOM_NAME {
            return Err(invalid("a room name has at most 80 characters"));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "a room name may only use lowercase letters a-z, digits, '-' and '_'",
            ));
        }
        if is_reserved_device_name(raw) {
            return Err(invalid("that name is reserved by some file systems"));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for RoomName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        RoomName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_reserved_device_name(name: &str) -> bool {
    const RESERVED: [&str; 4] = ["con", "prn", "aux", "nul"];
    if RESERVED.contains(&name) {
        return true;
    }
    let numbered = |prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|rest| rest.len() == 1 && rest.as_bytes()[0].is_ascii_digit())
    };
    numbered("com") || numbered("lpt")
}

/// A validated display name: 1–32 characters after trimming, with no
/// control, format, default-ignorable, line/paragraph-separator or blank
/// look-alike character (see `is_forbidden_in_name`). Kept as typed.
///
/// Two keys are derived from it, never stored in place of the name:
/// [`Username::key`] (case-insensitive identity: log-in, subscriptions,
/// presence) and [`Username::skeletons`] (what "is this name taken?"
/// compares, so a look-alike cannot pose as someone else).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, ChatError> {
        let invalid = |why: &str| ChatError::InvalidUsername(why.to_string());
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(invalid("a username cannot be empty"));
        }
        if trimmed.chars().count() > MAX_USERNAME {
            return Err(invalid("a username has at most 32 characters"));
        }
        if trimmed.chars().any(is_forbidden_in_name) {
            return Err(invalid(
                "a username cannot contain control, invisible, blank or text-direction characters",
            ));
        }
        Ok(Self(trimmed.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-insensitive identity of this name: two users whose keys are
    /// equal are the same user.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }

    /// What "is this name taken?" compares: the name's confusable skeletons
    /// (see [`name_skeletons`]). Two names that share one look alike, so
    /// only one of them may be claimed.
    pub fn skeletons(&self) -> Vec<String> {
        name_skeletons(&self.0)
    }
}

impl<'de> Deserialize<'de> for Username {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Username::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Unicode UTS #39 skeletons of a name, from the `unicode-security`
/// crate's confusables data: the skeleton of the lower-cased name (so case
/// never tells two names apart, and "аdmin" with a Cyrillic а or "ＡＤＭＩＮ"
/// meet "admin"), and, when it differs, the skeleton as typed (which also
/// catches an upper-case I posing as an l, "PayPaI" for "PayPal", that
/// lower-casing would turn into an i). Derived on demand and never stored,
/// since the data changes with Unicode versions.
pub fn name_skeletons(name: &str) -> Vec<String> {
    let folded: String = unicode_security::skeleton(&name.to_lowercase()).collect();
    let as_typed: String = unicode_security::skeleton(name).collect();
    if as_typed == folded { vec![folded] } else { vec![folded, as_typed] }
}

/// Blank look-alikes: characters that show as nothing or as a space. Only
/// U+2800 BRAILLE PATTERN BLANK is not also default-ignorable; the Hangul
/// fillers are named too, so this list reads as the rule it keeps.
const BLANK_LOOK_ALIKES: [char; 5] = ['\u{2800}', '\u{115F}', '\u{1160}', '\u{3164}', '\u{FFA0}'];

/// Characters a name may never hold, because they are invisible or let one
/// name pass for another: controls (Cc), format characters (Cf: bidi
/// controls, zero-width joiners, tags, the soft hyphen…), line and
/// paragraph separators (Zl, Zp), every Default_Ignorable_Code_Point
/// (fillers, variation selectors, the grapheme joiner…) and the blank
/// look-alikes. Properties come from ICU4X's `icu_properties` data.
fn is_forbidden_in_name(c: char) -> bool {
    use icu_properties::props::{DefaultIgnorableCodePoint, GeneralCategory};
    use icu_properties::{CodePointMapData, CodePointSetData};
    let invisible_category = matches!(
        CodePointMapData::<GeneralCategory>::new().get(c),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    );
    invisible_category
        || CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
        || BLANK_LOOK_ALIKES.contains(&c)
}

/// Message text: trimmed, 1–4000 characters. Newlines and tabs are kept;
/// other control characters are refused.
pub fn validate_text(raw: &str) -> Result<String, ChatError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(ChatError::InvalidText("a message cannot be empty".into()));
    }
    if trimmed.chars().count() > MAX_TEXT {
        return Err(ChatError::InvalidText(
            "a message has at most 4000 characters".into(),
        ));
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(ChatError::InvalidText(
            "a message cannot contain control characters".into(),
        ));
    }
    Ok(trimmed.to_string())
}

/// A client-chosen id that makes a send idempotent: 1–64 printable ASCII
/// characters (a UUID fits).
pub fn validate_client_id(raw: &str) -> Result<String, ChatError> {
    if raw.is_empty() || raw.len() > MAX_CLIENT_ID || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ChatError::InvalidClientId);
    }
    Ok(raw.to_string())
}

/// A message as clients see it now: its latest text (with `edited_at` once
/// edited), or — once deleted — only its id and room (`{"id","room",
/// "deleted":true}`: no author, text or `client_id`). Its `id` is the `seq`
/// of the event that posted it.
///
/// A reply names its parent in `thread`; a parent shows how many replies
/// it has had (`reply_count`, deleted ones included: they stay in the
/// thread as deleted) and when the latest came (`last_reply_at`). Both,
/// and `reactions`, are what the stores know *now*: a post event in the
/// log carries them empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Message {
    /// Strictly increasing within its room, starting at 1.
    pub id: u64,
    pub room: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub text: String,
    /// RFC 3339, UTC.
    #[serde(default)]
    pub ts: String,
    #[serde(default)]
    pub client_id: String,
    /// When the text was last edited (RFC 3339, UTC).
    #[serde(default)]
    pub edited_at: Option<String>,
    #[serde(default)]
    pub deleted: bool,
    /// The message this one replies to (a thread is one level deep).
    #[serde(default)]
    pub thread: Option<u64>,
    /// Replies to this message, deleted ones included.
    #[serde(default)]
    pub reply_count: u32,
    /// When the latest reply was posted (RFC 3339, UTC).
    #[serde(default)]
    pub last_reply_at: Option<String>,
    /// By emoji, in the order of each emoji's earliest current reaction.
    #[serde(default)]
    pub reactions: Vec<Reaction>,
}

impl Message {
    /// The same message as a deleted one shows. A deleted reply stays in
    /// its thread, at its time: it keeps `thread` and `ts` (not shown; the
    /// parent's `last_reply_at` may be its time).
    pub fn redacted(&self) -> Message {
        let ts = if self.thread.is_some() { self.ts.clone() } else { String::new() };
        Message { id: self.id, room: self.room.clone(), deleted: true, thread: self.thread, ts, ..Message::default() }
    }

    /// The message as `reader` (a lower-cased user key) sees it: each
    /// reaction says whether the reader is among its users.
    pub fn seen_by(mut self, reader: &str) -> Message {
        for reaction in &mut self.reactions {
            reaction.me = reaction.users.iter().any(|u| u == reader);
        }
        self
    }
}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if self.deleted {
            let mut map = serializer.serialize_map(Some(3))?;
            map.serialize_entry("id", &self.id)?;
            map.serialize_entry("room", &self.room)?;
            map.serialize_entry("deleted", &true)?;
            return map.end();
        }
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("room", &self.room)?;
        map.serialize_entry("user", &self.user)?;
        map.serialize_entry("text", &self.text)?;
        map.serialize_entry("ts", &self.ts)?;
        map.serialize_entry("client_id", &self.client_id)?;
        if let Some(edited_at) = &self.edited_at {
            map.serialize_entry("edited_at", edited_at)?;
        }
        if let Some(thread) = self.thread {
            map.serialize_entry("thread", &thread)?;
        }
        if self.reply_count > 0 {
            map.serialize_entry("reply_count", &self.reply_count)?;
            if let Some(last_reply_at) = &self.last_reply_at {
                map.serialize_entry("last_reply_at", last_reply_at)?;
            }
        }
        if !self.reactions.is_empty() {
            map.serialize_entry("reactions", &self.reactions)?;
        }
        map.end()
    }
}

/// What a sender asks to store; the store gives it an id and a time.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub user: Username,
    pub text: String,
    pub client_id: String,
}

/// The current time as RFC 3339 UTC with millisecond precision.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(now.millisecond() as u32 * 1_000_000).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .expect("formatting a UTC time as RFC 3339 cannot fail")
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_accept_slack_like_names() {
        for ok in ["general", "a", "rust-lang", "dev_ops", "2024", &"x".repeat(80)] {
            assert!(RoomName::parse(ok).is_ok(), "{ok} should be valid");
        }
    }

    #[test]
    fn room_names_refuse_hostile_input() {
        for bad in [
            "", "../etc", "a/b", "CON", "con", "com1", "lpt9", "General", "a b", "a.b", "a\0b",
            "a\nb", "é", &"x".repeat(81), &"x".repeat(10_000),
        ] {
            assert!(RoomName::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn usernames_are_trimmed_and_compared_case_insensitively() {
        let a = Username::parse("  Alice ").unwrap();
        assert_eq!(a.as_str(), "Alice");
        assert_eq!(a.key(), Username::parse("ALICE").unwrap().key());
    }

    #[test]
    fn usernames_refuse_invisible_and_control_characters() {
        for bad in [
            "", "   ", "a\u{202E}b", "a\u{200B}b", "a\u{2066}", "a\nb", "a\u{7}", "\u{FEFF}x",
            &"x".repeat(33), &"é".repeat(33),
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Username::parse(&"é".repeat(32)).is_ok());
        assert!(Username::parse("Zoë 🙂").is_ok());
    }

    #[test]
    fn usernames_refuse_format_default_ignorable_and_blank_characters() {
        for c in [
            '\u{061C}', '\u{3164}', '\u{2800}', '\u{1160}', '\u{115F}', '\u{FFA0}', '\u{2028}', '\u{2029}',
            '\u{034F}', '\u{180E}', '\u{E0000}', '\u{E0001}', '\u{E0020}', '\u{E007F}', '\u{FFF9}', '\u{FFFB}',
            '\u{FE0F}', '\u{E0100}', '\u{17B4}', '\u{1D173}', '\u{00AD}', '\u{200D}', '\u{2066}', '\u{FEFF}',
        ] {
            assert!(Username::parse(&format!("ad{c}min")).is_err(), "U+{:04X} should be refused", c as u32);
        }
        for ok in ["Zoë", "Мария", "太郎", "ali_2", "محمد", "José Ñúñez", "a b", "Zoë 🙂"] {
            assert!(Username::parse(ok).is_ok(), "{ok:?} should be valid");
        }
    }

    #[test]
    fn look_alike_names_share_a_skeleton_and_different_names_do_not() {
        let skeletons = |name: &str| Username::parse(name).unwrap().skeletons();
        let look_alike = |a: &str, b: &str| skeletons(a).iter().any(|k| skeletons(b).contains(k));
        for (a, b) in [
            ("admin", "admin"),
            ("ADMIN", "admin"),
            ("ALICE", "alice"),
            ("\u{0430}dmin", "admin"),
            ("\u{0410}DMIN", "admin"),
            ("\u{FF41}\u{FF44}\u{FF4D}\u{FF49}\u{FF4E}", "admin"),
            ("PayPaI", "PayPal"),
            ("r\u{043E}\u{043E}t", "Root"),
        ] {
            assert!(look_alike(a, b) && look_alike(b, a), "{a:?} and {b:?} should look alike");
        }
        for (a, b) in [("admin", "admins"), ("Zoë", "Zoe"), ("Мария", "Maria"), ("ann", "anne"), ("太郎", "次郎")] {
            assert!(!look_alike(a, b), "{a:?} and {b:?} should differ");
        }
        // The display name is kept as typed.
        assert_eq!(Username::parse("\u{0430}dmin").unwrap().as_str(), "\u{0430}dmin");
    }

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(validate_text("  hi\nthere ").unwrap(), "hi\nthere");
        assert!(validate_text(" \n ").is_err());
        assert!(validate_text(&"a".repeat(4001)).is_err());
        assert!(validate_text(&"a".repeat(4000)).is_ok());
        assert!(validate_text("bell\u{7}").is_err());
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let ts = now_rfc3339();
        assert!(ts.ends_with('Z'), "{ts}");
        assert!(time::OffsetDateTime::parse(&ts, &time::format_description::well_known::Rfc3339).is_ok());
    }
}
