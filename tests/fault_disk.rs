//! The data directory runs out of space, or goes read-only, under a real
//! server process that is chatting: every send is answered with a clear
//! refusal or an acknowledgement that holds (the message is readable, on
//! the socket of every reader and in the file), readers keep being served,
//! and once there is space again the server takes sends without a restart.
//!
//! The data directory is a small tmpfs the test mounts (`common::disk`;
//! mounting needs root: skipped loudly without it, a failure under
//! `CI=true`), unmounted afterwards even when the test fails. The
//! read-only case needs more than a tmpfs: Linux refuses `mount -o
//! remount,ro` while a file is open for writing (the server always holds
//! its files), so the test uses an ext4 image on a loop device and has the
//! kernel force it read-only in place, as it does when ext4 meets an error
//! (`errors=remount-ro`, through `/sys/fs/ext4/<dev>/trigger_fs_error`).
//! Such a filesystem stays read-only until it is unmounted, so that test's
//! recovery is a remount and a restart, and it checks that nothing
//! acknowledged was lost across them.
//!
//! Printed (`FIGURE` lines): how many sends were acknowledged after the
//! disk was filled (the last page of the file still had room) and refused,
//! the refusal's code, and the time from freeing space to the first
//! acknowledged send.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::disk::SmallDisk;
use common::process::ServerProcess;
use common::{User, WsClient, ids, print_figure, read_room_file, without_type};
use serde_json::Value;

/// What a send refused for a full disk gets, on the socket and over HTTP
/// (docs/PROTOCOL.md §13)…
const DISK_FULL: Refusal = Refusal { code: "storage_full", status: 507 };
/// …and for a read-only one (an operator's problem, like a bug).
const READ_ONLY: Refusal = Refusal { code: "internal", status: 500 };

struct Refusal {
    code: &'static str,
    status: u16,
}

const ARGS: [&str; 6] = ["--send-rate", "0", "--frame-rate", "0", "--ping-secs", "0"];

/// The answer to one send on `ws`: its echo or its error (others' messages
/// skipped).
async fn send_and_answer(ws: &mut WsClient, room: &str, client_id: &str) -> Value {
    ws.send_message(room, &format!("text of {client_id}"), client_id).await;
    ws.next_matching(client_id, |e| e["client_id"] == client_id && (e["type"] == "message" || e["type"] == "error")).await
}

/// What two writers were answered while the disk filled.
#[derive(Default)]
struct Answers {
    acknowledged: Vec<Value>,
    refused: Vec<(String, Value)>,
}

/// Two writers send in turns until each was refused `refusals` times in a
/// row; every answer must be an echo or the disk refusal.
async fn send_until_refused(writers: &mut [(&str, &mut WsClient)], room: &str, refusals: usize) -> Answers {
    let mut answers = Answers::default();
    let mut in_a_row = vec![0; writers.len()];
    for i in 0.. {
        assert!(i < 2_000, "2,000 sends were stored on a full disk");
        for (w, (name, ws)) in writers.iter_mut().enumerate() {
            let client_id = format!("{name}-{i}");
            let answer = send_and_answer(ws, room, &client_id).await;
            if answer["type"] == "message" {
                assert_eq!(in_a_row[w], 0, "{client_id} was stored after a refusal on a disk still full");
                answers.acknowledged.push(answer);
            } else {
                assert_refusal(&answer, room, &DISK_FULL);
                in_a_row[w] += 1;
                answers.refused.push((client_id, answer));
            }
        }
        if in_a_row.iter().all(|&n| n >= refusals) {
            return answers;
        }
    }
    unreachable!()
}

/// A send refused for the disk: an error frame that names the send and
/// the room and carries the documented code.
fn assert_refusal(answer: &Value, room: &str, refusal: &Refusal) {
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], refusal.code, "{answer}");
    assert_eq!(answer["room"], room, "{answer}");
    assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
}

fn client_ids(messages: &[Value]) -> BTreeSet<String> {
    messages.iter().map(|m| m["client_id"].as_str().expect("a client_id").to_string()).collect()
}

/// The room's history (over HTTP) and its file agree, hold every id from
/// 1 without a gap, and each client_id once.
async fn assert_history_whole(reader: &User, data: &Path, room: &str) -> Vec<Value> {
    let history = reader.all_messages(room).await;
    assert_eq!(ids(&history), (1..=history.len() as u64).collect::<Vec<_>>(), "ids without a gap");
    assert_eq!(client_ids(&history).len(), history.len(), "no message twice");
    let on_disk = read_room_file(&data.join("rooms").join(format!("{room}.jsonl")));
    assert_eq!(on_disk, history, "the file holds exactly the history");
    history
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_sends_clearly_and_every_acknowledged_one_holds() {
    let Some(disk) = SmallDisk::mount_or_skip("4m") else { return };
    let server = ServerProcess::start_in(disk.path(), &ARGS).expect("the server starts on the small disk");
    let endpoint = server.endpoint();
    let (ann, bob, carol, dan) =
        (endpoint.guest("ann").await, endpoint.guest("bob").await, endpoint.guest("carol").await, endpoint.guest("dan").await);
    dan.create_room("side").await;
    let (mut ann_ws, mut bob_ws, mut carol_ws) = (ann.ws_in("general").await, bob.ws_in("general").await, carol.ws_in("general").await);
    for i in 0..5 {
        assert_eq!(send_and_answer(&mut ann_ws, "general", &format!("before-{i}")).await["type"], "message");
    }

    let filler = disk.fill();
    let answers = send_until_refused(&mut [("ann", &mut ann_ws), ("bob", &mut bob_ws)], "general", 3).await;
    print_figure(&format!(
        "disk full: {} more sends acknowledged (the file's last page), then {} refused with {:?}",
        answers.acknowledged.len(),
        answers.refused.len(),
        answers.refused[0].1["code"],
    ));

    // Meanwhile readers are served: history over HTTP, a join elsewhere,
    // and an HTTP post is refused the same way.
    let history = carol.all_messages("general").await;
    assert_eq!(history.len(), 5 + answers.acknowledged.len(), "every acknowledged send is readable");
    let mut dan_ws = dan.ws_in("side").await;
    let (status, body) = dan.post_message("side", "over http", "dan-http").await;
    assert_eq!((status, body["error"]["code"].as_str()), (DISK_FULL.status, Some(DISK_FULL.code)), "{body}");
    let (status, health) = endpoint.anonymous().get("/healthz").await;
    print_figure(&format!("/healthz on a full disk: {status} {health}"));

    // Space again: the refused sends are resent and stored, without a restart.
    std::fs::remove_file(&filler).expect("remove the filler");
    let freed = Instant::now();
    let (first_refused, _) = &answers.refused[0];
    let ws = if first_refused.starts_with("ann") { &mut ann_ws } else { &mut bob_ws };
    let retried = send_and_answer(ws, "general", first_refused).await;
    let recovery = freed.elapsed();
    assert_eq!(retried["type"], "message", "the first send after space was freed: {retried}");
    print_figure(&format!("space freed → first send acknowledged in {recovery:?}, no restart"));
    for (client_id, _) in &answers.refused[1..] {
        let ws = if client_id.starts_with("ann") { &mut ann_ws } else { &mut bob_ws };
        assert_eq!(send_and_answer(ws, "general", client_id).await["type"], "message", "{client_id} resent");
    }
    assert_eq!(dan.post_message("side", "over http", "dan-http").await.0, 201, "the HTTP post again");
    assert_eq!(dan_ws.next_of_type("message").await["client_id"], "dan-http");

    // The history: what was acknowledged, then what was resent; each once,
    // no gap; the file agrees; the reader saw exactly that, in order.
    let history = assert_history_whole(&carol, disk.path(), "general").await;
    let expected: BTreeSet<String> = (0..5)
        .map(|i| format!("before-{i}"))
        .chain(client_ids(&answers.acknowledged))
        .chain(answers.refused.iter().map(|(k, _)| k.clone()))
        .collect();
    assert_eq!(client_ids(&history), expected);
    let seen = carol_ws.next_messages(history.len()).await;
    assert_eq!(seen.iter().map(without_type).collect::<Vec<_>>(), history, "the reader saw every stored message once, in order");
    carol_ws.expect_silence().await;
}

/// A server started on a disk with no free block stops with an error that
/// names the data directory and the cause (it checks that it can write
/// there); once there is space it starts and serves.
#[tokio::test]
async fn a_server_started_on_a_full_disk_stops_naming_it_and_starts_once_there_is_space() {
    let Some(disk) = SmallDisk::mount_or_skip("1m") else { return };
    let filler = disk.fill();
    let last_line = match ServerProcess::start_in(disk.path(), &ARGS) {
        Ok(_) => panic!("the server started on a full disk"),
        Err(last_line) => last_line,
    };
    print_figure(&format!("start on a full disk: {last_line}"));
    assert!(last_line.contains(&disk.path().display().to_string()), "the start error names no directory: {last_line}");
    assert!(last_line.contains("No space left on device"), "the start error gives no cause: {last_line}");
    std::fs::remove_file(filler).expect("remove the filler");
    let server = ServerProcess::start_in(disk.path(), &ARGS).expect("the server starts once there is space");
    let ann = server.endpoint().guest("ann").await;
    ann.ws_in("general").await.send_and_echo("general", "there is room now", "a1").await;
}

/// An ext4 image on a loop device, mounted with `errors=remount-ro`, that
/// the test can force read-only in place (what the kernel does when ext4
/// meets an error). Unmounted, and the image removed, when dropped.
struct Ext4Disk {
    dir: tempfile::TempDir,
    image: PathBuf,
    device: String,
}

impl Ext4Disk {
    fn mount_or_skip() -> Option<Self> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let image = std::env::temp_dir().join(format!("chatroom-ext4-{:016x}.img", rand::random::<u64>()));
        let made = run("truncate", &["-s", "16M", &image.display().to_string()])
            .and_then(|_| run("mkfs.ext4", &["-q", "-F", &image.display().to_string()]))
            .and_then(|_| run("mount", &["-o", "loop,errors=remount-ro", &image.display().to_string(), &dir.path().display().to_string()]));
        if let Err(why) = made {
            let _ = std::fs::remove_file(&image);
            common::skip_or_fail(&format!("cannot mount an ext4 image on a loop device (needs root and loop devices): {why}"));
            return None;
        }
        let source = run("findmnt", &["-n", "-o", "SOURCE", &dir.path().display().to_string()]).expect("findmnt names the device");
        let device = source.trim().trim_start_matches("/dev/").to_string();
        Some(Self { dir, image, device })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Has the kernel treat the filesystem as damaged: with
    /// `errors=remount-ro` it turns read-only at once, files open or not.
    fn force_read_only(&self) {
        std::fs::write(format!("/sys/fs/ext4/{}/trigger_fs_error", self.device), "fault_disk test\n").expect("trigger an ext4 error");
    }

    /// Unmounts and mounts it again (read-write).
    fn remount(&self) {
        let (image, dir) = (self.image.display().to_string(), self.path().display().to_string());
        run("umount", &[&dir]).expect("unmount");
        run("mount", &["-o", "loop,errors=remount-ro", &image, &dir]).expect("mount again");
    }
}

impl Drop for Ext4Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Runs a command; its stdout, or why it failed.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The filesystem under the data directory turns read-only mid-chat:
/// sends are refused clearly, never acknowledged falsely; reads go on;
/// after the operator's remount and a restart, everything acknowledged is
/// there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_gone_read_only_refuses_sends_and_loses_nothing_acknowledged() {
    let Some(disk) = Ext4Disk::mount_or_skip() else { return };
    let mut server = ServerProcess::start_in(disk.path(), &ARGS).expect("the server starts on the ext4 image");
    let endpoint = server.endpoint();
    let (ann, carol) = (endpoint.guest("ann").await, endpoint.guest("carol").await);
    let (mut ann_ws, mut carol_ws) = (ann.ws_in("general").await, carol.ws_in("general").await);
    let mut acknowledged = Vec::new();
    for i in 0..10 {
        acknowledged.push(send_and_answer(&mut ann_ws, "general", &format!("before-{i}")).await);
    }

    disk.force_read_only();
    let mut refused = Vec::new();
    for i in 0..5 {
        let client_id = format!("during-{i}");
        let answer = send_and_answer(&mut ann_ws, "general", &client_id).await;
        assert_refusal(&answer, "general", &READ_ONLY);
        refused.push(client_id);
    }
    print_figure(&format!("read-only: {} sends refused with {:?}", refused.len(), READ_ONLY.code));
    let (status, body) = ann.post_message("general", "over http", "http-1").await;
    assert_eq!((status, body["error"]["code"].as_str()), (READ_ONLY.status, Some(READ_ONLY.code)), "{body}");
    // Reads go on.
    assert_eq!(client_ids(&carol.all_messages("general").await), client_ids(&acknowledged));
    let seen = carol_ws.next_messages(acknowledged.len()).await;
    assert_eq!(ids(&seen), ids(&acknowledged));
    carol_ws.expect_silence().await;

    // The operator remounts the filesystem (ext4 keeps an errored one
    // read-only until then) and restarts the server.
    server.kill();
    disk.remount();
    let server = ServerProcess::start_in(disk.path(), &ARGS).expect("the server starts again");
    let ann = ann.on(&server.endpoint());
    let mut ws = ann.ws().await;
    ws.join_after("general", acknowledged.len() as u64).await;
    for client_id in &refused {
        assert_eq!(send_and_answer(&mut ws, "general", client_id).await["type"], "message", "{client_id} resent");
    }
    let history = assert_history_whole(&ann, disk.path(), "general").await;
    let expected: BTreeSet<String> = client_ids(&acknowledged).into_iter().chain(refused.iter().cloned()).collect();
    assert_eq!(client_ids(&history), expected, "everything acknowledged, and the resent ones, once each");
}
