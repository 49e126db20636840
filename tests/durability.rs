//! `--fsync`, observed from outside: the real binary in each mode, sends
//! acknowledged one after another, and `chatroom_file_syncs_total` from
//! `/metrics`. A send acknowledged before its file was synced would leave
//! the count below the number of acknowledgements (each one waited for a
//! round that began after its write, and nothing else was being written).
//! docs/RELIABILITY.md lists what each mode promises.

mod common;

use common::process::ServerProcess;

/// Sends acknowledged one at a time in each mode.
const SENDS: usize = 12;

/// Starts the binary with `--fsync mode`, acknowledges [`SENDS`] posts one
/// after another and returns the file-sync count it reports afterwards.
async fn syncs_after_sequential_sends(mode: &str) -> Option<f64> {
    let server = ServerProcess::start(&["--fsync", mode, "--metrics", "on"])?;
    let user = server.endpoint().guest(&format!("fsync{mode}")).await;
    let before = file_syncs(&server).await;
    for i in 0..SENDS {
        let (status, body) = user.post_message("general", &format!("durable {i}"), &format!("c{i}")).await;
        assert_eq!(status, 201, "send {i} in --fsync {mode}: {body}");
    }
    Some(file_syncs(&server).await - before)
}

async fn file_syncs(server: &ServerProcess) -> f64 {
    let text = reqwest::get(server.url("/metrics")).await.expect("GET /metrics").text().await.expect("a body");
    text.lines()
        .find_map(|line| line.strip_prefix("chatroom_file_syncs_total "))
        .map_or(0.0, |value| value.trim().parse().expect("a number"))
}

#[tokio::test]
async fn always_and_batch_sync_before_every_acknowledgement_and_never_does_not() {
    for mode in ["always", "batch"] {
        let Some(syncs) = syncs_after_sequential_sends(mode).await else { return };
        assert!(syncs >= SENDS as f64, "--fsync {mode}: {SENDS} sends acknowledged one after another, only {syncs} syncs");
    }
    let Some(syncs) = syncs_after_sequential_sends("never").await else { return };
    assert_eq!(syncs, 0.0, "--fsync never syncs nothing");
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
