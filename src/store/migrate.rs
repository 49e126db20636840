//! `chatroom migrate --from ./data --to postgres://…`: copies a JSON-lines
//! data directory into PostgreSQL, keeping what clients and accounts rely
//! on: password hashes, sessions (so cookies keep working), rooms (private
//! ones private, with their members), every
//! room's event log with its seqs (so message ids, edits and deletes, and
//! a client's `after`, stay valid), subscriptions and read markers.
//!
//! The source is read through the JSON-lines store's own API (the event
//! log as `events` shows it: a deleted message's text is already taken
//! out, and stays out). The target's schema is created if the database is
//! empty. Running it again copies nothing: every record says whether it
//! was there already, and a room's events are copied only past the
//! database's `last_seq` for it, after checking that the database's last
//! event there is the source's (a room that grew a different history in
//! the database is refused, not mixed).

use std::fmt;
use std::path::Path;

use crate::model::{RoomName, StoredEvent, Username};
use crate::store::jsonl::{JsonlAccounts, JsonlStore};
use crate::store::postgres::PgStore;
use crate::store::{Fsync, MessageStore, PrivateRoom, RoomAccess, SessionStore, StoreError};

/// Events read from the source and written to the database at a time
/// (one transaction each).
const EVENT_PAGE: usize = 1000;

/// How many records of one kind were copied, and how many were in the
/// database already.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub copied: u64,
    pub already_there: u64,
}

impl Tally {
    fn count(&mut self, copied: bool) {
        if copied { self.copied += 1 } else { self.already_there += 1 }
    }
}

/// What one run did, per kind of record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub users: Tally,
    pub sessions: Tally,
    pub rooms: Tally,
    pub events: Tally,
    pub subscriptions: Tally,
    pub read_markers: Tally,
}

impl MigrationReport {
    /// Each kind with its tally, in the order they are copied.
    pub fn kinds(&self) -> [(&'static str, Tally); 6] {
        [
            ("users", self.users),
            ("sessions", self.sessions),
            ("rooms", self.rooms),
            ("events", self.events),
            ("subscriptions", self.subscriptions),
            ("read markers", self.read_markers),
        ]
    }

    /// Whether this run wrote nothing (everything was there already).
    pub fn copied_nothing(&self) -> bool {
        self.kinds().iter().all(|(_, tally)| tally.copied == 0)
    }
}

impl fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> =
            self.kinds().iter().map(|(kind, t)| format!("{kind}: {} copied, {} already there", t.copied, t.already_there)).collect();
        f.write_str(&parts.join("; "))
    }
}

/// Copies the data directory `from` into the PostgreSQL database at `to`.
pub async fn copy_data_dir(from: &Path, to: &str) -> Result<MigrationReport, StoreError> {
    if !from.is_dir() {
        let cause = std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory");
        return Err(StoreError::Io { action: "read the data directory", path: from.to_path_buf(), cause });
    }
    let (messages, accounts) = open_source(from).await?;
    let target = PgStore::open(to, Fsync::Batch).await?;
    let mut report = MigrationReport::default();
    let records = accounts.records();
    for user in &records.users {
        report.users.count(target.import_user(user).await?);
    }
    for session in accounts.load_sessions().await? {
        report.sessions.count(target.import_session(&session).await?);
    }
    for name in messages.room_names() {
        let room = parse_room(&name)?;
        let access = messages.room_access(&room).await?.unwrap_or_default();
        report.rooms.count(copy_room(&target, &room, &access).await?);
        copy_events(&messages, &target, &room, &mut report.events).await?;
    }
    for (subscriber, room) in &records.subscriptions {
        report.subscriptions.count(target.import_subscription(subscriber, &parse_room(room)?).await?);
    }
    for (subscriber, room, id) in &records.read_markers {
        report.read_markers.count(target.import_marker(subscriber, &parse_room(room)?, *id).await?);
    }
    Ok(report)
}

/// Opens the JSON-lines stores of `dir` (on the blocking pool: it reads
/// files).
/// Creates the room in the database as it is in the data directory: a
/// public room, or a private one (a direct message) with its members;
/// whether it was created.
async fn copy_room(target: &PgStore, room: &RoomName, access: &RoomAccess) -> Result<bool, StoreError> {
    if !access.private {
        return target.import_room(room, "chatroom migrate").await;
    }
    let creator = parse_user(&access.created_by)?;
    let members = access.members.values().map(|name| parse_user(name)).collect::<Result<Vec<_>, _>>()?;
    let other = members.iter().find(|m| m.key() != creator.key());
    let kind = match other {
        Some(other) if access.dm => PrivateRoom::Direct(other),
        _ => PrivateRoom::Group,
    };
    let created = match target.create_private_room(room, &creator, kind).await {
        Ok(_) => true,
        Err(StoreError::RoomExists(_)) => false,
        Err(other) => return Err(other),
    };
    if !access.dm {
        for member in &members {
            target.set_member(room, member, creator.as_str(), true).await?;
        }
    }
    Ok(created)
}

fn parse_user(name: &str) -> Result<Username, StoreError> {
    Username::parse(name).map_err(|e| StoreError::Conflict(format!("a private room lists a member named {name:?}, which is not a valid name: {e}")))
}

async fn open_source(dir: &Path) -> Result<(JsonlStore, JsonlAccounts), StoreError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || Ok((JsonlStore::open(&dir, Fsync::Never)?, JsonlAccounts::open(&dir, Fsync::Never)?))).await?
}

fn parse_room(name: &str) -> Result<RoomName, StoreError> {
    RoomName::parse(name).map_err(|e| StoreError::Conflict(format!("the data directory names a room {name:?}: {e}")))
}

/// Copies the events of `room` the database lacks, a page at a time.
async fn copy_events(source: &JsonlStore, target: &PgStore, room: &RoomName, tally: &mut Tally) -> Result<(), StoreError> {
    let (source_last, target_last) = (source.last_seq(room).await?, target.last_seq(room).await?);
    check_same_history(source, target, room, target_last.min(source_last)).await?;
    tally.already_there += target_last.min(source_last);
    let mut after = target_last;
    while after < source_last {
        let page = source.events(room, after, EVENT_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        tally.copied += target.import_events(room, &page).await? as u64;
    }
    Ok(())
}

/// Refuses to add to a room whose event `seq` differs between the source
/// and the database (the database's room is not an earlier copy of this
/// one).
async fn check_same_history(source: &JsonlStore, target: &PgStore, room: &RoomName, seq: u64) -> Result<(), StoreError> {
    if seq == 0 {
        return Ok(());
    }
    let at = |events: Vec<StoredEvent>| events.into_iter().find(|e| e.seq == seq);
    let (theirs, ours) = (at(source.events(room, seq - 1, 1).await?), at(target.events(room, seq - 1, 1).await?));
    if theirs != ours {
        return Err(StoreError::Conflict(format!(
            "room '{room}' in the database has a different history from the data directory's (event {seq} differs): not copied"
        )));
    }
    Ok(())
}
