//! The fuzz corpora as a plain regression test: every file committed under
//! fuzz/corpus/<target>/ is replayed through the same checks the fuzz
//! targets run (fuzz/src/lib.rs, included here), so the inputs that once
//! found a bug, or that libFuzzer grew from the seeds, keep guarding the
//! code in a stable `cargo test` without cargo-fuzz or nightly.
//!
//! A failing input is named in the panic; run it alone with
//! `cargo fuzz run <target> fuzz/corpus/<target>/<file>` (see
//! fuzz/README.md) or through this test.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The corpus files of `target`, sorted; a missing or empty corpus is a
/// failure (the test would otherwise pass by checking nothing).
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no input", dir.display());
    files
}

/// Runs every corpus file of `target` through `check`, naming the file
/// that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let started = Instant::now();
    let files = corpus(target);
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
            let why = panic.downcast_ref::<String>().map(String::as_str).or(panic.downcast_ref::<&str>().copied()).unwrap_or("a panic");
            panic!("{target}: {} fails: {why}", file.display());
        }
    }
    // Straight to stderr: libtest would swallow an `eprintln!` of a passing test.
    let _ = writeln!(std::io::stderr(), "fuzz corpus {target}: {} inputs in {:.1?}", files.len(), started.elapsed());
}

#[test]
fn client_frames_corpus() {
    replay("client_frame", checks::client_frame);
}

#[test]
fn names_corpus() {
    replay("names", checks::names);
}

#[test]
fn event_lines_corpus() {
    replay("event_line", checks::event_line);
}

#[test]
fn room_files_corpus() {
    replay("room_file", checks::room_file);
}
