//! The HTTP contract: docs/openapi.yaml against the running server.
//!
//! - [`the_spec_and_the_server_have_the_same_routes`]: every (method, path)
//!   of the spec is answered by a real request (no `404 not_found`, no
//!   405), every other method on those paths is a 405 whose `Allow` lists
//!   exactly the spec's methods, and the spec's routes are the route table
//!   at the top of src/http/mod.rs. No external tool needed.
//! - [`schemathesis_finds_no_defect`]: the schema-driven fuzzer
//!   `schemathesis` (PyPI, the `st` command; `.ci/run` installs it) runs
//!   every check but one (tests/schemathesis.toml says which and why):
//!   no 5xx, status codes, content types, headers and bodies as the spec
//!   says, schema-valid requests accepted and invalid ones refused, 405s
//!   for undeclared methods, 401 without the cookie. It runs three times
//!   on one server: the API with a guest's session cookie; the log-in and
//!   log-out operations (which end that session); and the WebSocket
//!   upgrade without a cookie (an accepted upgrade would hand
//!   schemathesis's HTTP connection over to a socket). Every request
//!   carries the server's own `Origin`. Its summary is printed; a failure
//!   prints the whole report. Without `st` the test is skipped loudly
//!   (it fails under `CI=true`).
//!
//! `CHATROOM_OPENAPI_EXAMPLES` (default 10) is schemathesis's
//! `--max-examples` per operation: raise it for a deeper run (100 takes a
//! few minutes). `CHATROOM_OPENAPI_SEED` replays a run with that seed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{TestServer, User, skip_or_fail};
use reqwest::Method;
use serde_json::json;

/// The pinned version `.ci/run` installs.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// How long one schemathesis run may take before the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// The methods an OpenAPI path item can hold that the server might route.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn spec_path() -> PathBuf {
    repo_file("docs/openapi.yaml")
}

/// The spec's operations, path → methods (upper case), read from the
/// `paths:` block of docs/openapi.yaml: a path at two spaces of indent, its
/// operations at four (the file keeps that layout; a path without an
/// operation is an error here).
fn spec_operations() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(spec_path()).expect("docs/openapi.yaml");
    let mut operations: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut in_paths = false;
    let mut current: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.starts_with('#') && !line.is_empty() {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(path) = line.strip_prefix("  /").and_then(|rest| rest.strip_suffix(':')) {
            let path = format!("/{path}");
            assert!(!operations.contains_key(&path), "{path} is twice in the spec");
            operations.insert(path.clone(), BTreeSet::new());
            current = Some(path);
        } else if let Some(method) = line.strip_prefix("    ").and_then(|rest| rest.strip_suffix(':'))
            && ["get", "put", "post", "delete", "patch", "options", "head", "trace"].contains(&method)
        {
            let path = current.as_ref().expect("an operation under a path");
            operations.get_mut(path).expect("the path").insert(method.to_ascii_uppercase());
        }
    }
    for (path, methods) in &operations {
        assert!(!methods.is_empty(), "{path} has no operation in the spec");
    }
    assert!(operations.len() > 10, "the spec's paths were not found: {operations:?}");
    operations
}

/// The route table in src/http/mod.rs's module doc (`//! GET  /api/me`),
/// path → methods, queries left out.
fn route_table() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(repo_file("src/http/mod.rs")).expect("src/http/mod.rs");
    let mut routes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().take_while(|l| l.starts_with("//!")) {
        let mut words = line.trim_start_matches("//!").split_whitespace();
        let (Some(method), Some(path)) = (words.next(), words.next()) else { continue };
        if METHODS.contains(&method) && path.starts_with('/') {
            let path = path.split('?').next().expect("a path");
            routes.entry(path.to_string()).or_default().insert(method.to_string());
        }
    }
    routes
}

/// `path` with its parameters filled in for a real request.
fn concrete(path: &str, message_id: u64) -> String {
    path.replace("{room}", "general").replace("{id}", &message_id.to_string()).replace("{file}", "style.css")
}

/// A request as a browser on this server would send it: the user's cookie,
/// the server's own Origin, and a JSON body where one is read.
fn browser_request(user: &User, server: &TestServer, method: &str, path: &str, body: serde_json::Value) -> reqwest::RequestBuilder {
    let method = Method::from_bytes(method.as_bytes()).expect("a method");
    let request = user.request(method.clone(), path).header("origin", server.origin());
    if method == Method::GET { request } else { request.json(&body) }
}

#[tokio::test]
async fn the_spec_and_the_server_have_the_same_routes() {
    let spec = spec_operations();
    assert_eq!(spec, route_table(), "docs/openapi.yaml and the route table in src/http/mod.rs differ");

    let server = TestServer::start().await;
    let ann = server.guest("ann").await;
    let posted = ann.send_http("general", "to edit and delete", "c1").await;
    let id = common::id(&posted);

    // Every operation is routed: a real request gets neither the unknown
    // path's 404 nor a 405. Log-out last: it ends the session.
    let mut operations: Vec<(&String, &String)> =
        spec.iter().flat_map(|(path, methods)| methods.iter().map(move |m| (path, m))).collect();
    operations.sort_by_key(|(path, method)| (*path == "/api/logout", *method == "DELETE"));
    for (path, method) in operations {
        let body = json!({"text": "edited", "name": "a-room", "id": id, "username": "ann"});
        let response = browser_request(&ann, &server, method, &concrete(path, id), body).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let unknown_path = status == 404 && text.contains(r#""message":"not found""#);
        assert!(!unknown_path && status != 405, "{method} {path} is in the spec but not routed: {status} {text}");
    }

    // Every other method on a spec path is a 405 that allows the spec's.
    let carol = server.guest("carol").await;
    for (path, methods) in &spec {
        let allow: BTreeSet<String> = methods.clone();
        for method in METHODS.iter().filter(|m| !methods.contains(**m)) {
            let response = browser_request(&carol, &server, method, &concrete(path, id), json!({})).send().await.unwrap();
            assert_eq!(response.status(), 405, "{method} {path}: the server answers it, the spec does not say so");
            let header = response.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default();
            let allowed: BTreeSet<String> = header.split(',').map(|m| m.trim().to_string()).collect();
            assert_eq!(allowed, allow, "{method} {path}: Allow {header:?}");
        }
    }
}

/// The `st` command, if schemathesis is installed.
async fn schemathesis_version() -> Option<String> {
    let output = tokio::process::Command::new("st").arg("--version").output().await.ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// One schemathesis run: what it said, and whether it found nothing.
struct Run {
    label: &'static str,
    success: bool,
    report: String,
}

impl Run {
    /// The report's closing lines: the phases, failures and counts.
    fn summary(&self) -> String {
        let start = self.report.rfind("SUMMARY").map_or(0, |at| self.report[..at].rfind('\n').map_or(0, |nl| nl + 1));
        self.report[start..].trim_end().to_string()
    }

    /// "Test cases: N generated, …": the number of requests generated.
    fn generated(&self) -> u64 {
        self.report
            .lines()
            .find_map(|line| line.trim().split_once(" generated").and_then(|(n, _)| n.trim().parse().ok()))
            .unwrap_or(0)
    }
}

/// Runs `st run` on the spec against `server` with the common options and
/// `extra`; `session`, when given, is the cookie schemathesis sends (through
/// tests/schemathesis.toml).
async fn schemathesis(label: &'static str, server: &TestServer, session: Option<&str>, extra: &[&str]) -> Run {
    let examples = std::env::var("CHATROOM_OPENAPI_EXAMPLES").unwrap_or_else(|_| "10".into());
    let workdir = tempfile::tempdir().expect("a working directory");
    let mut command = tokio::process::Command::new("st");
    if session.is_some() {
        command.arg("--config-file").arg(repo_file("tests/schemathesis.toml"));
    }
    command
        .arg("run")
        .arg(spec_path())
        .args(["--url", &format!("http://{}", server.addr())])
        .args(["--header", &format!("Origin: {}", server.origin())])
        .args(["--max-examples", &examples])
        .args(["--workers", "1", "--request-timeout", "10", "--generation-database", "none", "--no-color"])
        .args(extra)
        .current_dir(workdir.path())
        .env("CHATROOM_FUZZ_SESSION", session.unwrap_or_default())
        .kill_on_drop(true);
    if let Ok(seed) = std::env::var("CHATROOM_OPENAPI_SEED") {
        command.args(["--seed", &seed]);
    }
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis ({label}) did not finish within {RUN_TIMEOUT:?}"))
        .expect("st runs");
    let mut report = String::from_utf8_lossy(&output.stdout).into_owned();
    report.push_str(&String::from_utf8_lossy(&output.stderr));
    Run { label, success: output.status.success(), report }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_defect() {
    let Some(version) = schemathesis_version().await else {
        skip_or_fail(&format!("schemathesis (the `st` command) is not installed: pip install {SCHEMATHESIS}"));
        return;
    };
    // Sends and room creation unpaced, so the fuzzer reaches the handlers
    // (the pace's 429 is in the spec, and tested in tests/limits.rs).
    let server = TestServer::start_with(|config| {
        config.send_rate = None;
        config.room_create_rate = None;
    })
    .await;
    let fuzzer = server.guest("fuzzer").await;
    let session = fuzzer.session_id().expect("a session cookie").to_string();

    let started = Instant::now();
    let session_ops = ["guest", "signUp", "logIn", "logOut"];
    let mut api_args = vec![];
    for op in session_ops.iter().chain(&["websocket"]) {
        api_args.extend(["--exclude-operation-id", op]);
    }
    let mut session_args = vec![];
    for op in session_ops {
        session_args.extend(["--include-operation-id", op]);
    }
    let runs = [
        schemathesis("the API, with a session", &server, Some(&session), &api_args).await,
        schemathesis("log-in and log-out", &server, Some(&session), &session_args).await,
        schemathesis("the WebSocket upgrade, without a session", &server, None, &["--include-operation-id", "websocket"]).await,
    ];
    let elapsed = started.elapsed();

    let generated: u64 = runs.iter().map(Run::generated).sum();
    let mut out = std::io::stderr();
    let _ = writeln!(out, "\nopenapi: {version}, {generated} requests generated in {:.1} s", elapsed.as_secs_f64());
    for run in &runs {
        let _ = writeln!(out, "--- schemathesis: {} ({} generated)\n{}\n", run.label, run.generated(), run.summary());
    }
    for run in &runs {
        assert!(run.success, "schemathesis found defects in {}:\n{}", run.label, run.report);
        assert!(run.generated() > 0, "schemathesis generated nothing for {}:\n{}", run.label, run.report);
    }
}
