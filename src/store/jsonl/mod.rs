//! The default backend: human-readable files under the data directory.
//!
//! ```text
//! data/
//!   rooms.jsonl            one line per room: {"name","created_by","created_at"}; a private
//!                          room's line also holds "private":true and its "members" (and a
//!                          direct message's "dm":true), written again whole when they change
//!   rooms/general.jsonl    one line per message, oldest first
//!   rooms/general.jsonl.torn   bytes of a line torn by a crash (rare)
//!   users.jsonl, sessions.jsonl, subscriptions.jsonl, read_markers.jsonl   see `accounts`
//!   search/                the message search index (tantivy; rebuilt from rooms/ when lost)
//! ```
//!
//! Start-up reads only `rooms.jsonl` and the list of files in `rooms/` (a
//! room whose message file exists is a room, even if its line in
//! `rooms.jsonl` is damaged: its record is restored); a room's file is
//! opened on first use and only its tail is read (see `room_log`), so
//! start-up time does not grow with the amount of history.

mod accounts;
mod durability;
pub(crate) mod event_line;
mod lines;
mod log_file;
mod room_log;
mod search_index;

pub use self::accounts::{AccountRecords, JsonlAccounts};

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use self::durability::Durability;
use self::log_file::LogFile;
use self::room_log::{RoomLog, SharedRoomLog};
use self::search_index::SearchIndex;
use super::{Appended, Fsync, HistoryQuery, MessageStore, PrivateRoom, RoomAccess, RoomInfo, SearchPage, SearchQuery, SearchStore, ThreadPage, rank_rooms};
use crate::store::StoreError;
use crate::model::{DEFAULT_ROOM, DM_PREFIX, EventKind, Message, NewEvent, RoomName, StoredEvent, Username, now_rfc3339};

/// `created_by` of the rooms the server records itself: the default room,
/// and rooms whose record is restored from their message file.
const SERVER_AUTHOR: &str = "chatroom";

/// One line of `rooms.jsonl`. A private room's line is written again,
/// whole, each time its members change: the last line of a name wins.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RoomRecord {
    name: String,
    created_by: String,
    created_at: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    private: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    dm: bool,
    /// A private room's members, as they spell their names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    members: Vec<String>,
}

impl RoomRecord {
    fn access(&self) -> RoomAccess {
        let members = self.members.iter().map(|name| (name.to_lowercase(), name.clone())).collect();
        RoomAccess { private: self.private, dm: self.dm, created_by: self.created_by.clone(), members }
    }
}

type RoomSlot = Arc<OnceCell<SharedRoomLog>>;

/// An I/O error on one data file: what was being done, to which file, and
/// why. It travels inside an `io::Error` of the same kind (so callers that
/// branch on the kind still can), and its text is what the server says
/// when it cannot start: "cannot open /data/rooms/lobby.jsonl: …".
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {cause}", path.display())]
pub struct FileError {
    pub action: &'static str,
    pub path: PathBuf,
    pub cause: io::Error,
}

/// Wraps an I/O error on `path` into a [`FileError`] (for `map_err`).
fn file_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |cause| io::Error::new(cause.kind(), FileError { action, path: path.to_path_buf(), cause })
}

pub struct JsonlStore {
    rooms_dir: PathBuf,
    rooms_file: Mutex<LogFile>,
    /// Shared with the search indexer (which asks whether a room is private).
    rooms: Arc<Mutex<BTreeMap<String, RoomRecord>>>,
    /// Rooms in use, each with when it was last used.
    open_rooms: Mutex<HashMap<RoomName, (RoomSlot, Instant)>>,
    durability: Durability,
    /// The message search index (`search/`), fed by `append`.
    search: Arc<SearchIndex>,
}

impl JsonlStore {
    /// Opens (creating if needed) a data directory. Blocking; call at start.
    pub fn open(data_dir: &Path, fsync: Fsync) -> io::Result<Self> {
        check_writable(data_dir)?;
        let rooms_dir = data_dir.join("rooms");
        std::fs::create_dir_all(&rooms_dir).map_err(file_error("create", &rooms_dir))?;
        let rooms_path = data_dir.join("rooms.jsonl");
        let rooms = read_room_records(&rooms_path)?;
        let durability = Durability::new(fsync);
        let rooms_file = LogFile::open(&rooms_path, durability.syncs())?;
        let search = Arc::new(SearchIndex::open(data_dir)?);
        let mut store = Self {
            rooms_dir,
            rooms_file: Mutex::new(rooms_file),
            rooms: Arc::new(Mutex::new(rooms)),
            open_rooms: Mutex::new(HashMap::new()),
            durability,
            search,
        };
        store.restore_unlisted_rooms()?;
        let general = RoomName::parse(DEFAULT_ROOM).expect("the default room name is valid");
        if !store.knows(&general) {
            let mut file = store.rooms_file.lock().expect("rooms file lock");
            store.record_room(&mut file, &general, SERVER_AUTHOR)?;
        }
        store.repair_all_rooms()?;
        // Every room is known now, public or private: the indexer may
        // catch up with the room files.
        let rooms = store.rooms.clone();
        let is_private = move |room: &str| rooms.lock().expect("rooms lock").get(room).is_some_and(|r| r.private);
        let rooms = rooms_with_a_file(&store.rooms_dir)?;
        let search = Arc::get_mut(&mut store.search).expect("the index is not shared before open returns");
        search.start(&store.rooms_dir, rooms, Arc::new(is_private))?;
        Ok(store)
    }

    /// A room whose message file exists is a room, even when `rooms.jsonl`
    /// lost or damaged its line: its record is written again, with a
    /// warning. One directory listing; only such a room's file is read: a
    /// file with member events was a private room, and is restored private
    /// with the members its events leave (never public).
    fn restore_unlisted_rooms(&self) -> io::Result<()> {
        let mut file = self.rooms_file.lock().expect("rooms file lock");
        for room in rooms_with_a_file(&self.rooms_dir)? {
            if !self.knows(&room) {
                let path = self.rooms_dir.join(format!("{room}.jsonl"));
                tracing::warn!(
                    room = %room,
                    file = %path.display(),
                    "rooms.jsonl does not list a room whose message file exists; restoring its record"
                );
                match members_from_events(&path)? {
                    Some(record) => self.write_record(&mut file, RoomRecord { name: room.to_string(), ..record })?,
                    None => self.record_room(&mut file, &room, SERVER_AUTHOR)?,
                };
            }
        }
        Ok(())
    }

    /// Cuts torn last lines off every room file now, so the warning comes at
    /// start-up. Reads one byte (and rarely a few KiB) per room.
    fn repair_all_rooms(&self) -> io::Result<()> {
        let names: Vec<String> = self.rooms.lock().expect("rooms lock").keys().cloned().collect();
        for name in names {
            let path = self.rooms_dir.join(format!("{name}.jsonl"));
            match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(file) => {
                    room_log::repair_torn_tail(&file, &path).map_err(file_error("repair", &path))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(file_error("open", &path)(e)),
            }
        }
        Ok(())
    }

    /// Appends a public room's record; the caller holds the rooms file lock.
    fn record_room(&self, file: &mut LogFile, room: &RoomName, created_by: &str) -> io::Result<RoomRecord> {
        let record = RoomRecord {
            name: room.to_string(),
            created_by: created_by.to_string(),
            created_at: now_rfc3339(),
            private: false,
            dm: false,
            members: Vec::new(),
        };
        self.write_record(file, record)
    }

    /// Appends `record` (a new room, or a private room's new members) and
    /// makes it the room's; the caller holds the rooms file lock.
    fn write_record(&self, file: &mut LogFile, record: RoomRecord) -> io::Result<RoomRecord> {
        file.append(std::slice::from_ref(&record))?;
        self.rooms.lock().expect("rooms lock").insert(record.name.clone(), record.clone());
        Ok(record)
    }

    fn record(&self, room: &RoomName) -> Option<RoomRecord> {
        self.rooms.lock().expect("rooms lock").get(room.as_str()).cloned()
    }

    /// Every room's name, public and private, sorted (`chatroom migrate`).
    pub fn room_names(&self) -> Vec<String> {
        self.rooms.lock().expect("rooms lock").keys().cloned().collect()
    }

    fn knows(&self, room: &RoomName) -> bool {
        self.rooms.lock().expect("rooms lock").contains_key(room.as_str())
    }

    /// The open log of an existing room, opening it on first use.
    async fn log(&self, room: &RoomName) -> Result<SharedRoomLog, StoreError> {
        if !self.knows(room) {
            return Err(StoreError::RoomNotFound(room.to_string()));
        }
        let slot = {
            let mut open = self.open_rooms.lock().expect("open rooms lock");
            let (slot, used) = open.entry(room.clone()).or_insert_with(|| (RoomSlot::default(), Instant::now()));
            *used = Instant::now();
            slot.clone()
        };
        let log = slot
            .get_or_try_init(|| {
                let dir = self.rooms_dir.clone();
                let room = room.clone();
                let durability = self.durability;
                async move {
                    tokio::task::spawn_blocking(move || RoomLog::open(&dir, &room, durability))
                        .await
                        .map_err(StoreError::from)?
                        .map(Arc::new)
                        .map_err(StoreError::from)
                }
            })
            .await?;
        Ok(log.clone())
    }
}

/// The rooms that have a message file in `rooms_dir` (`<room>.jsonl` with
/// a valid room name), sorted.
fn rooms_with_a_file(rooms_dir: &Path) -> io::Result<Vec<RoomName>> {
    let mut rooms = Vec::new();
    for entry in std::fs::read_dir(rooms_dir).map_err(file_error("list", rooms_dir))? {
        let file_name = entry.map_err(file_error("list", rooms_dir))?.file_name();
        let stem = file_name.to_str().and_then(|n| n.strip_suffix(".jsonl"));
        if let Some(room) = stem.and_then(|n| RoomName::parse(n).ok()) {
            rooms.push(room);
        }
    }
    rooms.sort();
    Ok(rooms)
}

/// A private room's record rebuilt from the member events of its file
/// (`None`: the file has none, so the room was public).
fn members_from_events(path: &Path) -> io::Result<Option<RoomRecord>> {
    let bytes = std::fs::read(path).map_err(file_error("open", path))?;
    let hint = path.display().to_string();
    let mut record: Option<RoomRecord> = None;
    for line in bytes.split(|b| *b == b'\n').filter(|line| memchr::memmem::find(line, br#""op":"member""#).is_some()) {
        let Some(event) = event_line::parse(line, &hint) else { continue };
        let EventKind::Member { user, by, added, ts } = event.kind else { continue };
        let record = record.get_or_insert_with(|| RoomRecord {
            name: String::new(),
            created_by: by,
            created_at: ts,
            private: true,
            dm: event.room.starts_with(DM_PREFIX),
            members: Vec::new(),
        });
        record.members.retain(|name| name.to_lowercase() != user.to_lowercase());
        if added {
            record.members.push(user);
        }
    }
    Ok(record)
}

/// The rooms of `rooms.jsonl`, by name; records with an invalid name are
/// skipped with a warning (like damaged lines).
fn read_room_records(path: &Path) -> io::Result<BTreeMap<String, RoomRecord>> {
    let mut rooms = BTreeMap::new();
    for record in LogFile::read_all::<RoomRecord>(path)? {
        if RoomName::parse(&record.name).is_ok() {
            rooms.insert(record.name.clone(), record);
        } else {
            tracing::warn!(file = %path.display(), name = %record.name.escape_debug(), "skipping a room record with an invalid name");
        }
    }
    Ok(rooms)
}

/// Creates the data directory if needed and checks that files can be
/// written in it, so a read-only `--data-dir` is named at start rather than
/// at the first write.
fn check_writable(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path).map_err(file_error("create", path))?;
    let probe = path.join(".write-test");
    std::fs::write(&probe, b"ok").map_err(file_error("write in", path))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}


#[async_trait]
impl MessageStore for JsonlStore {
    async fn create_room(&self, room: &RoomName, created_by: &str) -> Result<RoomInfo, StoreError> {
        // One lock around check-and-insert so two creators cannot both win.
        let mut file = self.rooms_file.lock().expect("rooms file lock");
        if self.knows(room) {
            return Err(StoreError::RoomExists(room.to_string()));
        }
        let record = self.record_room(&mut file, room, created_by)?;
        Ok(RoomInfo::public(record.name))
    }

    async fn create_private_room(&self, room: &RoomName, creator: &Username, kind: PrivateRoom<'_>) -> Result<RoomInfo, StoreError> {
        let mut file = self.rooms_file.lock().expect("rooms file lock");
        if self.knows(room) {
            return Err(StoreError::RoomExists(room.to_string()));
        }
        let access = RoomAccess::new_private(creator, kind);
        let record = RoomRecord {
            name: room.to_string(),
            created_by: creator.to_string(),
            created_at: now_rfc3339(),
            private: true,
            dm: access.dm,
            members: access.members.values().cloned().collect(),
        };
        self.write_record(&mut file, record)?;
        Ok(access.info(room.as_str()))
    }

    async fn room_access(&self, room: &RoomName) -> Result<Option<RoomAccess>, StoreError> {
        Ok(self.record(room).map(|record| record.access()))
    }

    async fn set_member(&self, room: &RoomName, member: &Username, _by: &str, added: bool) -> Result<bool, StoreError> {
        let mut file = self.rooms_file.lock().expect("rooms file lock");
        let mut record = self.record(room).ok_or_else(|| StoreError::RoomNotFound(room.to_string()))?;
        let mut access = record.access();
        if !access.set_member(member, added) {
            return Ok(false);
        }
        record.members = access.members.into_values().collect();
        self.write_record(&mut file, record)?;
        Ok(true)
    }

    async fn private_rooms_of(&self, user_key: &str) -> Result<Vec<RoomInfo>, StoreError> {
        let rooms = self.rooms.lock().expect("rooms lock");
        Ok(rooms
            .values()
            .filter(|record| record.private)
            .map(|record| (record.name.as_str(), record.access()))
            .filter(|(_, access)| access.admits(user_key))
            .map(|(name, access)| access.info(name))
            .collect())
    }

    async fn room_exists(&self, room: &RoomName) -> Result<bool, StoreError> {
        Ok(self.knows(room))
    }

    async fn list_rooms(&self, filter: &str, limit: usize) -> Result<Vec<RoomInfo>, StoreError> {
        let rooms = self.rooms.lock().expect("rooms lock");
        Ok(rank_rooms(rooms.values().filter(|record| !record.private).map(|record| record.name.as_str()), filter, limit))
    }

    async fn append(&self, room: &RoomName, batch: Vec<NewEvent>) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
        let log = self.log(room).await?;
        let _serial = log.write_lock().lock().await;
        let answers = if !self.durability.syncs() {
            // Without fsync an append is one write(2) into the page cache,
            // a few microseconds: cheaper done here than handed to a
            // blocking thread and back, which cost more CPU than the write
            // itself (docs/BENCHMARKS.md).
            log.append_blocking(batch)?
        } else {
            let writer = log.clone();
            tokio::task::spawn_blocking(move || writer.append_blocking(batch)).await.map_err(StoreError::from)??
        };
        // Handed to the indexer under the room's write lock: in seq order.
        let stored = answers.iter().filter_map(|a| match a {
            Ok(Appended::New(event)) => Some(event.clone()),
            _ => None,
        });
        self.search.record(stored.collect());
        Ok(answers)
    }

    async fn find_sent(&self, room: &RoomName, user: &Username, client_id: &str) -> Result<Option<Message>, StoreError> {
        Ok(self.log(room).await?.find_sent(user.as_str(), client_id))
    }

    async fn history(&self, room: &RoomName, query: HistoryQuery) -> Result<Vec<Message>, StoreError> {
        let log = self.log(room).await?;
        tokio::task::spawn_blocking(move || log.history_blocking(query))
            .await
            .map_err(StoreError::from)?
            .map_err(StoreError::from)
    }

    async fn thread(&self, room: &RoomName, parent: u64, after: u64, limit: usize) -> Result<ThreadPage, StoreError> {
        let log = self.log(room).await?;
        tokio::task::spawn_blocking(move || log.thread_blocking(parent, after, limit))
            .await
            .map_err(StoreError::from)?
            .map_err(StoreError::from)?
    }

    async fn events(&self, room: &RoomName, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let log = self.log(room).await?;
        tokio::task::spawn_blocking(move || log.events_blocking(after, limit))
            .await
            .map_err(StoreError::from)?
            .map_err(StoreError::from)
    }

    async fn last_seq(&self, room: &RoomName) -> Result<u64, StoreError> {
        Ok(self.log(room).await?.last_seq())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let logs: Vec<RoomSlot> = self.open_rooms.lock().expect("open rooms lock").values().map(|(slot, _)| slot.clone()).collect();
        for slot in logs {
            if let Some(log) = slot.get() {
                let log = log.clone();
                tokio::task::spawn_blocking(move || log.sync())
                    .await
                    .map_err(StoreError::from)??;
            }
        }
        self.rooms_file.lock().expect("rooms file lock").sync()?;
        let search = self.search.clone();
        tokio::task::spawn_blocking(move || search.commit()).await.map_err(StoreError::from)?;
        Ok(())
    }

    async fn release_idle(&self, idle: Duration) -> Result<usize, StoreError> {
        let closing = self.take_idle_logs(idle);
        let count = closing.len();
        if count > 0 {
            tokio::task::spawn_blocking(move || closing.iter().try_for_each(|log| log.sync()))
                .await
                .map_err(StoreError::from)??;
        }
        Ok(count)
    }
}

#[async_trait]
impl SearchStore for JsonlStore {
    async fn search(&self, query: &SearchQuery, member_of: &[String]) -> Result<SearchPage, StoreError> {
        let (search, query, member_of) = (self.search.clone(), query.clone(), member_of.to_vec());
        Ok(tokio::task::spawn_blocking(move || search.search(&query, &member_of)).await.map_err(StoreError::from)??)
    }
}

impl JsonlStore {
    /// Forgets the logs unused for `idle` that nobody holds, and returns
    /// them to be synced and closed. Checked under the open-rooms lock,
    /// through which every new handle is taken, so a room is never open
    /// twice.
    fn take_idle_logs(&self, idle: Duration) -> Vec<SharedRoomLog> {
        let mut closing = Vec::new();
        let now = Instant::now();
        self.open_rooms.lock().expect("open rooms lock").retain(|_, (slot, used)| {
            let unused = now.duration_since(*used) >= idle;
            let held = Arc::strong_count(slot) > 1 || slot.get().is_some_and(|log| Arc::strong_count(log) > 1);
            if !unused || held {
                return true;
            }
            closing.extend(slot.get().cloned());
            false
        });
        closing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replies_and_reactions_to_a_message_older_than_the_tail_are_found_without_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let general = RoomName::parse(DEFAULT_ROOM).unwrap();
        let (ann, bob) = (Username::parse("ann").unwrap(), Username::parse("bob").unwrap());
        let post = |n: usize, thread| NewEvent::Post { user: ann.clone(), text: format!("m{n}"), client_id: format!("c{n}"), thread };
        {
            let store = JsonlStore::open(dir.path(), Fsync::Never).unwrap();
            let batch: Vec<NewEvent> = (1..=crate::store::DEDUP_WINDOW + 10).map(|n| post(n, None)).collect();
            store.append(&general, batch).await.unwrap();
            let late = vec![post(0, Some(1)), NewEvent::React { user: bob.clone(), id: 1, emoji: "👍".into() }];
            assert!(store.append(&general, late).await.unwrap().iter().all(Result::is_ok));
            store.flush().await.unwrap();
        }
        // Without the index, the tail does not reach message 1: a read of
        // it scans the log once.
        std::fs::remove_file(dir.path().join("rooms").join("general.jsonl.changes")).unwrap();
        let store = JsonlStore::open(dir.path(), Fsync::Never).unwrap();
        let first = store.history(&general, HistoryQuery::after(0, 1)).await.unwrap().remove(0);
        assert_eq!((first.reply_count, first.reactions.len()), (1, 1), "{first:?}");
        let page = store.thread(&general, 1, 0, 10).await.unwrap();
        assert_eq!(page.replies.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["m0"]);
        let again = store.append(&general, vec![NewEvent::React { user: bob, id: 1, emoji: "👍".into() }]).await.unwrap();
        assert!(matches!(&again[0], Ok(Appended::New(StoredEvent { kind: EventKind::React { added: false, .. }, .. }))), "{again:?}");
    }

    #[tokio::test]
    async fn damaged_or_hostile_room_records_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("rooms.jsonl"),
            concat!(
                "{\"name\":\"rust\",\"created_by\":\"ann\",\"created_at\":\"t\"}\n",
                "{\"name\":\"../etc\",\"created_by\":\"eve\",\"created_at\":\"t\"}\n",
                "{not json\n",
            ),
        )
        .unwrap();
        let store = JsonlStore::open(dir.path(), Fsync::Never).unwrap();
        let names: Vec<String> = store.list_rooms("", 10).await.unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["general", "rust"]);
        // New records are appended as whole lines after the old ones.
        store.create_room(&RoomName::parse("lobby").unwrap(), "bob").await.unwrap();
        drop(store);
        let reopened = JsonlStore::open(dir.path(), Fsync::Never).unwrap();
        assert!(reopened.room_exists(&RoomName::parse("lobby").unwrap()).await.unwrap());
    }

    #[test]
    fn a_room_file_that_cannot_be_opened_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let room_file = dir.path().join("rooms").join("lobby.jsonl");
        std::fs::create_dir_all(&room_file).unwrap(); // a directory cannot be opened for writing
        let error = JsonlStore::open(dir.path(), Fsync::Never).err().expect("the store does not open");
        assert_eq!(error.kind(), io::ErrorKind::IsADirectory);
        let text = error.to_string();
        assert!(text.starts_with(&format!("cannot open {}: ", room_file.display())), "{text}");
    }

    #[tokio::test]
    async fn a_room_with_a_message_file_but_no_record_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rooms.jsonl"), "{\"name\":\"big\",\"created_by\n").unwrap();
        let rooms = dir.path().join("rooms");
        std::fs::create_dir(&rooms).unwrap();
        for file in ["big.jsonl", "big.jsonl.torn", "Not-A-Room.jsonl", "a.b.jsonl"] {
            std::fs::write(rooms.join(file), "").unwrap();
        }
        let store = JsonlStore::open(dir.path(), Fsync::Never).unwrap();
        let names: Vec<String> = store.list_rooms("", 10).await.unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["big", "general"]);
        // The record was written: the next start lists it with no file scan needed.
        drop(store);
        let records = std::fs::read_to_string(dir.path().join("rooms.jsonl")).unwrap();
        assert_eq!(records.lines().filter(|l| l.contains("\"name\":\"big\",\"created_by\":")).count(), 1, "{records}");
    }

    #[tokio::test]
    async fn a_private_room_whose_record_is_lost_is_restored_private_with_its_members() {
        let dir = tempfile::tempdir().unwrap();
        let store = JsonlStore::open(dir.path(), Fsync::Never).unwrap();
        let team = RoomName::parse("team").unwrap();
        let (ann, bob, carol) = (Username::parse("ann").unwrap(), Username::parse("Bob").unwrap(), Username::parse("carol").unwrap());
        store.create_private_room(&team, &ann, PrivateRoom::Group).await.unwrap();
        let member = |who: &Username, added| NewEvent::Member { by: ann.clone(), member: who.clone(), added };
        store.append(&team, vec![member(&ann, true), member(&bob, true), member(&carol, true), member(&carol, false)]).await.unwrap();
        drop(store);
        std::fs::write(dir.path().join("rooms.jsonl"), "").unwrap();

        let store = JsonlStore::open(dir.path(), Fsync::Never).unwrap();
        let access = store.room_access(&team).await.unwrap().expect("restored");
        assert!(access.private, "never restored public");
        assert_eq!(access.members.values().cloned().collect::<Vec<_>>(), ["ann", "Bob"]);
        assert_eq!(access.created_by, "ann");
        assert!(store.list_rooms("", 10).await.unwrap().iter().all(|r| r.name != "team"));
    }
}
