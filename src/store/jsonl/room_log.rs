//! One room's event log: `<data>/rooms/<room>.jsonl`, one event per line
//! (see `event_line`).
//!
//! Opening a room reads only the file's tail: the latest events (enough to
//! hold the last [`DEDUP_WINDOW`] posts) are kept in memory — they answer
//! "the latest 50", resumes from a recent `seq` and repeated `client_id`s
//! without touching the disk; older pages are found by binary search on
//! `seq` in the file itself (see `lines`). Every change of the room — each
//! edit, delete and reaction, and each reply's post (it changes its
//! parent's `reply_count`) — is known from its change index
//! (`<room>.jsonl.changes`, see [`ChangeIndex`]), so history shows each
//! message as it is now without reading the log, and a thread's replies
//! are found without a scan. Without an index, the tail's own changes are
//! all that is needed until a read reaches past the tail (a message's
//! changes come after it); then the log is scanned once (lines are checked
//! for `"op":"edit"`, `"op":"delete"`, `"op":"react"` or `"thread":`
//! before any is parsed) and the index written.
//!
//! A torn last line — the process died in the middle of a write — is moved
//! to `<room>.jsonl.torn` and cut off, with a warning.
//!
//! Seqs only grow down a file. One whose tail is out of order (damaged or
//! edited by hand) is read in seq order, a line repeating an earlier seq
//! left out; the whole file is then scanned for its largest seq, and the
//! next event gets a seq above it. A warning names the file. A new post
//! thus never reuses a seq, and a retry finds the post it repeats. (A
//! file whose tail is in order is trusted to be in order before it too:
//! every read by seq assumes it, and checking would read the whole file at
//! every open.)
//!
//! Writes are appended as whole lines in one `write` per batch. `committed`
//! is the length of the file that holds only complete lines; readers never
//! look past it. A delete rewrites the message's post and edits in place as
//! redacted lines of the same length, so its text leaves the file at once;
//! readers of the file hold `rewriting` for reading while they read.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::durability::Durability;
use super::{event_line, file_error, lines};
use crate::store::StoreError;
use crate::model::{EventKind, Message, NewEvent, ReactionSet, RoomName, StoredEvent, now_rfc3339};
use crate::store::{Appended, DEDUP_WINDOW, HistoryQuery, ThreadPage};

/// What became of one message after it was posted.
#[derive(Debug, Clone, Default)]
struct Change {
    /// The latest text and when it was set.
    edit: Option<(String, String)>,
    deleted: bool,
    /// The seqs of its edit lines (to redact them when it is deleted).
    edit_seqs: Vec<u64>,
    /// Its replies' ids, oldest first (deleted ones too).
    replies: Vec<u64>,
    /// When the latest reply was posted.
    last_reply_at: Option<String>,
    reactions: ReactionSet,
}

/// Whether an event changes a message other than by being posted: an
/// edit, delete or reaction, or a reply (it changes its parent). These are
/// what the change index holds.
fn is_change(event: &StoredEvent) -> bool {
    !event.is_post() || event.thread().is_some()
}

/// Whether `event` bears on message `id` (is about it, or replies to it).
fn touches(event: &StoredEvent, id: u64) -> bool {
    event.message_id() == id || event.thread() == Some(id)
}

/// Changes by message id: every message that has one.
#[derive(Default)]
struct Changes(HashMap<u64, Change>);

impl Changes {
    fn apply(&mut self, event: &StoredEvent) {
        match &event.kind {
            EventKind::Post(m) => {
                if let Some(parent) = m.thread {
                    let change = self.0.entry(parent).or_default();
                    change.replies.push(m.id);
                    change.last_reply_at = Some(m.ts.clone());
                }
            }
            EventKind::Member { .. } => {}
            EventKind::Edit { id, text, ts, .. } => {
                let change = self.0.entry(*id).or_default();
                change.edit_seqs.push(event.seq);
                if let Some(text) = text {
                    change.edit = Some((text.clone(), ts.clone()));
                }
            }
            EventKind::Delete { id, .. } => {
                let change = self.0.entry(*id).or_default();
                change.deleted = true;
                change.edit = None;
                change.reactions = ReactionSet::default();
            }
            EventKind::React { id, user, emoji, added, .. } => {
                self.0.entry(*id).or_default().reactions.set(emoji, &user.to_lowercase(), event.seq, *added);
            }
        }
    }

    fn is_deleted(&self, id: u64) -> bool {
        self.0.get(&id).is_some_and(|c| c.deleted)
    }

    /// The message as it is now.
    fn current(&self, message: &Message) -> Message {
        let Some(change) = self.0.get(&message.id) else { return message.clone() };
        if change.deleted {
            return message.redacted();
        }
        let mut now = message.clone();
        if let Some((text, at)) = &change.edit {
            now.text = text.clone();
            now.edited_at = Some(at.clone());
        }
        now.reply_count = change.replies.len() as u32;
        now.last_reply_at = change.last_reply_at.clone();
        now.reactions = change.reactions.reactions();
        now
    }

    /// The event as the log shows it: a deleted message's text taken out.
    fn shown(&self, event: StoredEvent) -> StoredEvent {
        let deleted = self.is_deleted(event.message_id());
        let kind = match event.kind {
            EventKind::Post(m) if deleted => EventKind::Post(m.redacted()),
            EventKind::Edit { id, user, ts, .. } if deleted => EventKind::Edit { id, user, text: None, ts },
            kind => kind,
        };
        StoredEvent { kind, ..event }
    }
}

/// The latest events of a room, and who sent which `client_id` among them.
#[derive(Default)]
struct Recent {
    events: VecDeque<StoredEvent>,
    posts: usize,
    /// (lower-cased user, client_id) → id, for the posts in `events`.
    by_client: HashMap<(String, String), u64>,
    /// The largest seq of a damaged file (0 for one in order): the next
    /// event's seq is above it.
    floor: u64,
}

impl Recent {
    fn push(&mut self, event: StoredEvent) {
        if let Some(m) = event.as_post() {
            self.by_client.insert(dedup_key(&m.user, &m.client_id), m.id);
            self.posts += 1;
        }
        self.events.push_back(event);
        while self.posts > DEDUP_WINDOW {
            let old = self.events.pop_front().expect("not empty");
            if let Some(m) = old.as_post() {
                self.posts -= 1;
                let key = dedup_key(&m.user, &m.client_id);
                if self.by_client.get(&key) == Some(&m.id) {
                    self.by_client.remove(&key);
                }
            }
        }
    }

    fn last_seq(&self) -> u64 {
        self.events.back().map_or(self.floor, |e| e.seq.max(self.floor))
    }

    fn first_seq(&self) -> Option<u64> {
        self.events.front().map(|e| e.seq)
    }

    /// The event with this seq, if it is in memory.
    fn get(&self, seq: u64) -> Option<&StoredEvent> {
        let first = self.first_seq()?;
        // Seqs are contiguous unless the file was damaged: try the index.
        let guess = seq.checked_sub(first).and_then(|i| self.events.get(i as usize)).filter(|e| e.seq == seq);
        guess.or_else(|| self.events.iter().find(|e| e.seq == seq))
    }

    fn find_post(&self, key: &(String, String)) -> Option<&Message> {
        self.get(*self.by_client.get(key)?)?.as_post()
    }

    /// Takes a deleted message's text out of the events in memory.
    fn redact(&mut self, id: u64) {
        for event in self.events.iter_mut().filter(|e| e.message_id() == id) {
            match &mut event.kind {
                EventKind::Post(m) => *m = m.redacted(),
                EventKind::Edit { text, .. } => *text = None,
                EventKind::Delete { .. } | EventKind::React { .. } | EventKind::Member { .. } => {}
            }
        }
    }

    /// Answers a history query from memory when the slice lies inside it.
    fn answer(&self, query: &HistoryQuery, file_is_empty: bool) -> Option<Vec<Message>> {
        let first = match self.first_seq() {
            Some(first) => first,
            None if file_is_empty => return Some(Vec::new()),
            None => return None,
        };
        let posts = self.events.iter().filter_map(StoredEvent::as_post);
        let covered = match (query.after, query.before) {
            (Some(after), _) => after.saturating_add(1) >= first,
            (None, before) => {
                let upper = before.unwrap_or(u64::MAX);
                first <= 1 || posts.clone().filter(|m| m.id < upper).count() >= query.limit
            }
        };
        if !covered {
            return None;
        }
        let admitted = posts.filter(|m| query.admits(m.id));
        Some(if query.after.is_some() {
            admitted.take(query.limit).cloned().collect()
        } else {
            let all: Vec<&Message> = admitted.collect();
            all[all.len().saturating_sub(query.limit)..].iter().map(|m| (*m).clone()).collect()
        })
    }

    /// Answers an events query from memory when it starts inside it.
    fn events_after(&self, after: u64, limit: usize, file_is_empty: bool) -> Option<Vec<StoredEvent>> {
        match self.first_seq() {
            Some(first) if after.saturating_add(1) >= first => {
                Some(self.events.iter().filter(|e| e.seq > after).take(limit).cloned().collect())
            }
            None if file_is_empty => Some(Vec::new()),
            _ => None,
        }
    }
}

fn dedup_key(user: &str, client_id: &str) -> (String, String) {
    (user.to_lowercase(), client_id.to_string())
}

/// A room's state in memory: its latest events and the changes known.
///
/// At open only the tail's edits and deletes are known. That is enough for
/// everything the tail answers (a message's edits and delete come after it,
/// so a message in the tail has them in the tail too) and for deletes of
/// older messages made recently. The rest of the file is scanned once, the
/// first time a read or a change reaches past the tail (`complete`).
#[derive(Default)]
struct State {
    recent: Recent,
    changes: Changes,
    /// Whether `changes` covers the whole file.
    complete: bool,
    /// Every change of the room (see [`is_change`]), once `complete`, in
    /// seq order (what the change index holds).
    change_log: Vec<StoredEvent>,
}

impl State {
    /// Knows these changes (the whole file's, when `complete`).
    fn adopt(&mut self, change_log: Vec<StoredEvent>) {
        let mut changes = Changes::default();
        change_log.iter().for_each(|e| changes.apply(e));
        self.changes = changes;
        self.change_log = change_log;
        self.complete = true;
    }
}

/// An open room file. Appends must be serialised by the caller.
pub struct RoomLog {
    room: RoomName,
    path: PathBuf,
    file: File,
    committed: AtomicU64,
    state: Mutex<State>,
    index: ChangeIndex,
    /// Held for reading while the file is read, for writing while a delete
    /// rewrites lines in place.
    rewriting: RwLock<()>,
    /// Serialises appends (the hub already does; this keeps the store safe
    /// on its own).
    write_lock: tokio::sync::Mutex<()>,
    durability: Durability,
}

/// Lines that may hold a change (checked before parsing; a string value
/// cannot hold these bytes, its quotes are escaped).
const CHANGE_MARKERS: [&[u8]; 4] = [br#""op":"edit""#, br#""op":"delete""#, br#""op":"react""#, br#""thread":"#];

impl RoomLog {
    /// Opens (creating if needed) a room's file and loads its tail (and the
    /// tail's edits and deletes).
    pub fn open(rooms_dir: &Path, room: &RoomName, durability: Durability) -> io::Result<Self> {
        let path = rooms_dir.join(format!("{room}.jsonl"));
        let existed = path.exists();
        let file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(file_error("open", &path))?;
        if !existed {
            durability.after_create(rooms_dir).map_err(file_error("sync", rooms_dir))?;
        }
        let len = repair_torn_tail(&file, &path).map_err(file_error("repair", &path))?;
        let hint = path.display().to_string();
        let mut tail = lines::read_backward(&file, len, DEDUP_WINDOW, &StoredEvent::is_post, &hint).map_err(file_error("read", &path))?;
        let index = ChangeIndex::beside(&path);
        let mut state = State::default();
        if let Some(left_out) = put_in_seq_order(&mut tail) {
            state.recent.floor = lines::largest_seq(&file, len).map_err(file_error("read", &path))?;
            tracing::warn!(
                file = %path.display(), left_out, largest_seq = state.recent.floor,
                "the room file's seqs are out of order (damaged or edited by hand): reading its latest events in seq order, new events go above its largest seq"
            );
        }
        let whole_file = tail.iter().filter(|e| e.is_post()).count() < DEDUP_WINDOW;
        let last_seq = tail.last().map_or(0, |e| e.seq);
        let stale_index = match index.read().map_err(file_error("read", &index.path))? {
            Some(indexed) => {
                // The index may lack the last batch's changes (a crash
                // between the two writes) or hold ones the log lost.
                let (read, known) = (indexed.len(), indexed.last().map_or(0, |e| e.seq));
                let mut log: Vec<StoredEvent> = indexed.into_iter().filter(|e| e.seq <= last_seq).collect();
                log.extend(tail.iter().filter(|e| is_change(e) && e.seq > known).cloned());
                let stale = log.len() != read || log.last().map_or(0, |e| e.seq) != known;
                state.adopt(log);
                stale
            }
            None if whole_file => {
                state.adopt(tail.iter().filter(|e| is_change(e)).cloned().collect());
                true
            }
            None => {
                tail.iter().for_each(|event| state.changes.apply(event));
                false
            }
        };
        if stale_index && let Err(e) = index.rewrite(&state.change_log) {
            index.forget(&e);
        }
        for event in tail {
            let shown = state.changes.shown(event);
            state.recent.push(shown);
        }
        Ok(Self {
            room: room.clone(),
            path,
            file,
            committed: AtomicU64::new(len),
            state: Mutex::new(state),
            index,
            rewriting: RwLock::new(()),
            write_lock: tokio::sync::Mutex::new(()),
            durability,
        })
    }

    /// The newest seq (0 for an empty room).
    pub fn last_seq(&self) -> u64 {
        self.state.lock().expect("room state").recent.last_seq()
    }

    /// Stores a batch in order (see `MessageStore::append`): each item gets
    /// its own answer; the batch is one write. Blocking: call from a
    /// blocking-friendly context.
    pub fn append_blocking(&self, batch: Vec<NewEvent>) -> io::Result<Vec<Result<Appended, StoreError>>> {
        let mut state = self.state.lock().expect("room state");
        // Only a damaged or hand-edited file gets there: refuse, never wrap.
        if state.recent.last_seq().checked_add(batch.len() as u64).is_none() {
            return Err(file_error("append to", &self.path)(io::Error::other("the room's seq would pass its largest value")));
        }
        let mut plan = Plan::new(state.recent.last_seq() + 1, self.room.as_str());
        for new in batch {
            let answer = self.plan_one(&mut state, &mut plan, new)?;
            plan.answers.push(answer);
        }
        if plan.fresh.is_empty() {
            return Ok(plan.answers);
        }
        self.write_whole(&plan.fresh)?;
        let changed: Vec<StoredEvent> = plan.fresh.iter().filter(|e| is_change(e)).cloned().collect();
        for event in plan.fresh {
            state.changes.apply(&event);
            state.recent.push(event);
        }
        self.record_changes(&mut state, changed, !plan.deleted.is_empty());
        for id in plan.deleted {
            state.recent.redact(id);
            let edit_seqs = state.changes.0.get(&id).map(|c| c.edit_seqs.clone()).unwrap_or_default();
            self.redact_lines(std::iter::once(id).chain(edit_seqs));
        }
        Ok(plan.answers)
    }

    /// Checks one new event against what is stored and what the batch
    /// already holds; queues it in `plan` if it is to be stored.
    fn plan_one(&self, state: &mut State, plan: &mut Plan, new: NewEvent) -> io::Result<Result<Appended, StoreError>> {
        match new {
            NewEvent::Post { user, text, client_id, thread } => {
                let key = dedup_key(user.as_str(), &client_id);
                let stored = state.recent.find_post(&key).map(|m| plan.current(&state.changes, m));
                let earlier = stored.or_else(|| plan.post_by_key(&state.changes, &key));
                if let Some(earlier) = earlier {
                    return Ok(Ok(Appended::Duplicate(earlier)));
                }
                if let Some(parent) = thread {
                    match self.live_post(state, plan, parent)? {
                        Some(m) if m.thread.is_none() => {}
                        _ => return Ok(Err(StoreError::MessageNotFound(parent))),
                    }
                }
                let id = plan.post(user.as_str(), text, client_id, thread);
                plan.by_client.insert(key, id);
                Ok(Ok(Appended::New(plan.last())))
            }
            NewEvent::Edit { user, id, text } => {
                if let Err(refused) = self.check_author(state, plan, id, user.as_str())? {
                    return Ok(Err(refused));
                }
                plan.push(EventKind::Edit { id, user: user.to_string(), text: Some(text), ts: plan.ts.clone() });
                Ok(Ok(Appended::New(plan.last())))
            }
            NewEvent::Delete { user, id } => {
                if let Err(refused) = self.check_author(state, plan, id, user.as_str())? {
                    return Ok(Err(refused));
                }
                plan.push(EventKind::Delete { id, user: user.to_string(), ts: plan.ts.clone() });
                plan.deleted.push(id);
                Ok(Ok(Appended::New(plan.last())))
            }
            NewEvent::React { user, id, emoji } => {
                if self.live_post(state, plan, id)?.is_none() {
                    return Ok(Err(StoreError::MessageNotFound(id)));
                }
                let mut reactions = plan.change(&state.changes, id).reactions;
                let added = reactions.toggle(&emoji, &user.key(), plan.next_seq);
                let ts = plan.ts.clone();
                plan.push(EventKind::React { id, user: user.to_string(), emoji, added, ts, reactions: reactions.counts() });
                Ok(Ok(Appended::New(plan.last())))
            }
            NewEvent::Member { by, member, added } => {
                plan.push(EventKind::Member { user: member.to_string(), by: by.to_string(), added, ts: plan.ts.clone() });
                Ok(Ok(Appended::New(plan.last())))
            }
        }
    }

    /// Message `id` as posted, if it exists and is not deleted (stored, or
    /// earlier in the batch).
    fn live_post(&self, state: &mut State, plan: &Plan, id: u64) -> io::Result<Option<Message>> {
        let in_memory = plan.post_with_id(id).or_else(|| state.recent.get(id).and_then(StoredEvent::as_post)).cloned();
        let post = match in_memory {
            Some(m) => Some(m),
            None => {
                // Older than the tail: whether it was deleted may be older too.
                self.complete_changes(state)?;
                self.stored_post(state, id)?
            }
        };
        let gone = state.changes.is_deleted(id) || plan.deleted.contains(&id);
        Ok(post.filter(|m| !gone && !m.deleted))
    }

    /// `Ok(Ok(()))` when message `id` exists, is not deleted and `user`
    /// wrote it; `NotFound` / `Forbidden` otherwise.
    fn check_author(&self, state: &mut State, plan: &Plan, id: u64, user: &str) -> io::Result<Result<(), StoreError>> {
        Ok(match self.live_post(state, plan, id)? {
            None => Err(StoreError::MessageNotFound(id)),
            Some(m) if m.user.to_lowercase() != user.to_lowercase() => Err(StoreError::NotAuthor),
            Some(_) => Ok(()),
        })
    }

    /// Message `parent` as it is now and up to `limit` of its replies after
    /// `after` (see `MessageStore::thread`). Blocking.
    pub fn thread_blocking(&self, parent: u64, after: u64, limit: usize) -> io::Result<Result<ThreadPage, StoreError>> {
        let mut state = self.state.lock().expect("room state");
        self.complete_changes(&mut state)?;
        let post = match state.recent.get(parent).and_then(StoredEvent::as_post).cloned() {
            Some(m) => Some(m),
            None => self.stored_post(&state, parent)?,
        };
        let Some(post) = post.filter(|m| m.thread.is_none()) else { return Ok(Err(StoreError::MessageNotFound(parent))) };
        let ids = state.changes.0.get(&parent).map(|c| c.replies.clone()).unwrap_or_default();
        let log = &state.change_log;
        let replies = ids
            .into_iter()
            .filter(|id| *id > after)
            .filter_map(|id| log.binary_search_by_key(&id, |e| e.seq).ok().and_then(|at| log[at].as_post()))
            .take(limit)
            .map(|m| state.changes.current(m))
            .collect();
        Ok(Ok(ThreadPage { parent: state.changes.current(&post), replies }))
    }

    /// The post with this id from the file, for an id older than the tail
    /// (`None` for one the tail would hold).
    fn stored_post(&self, state: &State, id: u64) -> io::Result<Option<Message>> {
        if state.recent.first_seq().is_some_and(|first| id >= first) || id > state.recent.last_seq() {
            return Ok(None);
        }
        let len = self.committed.load(Ordering::Acquire);
        let _reading = self.rewriting.read().expect("rewrite lock");
        let found = lines::line_with_seq(&self.file, len, id)?;
        Ok(found.and_then(|(_, line)| event_line::parse(&line, &self.path.display().to_string())).and_then(|e| e.as_post().cloned()))
    }

    /// Keeps the change index up to date with a batch's edits and deletes
    /// (only once it covers the whole file; before, it is built then). A
    /// delete rewrites it, so a deleted message's edits leave it too.
    fn record_changes(&self, state: &mut State, changed: Vec<StoredEvent>, deleted: bool) {
        if !state.complete || changed.is_empty() {
            return;
        }
        state.change_log.extend(changed.iter().cloned());
        let written = if deleted {
            let shown: Vec<StoredEvent> = state.change_log.iter().cloned().map(|e| state.changes.shown(e)).collect();
            state.change_log = shown;
            self.index.rewrite(&state.change_log)
        } else {
            self.index.append(&changed)
        };
        if let Err(e) = written {
            self.index.forget(&e);
        }
    }

    /// Makes `state.changes` cover the whole file (once per open room).
    fn complete_changes(&self, state: &mut State) -> io::Result<()> {
        if !state.complete {
            let len = self.committed.load(Ordering::Acquire);
            let found = scan_changes(&self.file, len, &self.path.display().to_string()).map_err(file_error("read", &self.path))?;
            state.adopt(found);
            if let Err(e) = self.index.rewrite(&state.change_log) {
                self.index.forget(&e);
            }
        }
        Ok(())
    }

    /// Rewrites the lines with these seqs as redacted lines of the same
    /// length. Failures are logged: the text is then still gone from every
    /// answer (it is redacted on the way out), and the next delete or a
    /// restart's reader shows it as deleted.
    fn redact_lines(&self, seqs: impl Iterator<Item = u64>) {
        let result = (|| -> io::Result<()> {
            let _rewriting = self.rewriting.write().expect("rewrite lock");
            // Not the append handle: with O_APPEND, positioned writes land at the end.
            let writer = OpenOptions::new().write(true).open(&self.path)?;
            let len = self.committed.load(Ordering::Acquire);
            let hint = self.path.display().to_string();
            for seq in seqs {
                let Some((offset, line)) = lines::line_with_seq(&self.file, len, seq)? else { continue };
                if let Some(redacted) = event_line::redact_in_place(&line, &hint) {
                    writer.write_all_at(&redacted, offset)?;
                }
            }
            self.durability.after_write(&writer)
        })();
        if let Err(e) = result {
            tracing::error!(file = %self.path.display(), error = %e, "could not take a deleted message's text out of the file");
        }
    }

    /// Appends `events` as whole lines, synced as `--fsync` says (one write
    /// and one sync for the batch, or one of each per event with
    /// `always`), or, on failure, cuts the file back to where the batch
    /// began so nothing of it stays behind.
    fn write_whole(&self, events: &[StoredEvent]) -> io::Result<()> {
        let before = self.committed.load(Ordering::Acquire);
        let written = if self.durability.syncs_each_event() {
            events.iter().try_fold(0, |len, event| Ok(len + self.write_synced(&lines_of(std::slice::from_ref(event)))?))
        } else {
            self.write_synced(&lines_of(events))
        };
        match written {
            Ok(len) => {
                self.committed.store(before + len, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                let e = file_error("append to", &self.path)(e);
                if let Err(e2) = self.file.set_len(before) {
                    tracing::error!(file = %self.path.display(), error = %e2, "could not roll back a failed append");
                }
                Err(e)
            }
        }
    }

    /// Writes `buf` and syncs it as `--fsync` says; how many bytes it added.
    fn write_synced(&self, buf: &[u8]) -> io::Result<u64> {
        (&self.file).write_all(buf)?;
        self.durability.after_write(&self.file)?;
        Ok(buf.len() as u64)
    }

    /// The stored message `user` sent with `client_id`, if recent, as it is now.
    pub fn find_sent(&self, user: &str, client_id: &str) -> Option<Message> {
        let state = self.state.lock().expect("room state");
        state.recent.find_post(&dedup_key(user, client_id)).map(|m| state.changes.current(m))
    }

    /// Reads a slice of history, messages as they are now (blocking when it
    /// has to go to disk).
    pub fn history_blocking(&self, query: HistoryQuery) -> io::Result<Vec<Message>> {
        let len = self.committed.load(Ordering::Acquire);
        {
            let state = self.state.lock().expect("room state");
            if let Some(hit) = state.recent.answer(&query, len == 0) {
                return Ok(hit.iter().map(|m| state.changes.current(m)).collect());
            }
        }
        let hint = self.path.display().to_string();
        let events = {
            let _reading = self.rewriting.read().expect("rewrite lock");
            match query.after {
                Some(after) => {
                    let start = lines::offset_of_first_seq_at_least(&self.file, len, after.saturating_add(1))?;
                    lines::read_forward(&self.file, start, len, query.limit, query.before, &StoredEvent::is_post, &hint)?
                }
                None => {
                    let end = match query.before {
                        Some(before) => lines::offset_of_first_seq_at_least(&self.file, len, before)?,
                        None => len,
                    };
                    lines::read_backward(&self.file, end, query.limit, &StoredEvent::is_post, &hint)?
                }
            }
        };
        let mut state = self.state.lock().expect("room state");
        self.complete_changes(&mut state)?;
        Ok(events.iter().filter_map(StoredEvent::as_post).map(|m| state.changes.current(m)).collect())
    }

    /// Up to `limit` events after `after`, in seq order, a deleted
    /// message's text taken out.
    pub fn events_blocking(&self, after: u64, limit: usize) -> io::Result<Vec<StoredEvent>> {
        let len = self.committed.load(Ordering::Acquire);
        {
            let state = self.state.lock().expect("room state");
            if let Some(hit) = state.recent.events_after(after, limit, len == 0) {
                return Ok(hit.into_iter().map(|e| state.changes.shown(e)).collect());
            }
        }
        let hint = self.path.display().to_string();
        let events = {
            let _reading = self.rewriting.read().expect("rewrite lock");
            let start = lines::offset_of_first_seq_at_least(&self.file, len, after.saturating_add(1))?;
            lines::read_forward(&self.file, start, len, limit, None, &|_| true, &hint)?
        };
        let mut state = self.state.lock().expect("room state");
        self.complete_changes(&mut state)?;
        Ok(events.into_iter().map(|e| state.changes.shown(e)).collect())
    }

    pub fn write_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.write_lock
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// The events a batch adds, and each item's answer.
struct Plan {
    next_seq: u64,
    room: String,
    ts: String,
    fresh: Vec<StoredEvent>,
    answers: Vec<Result<Appended, StoreError>>,
    /// (lower-cased user, client_id) → id, for posts in `fresh`.
    by_client: HashMap<(String, String), u64>,
    deleted: Vec<u64>,
}

impl Plan {
    fn new(next_seq: u64, room: &str) -> Self {
        Self {
            next_seq,
            room: room.to_string(),
            ts: now_rfc3339(),
            fresh: Vec::new(),
            answers: Vec::new(),
            by_client: HashMap::new(),
            deleted: Vec::new(),
        }
    }

    fn push(&mut self, kind: EventKind) {
        self.fresh.push(StoredEvent { seq: self.next_seq, room: self.room.clone(), kind });
        self.next_seq += 1;
    }

    /// Queues a post; its id.
    fn post(&mut self, user: &str, text: String, client_id: String, thread: Option<u64>) -> u64 {
        let message = Message {
            id: self.next_seq,
            room: self.room.clone(),
            user: user.to_string(),
            text,
            ts: self.ts.clone(),
            client_id,
            thread,
            ..Message::default()
        };
        let id = message.id;
        self.push(EventKind::Post(message));
        id
    }

    fn last(&self) -> StoredEvent {
        self.fresh.last().expect("just pushed").clone()
    }

    fn post_with_id(&self, id: u64) -> Option<&Message> {
        self.fresh.iter().filter_map(StoredEvent::as_post).find(|m| m.id == id)
    }

    /// A post of this batch with that key, as it is after the batch's
    /// later changes so far (a repeat within one batch).
    fn post_by_key(&self, stored: &Changes, key: &(String, String)) -> Option<Message> {
        let id = *self.by_client.get(key)?;
        self.post_with_id(id).map(|m| self.current(stored, m))
    }

    /// What became of message `id`: the stored changes, then this batch's.
    fn change(&self, stored: &Changes, id: u64) -> Change {
        let mut changes = Changes::default();
        if let Some(change) = stored.0.get(&id) {
            changes.0.insert(id, change.clone());
        }
        self.fresh.iter().filter(|e| touches(e, id)).for_each(|e| changes.apply(e));
        changes.0.remove(&id).unwrap_or_default()
    }

    /// `message` (as posted) as it is after the stored changes and this
    /// batch's.
    fn current(&self, stored: &Changes, message: &Message) -> Message {
        let changes = Changes(HashMap::from([(message.id, self.change(stored, message.id))]));
        changes.current(message)
    }
}

/// Every change (see [`is_change`]) in the file's first `len` bytes. Lines
/// without a change marker are not parsed, so a file of posts is one pass
/// of byte search.
fn scan_changes(file: &File, len: u64, hint: &str) -> io::Result<Vec<StoredEvent>> {
    let mut changes = Vec::new();
    let finders: Vec<memchr::memmem::Finder> = CHANGE_MARKERS.iter().map(memchr::memmem::Finder::new).collect();
    let mut pos = 0;
    let mut pending: Vec<u8> = Vec::new();
    while pos < len {
        let step = (1 << 20).min(len - pos) as usize;
        let mut chunk = vec![0; step];
        file.read_exact_at(&mut chunk, pos)?;
        pos += step as u64;
        pending.extend_from_slice(&chunk);
        let Some(last_nl) = pending.iter().rposition(|&b| b == b'\n') else { continue };
        for line in pending[..last_nl].split(|&b| b == b'\n') {
            if finders.iter().any(|f| f.find(line).is_some())
                && let Some(event) = event_line::parse(line, hint).filter(is_change)
            {
                changes.push(event);
            }
        }
        pending.drain(..=last_nl);
    }
    Ok(changes)
}

/// Sorts a tail read from a damaged file by seq, leaving out lines that
/// repeat a seq (the first in the file is kept); `None` if it was in order,
/// else how many lines were left out.
fn put_in_seq_order(tail: &mut Vec<StoredEvent>) -> Option<usize> {
    if tail.windows(2).all(|pair| pair[0].seq < pair[1].seq) {
        return None;
    }
    let before = tail.len();
    tail.sort_by_key(|event| event.seq); // stable: the first of a seq stays first
    tail.dedup_by_key(|event| event.seq);
    Some(before - tail.len())
}

/// The change index beside a room file (`<room>.jsonl.changes`): a copy of
/// every change line of the room (edits, deletes, reactions, replies'
/// posts), so that opening a room never has to read the whole log to know
/// them. It is derived: rebuilt from the log
/// when missing, and a deleted message's edits are redacted in it too.
struct ChangeIndex {
    path: PathBuf,
}

impl ChangeIndex {
    fn beside(room_file: &Path) -> Self {
        Self { path: room_file.with_extension("jsonl.changes") }
    }

    /// The events in the index, if there is one (damaged lines skipped).
    fn read(&self) -> io::Result<Option<Vec<StoredEvent>>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let hint = self.path.display().to_string();
        Ok(Some(bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).filter_map(|l| event_line::parse(l, &hint)).collect()))
    }

    /// Adds events at the end.
    fn append(&self, events: &[StoredEvent]) -> io::Result<()> {
        let mut file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        file.write_all(&lines_of(events))
    }

    /// Replaces the whole index (temporary file, then rename).
    fn rewrite(&self, events: &[StoredEvent]) -> io::Result<()> {
        let tmp = self.path.with_extension("changes.tmp");
        std::fs::write(&tmp, lines_of(events))?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Drops the index (it is rebuilt from the log when next needed).
    fn forget(&self, why: &io::Error) {
        tracing::warn!(file = %self.path.display(), error = %why, "dropping the change index; it is rebuilt from the room file when needed");
        let _ = std::fs::remove_file(&self.path);
    }
}

fn lines_of(events: &[StoredEvent]) -> Vec<u8> {
    let mut buf = Vec::new();
    for event in events {
        buf.extend_from_slice(&event_line::line_of(event));
        buf.push(b'\n');
    }
    buf
}

/// Shared handle to an open room.
pub type SharedRoomLog = Arc<RoomLog>;

/// Repairs a room file's last line if it has no newline (see
/// [`repair_tail`]); a whole message that follows the line before it is
/// kept.
pub(super) fn repair_torn_tail(file: &File, path: &Path) -> io::Result<u64> {
    repair_tail(file, path, |file, start, tail| Ok(whole_next_message(file, start, tail, path)?.is_some()))
}

/// Repairs a last line that has no newline. When `is_whole` says it is a
/// whole record, only its newline is missing (the record was written, and
/// perhaps acknowledged): the newline is added. Anything else is a write
/// torn by a crash: its bytes are saved beside the file and cut off.
/// Returns the file's length after.
pub(super) fn repair_tail(
    file: &File,
    path: &Path,
    is_whole: impl FnOnce(&File, u64, &[u8]) -> io::Result<bool>,
) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    let keep = last_newline_before(file, len)?.map_or(0, |nl| nl + 1);
    let mut tail = vec![0; (len - keep) as usize];
    file.read_exact_at(&mut tail, keep)?;
    if is_whole(file, keep, &tail)? {
        file.write_all_at(b"\n", len)?;
        tracing::warn!(file = %path.display(), "the last line lacked only its newline; added it");
        return Ok(len + 1);
    }
    set_aside_torn(file, path, keep, &tail)?;
    Ok(keep)
}

/// The seq of `tail` when it is one whole event whose seq is above that of
/// the last event before `start` (so the file stays sorted by seq).
fn whole_next_message(file: &File, start: u64, tail: &[u8], path: &Path) -> io::Result<Option<u64>> {
    let hint = path.display().to_string();
    if serde_json::from_slice::<serde_json::Value>(tail).is_err() {
        return Ok(None);
    }
    let Some(event) = event_line::parse(tail, &hint) else { return Ok(None) };
    let before = lines::read_backward(file, start, 1, &|_| true, &hint)?;
    let previous = before.last().map_or(0, |e| e.seq);
    Ok((event.seq > previous).then_some(event.seq))
}

/// Moves the torn bytes `tail` (from `start` to the end) to
/// `<room>.jsonl.torn` and cuts them off the file.
fn set_aside_torn(file: &File, path: &Path, start: u64, tail: &[u8]) -> io::Result<()> {
    let torn_path = path.with_extension("jsonl.torn");
    let save = || -> io::Result<()> {
        let mut side = OpenOptions::new().create(true).append(true).open(&torn_path)?;
        side.write_all(tail)?;
        side.write_all(b"\n")?;
        side.sync_data()
    };
    save().map_err(file_error("save torn bytes to", &torn_path))?;
    file.set_len(start)?;
    tracing::warn!(
        file = %path.display(),
        bytes = tail.len(),
        saved_to = %torn_path.display(),
        "skipped a torn last line (the server stopped mid-write)"
    );
    Ok(())
}

fn last_newline_before(file: &File, end: u64) -> io::Result<Option<u64>> {
    let mut pos = end;
    while pos > 0 {
        let step = 8192.min(pos);
        pos -= step;
        let mut chunk = vec![0; step as usize];
        file.read_exact_at(&mut chunk, pos)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(pos + i as u64));
        }
    }
    Ok(None)
}


#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: u64) -> String {
        let m = Message {
            id,
            room: "general".into(),
            user: "ann".into(),
            text: format!("m{id}"),
            ts: "2026-01-01T00:00:00.000Z".into(),
            client_id: format!("c{id}"),
            ..Message::default()
        };
        serde_json::to_string(&m).unwrap()
    }

    /// Writes `content` as a room file, repairs it; (length, content after,
    /// whether a `.torn` file appeared).
    fn repaired(content: &str) -> (u64, String, bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("general.jsonl");
        std::fs::write(&path, content).unwrap();
        let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let len = repair_torn_tail(&file, &path).unwrap();
        (len, std::fs::read_to_string(&path).unwrap(), path.with_extension("jsonl.torn").exists())
    }

    #[test]
    fn a_whole_last_message_without_its_newline_is_kept() {
        let whole = format!("{}\n{}\n", line(1), line(2));
        assert_eq!(repaired(&whole[..whole.len() - 1]), (whole.len() as u64, whole.clone(), false));
        let only = format!("{}\n", line(1));
        assert_eq!(repaired(&only[..only.len() - 1]), (only.len() as u64, only.clone(), false));
    }

    fn post(user: &str, client_id: &str) -> NewEvent {
        NewEvent::Post { user: crate::model::Username::parse(user).unwrap(), text: "new".into(), client_id: client_id.into(), thread: None }
    }

    #[test]
    fn a_file_out_of_order_gives_new_posts_seqs_above_all_of_it_and_retries_find_them() {
        let dir = tempfile::tempdir().unwrap();
        let room = RoomName::parse("general").unwrap();
        // Seq 5000 far ahead of the tail (more than DEDUP_WINDOW posts
        // back); the tail itself out of order and repeating seq 3000.
        let mut content: String = std::iter::once(5000).chain(1..=3000).map(|id| line(id) + "\n").collect();
        content += &(line(2000) + "\n" + &line(3001) + "\n" + &line(3000).replace("m3000", "again") + "\n");
        std::fs::write(dir.path().join("general.jsonl"), content).unwrap();
        let durability = Durability::new(crate::store::Fsync::Never);

        let log = RoomLog::open(dir.path(), &room, durability).unwrap();
        assert_eq!(log.last_seq(), 5000, "the largest seq of the whole file");
        let tail = log.events_blocking(2990, 100).unwrap();
        let seqs: Vec<u64> = tail.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (2991..=3001).collect::<Vec<_>>(), "the tail in seq order, each seq once");
        assert_eq!(tail[9].as_post().unwrap().text, "m3000", "the first line of a repeated seq is kept");
        let answers = log.append_blocking(vec![post("fuzz", "probe")]).unwrap();
        assert!(matches!(&answers[..], [Ok(Appended::New(e))] if e.seq == 5001), "{answers:?}");
        drop(log);

        let log = RoomLog::open(dir.path(), &room, durability).unwrap();
        let answers = log.append_blocking(vec![post("fuzz", "probe"), post("fuzz", "next")]).unwrap();
        assert!(matches!(&answers[0], Ok(Appended::Duplicate(m)) if m.id == 5001 && m.client_id == "probe"), "{answers:?}");
        assert!(matches!(&answers[1], Ok(Appended::New(e)) if e.seq == 5002), "{answers:?}");
    }

    #[test]
    fn a_partial_or_out_of_order_last_line_is_set_aside() {
        let first = format!("{}\n", line(5));
        for tail in [line(3), line(5), line(6)[..20].to_string(), "not json".into()] {
            assert_eq!(repaired(&format!("{first}{tail}")), (first.len() as u64, first.clone(), true), "{tail}");
        }
    }
}
