//! When appended lines reach the disk (`--fsync always|batch|never`).
//!
//! - `never`: a write lands in the page cache and is acknowledged; it
//!   survives the process dying (kill -9) but not the machine losing power.
//! - `always`: every append is `fdatasync`ed by its writer before anyone
//!   hears of it.
//! - `batch` (group commit): every append is still synced before it is
//!   acknowledged, but one round at a time syncs for everyone. An append
//!   that finds no round running starts one at once (no added wait when
//!   the server is quiet); appends that arrive while a round runs, from
//!   any room, wait for it to end and share the next round, which syncs
//!   each of their files once and tells each member its file's result.
//!   The window is thus the length of one sync. A room's writer holds its
//!   room while it waits, so a failed sync can still be cut back off the
//!   file before anything else is written there.
//!
//! Everything here blocks: call it from the blocking thread pool.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};

use crate::store::Fsync;

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
            Fsync::Batch => Self::Batch(Arc::new(SyncGroup::new())),
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
            Self::Always => sync_data(file),
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

/// What a member of a round hears: its file's sync result.
type Answer = Result<(), (io::ErrorKind, String)>;

/// Appends waiting for one shared sync round.
pub struct SyncGroup {
    round: Mutex<Round>,
    /// Signalled when a round ends.
    round_ended: Condvar,
}

#[derive(Default)]
struct Round {
    /// Files written and not yet synced, with whom to tell.
    waiting: Vec<(Arc<File>, SyncSender<Answer>)>,
    /// A round is syncing now.
    syncing: bool,
}

impl SyncGroup {
    pub fn new() -> Self {
        Self { round: Mutex::new(Round::default()), round_ended: Condvar::new() }
    }

    /// Returns once `file` has been synced in a round that began after
    /// this call: at once if no round is running (this caller leads one),
    /// else after the running round, in the next one, with everyone who
    /// arrived meanwhile.
    pub fn sync(&self, file: &Arc<File>) -> io::Result<()> {
        let (tell, hear) = sync_channel(1);
        let mut round = self.round.lock().expect("sync round lock");
        round.waiting.push((file.clone(), tell));
        loop {
            if let Ok(answer) = hear.try_recv() {
                return answer.map_err(|(kind, message)| io::Error::new(kind, message));
            }
            if round.syncing {
                round = self.round_ended.wait(round).expect("sync round lock");
                continue;
            }
            // Nobody syncs and this caller has no answer: its file is
            // among the waiting ones (answers are sent before a round ends).
            round.syncing = true;
            let members = std::mem::take(&mut round.waiting);
            drop(round);
            sync_each_once(members);
            round = self.round.lock().expect("sync round lock");
            round.syncing = false;
            self.round_ended.notify_all();
        }
    }
}

/// Syncs every distinct file of a round once and tells each member.
fn sync_each_once(members: Vec<(Arc<File>, SyncSender<Answer>)>) {
    let mut results: Vec<(Arc<File>, Answer)> = Vec::new();
    for (file, tell) in members {
        let known = results.iter().find(|(synced, _)| Arc::ptr_eq(synced, &file)).map(|(_, r)| r.clone());
        let result = known.unwrap_or_else(|| {
            let result = sync_data(&file).map_err(|e| (e.kind(), e.to_string()));
            results.push((file, result.clone()));
            result
        });
        let _ = tell.send(result);
    }
}

/// `fdatasync`, counted (`chatroom_file_syncs_total`).
fn sync_data(file: &File) -> io::Result<()> {
    let synced = file.sync_data();
    crate::telemetry::file_synced();
    synced
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_round_answers_every_member_and_syncs_each_file() {
        let dir = tempfile::tempdir().unwrap();
        let group = Arc::new(SyncGroup::new());
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
        let round = group.round.lock().unwrap();
        assert!(!round.syncing && round.waiting.is_empty(), "the last round ended and nobody is left waiting");
    }
}
