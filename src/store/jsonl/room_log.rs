//! One room's message file: `<data>/rooms/<room>.jsonl`.
//!
//! Opening a room reads only the file's tail: the last [`DEDUP_WINDOW`]
//! messages are kept in memory (they answer "the latest 50" and repeated
//! `client_id`s without touching the disk); older pages are found by binary
//! search in the file itself (see `lines`). A torn last line — the process
//! died in the middle of a write — is moved to `<room>.jsonl.torn` and cut
//! off, with a warning; a last line that is a whole message and lacks only
//! its newline is kept, and the newline added.
//!
//! Writes are appended as whole lines in one `write` per batch. `committed`
//! is the length of the file that holds only complete lines; readers never
//! look past it.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{file_error, lines};
use crate::model::{Message, NewMessage, RoomName, now_rfc3339};
use crate::store::{Appended, DEDUP_WINDOW, HistoryQuery};

/// The latest messages of a room and who sent which `client_id`.
#[derive(Default)]
struct Recent {
    messages: VecDeque<Message>,
    /// (lower-cased user, client_id) → id, for the messages in `messages`.
    by_client: HashMap<(String, String), u64>,
}

impl Recent {
    fn push(&mut self, message: Message) {
        self.by_client.insert(dedup_key(&message.user, &message.client_id), message.id);
        self.messages.push_back(message);
        if self.messages.len() > DEDUP_WINDOW {
            let old = self.messages.pop_front().expect("not empty");
            let key = dedup_key(&old.user, &old.client_id);
            if self.by_client.get(&key) == Some(&old.id) {
                self.by_client.remove(&key);
            }
        }
    }

    fn find(&self, key: &(String, String)) -> Option<&Message> {
        let id = *self.by_client.get(key)?;
        let first = self.messages.front()?.id;
        // Ids in `messages` are increasing; they are contiguous unless the
        // file was damaged, so try the direct index first.
        let guess = id.checked_sub(first).map(|i| i as usize);
        match guess.and_then(|i| self.messages.get(i)).filter(|m| m.id == id) {
            Some(m) => Some(m),
            None => self.messages.iter().find(|m| m.id == id),
        }
    }

    fn last_id(&self) -> u64 {
        self.messages.back().map_or(0, |m| m.id)
    }

    /// Answers `query` from memory when the slice lies inside the window.
    fn answer(&self, query: &HistoryQuery) -> Option<Vec<Message>> {
        let first = self.messages.front().map_or(1, |m| m.id);
        let covered = match (query.after, query.before) {
            (Some(after), _) => after + 1 >= first,
            (None, before) => {
                let upper = before.unwrap_or(u64::MAX);
                let inside = self.messages.iter().filter(|m| m.id < upper).count();
                inside >= query.limit || first <= 1
            }
        };
        if !covered {
            return None;
        }
        let admitted = self.messages.iter().filter(|m| query.admits(m.id));
        Some(if query.after.is_some() {
            admitted.take(query.limit).cloned().collect()
        } else {
            let all: Vec<&Message> = admitted.collect();
            all[all.len().saturating_sub(query.limit)..].iter().map(|m| (*m).clone()).collect()
        })
    }
}

fn dedup_key(user: &str, client_id: &str) -> (String, String) {
    (user.to_lowercase(), client_id.to_string())
}

/// An open room file. Appends must be serialised by the caller.
pub struct RoomLog {
    room: RoomName,
    path: PathBuf,
    file: File,
    committed: AtomicU64,
    recent: Mutex<Recent>,
    /// Serialises appends (the hub already does; this keeps the store safe
    /// on its own).
    write_lock: tokio::sync::Mutex<()>,
    sync_writes: bool,
}

impl RoomLog {
    /// Opens (creating if needed) a room's file and loads its tail.
    pub fn open(rooms_dir: &Path, room: &RoomName, sync_writes: bool) -> io::Result<Self> {
        let path = rooms_dir.join(format!("{room}.jsonl"));
        let file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(file_error("open", &path))?;
        let len = repair_torn_tail(&file, &path).map_err(file_error("repair", &path))?;
        let hint = path.display().to_string();
        let mut recent = Recent::default();
        for m in lines::read_backward(&file, len, DEDUP_WINDOW, &hint).map_err(file_error("read", &path))? {
            recent.push(m);
        }
        Ok(Self {
            room: room.clone(),
            path,
            file,
            committed: AtomicU64::new(len),
            recent: Mutex::new(recent),
            write_lock: tokio::sync::Mutex::new(()),
            sync_writes,
        })
    }

    /// Stores a batch in order (see `MessageStore::append`). Blocking: call
    /// from a blocking-friendly context.
    pub fn append_blocking(&self, batch: Vec<NewMessage>) -> io::Result<Vec<Appended>> {
        let mut results = Vec::with_capacity(batch.len());
        let mut fresh: Vec<Message> = Vec::new();
        // Keys of `fresh`, so a repeat inside the batch is found without
        // comparing against every message before it.
        let mut fresh_keys: HashMap<(String, String), usize> = HashMap::new();
        let mut buf = Vec::with_capacity(batch.len() * 256);
        {
            let recent = self.recent.lock().expect("recent lock");
            let mut next_id = recent.last_id() + 1;
            let ts = now_rfc3339();
            for new in batch {
                let user = new.user.as_str();
                let key = dedup_key(user, &new.client_id);
                let earlier = recent.find(&key).or_else(|| fresh_keys.get(&key).map(|&i| &fresh[i]));
                if let Some(earlier) = earlier {
                    results.push(Appended::Duplicate(earlier.clone()));
                    continue;
                }
                let message = Message {
                    id: next_id,
                    room: self.room.to_string(),
                    user: user.to_string(),
                    text: new.text,
                    ts: ts.clone(),
                    client_id: new.client_id,
                };
                next_id += 1;
                serde_json::to_writer(&mut buf, &message).expect("a message always serialises");
                buf.push(b'\n');
                results.push(Appended::New(message.clone()));
                fresh_keys.insert(key, fresh.len());
                fresh.push(message);
            }
        }
        if !buf.is_empty() {
            self.write_whole(&buf)?;
            let mut recent = self.recent.lock().expect("recent lock");
            for m in fresh {
                recent.push(m);
            }
        }
        Ok(results)
    }

    /// Appends `buf` (whole lines) or, on failure, cuts the file back so no
    /// partial line stays behind.
    fn write_whole(&self, buf: &[u8]) -> io::Result<()> {
        let before = self.committed.load(Ordering::Acquire);
        let written = (&self.file).write_all(buf).and_then(|()| {
            if self.sync_writes { self.file.sync_data() } else { Ok(()) }
        });
        if let Err(e) = written {
            tracing::error!(file = %self.path.display(), error = %e, "append failed; rolling back");
            if let Err(e2) = self.file.set_len(before) {
                tracing::error!(file = %self.path.display(), error = %e2, "could not roll back a failed append");
            }
            return Err(e);
        }
        self.committed.store(before + buf.len() as u64, Ordering::Release);
        Ok(())
    }

    /// The stored message `user` sent with `client_id`, if recent.
    pub fn find_sent(&self, user: &str, client_id: &str) -> Option<Message> {
        self.recent.lock().expect("recent lock").find(&dedup_key(user, client_id)).cloned()
    }

    /// Reads a slice of history (blocking when it has to go to disk).
    pub fn history_blocking(&self, query: HistoryQuery) -> io::Result<Vec<Message>> {
        if let Some(hit) = self.recent.lock().expect("recent lock").answer(&query) {
            return Ok(hit);
        }
        let len = self.committed.load(Ordering::Acquire);
        let hint = self.path.display().to_string();
        match query.after {
            Some(after) => {
                let start = lines::offset_of_first_id_at_least(&self.file, len, after + 1)?;
                lines::read_forward(&self.file, start, len, query.limit, query.before, &hint)
            }
            None => {
                let end = match query.before {
                    Some(before) => lines::offset_of_first_id_at_least(&self.file, len, before)?,
                    None => len,
                };
                lines::read_backward(&self.file, end, query.limit, &hint)
            }
        }
    }

    pub fn write_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.write_lock
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

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

/// The id of `tail` when it is one whole message whose id is above that of
/// the last message before `start` (so the file stays sorted by id).
fn whole_next_message(file: &File, start: u64, tail: &[u8], path: &Path) -> io::Result<Option<u64>> {
    let Ok(message) = serde_json::from_slice::<Message>(tail) else { return Ok(None) };
    let before = lines::read_backward(file, start, 1, &path.display().to_string())?;
    let previous = before.last().map_or(0, |m| m.id);
    Ok((message.id > previous).then_some(message.id))
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

/// Shared handle to an open room.
pub type SharedRoomLog = Arc<RoomLog>;

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

    #[test]
    fn a_partial_or_out_of_order_last_line_is_set_aside() {
        let first = format!("{}\n", line(5));
        for tail in [line(3), line(5), line(6)[..20].to_string(), "not json".into()] {
            assert_eq!(repaired(&format!("{first}{tail}")), (first.len() as u64, first.clone(), true), "{tail}");
        }
    }
}
