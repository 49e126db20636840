//! A small state replayed from its own JSON-lines log: the shape every
//! account-side file shares.
//!
//! A [`Journal`] holds the state in memory behind a lock, with the open
//! [`LogFile`] it came from. At open every record is replayed into the
//! state; a log of changes (`Compaction::Rewrite`) is then rewritten to the
//! records that rebuild the state as it is, so it does not grow forever. A
//! change is planned against the state, its records are appended (whole or
//! not at all), and only then applied: memory never claims what a restart
//! would not find.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::StoreError;
use crate::store::jsonl::log_file::LogFile;

/// A state rebuilt from records, one record at a time.
pub(super) trait Replay: Default + Send + 'static {
    /// One line of the file.
    type Record: Serialize + DeserializeOwned + Send + 'static;
    /// Changes the state as `record` says.
    fn apply(&mut self, record: Self::Record);
    /// The fewest records that rebuild the state as it is now.
    fn compacted(&self) -> Vec<Self::Record>;
}

/// Whether a log is rewritten compacted when it is opened.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Compaction {
    /// Every line is a lasting fact (an account): keep the file as it is.
    Keep,
    /// Lines are changes (opened, ended…): rewrite to the current state.
    Rewrite,
}

pub(super) struct Journal<S> {
    inner: Arc<Mutex<Logged<S>>>,
}

struct Logged<S> {
    state: S,
    log: LogFile,
}

impl<S: Replay> Journal<S> {
    /// Replays `path` (a missing file is an empty state) and opens it for
    /// appends, compacting it first if asked. Blocking; call at start.
    pub fn open(path: &Path, compaction: Compaction, sync_appends: bool) -> Result<Self, StoreError> {
        let mut state = S::default();
        for record in LogFile::read_all::<S::Record>(path)? {
            state.apply(record);
        }
        let log = match compaction {
            Compaction::Keep => LogFile::open(path, sync_appends)?,
            Compaction::Rewrite => LogFile::rewrite(path, &state.compacted(), sync_appends)?,
        };
        Ok(Self { inner: Arc::new(Mutex::new(Logged { state, log })) })
    }

    fn lock(&self) -> MutexGuard<'_, Logged<S>> {
        self.inner.lock().expect("journal lock")
    }

    /// Reads the state (memory only: no I/O, no blocking).
    pub fn read<T>(&self, read: impl FnOnce(&S) -> T) -> T {
        read(&self.lock().state)
    }

    /// Makes a change off the async runtime: `plan` looks at the state and
    /// says which records to write (none: nothing to do) and what to
    /// answer, or refuses; the records are appended, then applied.
    pub async fn change<T: Send + 'static>(
        &self,
        plan: impl FnOnce(&S) -> Result<(Vec<S::Record>, T), StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut logged = inner.lock().expect("journal lock");
            let (records, answer) = plan(&logged.state)?;
            logged.log.append(&records)?;
            for record in records {
                logged.state.apply(record);
            }
            Ok(answer)
        })
        .await?
    }
}
