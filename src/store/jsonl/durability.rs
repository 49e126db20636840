//! When appended lines reach the disk (`--fsync always|batch|never`).
//!
//! - `never`: a write lands in the page cache and is acknowledged; it
//!   survives the process dying (kill -9) but not the machine losing power.
//! - `always`: every append is `fdatasync`ed by its writer before anyone
//!   hears of it.
//! - `batch`: every append is still synced before it is acknowledged, but
//!   appends arriving within [`BATCH_WINDOW`] of each other (from any room)
//!   wait for one sync round: the first to arrive leads it, sleeps the
//!   window, then syncs every file the round collected, once each, and
//!   hands each member its file's result. A room's writer holds its room
//!   while it waits, so a failed sync can still be cut back off the file
//!   before anything else is written there.
//!
//! Everything here blocks: call it from the blocking thread pool.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::Fsync;

/// How long the leader of a `batch` round waits for others to join it.
pub const BATCH_WINDOW: Duration = Duration::from_millis(2);

/// The `--fsync` policy of one store, shared by its files.
#[derive(Clone)]
pub enum Durability {
    Always,
    Batch(Arc<SyncGroup>),
    Never,
}

impl Durability {
    pub fn new(mode: Fsync) -> Self {
        match mode {
            Fsync::Always => Self::Always,
            Fsync::Batch => Self::Batch(Arc::new(SyncGroup::new(BATCH_WINDOW))),
            Fsync::Never => Self::Never,
        }
    }

    /// Whether appends sync at all (and so belong on the blocking pool).
    pub fn syncs(&self) -> bool {
        !matches!(self, Self::Never)
    }

    /// Makes what was just written to `file` durable, as the mode says.
    pub fn after_write(&self, file: &Arc<File>) -> io::Result<()> {
        match self {
            Self::Always => file.sync_data(),
            Self::Batch(group) => group.sync(file),
            Self::Never => Ok(()),
        }
    }

    /// Makes a new file's name durable (its directory entry), when the
    /// mode syncs: without it a power cut can lose a whole new file.
    pub fn after_create(&self, dir: &Path) -> io::Result<()> {
        if self.syncs() { File::open(dir)?.sync_all() } else { Ok(()) }
    }
}

/// Appends waiting for one shared sync round.
pub struct SyncGroup {
    window: Duration,
    waiting: Mutex<Round>,
}

#[derive(Default)]
struct Round {
    members: Vec<(Arc<File>, SyncSender<Result<(), (io::ErrorKind, String)>>)>,
    /// Someone already leads the round being gathered.
    led: bool,
}

impl SyncGroup {
    pub fn new(window: Duration) -> Self {
        Self { window, waiting: Mutex::new(Round::default()) }
    }

    /// Joins the round being gathered (leading it if nobody does) and
    /// returns once `file` has been synced in it.
    pub fn sync(&self, file: &Arc<File>) -> io::Result<()> {
        let (tell, hear) = sync_channel(1);
        let lead = {
            let mut round = self.waiting.lock().expect("sync round lock");
            round.members.push((file.clone(), tell));
            !std::mem::replace(&mut round.led, true)
        };
        if lead {
            std::thread::sleep(self.window);
            let members = std::mem::take(&mut *self.waiting.lock().expect("sync round lock")).members;
            sync_each_once(members);
        }
        match hear.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err((kind, message))) => Err(io::Error::new(kind, message)),
            Err(_) => Err(io::Error::other("the sync round ended without an answer")),
        }
    }
}

/// Syncs every distinct file of a round once and tells each member.
fn sync_each_once(members: Vec<(Arc<File>, SyncSender<Result<(), (io::ErrorKind, String)>>)>) {
    let mut results: Vec<(Arc<File>, Result<(), (io::ErrorKind, String)>)> = Vec::new();
    for (file, tell) in members {
        let known = results.iter().find(|(synced, _)| Arc::ptr_eq(synced, &file)).map(|(_, r)| r.clone());
        let result = known.unwrap_or_else(|| {
            let result = file.sync_data().map_err(|e| (e.kind(), e.to_string()));
            results.push((file, result.clone()));
            result
        });
        let _ = tell.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_round_answers_every_member_and_syncs_each_file() {
        let dir = tempfile::tempdir().unwrap();
        let group = Arc::new(SyncGroup::new(Duration::from_millis(20)));
        let files: Vec<Arc<File>> = (0..3).map(|i| Arc::new(File::create(dir.path().join(format!("{i}"))).unwrap())).collect();
        let threads: Vec<_> = (0..12)
            .map(|i| {
                let (group, file) = (group.clone(), files[i % 3].clone());
                std::thread::spawn(move || {
                    (&*file).write_all(b"line\n").unwrap();
                    group.sync(&file)
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap().expect("every member hears its file was synced");
        }
        assert!(!group.waiting.lock().unwrap().led, "the last round handed over its lead");
    }
}
