//! A small append-only JSON-lines file: replay it at start, append records
//! as things change, and rewrite it compacted (atomically, via a temporary
//! file and a rename) when it is opened.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::file_error;

pub struct LogFile {
    path: PathBuf,
    file: File,
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
    pub fn rewrite<T: Serialize>(path: &Path, records: &[T]) -> io::Result<Self> {
        let tmp = path.with_extension("jsonl.tmp");
        write_all_records(&tmp, records).map_err(file_error("write", &tmp))?;
        std::fs::rename(&tmp, path).map_err(file_error("replace", path))?;
        Self::open(path)
    }

    /// Opens (creating) the file for appends.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(file_error("open", path))?;
        Ok(Self { path: path.to_path_buf(), file })
    }

    /// Makes what was appended durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Appends records as whole lines, in one write.
    pub fn append<T: Serialize>(&mut self, records: &[T]) -> io::Result<()> {
        let mut buf = Vec::new();
        for record in records {
            serde_json::to_writer(&mut buf, record)?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf).map_err(file_error("append to", &self.path)).inspect_err(|e| {
            tracing::error!(error = %e, "append failed");
        })
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
