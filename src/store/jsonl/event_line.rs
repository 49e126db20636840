//! One line of a room file: one event of the room's log, readable by hand.
//!
//! ```text
//! {"seq":7,"op":"post","id":7,"room":"general","user":"ann","text":"hi","ts":"…","client_id":"c1"}
//! {"seq":9,"op":"edit","id":7,"room":"general","user":"ann","text":"hello","ts":"…"}
//! {"seq":10,"op":"delete","id":7,"room":"general","user":"ann","ts":"…"}
//! {"seq":11,"op":"member","room":"team","user":"bob","by":"ann","added":true,"ts":"…"}
//! {"seq":7,"op":"post","id":7,"room":"general","deleted":true}          (a redacted post, padded)
//! {"id":3,"room":"general","user":"bob","text":"hey","ts":"…","client_id":"c2"}   (a step-1 line: a post, seq = id)
//! ```
//!
//! A deleted message's post and edits are rewritten in place as redacted
//! lines of the same length (padded with spaces, which JSON allows), so no
//! offset moves and the file stays sorted by `seq`.

use serde::{Deserialize, Serialize};

use crate::model::{EventKind, Message, StoredEvent};

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
    by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    added: Option<bool>,
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
            edited_at: None,
            deleted: line.deleted,
        }),
        Some("edit") => EventKind::Edit {
            id: target()?,
            user: line.user.unwrap_or_default(),
            text: if line.deleted { None } else { line.text },
            ts: line.ts.unwrap_or_default(),
        },
        Some("delete") => EventKind::Delete { id: target()?, user: line.user.unwrap_or_default(), ts: line.ts.unwrap_or_default() },
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
    by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    added: Option<bool>,
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
        by: None,
        added: None,
    };
    let line = match &event.kind {
        EventKind::Post(m) if m.deleted => LineOut { deleted: true, ..base("post", m.id) },
        EventKind::Post(m) => LineOut {
            user: Some(&m.user),
            text: Some(&m.text),
            ts: Some(&m.ts),
            client_id: Some(&m.client_id),
            ..base("post", m.id)
        },
        EventKind::Edit { id, text: None, .. } => LineOut { deleted: true, ..base("edit", *id) },
        EventKind::Edit { id, user, text: Some(text), ts } => LineOut { user: Some(user), text: Some(text), ts: Some(ts), ..base("edit", *id) },
        EventKind::Delete { id, user, ts } => LineOut { user: Some(user), ts: Some(ts), ..base("delete", *id) },
        EventKind::Member { user, by, added, ts } => {
            LineOut { id: None, user: Some(user), by: Some(by), added: Some(*added), ts: Some(ts), ..base("member", 0) }
        }
    };
    serde_json::to_vec(&line).expect("a line always serialises")
}

fn redacted(seq: u64, op: &str, id: u64, room: &str) -> Line {
    Line { seq: Some(seq), op: Some(op.into()), id: Some(id), room: room.to_string(), deleted: true, ..Line::default() }
}

/// The redacted form of `original` (a post or an edit of a deleted
/// message), padded with spaces to the same length so it can replace it in
/// place; `None` if the line is not a post or edit, or would not fit.
pub fn redact_in_place(original: &[u8], path_hint: &str) -> Option<Vec<u8>> {
    let event = parse(original, path_hint)?;
    let (op, id) = match &event.kind {
        EventKind::Post(m) => ("post", m.id),
        EventKind::Edit { id, .. } => ("edit", *id),
        EventKind::Delete { .. } | EventKind::Member { .. } => return None,
    };
    let mut line = serde_json::to_vec(&redacted(event.seq, op, id, &event.room)).expect("a line always serialises");
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
            edited_at: None,
            deleted: false,
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
        let member = StoredEvent {
            seq: 11,
            room: "general".into(),
            kind: EventKind::Member { user: "bob".into(), by: "ann".into(), added: false, ts: "t".into() },
        };
        for event in [post(7, "hi"), edit, delete, member] {
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
