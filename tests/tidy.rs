//! The architecture invariants of ARCHITECTURE.md, checked by reading the
//! source: a rule broken here fails `cargo test`, not just a review.
//!
//! - only `http` knows warp and hyper;
//! - only `store` touches files (`std::fs`, `File`, `OpenOptions`) and
//!   talks to PostgreSQL (`tokio_postgres`, `deadpool_postgres`);
//! - only `store` and the wiring in `lib.rs` name the JSON-lines backend;
//! - the transports (`http`, `connection`) never reach a store directly,
//!   and act through the use-case layer (`chat`), not the hub;
//! - the server logs through `tracing`: no `println!`/`eprintln!`;
//! - every file opens with a module doc (`//!`).

use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`: the server crate. (The load generator is
/// its own workspace member, `bench/`, with its own rules, so it is not
/// here.)
fn source_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// `src/`-relative path with `/` separators, e.g. `http/mod.rs`.
fn module_path(path: &Path) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    path.strip_prefix(&src).expect("under src/").to_string_lossy().replace('\\', "/")
}

/// The code lines of a file: comments and doc comments left out.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| (i + 1, l)).filter(|(_, l)| !l.trim_start().starts_with("//"))
}

/// Every `(file:line, line)` outside `allowed` modules whose code contains
/// one of `needles`.
fn offenders(needles: &[&str], allowed: impl Fn(&str) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    for path in source_files() {
        let module = module_path(&path);
        if allowed(&module) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a source file");
        for (n, line) in code_lines(&text) {
            if needles.iter().any(|needle| line.contains(needle)) {
                found.push(format!("src/{module}:{n}: {}", line.trim()));
            }
        }
    }
    found
}

fn in_dir(module: &str, dir: &str) -> bool {
    module.starts_with(&format!("{dir}/"))
}

#[test]
fn only_http_knows_warp_and_hyper() {
    let found = offenders(&["warp::", "use warp", "hyper::", "hyper_util", "use hyper"], |m| in_dir(m, "http"));
    assert!(found.is_empty(), "warp/hyper outside src/http:\n{}", found.join("\n"));
}

#[test]
fn only_store_touches_files() {
    let needles = ["std::fs", "fs::File", "File::", "OpenOptions", "tokio::fs", "use std::fs"];
    let found = offenders(&needles, |m| in_dir(m, "store"));
    assert!(found.is_empty(), "file access outside src/store:\n{}", found.join("\n"));
}

#[test]
fn only_store_talks_to_postgresql() {
    let found = offenders(&["tokio_postgres", "deadpool_postgres"], |m| in_dir(m, "store"));
    assert!(found.is_empty(), "PostgreSQL reached outside src/store:\n{}", found.join("\n"));
}

#[test]
fn only_store_and_the_wiring_name_the_jsonl_backend() {
    let found = offenders(&["jsonl::", "Jsonl"], |m| in_dir(m, "store") || m == "lib.rs");
    assert!(found.is_empty(), "the JSON-lines backend named outside src/store and lib.rs:\n{}", found.join("\n"));
}

#[test]
fn transports_never_reach_a_store() {
    let needles = [
        "MessageStore",
        "UserStore",
        "SessionStore",
        "SubscriptionStore",
        "ReadMarkerStore",
        "AuthStores",
        ".store()",
        "store::jsonl",
        "store::memory",
    ];
    let found = offenders(&needles, |m| !(in_dir(m, "http") || m == "connection.rs"));
    assert!(found.is_empty(), "a transport reaches a store:\n{}", found.join("\n"));
}

#[test]
fn transports_act_through_the_use_case_layer() {
    let found = offenders(&["hub::Hub", "Hub::", ".hub."], |m| !(in_dir(m, "http") || m == "connection.rs"));
    assert!(found.is_empty(), "a transport calls the hub instead of `chat`:\n{}", found.join("\n"));
}

#[test]
fn the_server_logs_through_tracing() {
    let found = offenders(&["println!", "eprintln!", "dbg!("], |_| false);
    assert!(found.is_empty(), "printing instead of tracing:\n{}", found.join("\n"));
}

#[test]
fn every_file_opens_with_a_module_doc() {
    let missing: Vec<String> = source_files()
        .into_iter()
        .filter(|p| !std::fs::read_to_string(p).expect("a source file").trim_start().starts_with("//!"))
        .map(|p| format!("src/{}", module_path(&p)))
        .collect();
    assert!(missing.is_empty(), "files without a module doc: {missing:?}");
}

#[test]
fn the_rules_see_the_code() {
    // A tidy test that reads nothing passes everything: make sure it reads.
    let files = source_files();
    assert!(files.iter().any(|p| module_path(p) == "http/mod.rs"), "{files:?}");
    assert!(!offenders(&["warp::"], |m| !in_dir(m, "http")).is_empty(), "http/ uses warp, and the check must see it");
}
