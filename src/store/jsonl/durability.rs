//! When appended lines reach the disk (`--fsync always|batch|never`).
//!
//! - `always`: every event is written and `fdatasync`ed on its own before
//!   anyone hears of it: one sync per stored message, shared with nothing.
//! - `batch` (group commit): a room's writer stores everything that queued
//!   while its previous write was being synced (up to 1,024 sends) as one
//!   write and one `fdatasync`, then acknowledges them all. Rooms sync
//!   concurrently, each on its own blocking thread, and the filesystem
//!   folds their syncs into shared journal commits. (A first version
//!   gathered every room's appends into one round synced by one thread:
//!   one `fdatasync` after another, it put 100 busy rooms' p50 at 200–470
//!   ms; docs/BENCHMARKS.md, *Step 8*.)
//! - `never`: a write lands in the page cache and is acknowledged; it
//!   survives the process dying (kill -9) but not the machine losing power.
//!
//! A failed sync is a failed append: the room log cuts its file back to
//! where the batch began, so nothing unacknowledged stays behind.
//! Everything here blocks: call it from the blocking thread pool.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::store::Fsync;

/// The `--fsync` policy of one store, shared by its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durability(Fsync);

impl Durability {
    pub fn new(mode: Fsync) -> Self {
        Self(mode)
    }

    /// Whether appends sync at all (and so belong on the blocking pool).
    pub fn syncs(self) -> bool {
        self.0 != Fsync::Never
    }

    /// Whether every event gets a write and a sync of its own.
    pub fn syncs_each_event(self) -> bool {
        self.0 == Fsync::Always
    }

    /// Makes what was just written to `file` durable, if the mode syncs.
    pub fn after_write(self, file: &File) -> io::Result<()> {
        if self.syncs() { sync_data(file) } else { Ok(()) }
    }

    /// Makes a new file's name durable (its directory entry), when the
    /// mode syncs: without it a power cut can lose a whole new file.
    pub fn after_create(self, dir: &Path) -> io::Result<()> {
        if self.syncs() { File::open(dir)?.sync_all() } else { Ok(()) }
    }
}

/// `fdatasync`, counted (`chatroom_file_syncs_total`).
fn sync_data(file: &File) -> io::Result<()> {
    let synced = file.sync_data();
    crate::telemetry::file_synced();
    synced
}
