//! What crosses Redis: one envelope per pub/sub message.
//!
//! An envelope is a one-line header, then (for events) the frame exactly as
//! the publishing node serialised it, so a frame is never parsed or
//! serialised again on the way:
//!
//! ```text
//! v1 ␟ <node, hex> ␟ event|resync ␟ <seq or empty> ␟ <skip_user or empty> ␟ <published_at_ms> \n <frame>   (room channel)
//! v1 ␟ <node, hex> ␟ <subscriber> \n <frame>                                                                (user channel)
//! v1 ␟ <node, hex> ␟ <session id hash> ␟ <reason>                                                           (session ends)
//! ```
//!
//! `␟` is U+001F. Header fields never hold it, nor a newline: names refuse
//! control characters, and the rest are numbers and hex digests.

use std::sync::Arc;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::fanout::{RoomEvent, SessionEnd, UserEvent};

const VERSION: &str = "v1";
const SEPARATOR: char = '\u{1f}';

/// Why an envelope could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("not a v1 envelope")]
    Version,
    #[error("the envelope lacks its {0}")]
    Missing(&'static str),
    #[error("the envelope's {0} is not a number")]
    NotANumber(&'static str),
    #[error("the envelope's {0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("unknown envelope kind or reason {0:?}")]
    Unknown(String),
}

/// A room event another node published.
#[derive(Debug)]
pub struct RoomEnvelope {
    pub node: u64,
    pub event: Arc<RoomEvent>,
}

/// A user event another node published.
#[derive(Debug)]
pub struct UserEnvelope {
    pub node: u64,
    pub subscriber: String,
    pub event: Arc<UserEvent>,
}

pub fn encode_room_event(node: u64, event: &RoomEvent) -> Vec<u8> {
    let kind = if event.resync { "resync" } else { "event" };
    let seq = event.seq.map(|s| s.to_string()).unwrap_or_default();
    let skip = event.skip_user.as_deref().unwrap_or("");
    let header = join_header(&[&format!("{node:x}"), kind, &seq, skip, &event.published_at_ms.to_string()]);
    with_frame(header, event.frame.as_bytes())
}

pub fn decode_room_event(payload: &[u8]) -> Result<RoomEnvelope, EnvelopeError> {
    let (header, frame) = split_frame(payload)?;
    let mut fields = Fields::of(header)?;
    let node = fields.node()?;
    let resync = match fields.next("kind")? {
        "event" => false,
        "resync" => true,
        other => return Err(EnvelopeError::Unknown(other.to_string())),
    };
    let seq = fields.optional_number("seq")?;
    let skip_user = Some(fields.next("skip_user")?).filter(|s| !s.is_empty()).map(str::to_string);
    let published_at_ms = fields.number("published_at_ms")?;
    let event = RoomEvent { frame, seq, skip_user, published_at_ms, resync };
    Ok(RoomEnvelope { node, event: Arc::new(event) })
}

pub fn encode_user_event(node: u64, subscriber: &str, event: &UserEvent) -> Vec<u8> {
    with_frame(join_header(&[&format!("{node:x}"), subscriber]), event.frame.as_bytes())
}

/// The event comes without `from_connection`: connection numbers are
/// this process's own, so another node's would name an unrelated socket.
pub fn decode_user_event(payload: &[u8]) -> Result<UserEnvelope, EnvelopeError> {
    let (header, frame) = split_frame(payload)?;
    let mut fields = Fields::of(header)?;
    let node = fields.node()?;
    let subscriber = fields.next("subscriber")?.to_string();
    Ok(UserEnvelope { node, subscriber, event: Arc::new(UserEvent { frame, from_connection: None }) })
}

pub fn encode_session_end(end: &SessionEnd) -> Vec<u8> {
    join_header(&[&format!("{:x}", end.node), &end.id_hash, end.reason]).into_bytes()
}

pub fn decode_session_end(payload: &[u8]) -> Result<SessionEnd, EnvelopeError> {
    let header = std::str::from_utf8(payload).map_err(|_| EnvelopeError::NotUtf8("header"))?;
    let mut fields = Fields::of(header)?;
    let node = fields.node()?;
    let id_hash = fields.next("id_hash")?.to_string();
    let reason = match fields.next("reason")? {
        "logged_out" => "logged_out",
        "replaced" => "replaced",
        "expired" => "expired",
        other => return Err(EnvelopeError::Unknown(other.to_string())),
    };
    Ok(SessionEnd { id_hash, reason, node })
}

fn join_header(fields: &[&str]) -> String {
    let mut header = String::from(VERSION);
    for field in fields {
        header.push(SEPARATOR);
        header.push_str(field);
    }
    header
}

fn with_frame(header: String, frame: &[u8]) -> Vec<u8> {
    let mut payload = header.into_bytes();
    payload.reserve(1 + frame.len());
    payload.push(b'\n');
    payload.extend_from_slice(frame);
    payload
}

fn split_frame(payload: &[u8]) -> Result<(&str, Utf8Bytes), EnvelopeError> {
    let end = memchr::memchr(b'\n', payload).ok_or(EnvelopeError::Missing("frame"))?;
    let header = std::str::from_utf8(&payload[..end]).map_err(|_| EnvelopeError::NotUtf8("header"))?;
    let frame = Utf8Bytes::try_from(Bytes::copy_from_slice(&payload[end + 1..])).map_err(|_| EnvelopeError::NotUtf8("frame"))?;
    Ok((header, frame))
}

/// The header's fields after the version, in order.
struct Fields<'a>(std::str::Split<'a, char>);

impl<'a> Fields<'a> {
    fn of(header: &'a str) -> Result<Self, EnvelopeError> {
        let mut fields = header.split(SEPARATOR);
        if fields.next() != Some(VERSION) {
            return Err(EnvelopeError::Version);
        }
        Ok(Self(fields))
    }

    fn next(&mut self, name: &'static str) -> Result<&'a str, EnvelopeError> {
        self.0.next().ok_or(EnvelopeError::Missing(name))
    }

    fn node(&mut self) -> Result<u64, EnvelopeError> {
        u64::from_str_radix(self.next("node")?, 16).map_err(|_| EnvelopeError::NotANumber("node"))
    }

    fn number(&mut self, name: &'static str) -> Result<u64, EnvelopeError> {
        self.next(name)?.parse().map_err(|_| EnvelopeError::NotANumber(name))
    }

    fn optional_number(&mut self, name: &'static str) -> Result<Option<u64>, EnvelopeError> {
        match self.next(name)? {
            "" => Ok(None),
            raw => raw.parse().map(Some).map_err(|_| EnvelopeError::NotANumber(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerEvent;

    #[test]
    fn a_room_event_crosses_with_every_field_and_its_frame_byte_for_byte() {
        let typing = ServerEvent::Typing { room: "general".into(), user: "Zoë\nx".into() };
        let sent = RoomEvent::new(&typing, Some(42), Some("zoë".into()));
        let got = decode_room_event(&encode_room_event(0xfeed, &sent)).unwrap();
        assert_eq!(got.node, 0xfeed);
        assert_eq!(got.event.frame, sent.frame);
        assert_eq!(got.event.seq, Some(42));
        assert_eq!(got.event.skip_user.as_deref(), Some("zoë"));
        assert_eq!(got.event.published_at_ms, sent.published_at_ms);
        assert!(!got.event.resync);
    }

    #[test]
    fn a_resync_marker_and_an_event_without_seq_or_author_cross_as_such() {
        let got = decode_room_event(&encode_room_event(u64::MAX, &RoomEvent::resync())).unwrap();
        assert!(got.event.resync);
        assert_eq!((got.event.seq, got.event.skip_user.as_deref(), got.event.frame.as_str()), (None, None, ""));
        assert_eq!(got.node, u64::MAX);
    }

    #[test]
    fn user_events_lose_their_connection_number_and_session_ends_keep_their_reason() {
        let read = UserEvent::new(&ServerEvent::Typing { room: "r".into(), user: "u".into() }, Some(7));
        let got = decode_user_event(&encode_user_event(3, "ann", &read)).unwrap();
        assert_eq!((got.node, got.subscriber.as_str(), got.event.from_connection), (3, "ann", None));
        assert_eq!(got.event.frame, read.frame);

        let end = SessionEnd { id_hash: "ab".repeat(32), reason: "replaced", node: 9 };
        assert_eq!(decode_session_end(&encode_session_end(&end)).unwrap(), end);
    }

    #[test]
    fn damaged_envelopes_are_refused_with_what_is_wrong() {
        assert_eq!(decode_room_event(b"v2\x1f1\x1fevent\x1f\x1f\x1f1\n{}").unwrap_err(), EnvelopeError::Version);
        assert_eq!(decode_room_event(b"v1\x1f1\x1fevent").unwrap_err(), EnvelopeError::Missing("frame"));
        assert_eq!(decode_room_event(b"v1\x1fzz\x1fevent\x1f\x1f\x1f1\n{}").unwrap_err(), EnvelopeError::NotANumber("node"));
        assert_eq!(decode_room_event(b"v1\x1f1\x1fevent\x1fx\x1f\x1f1\n{}").unwrap_err(), EnvelopeError::NotANumber("seq"));
        assert_eq!(decode_room_event(b"v1\x1f1\x1fother\x1f\x1f\x1f1\n{}").unwrap_err(), EnvelopeError::Unknown("other".into()));
        assert_eq!(decode_room_event(b"v1\x1f1\x1fevent\x1f\x1f\x1f1\n\xff").unwrap_err(), EnvelopeError::NotUtf8("frame"));
        assert_eq!(decode_session_end(b"v1\x1f1\x1fab\x1fbored").unwrap_err(), EnvelopeError::Unknown("bored".into()));
        assert_eq!(decode_session_end(b"v1\x1f1").unwrap_err(), EnvelopeError::Missing("id_hash"));
    }
}
