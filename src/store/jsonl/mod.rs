//! The default backend: human-readable files under the data directory.
//!
//! ```text
//! data/
//!   rooms.jsonl            one line per room: {"name","created_by","created_at"}
//!   rooms/general.jsonl    one line per message, oldest first
//!   rooms/general.jsonl.torn   bytes of a line torn by a crash (rare)
//!   users.jsonl, sessions.jsonl, subscriptions.jsonl   see `accounts`
//! ```
//!
//! Start-up reads only `rooms.jsonl`; a room's file is opened on first use
//! and only its tail is read (see `room_log`), so start-up time does not
//! grow with the amount of history.

mod accounts;
mod lines;
mod log_file;
mod room_log;

pub use self::accounts::JsonlAccounts;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use self::room_log::{RoomLog, SharedRoomLog};
use super::{Appended, HistoryQuery, MessageStore, RoomInfo, rank_rooms};
use crate::error::ChatError;
use crate::model::{Message, NewMessage, RoomName, now_rfc3339, Username};

/// The room every server has.
pub const DEFAULT_ROOM: &str = "general";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RoomRecord {
    name: String,
    created_by: String,
    created_at: String,
}

type RoomSlot = Arc<OnceCell<SharedRoomLog>>;

pub struct JsonlStore {
    rooms_dir: PathBuf,
    rooms_file: Mutex<File>,
    rooms: Mutex<BTreeMap<String, RoomRecord>>,
    open_rooms: Mutex<HashMap<RoomName, RoomSlot>>,
    sync_writes: bool,
}

impl JsonlStore {
    /// Opens (creating if needed) a data directory. Blocking; call at start.
    pub fn open(data_dir: &Path, sync_writes: bool) -> io::Result<Self> {
        let rooms_dir = data_dir.join("rooms");
        std::fs::create_dir_all(&rooms_dir)?;
        let rooms_path = data_dir.join("rooms.jsonl");
        let rooms = read_room_records(&rooms_path)?;
        let rooms_file = OpenOptions::new().create(true).append(true).open(&rooms_path)?;
        let store = Self {
            rooms_dir,
            rooms_file: Mutex::new(rooms_file),
            rooms: Mutex::new(rooms),
            open_rooms: Mutex::new(HashMap::new()),
            sync_writes,
        };
        let general = RoomName::parse(DEFAULT_ROOM).expect("the default room name is valid");
        if !store.knows(&general) {
            let mut file = store.rooms_file.lock().expect("rooms file lock");
            store.record_room(&mut file, &general, "chatroom")?;
        }
        store.repair_all_rooms()?;
        Ok(store)
    }

    /// Cuts torn last lines off every room file now, so the warning comes at
    /// start-up. Reads one byte (and rarely a few KiB) per room.
    fn repair_all_rooms(&self) -> io::Result<()> {
        let names: Vec<String> = self.rooms.lock().expect("rooms lock").keys().cloned().collect();
        for name in names {
            let path = self.rooms_dir.join(format!("{name}.jsonl"));
            match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(file) => {
                    room_log::repair_torn_tail(&file, &path)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Appends a room record; the caller holds the rooms file lock.
    fn record_room(&self, file: &mut File, room: &RoomName, created_by: &str) -> io::Result<RoomRecord> {
        let record = RoomRecord {
            name: room.to_string(),
            created_by: created_by.to_string(),
            created_at: now_rfc3339(),
        };
        let mut line = serde_json::to_vec(&record).expect("a room record serialises");
        line.push(b'\n');
        file.write_all(&line)?;
        self.rooms.lock().expect("rooms lock").insert(record.name.clone(), record.clone());
        Ok(record)
    }

    fn knows(&self, room: &RoomName) -> bool {
        self.rooms.lock().expect("rooms lock").contains_key(room.as_str())
    }

    /// The open log of an existing room, opening it on first use.
    async fn log(&self, room: &RoomName) -> Result<SharedRoomLog, ChatError> {
        if !self.knows(room) {
            return Err(ChatError::RoomNotFound(room.to_string()));
        }
        let slot = {
            let mut open = self.open_rooms.lock().expect("open rooms lock");
            open.entry(room.clone()).or_default().clone()
        };
        let log = slot
            .get_or_try_init(|| {
                let dir = self.rooms_dir.clone();
                let room = room.clone();
                let sync = self.sync_writes;
                async move {
                    tokio::task::spawn_blocking(move || RoomLog::open(&dir, &room, sync))
                        .await
                        .map_err(|e| ChatError::Internal(e.to_string()))?
                        .map(Arc::new)
                        .map_err(ChatError::from)
                }
            })
            .await?;
        Ok(log.clone())
    }
}

/// Creates the data directory if needed and checks that files can be
/// written in it; the reason in words if not. Called when settings are
/// checked, so a bad `--data-dir` stops the server before it listens.
pub fn prepare_data_dir(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("cannot create it: {e}"))?;
    let probe = path.join(".write-test");
    std::fs::write(&probe, b"ok").map_err(|e| format!("cannot write in it: {e}"))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

fn read_room_records(path: &Path) -> io::Result<BTreeMap<String, RoomRecord>> {
    let mut rooms = BTreeMap::new();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(rooms),
        Err(e) => return Err(e),
    };
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str::<RoomRecord>(&line)
            .ok()
            .filter(|r| RoomName::parse(&r.name).is_ok());
        match record {
            Some(r) => {
                rooms.insert(r.name.clone(), r);
            }
            None => tracing::warn!(file = %path.display(), line = n + 1, "skipping a damaged room record"),
        }
    }
    Ok(rooms)
}

#[async_trait]
impl MessageStore for JsonlStore {
    async fn create_room(&self, room: &RoomName, created_by: &str) -> Result<RoomInfo, ChatError> {
        // One lock around check-and-insert so two creators cannot both win.
        let mut file = self.rooms_file.lock().expect("rooms file lock");
        if self.knows(room) {
            return Err(ChatError::RoomExists(room.to_string()));
        }
        let record = self.record_room(&mut file, room, created_by)?;
        Ok(RoomInfo { name: record.name })
    }

    async fn room_exists(&self, room: &RoomName) -> Result<bool, ChatError> {
        Ok(self.knows(room))
    }

    async fn list_rooms(&self, filter: &str, limit: usize) -> Result<Vec<RoomInfo>, ChatError> {
        let rooms = self.rooms.lock().expect("rooms lock");
        Ok(rank_rooms(rooms.keys().map(String::as_str), filter, limit))
    }

    async fn append(&self, room: &RoomName, batch: Vec<NewMessage>) -> Result<Vec<Appended>, ChatError> {
        let log = self.log(room).await?;
        let _serial = log.write_lock().lock().await;
        if !self.sync_writes {
            // Without fsync an append is one write(2) into the page cache,
            // a few microseconds: cheaper done here than handed to a
            // blocking thread and back, which cost more CPU than the write
            // itself (docs/BENCHMARKS.md).
            return Ok(log.append_blocking(batch)?);
        }
        let writer = log.clone();
        let result = tokio::task::spawn_blocking(move || writer.append_blocking(batch))
            .await
            .map_err(|e| ChatError::Internal(e.to_string()))?;
        Ok(result?)
    }

    async fn find_sent(&self, room: &RoomName, user: &Username, client_id: &str) -> Result<Option<Message>, ChatError> {
        Ok(self.log(room).await?.find_sent(user.as_str(), client_id))
    }

    async fn history(&self, room: &RoomName, query: HistoryQuery) -> Result<Vec<Message>, ChatError> {
        let log = self.log(room).await?;
        tokio::task::spawn_blocking(move || log.history_blocking(query))
            .await
            .map_err(|e| ChatError::Internal(e.to_string()))?
            .map_err(ChatError::from)
    }

    async fn flush(&self) -> Result<(), ChatError> {
        let logs: Vec<RoomSlot> = self.open_rooms.lock().expect("open rooms lock").values().cloned().collect();
        for slot in logs {
            if let Some(log) = slot.get() {
                let log = log.clone();
                tokio::task::spawn_blocking(move || log.sync())
                    .await
                    .map_err(|e| ChatError::Internal(e.to_string()))??;
            }
        }
        self.rooms_file.lock().expect("rooms file lock").sync_data()?;
        Ok(())
    }
}
