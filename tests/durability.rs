//! `--fsync`, observed from outside: the real binary in each mode, sends
//! acknowledged one after another and then several at once, and
//! `chatroom_file_syncs_total` from `/metrics`. One after another, each
//! acknowledgement must have waited for a sync of its own (nothing else was
//! being written), so fewer syncs than sends would mean one was
//! acknowledged unsynced; with `always`, even concurrent sends each get
//! their own.
//! docs/RELIABILITY.md lists what each mode promises.

mod common;

use common::process::ServerProcess;

/// Sends acknowledged one at a time in each mode.
const SENDS: usize = 12;
/// Senders at once, each sending [`SENDS`], for the concurrent case.
const SENDERS: usize = 4;

/// Starts the binary with `--fsync mode`, acknowledges [`SENDS`] posts one
/// after another, then [`SENDERS`] × [`SENDS`] at once, and returns the
/// file-sync counts reported after each part.
async fn syncs_after_sends(mode: &str) -> Option<(f64, f64)> {
    let server = ServerProcess::start(&["--fsync", mode, "--metrics", "on"])?;
    let endpoint = server.endpoint();
    let user = endpoint.guest(&format!("fsync{mode}")).await;
    let before = file_syncs(&server).await;
    send_all(&user, "one", mode).await;
    let sequential = file_syncs(&server).await - before;
    let mut users = Vec::new();
    for i in 0..SENDERS {
        users.push(endpoint.guest(&format!("fsync{mode}{i}")).await);
    }
    let tags: Vec<String> = (0..SENDERS).map(|i| format!("many{i}")).collect();
    futures::future::join_all(users.iter().zip(&tags).map(|(user, tag)| send_all(user, tag, mode))).await;
    let concurrent = file_syncs(&server).await - before - sequential;
    Some((sequential, concurrent))
}

/// Posts [`SENDS`] messages one after another, each acknowledged.
async fn send_all(user: &common::User, tag: &str, mode: &str) {
    for i in 0..SENDS {
        let (status, body) = user.post_message("general", &format!("durable {tag} {i}"), &format!("{tag}-{i}")).await;
        assert_eq!(status, 201, "send {tag} {i} in --fsync {mode}: {body}");
    }
}

async fn file_syncs(server: &ServerProcess) -> f64 {
    common::scrape(&server.url("/metrics")).await.value("chatroom_file_syncs_total")
}

#[tokio::test]
async fn always_syncs_every_message_on_its_own_batch_before_every_acknowledgement_and_never_not_at_all() {
    let all = (SENDERS * SENDS) as f64;
    let Some((sequential, concurrent)) = syncs_after_sends("always").await else { return };
    assert!(sequential >= SENDS as f64, "--fsync always: {SENDS} sends one after another, only {sequential} syncs");
    assert!(concurrent >= all, "--fsync always: {all} sends at once, only {concurrent} syncs (one per message expected)");
    let Some((sequential, concurrent)) = syncs_after_sends("batch").await else { return };
    assert!(sequential >= SENDS as f64, "--fsync batch: {SENDS} sends one after another, only {sequential} syncs");
    assert!(concurrent >= 1.0, "--fsync batch: {all} sends at once, no sync");
    eprintln!("--fsync batch: {all} concurrent sends took {concurrent} syncs");
    let Some((sequential, concurrent)) = syncs_after_sends("never").await else { return };
    assert_eq!((sequential, concurrent), (0.0, 0.0), "--fsync never syncs nothing");
}

#[test]
fn an_unknown_mode_is_refused_at_start_with_the_choices() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chatroom"))
        .args(["--fsync", "sometimes", "--addr", "127.0.0.1:0"])
        .output()
        .expect("the binary runs");
    assert!(!output.status.success(), "--fsync sometimes is refused");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("always, batch, never"), "the error names the choices: {stderr}");
}
