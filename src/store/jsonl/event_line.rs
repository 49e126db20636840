//! One line of a room file: one event of the room's log, readable by hand.
//!
//! ```text
//! {"seq":7,"op":"post","id":7,"room":"general","user":"ann","text":"hi","ts":"…","client_id":"c1"}
//! {"seq":9,"op":"edit","id":7,"room":"general","user":"ann","text":"hello","ts":"…"}
//! {"seq":10,"op":"delete","id":7,"room":"general","user":"ann","ts":"…"}
//! {"seq":11,"op":"post","id":11,"room":"general","user":"bob","text":"yes","ts":"…","client_id":"c3","thread":5}   (a reply to 5)
//! {"seq":12,"op":"react","id":5,"room":"general","user":"ann","ts":"…","emoji":"👍","added":true,"reactions":[{"emoji":"👍","count":1}]}
//! {"seq":11,"op":"member","room":"team","user":"bob","by":"ann","added":true,"ts":"…"}
//! {"seq":7,"op":"post","id":7,"room":"general","deleted":true}          (a redacted post, padded)
//! {"id":3,"room":"general","user":"bob","text":"hey","ts":"…","client_id":"c2"}   (a step-1 line: a post, seq = id)
//! ```
//!
//! A deleted message's post and edits are rewritten in place as redacted
//! lines of the same length (padded with spaces, which JSON allows), so no
//! offset moves and the file stays sorted by `seq`. A redacted reply keeps
//! its `thread` (it stays in its thread, deleted).
//!
//! Fields added later (`thread`, `emoji`, `added`, `reactions`) are
//! optional: a file written before them reads as it always did.

use serde::{Deserialize, Serialize};

use crate::model::{EventKind, Message, ReactionCount, StoredEvent};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    op: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(default)]
    room: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thread: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    emoji: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    added: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reactions: Option<Vec<ReactionCount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    by: Option<String>,
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: Option<u64>,
    id: Option<u64>,
}

/// The `seq` of a line (a step-1 line's `id`), without parsing the rest.
pub fn seq_of(line: &[u8]) -> Option<u64> {
    if !is_object(line) {
        return None;
    }
    serde_json::from_slice::<SeqOnly>(line).ok().and_then(|l| l.seq.or(l.id))
}

/// Whether a line is a JSON object, as every line is written. Serde also
/// reads a struct from an array of its fields, which `seq_of` and `parse`
/// would read differently (`[0]` is a post to one and damaged to the
/// other): an array is a damaged line to both.
fn is_object(line: &[u8]) -> bool {
    line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The event a line holds, or `None` (with a warning) when it is damaged.
pub fn parse(line: &[u8], path_hint: &str) -> Option<StoredEvent> {
    let parsed = if is_object(line) {
        serde_json::from_slice::<Line>(line).map_err(|e| e.to_string()).and_then(event_of)
    } else {
        Err("not a JSON object".to_string())
    };
    match parsed {
        Ok(event) => Some(event),
        Err(e) => {
            tracing::warn!(file = path_hint, error = %e, "skipping a damaged line");
            None
        }
    }
}

fn event_of(line: Line) -> Result<StoredEvent, String> {
    let seq = line.seq.or(line.id).ok_or("a line without seq or id")?;
    let target = || line.id.ok_or_else(|| "an edit or delete without the message id".to_string());
    let kind = match line.op.as_deref() {
        None | Some("post") => EventKind::Post(Message {
            id: seq,
            room: line.room.clone(),
            user: line.user.unwrap_or_default(),
            text: line.text.unwrap_or_default(),
            ts: line.ts.unwrap_or_default(),
            client_id: line.client_id.unwrap_or_default(),
            deleted: line.deleted,
            thread: line.thread,
            ..Message::default()
        }),
        Some("edit") => EventKind::Edit {
            id: target()?,
            user: line.user.unwrap_or_default(),
            text: if line.deleted { None } else { line.text },
            ts: line.ts.unwrap_or_default(),
        },
        Some("delete") => EventKind::Delete { id: target()?, user: line.user.unwrap_or_default(), ts: line.ts.unwrap_or_default() },
        Some("react") => EventKind::React {
            id: target()?,
            user: line.user.unwrap_or_default(),
            emoji: line.emoji.ok_or("a reaction without its emoji")?,
            added: line.added.unwrap_or(true),
            ts: line.ts.unwrap_or_default(),
            reactions: line.reactions.unwrap_or_default(),
        },
        Some("member") => EventKind::Member {
            user: line.user.ok_or("a member line without the user")?,
            by: line.by.unwrap_or_default(),
            added: line.added.ok_or("a member line without added")?,
            ts: line.ts.unwrap_or_default(),
        },
        Some(other) => return Err(format!("unknown op {other:?}")),
    };
    Ok(StoredEvent { seq, room: line.room, kind })
}

/// A line being written: the same fields as [`Line`], borrowed, so a
/// batch is serialised without copying every message's text.
#[derive(Serialize)]
struct LineOut<'a> {
    seq: u64,
    op: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    thread: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    emoji: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    added: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reactions: Option<&'a [ReactionCount]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<&'a str>,
}

/// The line for an event (without the newline).
pub fn line_of(event: &StoredEvent) -> Vec<u8> {
    let base = |op, id| LineOut {
        seq: event.seq,
        op,
        id: Some(id),
        room: &event.room,
        user: None,
        text: None,
        ts: None,
        client_id: None,
        deleted: false,
        thread: None,
        emoji: None,
        added: None,
        reactions: None,
        by: None,
    };
    let line = match &event.kind {
        EventKind::Post(m) if m.deleted => {
            let ts = m.thread.map(|_| m.ts.as_str());
            LineOut { deleted: true, thread: m.thread, ts, ..base("post", m.id) }
        }
        EventKind::Post(m) => LineOut {
            user: Some(&m.user),
            text: Some(&m.text),
            ts: Some(&m.ts),
            client_id: Some(&m.client_id),
            thread: m.thread,
            ..base("post", m.id)
        },
        EventKind::Edit { id, text: None, .. } => LineOut { deleted: true, ..base("edit", *id) },
        EventKind::Edit { id, user, text: Some(text), ts } => LineOut { user: Some(user), text: Some(text), ts: Some(ts), ..base("edit", *id) },
        EventKind::Delete { id, user, ts } => LineOut { user: Some(user), ts: Some(ts), ..base("delete", *id) },
        EventKind::React { id, user, emoji, added, ts, reactions } => LineOut {
            user: Some(user),
            ts: Some(ts),
            emoji: Some(emoji),
            added: Some(*added),
            reactions: Some(reactions),
            ..base("react", *id)
        },
        EventKind::Member { user, by, added, ts } => {
            LineOut { id: None, user: Some(user), by: Some(by), added: Some(*added), ts: Some(ts), ..base("member", 0) }
        }
    };
    serde_json::to_vec(&line).expect("a line always serialises")
}

/// A redacted post or edit line; a reply's post keeps its `thread` and
/// `ts` (see `Message::redacted`).
fn redacted(seq: u64, op: &str, id: u64, room: &str, reply: Option<(u64, String)>) -> Line {
    let (thread, ts) = reply.map_or((None, None), |(thread, ts)| (Some(thread), Some(ts)));
    Line { seq: Some(seq), op: Some(op.into()), id: Some(id), room: room.to_string(), deleted: true, thread, ts, ..Line::default() }
}

/// The redacted form of `original` (a post or an edit of a deleted
/// message), padded with spaces to the same length so it can replace it in
/// place; `None` if the line is not a post or edit, or would not fit.
pub fn redact_in_place(original: &[u8], path_hint: &str) -> Option<Vec<u8>> {
    let event = parse(original, path_hint)?;
    let (op, id, reply) = match &event.kind {
        EventKind::Post(m) => ("post", m.id, m.thread.map(|t| (t, m.ts.clone()))),
        EventKind::Edit { id, .. } => ("edit", *id, None),
        EventKind::Delete { .. } | EventKind::React { .. } | EventKind::Member { .. } => return None,
    };
    let mut line = serde_json::to_vec(&redacted(event.seq, op, id, &event.room, reply)).expect("a line always serialises");
    if line.len() > original.len() {
        return None;
    }
    line.resize(original.len(), b' ');
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(seq: u64, text: &str) -> StoredEvent {
        let m = Message {
            id: seq,
            room: "general".into(),
            user: "ann".into(),
            text: text.into(),
            ts: "2026-01-01T00:00:00.000Z".into(),
            client_id: format!("c{seq}"),
            ..Message::default()
        };
        StoredEvent { seq, room: "general".into(), kind: EventKind::Post(m) }
    }

    #[test]
    fn events_round_trip_through_their_lines() {
        let edit = StoredEvent {
            seq: 9,
            room: "general".into(),
            kind: EventKind::Edit { id: 7, user: "ann".into(), text: Some("hello".into()), ts: "t".into() },
        };
        let delete = StoredEvent { seq: 10, room: "general".into(), kind: EventKind::Delete { id: 7, user: "ann".into(), ts: "t".into() } };
        let mut reply = post(11, "yes");
        if let EventKind::Post(m) = &mut reply.kind {
            m.thread = Some(5);
        }
        let react = StoredEvent {
            seq: 12,
            room: "general".into(),
            kind: EventKind::React {
                id: 5,
                user: "ann".into(),
                emoji: "👍".into(),
                added: false,
                ts: "t".into(),
                reactions: vec![ReactionCount { emoji: "🎉".into(), count: 2 }],
            },
        };
        let member = StoredEvent {
            seq: 13,
            room: "general".into(),
            kind: EventKind::Member { user: "bob".into(), by: "ann".into(), added: false, ts: "t".into() },
        };
        for event in [post(7, "hi"), edit, delete, reply, react, member] {
            let line = line_of(&event);
            assert_eq!(parse(&line, "t"), Some(event.clone()), "{}", String::from_utf8_lossy(&line));
            assert_eq!(seq_of(&line), Some(event.seq));
        }
        let text = String::from_utf8(line_of(&post(7, "hi"))).unwrap();
        assert!(text.starts_with(r#"{"seq":7,"op":"post","id":7,"room":"general","user":"ann","text":"hi""#), "{text}");
    }

    #[test]
    fn a_step_one_line_is_a_post_whose_seq_is_its_id() {
        let line = br#"{"id":3,"room":"general","user":"bob","text":"hey","ts":"t","client_id":"c2"}"#;
        let event = parse(line, "t").unwrap();
        assert_eq!(event.seq, 3);
        assert_eq!(event.as_post().map(|m| m.text.as_str()), Some("hey"));
        assert_eq!(seq_of(line), Some(3));
    }

    #[test]
    fn a_redacted_reply_stays_in_its_thread() {
        let mut reply = post(11, "secret");
        if let EventKind::Post(m) = &mut reply.kind {
            m.thread = Some(5);
        }
        let redacted = redact_in_place(&line_of(&reply), "t").unwrap();
        let m = parse(&redacted, "t").unwrap().as_post().cloned().unwrap();
        assert!(m.deleted && m.text.is_empty() && m.thread == Some(5) && !m.ts.is_empty(), "{m:?}");
        assert_eq!(m, parse(&line_of(&reply), "t").unwrap().as_post().unwrap().redacted());
    }

    #[test]
    fn redaction_keeps_the_length_and_drops_the_text() {
        for original in [line_of(&post(7, "secret")), br#"{"id":3,"room":"general","user":"b","text":"s","ts":"t","client_id":"c"}"#.to_vec()] {
            let redacted = redact_in_place(&original, "t").unwrap();
            assert_eq!(redacted.len(), original.len());
            let text = String::from_utf8(redacted.clone()).unwrap();
            assert!(!text.contains("secret") && !text.contains("\"s\""), "{text}");
            let event = parse(&redacted, "t").unwrap();
            assert!(event.as_post().unwrap().deleted);
        }
    }
}
