//! What a batch of events writes, decided in memory before any of it is
//! written: the same rules as the reference backend (`store::memory`),
//! applied to the rows the batch touches.
//!
//! [`Batch`] starts from the room's counters and the messages the batch
//! names (looked up beforehand, in one query each), takes events one by
//! one, and ends as [`Writes`]: the event rows, the new and the changed
//! messages, the older messages whose text must be taken out of the log,
//! and the room's new counters. `append` feeds it checked [`NewEvent`]s
//! ([`Batch::apply_new`]); `chatroom migrate` feeds it stored events with
//! their seqs ([`Batch::apply_stored`]).

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::model::{EventKind, Message, NewEvent, ReactionCount, ReactionSet, StoredEvent, Username};
use crate::model::reaction::Reacted;
use crate::store::{Appended, DEDUP_WINDOW, StoreError};

/// A room's counters: its newest seq and how many posts it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counters {
    pub last_seq: u64,
    pub posts: u64,
}

impl Counters {
    /// Posts numbered above this are within the dedup window (the last
    /// [`DEDUP_WINDOW`] posts).
    pub fn window_start(&self) -> u64 {
        self.posts.saturating_sub(DEDUP_WINDOW as u64)
    }
}

/// A message as it is now: one row of `messages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MessageNow {
    pub id: u64,
    /// Its place among the room's posts (1, 2, …): the dedup window.
    pub post_no: u64,
    pub author: String,
    pub author_key: String,
    pub client_id: String,
    /// Empty once deleted.
    pub text: String,
    pub ts: String,
    pub edited_at: Option<String>,
    pub deleted: bool,
    /// The message it replies to.
    pub thread: Option<u64>,
    pub reply_count: u32,
    pub last_reply_at: Option<String>,
    pub reactions: ReactionSet,
}

impl MessageNow {
    /// As clients see it (redacted once deleted).
    pub fn shown(&self, room: &str) -> Message {
        let message = Message {
            id: self.id,
            room: room.to_string(),
            user: self.author.clone(),
            text: self.text.clone(),
            ts: self.ts.clone(),
            client_id: self.client_id.clone(),
            edited_at: self.edited_at.clone(),
            deleted: self.deleted,
            thread: self.thread,
            reply_count: self.reply_count,
            last_reply_at: self.last_reply_at.clone(),
            reactions: self.reactions.reactions(),
        };
        if self.deleted { message.redacted() } else { message }
    }
}

/// The kinds of event, as the `events.kind` column spells them.
pub(super) const POST: &str = "post";
pub(super) const EDIT: &str = "edit";
pub(super) const DELETE: &str = "delete";
pub(super) const REACT: &str = "react";
pub(super) const MEMBER: &str = "member";

/// One row of `events`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct EventRow {
    pub seq: u64,
    pub kind: &'static str,
    pub message_id: u64,
    pub author: String,
    /// A post's or edit's text; `None` for a delete, or once the message
    /// is deleted.
    pub text: Option<String>,
    /// A post's.
    pub client_id: Option<String>,
    pub ts: String,
    /// A reply's parent.
    pub thread: Option<u64>,
    /// A reaction's emoji; a member event's member.
    pub subject: Option<String>,
    /// A reaction's or member event's way: added, or taken back / removed.
    pub added: Option<bool>,
    /// A reaction's counts right after it (JSON).
    pub reactions: Option<String>,
}

impl EventRow {
    /// The stored event this row is (a post with no text is a deleted one).
    pub fn to_event(&self, room: &str) -> StoredEvent {
        let kind = match self.kind {
            POST => {
                let message = Message {
                    id: self.message_id,
                    room: room.to_string(),
                    user: self.author.clone(),
                    text: self.text.clone().unwrap_or_default(),
                    ts: self.ts.clone(),
                    client_id: self.client_id.clone().unwrap_or_default(),
                    thread: self.thread,
                    ..Message::default()
                };
                EventKind::Post(if self.text.is_none() { message.redacted() } else { message })
            }
            EDIT => EventKind::Edit { id: self.message_id, user: self.author.clone(), text: self.text.clone(), ts: self.ts.clone() },
            REACT => EventKind::React {
                id: self.message_id,
                user: self.author.clone(),
                emoji: self.subject.clone().unwrap_or_default(),
                added: self.added.unwrap_or(true),
                ts: self.ts.clone(),
                reactions: self.reactions.as_deref().and_then(|json| serde_json::from_str(json).ok()).unwrap_or_default(),
            },
            MEMBER => EventKind::Member {
                user: self.subject.clone().unwrap_or_default(),
                by: self.author.clone(),
                added: self.added.unwrap_or_default(),
                ts: self.ts.clone(),
            },
            _ => EventKind::Delete { id: self.message_id, user: self.author.clone(), ts: self.ts.clone() },
        };
        StoredEvent { seq: self.seq, room: room.to_string(), kind }
    }
}

/// Everything one batch writes, in one transaction.
#[derive(Debug, Default)]
pub(super) struct Writes {
    pub events: Vec<EventRow>,
    /// Posted in this batch (as they are at its end).
    pub new_messages: Vec<MessageNow>,
    /// Older messages edited or deleted in this batch (as they are at its end).
    pub changed_messages: Vec<MessageNow>,
    /// Older messages deleted in this batch: their post's and edits' text
    /// is taken out of the log.
    pub redacted: Vec<u64>,
    /// The room's counters after the batch; `None` if nothing was stored.
    pub counters: Option<Counters>,
    /// Reactions added in this batch (or added again: a new seq).
    pub reactions_added: Vec<(u64, Reacted)>,
    /// Reactions taken back in this batch: (message id, emoji, user key).
    pub reactions_removed: Vec<(u64, String, String)>,
}

/// A batch being planned.
pub(super) struct Batch {
    room: String,
    counters: Counters,
    window_start: u64,
    /// Every message the batch has seen: looked up, or posted in it.
    messages: HashMap<u64, MessageNow>,
    /// (author key, client_id) → id of the newest such post in the window.
    sent: HashMap<(String, String), u64>,
    posted: Vec<u64>,
    changed: BTreeSet<u64>,
    deleted: HashSet<u64>,
    events: Vec<EventRow>,
    /// The reactions of each message reacted to in this batch, before it.
    reactions_before: HashMap<u64, ReactionSet>,
}

impl Batch {
    /// A batch on `room` whose counters are `counters`, knowing `known`:
    /// the posts of the dedup window the batch's `client_id`s might repeat,
    /// and the messages its edits and deletes name.
    pub fn new(room: &str, counters: Counters, known: Vec<MessageNow>) -> Self {
        let window_start = counters.window_start();
        let mut sent: HashMap<(String, String), u64> = HashMap::new();
        for m in known.iter().filter(|m| m.post_no > window_start) {
            let newest = sent.entry((m.author_key.clone(), m.client_id.clone())).or_insert(m.id);
            *newest = (*newest).max(m.id);
        }
        Self {
            room: room.to_string(),
            counters,
            window_start,
            messages: known.into_iter().map(|m| (m.id, m)).collect(),
            sent,
            posted: Vec::new(),
            changed: BTreeSet::new(),
            deleted: HashSet::new(),
            events: Vec::new(),
            reactions_before: HashMap::new(),
        }
    }

    /// Checks one new event and, if it is to be stored, gives it the next
    /// seq: a post whose `(user, client_id)` is in the window (or earlier
    /// in the batch) answers the stored copy as it is now; a reply needs a
    /// live parent that is not a reply; an edit or delete needs a live
    /// message by the same author, a reaction a live message (it toggles).
    pub fn apply_new(&mut self, new: NewEvent, ts: &str) -> Result<Appended, StoreError> {
        let seq = self.counters.last_seq + 1;
        let row = |kind, message_id, user: &Username| EventRow { seq, kind, message_id, author: user.to_string(), ts: ts.into(), ..EventRow::default() };
        match new {
            NewEvent::Post { user, text, client_id, thread } => {
                if let Some(stored) = self.sent_before(&user, &client_id) {
                    return Ok(Appended::Duplicate(stored));
                }
                if let Some(parent) = thread {
                    self.live(parent).filter(|m| m.thread.is_none()).ok_or(StoreError::MessageNotFound(parent))?;
                }
                Ok(Appended::New(self.record(EventRow { text: Some(text), client_id: Some(client_id), thread, ..row(POST, seq, &user) })))
            }
            NewEvent::Edit { user, id, text } => {
                self.check_author(id, &user)?;
                Ok(Appended::New(self.record(EventRow { text: Some(text), ..row(EDIT, id, &user) })))
            }
            NewEvent::Delete { user, id } => {
                self.check_author(id, &user)?;
                Ok(Appended::New(self.record(row(DELETE, id, &user))))
            }
            NewEvent::React { user, id, emoji } => {
                let mut reactions = self.live(id).ok_or(StoreError::MessageNotFound(id))?.reactions.clone();
                let added = reactions.toggle(&emoji, &user.key(), seq);
                let counts = counts_json(&reactions.counts());
                Ok(Appended::New(self.record(EventRow { subject: Some(emoji), added: Some(added), reactions: Some(counts), ..row(REACT, id, &user) })))
            }
            NewEvent::Member { by, member, added } => {
                Ok(Appended::New(self.record(EventRow { subject: Some(member.to_string()), added: Some(added), ..row(MEMBER, 0, &by) })))
            }
        }
    }

    /// Takes an event as stored elsewhere (its seq kept, no checks: it was
    /// checked when it was first stored); `chatroom migrate`.
    pub fn apply_stored(&mut self, event: &StoredEvent) {
        let base = |kind, message_id, author: &str, ts: &str| EventRow {
            seq: event.seq,
            kind,
            message_id,
            author: author.to_string(),
            ts: ts.to_string(),
            ..EventRow::default()
        };
        let row = match &event.kind {
            EventKind::Post(m) => EventRow {
                text: (!m.deleted).then(|| m.text.clone()),
                client_id: Some(m.client_id.clone()),
                thread: m.thread,
                ..base(POST, m.id, &m.user, &m.ts)
            },
            EventKind::Edit { id, user, text, ts } => EventRow { text: text.clone(), ..base(EDIT, *id, user, ts) },
            EventKind::Delete { id, user, ts } => base(DELETE, *id, user, ts),
            EventKind::React { id, user, emoji, added, ts, reactions } => EventRow {
                subject: Some(emoji.clone()),
                added: Some(*added),
                reactions: Some(counts_json(reactions)),
                ..base(REACT, *id, user, ts)
            },
            EventKind::Member { user, by, added, ts } => EventRow { subject: Some(user.clone()), added: Some(*added), ..base(MEMBER, 0, by, ts) },
        };
        let deleted_post = event.as_post().is_some_and(|m| m.deleted);
        self.record(row);
        if deleted_post {
            self.delete_message(event.message_id());
        }
    }

    /// What the batch writes.
    pub fn finish(mut self) -> Writes {
        for row in &mut self.events {
            if (row.kind == POST || row.kind == EDIT) && self.deleted.contains(&row.message_id) {
                row.text = None;
            }
        }
        let new: HashSet<u64> = self.posted.iter().copied().collect();
        let message = |id: &u64| self.messages[id].clone();
        let (mut reactions_added, mut reactions_removed) = (Vec::new(), Vec::new());
        for (id, before) in &self.reactions_before {
            let after = &self.messages[id].reactions;
            for r in before.entries().iter().filter(|r| !after.has(&r.emoji, &r.user)) {
                reactions_removed.push((*id, r.emoji.clone(), r.user.clone()));
            }
            for r in after.entries().iter().filter(|r| !before.entries().contains(r)) {
                reactions_added.push((*id, r.clone()));
            }
        }
        Writes {
            new_messages: self.posted.iter().map(message).collect(),
            changed_messages: self.changed.iter().filter(|id| !new.contains(id)).map(message).collect(),
            redacted: self.deleted.iter().copied().filter(|id| !new.contains(id)).collect(),
            counters: (!self.events.is_empty()).then_some(self.counters),
            events: self.events,
            reactions_added,
            reactions_removed,
        }
    }

    /// Message `id`, if it is known and not deleted.
    fn live(&self, id: u64) -> Option<&MessageNow> {
        self.messages.get(&id).filter(|m| !m.deleted)
    }

    /// The post `user` made with `client_id` among the window and the
    /// batch so far, as it is now.
    fn sent_before(&self, user: &Username, client_id: &str) -> Option<Message> {
        let id = self.sent.get(&(user.key(), client_id.to_string()))?;
        Some(self.messages[id].shown(&self.room))
    }

    /// `MessageNotFound` unless message `id` is live; `NotAuthor` unless
    /// `user` wrote it.
    fn check_author(&self, id: u64, user: &Username) -> Result<(), StoreError> {
        let message = self.live(id).ok_or(StoreError::MessageNotFound(id))?;
        if message.author_key != user.key() {
            return Err(StoreError::NotAuthor);
        }
        Ok(())
    }

    /// Adds `row` to the log and applies it to the messages it touches;
    /// the event as stored now.
    fn record(&mut self, row: EventRow) -> StoredEvent {
        let event = row.to_event(&self.room);
        self.counters.last_seq = self.counters.last_seq.max(row.seq);
        match row.kind {
            POST => self.add_post(&row),
            EDIT => self.edit_message(&row),
            REACT => self.react_to_message(&row),
            MEMBER => {}
            _ => self.delete_message(row.message_id),
        }
        self.events.push(row);
        event
    }

    fn add_post(&mut self, row: &EventRow) {
        self.counters.posts += 1;
        let message = MessageNow {
            id: row.message_id,
            post_no: self.counters.posts,
            author: row.author.clone(),
            author_key: row.author.to_lowercase(),
            client_id: row.client_id.clone().unwrap_or_default(),
            text: row.text.clone().unwrap_or_default(),
            ts: row.ts.clone(),
            edited_at: None,
            deleted: false,
            thread: row.thread,
            reply_count: 0,
            last_reply_at: None,
            reactions: ReactionSet::default(),
        };
        if let Some(parent) = row.thread.and_then(|p| self.messages.get_mut(&p)) {
            parent.reply_count += 1;
            parent.last_reply_at = Some(row.ts.clone());
            self.changed.insert(parent.id);
        }
        if message.post_no > self.window_start {
            self.sent.insert((message.author_key.clone(), message.client_id.clone()), message.id);
        }
        self.posted.push(message.id);
        self.messages.insert(message.id, message);
    }

    fn edit_message(&mut self, row: &EventRow) {
        let (Some(message), Some(text)) = (self.messages.get_mut(&row.message_id), &row.text) else { return };
        if message.deleted {
            return;
        }
        message.text = text.clone();
        message.edited_at = Some(row.ts.clone());
        self.changed.insert(row.message_id);
    }

    fn react_to_message(&mut self, row: &EventRow) {
        let (Some(message), Some(emoji)) = (self.messages.get_mut(&row.message_id), &row.subject) else { return };
        self.reactions_before.entry(row.message_id).or_insert_with(|| message.reactions.clone());
        message.reactions.set(emoji, &row.author.to_lowercase(), row.seq, row.added.unwrap_or(true));
    }

    fn delete_message(&mut self, id: u64) {
        if let Some(message) = self.messages.get_mut(&id) {
            message.deleted = true;
            message.text.clear();
            message.edited_at = None;
            self.changed.insert(id);
        }
        self.deleted.insert(id);
    }
}

/// A reaction event's counts as the `events.reactions` column keeps them.
fn counts_json(counts: &[ReactionCount]) -> String {
    serde_json::to_string(counts).expect("counts always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &str) -> Username {
        Username::parse(raw).unwrap()
    }

    fn post(user: &str, text: &str, client_id: &str) -> NewEvent {
        NewEvent::Post { user: name(user), text: text.into(), client_id: client_id.into(), thread: None }
    }

    fn stored(id: u64, post_no: u64, author: &str, client_id: &str) -> MessageNow {
        MessageNow {
            id,
            post_no,
            author: author.into(),
            author_key: author.to_lowercase(),
            client_id: client_id.into(),
            text: format!("text {id}"),
            ts: "t0".into(),
            edited_at: None,
            deleted: false,
            thread: None,
            reply_count: 0,
            last_reply_at: None,
            reactions: ReactionSet::default(),
        }
    }

    #[test]
    fn seqs_follow_the_counter_and_repeats_answer_the_copy_as_it_is_now() {
        let counters = Counters { last_seq: 10, posts: 7 };
        let mut batch = Batch::new("general", counters, vec![stored(9, 7, "Ann", "a")]);
        let edit = NewEvent::Edit { user: name("ann"), id: 9, text: "new".into() };
        assert!(matches!(batch.apply_new(edit, "t1"), Ok(Appended::New(e)) if e.seq == 11));
        let repeat = batch.apply_new(post("ANN", "again", "a"), "t1").unwrap();
        assert!(matches!(&repeat, Appended::Duplicate(m) if m.id == 9 && m.text == "new" && m.edited_at.as_deref() == Some("t1")));
        assert!(matches!(batch.apply_new(post("bob", "hi", "a"), "t1"), Ok(Appended::New(e)) if e.seq == 12));
        let writes = batch.finish();
        assert_eq!(writes.counters, Some(Counters { last_seq: 12, posts: 8 }));
        assert_eq!(writes.new_messages.iter().map(|m| (m.id, m.post_no)).collect::<Vec<_>>(), [(12, 8)]);
        assert_eq!(writes.changed_messages.iter().map(|m| m.id).collect::<Vec<_>>(), [9]);
    }

    #[test]
    fn a_post_outside_the_window_is_not_a_repeat() {
        let counters = Counters { last_seq: 2000, posts: DEDUP_WINDOW as u64 + 1 };
        let mut batch = Batch::new("general", counters, vec![stored(1, 1, "ann", "old")]);
        assert!(matches!(batch.apply_new(post("ann", "again", "old"), "t"), Ok(Appended::New(_))));
    }

    #[test]
    fn a_delete_in_the_batch_takes_the_text_out_of_its_events_and_blocks_later_changes() {
        let mut batch = Batch::new("general", Counters { last_seq: 0, posts: 0 }, Vec::new());
        batch.apply_new(post("ann", "secret", "c"), "t").unwrap();
        batch.apply_new(NewEvent::Edit { user: name("ann"), id: 1, text: "more secret".into() }, "t").unwrap();
        batch.apply_new(NewEvent::Delete { user: name("ann"), id: 1 }, "t").unwrap();
        let late = batch.apply_new(NewEvent::Edit { user: name("ann"), id: 1, text: "x".into() }, "t");
        assert!(matches!(late, Err(StoreError::MessageNotFound(1))));
        let writes = batch.finish();
        assert!(writes.events.iter().all(|e| e.text.is_none()), "{:?}", writes.events);
        assert!(writes.new_messages[0].deleted && writes.new_messages[0].text.is_empty());
        assert!(writes.redacted.is_empty(), "nothing older to redact");
    }

    #[test]
    fn only_the_author_changes_a_message() {
        let mut batch = Batch::new("general", Counters { last_seq: 3, posts: 3 }, vec![stored(2, 2, "ann", "c")]);
        let by_bob = batch.apply_new(NewEvent::Delete { user: name("bob"), id: 2 }, "t");
        assert!(matches!(by_bob, Err(StoreError::NotAuthor)));
        let missing = batch.apply_new(NewEvent::Delete { user: name("ann"), id: 3 }, "t");
        assert!(matches!(missing, Err(StoreError::MessageNotFound(3))));
        let writes = batch.finish();
        assert_eq!(writes.counters, None, "nothing stored");
    }
}
