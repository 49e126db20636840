//! A small append-only JSON-lines file: replay it at start, append records
//! as things change, and rewrite it compacted (atomically, via a temporary
//! file and a rename) when it is opened.
//!
//! An append lands whole or not at all: a write that fails partway (a full
//! disk) is cut back off, so the next record never joins a partial line. If
//! even that cut fails, the next append makes it first. A failure is
//! returned, naming the file, and not logged here: the caller that gives
//! up logs it (only a failed cut-back, which nobody else hears of, is). A torn last line
//! found when the file is opened (the process died mid-write) is set aside
//! as in the room files.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::file_error;
use super::room_log::repair_tail;

pub struct LogFile {
    path: PathBuf,
    file: File,
    /// The length of the file's whole lines: everything appended so far.
    len: u64,
    /// A failed append could not be cut back: bytes past `len` remain.
    tail_to_cut: bool,
    /// Every append is synced before it returns (`--fsync` always/batch).
    sync_appends: bool,
}

impl LogFile {
    /// Reads every record of `path` (skipping damaged lines with a warning).
    pub fn read_all<T: DeserializeOwned>(path: &Path) -> io::Result<Vec<T>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(file_error("open", path)(e)),
        };
        let mut records = Vec::new();
        for (n, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(file_error("read", path))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(&line) {
                Ok(record) => records.push(record),
                Err(e) => tracing::warn!(file = %path.display(), line = n + 1, error = %e, "skipping a damaged line"),
            }
        }
        Ok(records)
    }

    /// Replaces the file's content with `records`, then opens it for appends.
    pub fn rewrite<T: Serialize>(path: &Path, records: &[T], sync_appends: bool) -> io::Result<Self> {
        let tmp = path.with_extension("jsonl.tmp");
        write_all_records(&tmp, records).map_err(file_error("write", &tmp))?;
        std::fs::rename(&tmp, path).map_err(file_error("replace", path))?;
        Self::open(path, sync_appends)
    }

    /// Opens (creating) the file for appends, first setting aside a torn
    /// last line.
    pub fn open(path: &Path, sync_appends: bool) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(file_error("open", path))?;
        // A last line that is a whole JSON object only lost its newline.
        let is_whole = |_: &File, _: u64, tail: &[u8]| Ok(serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(tail).is_ok());
        let len = repair_tail(&file, path, is_whole).map_err(file_error("repair", path))?;
        Ok(Self { path: path.to_path_buf(), file, len, tail_to_cut: false, sync_appends })
    }

    /// Makes what was appended durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Appends records as whole lines, in one write; on failure nothing of
    /// them stays in the file.
    pub fn append<T: Serialize>(&mut self, records: &[T]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for record in records {
            serde_json::to_writer(&mut buf, record)?;
            buf.push(b'\n');
        }
        self.cut_failed_tail()?;
        let written = self.file.write_all(&buf).and_then(|()| if self.sync_appends { self.file.sync_data() } else { Ok(()) });
        if let Err(e) = written.map_err(file_error("append to", &self.path)) {
            // The caller logs `e`. A cut that fails too is only logged:
            // the next append tries it again first.
            self.tail_to_cut = true;
            if let Err(cut) = self.cut_failed_tail() {
                tracing::error!(error = %cut, "a failed append left part of a line behind");
            }
            return Err(e);
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Cuts off what a failed append left behind, if anything.
    fn cut_failed_tail(&mut self) -> io::Result<()> {
        if !self.tail_to_cut {
            return Ok(());
        }
        self.file.set_len(self.len).map_err(file_error("cut back", &self.path))?;
        self.tail_to_cut = false;
        Ok(())
    }
}

/// Creates `path` holding `records` as JSON lines, synced.
fn write_all_records<T: Serialize>(path: &Path, records: &[T]) -> io::Result<()> {
    let mut out = io::BufWriter::new(File::create(path)?);
    for record in records {
        serde_json::to_writer(&mut out, record)?;
        out.write_all(b"\n")?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_set_aside_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.jsonl");
        std::fs::write(&path, "{\"n\":1}\n{\"n\":").unwrap();
        let mut log = LogFile::open(&path, false).unwrap();
        log.append(&[serde_json::json!({"n": 2})]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":1}\n{\"n\":2}\n");
        assert!(path.with_extension("jsonl.torn").exists());
        let records: Vec<serde_json::Value> = LogFile::read_all(&path).unwrap();
        assert_eq!(records.len(), 2);
    }

    #[test]
    fn a_failed_append_is_returned_with_its_file_and_not_logged() {
        let full = Path::new("/dev/full"); // every write fails: no space left
        if !full.exists() {
            return;
        }
        let (logged, _capturing) = crate::test_logs::capture();
        let mut log = LogFile::open(full, false).unwrap();
        let error = log.append(&[serde_json::json!({"n": 1})]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        assert!(error.to_string().starts_with("cannot append to /dev/full: "), "{error}");
        // A device cannot be cut back either: that second failure is only
        // logged (nobody else hears of it); the append's own is not.
        let lines = logged.lines();
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].contains("left part of a line behind") && lines[0].contains("cannot cut back /dev/full"), "{lines:#?}");
    }
}
