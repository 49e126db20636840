//! The checks behind every fuzz target: each takes arbitrary bytes, feeds
//! them to the server's code the way hostile input reaches it, and panics
//! when an invariant breaks. `fuzz_targets/*.rs` hand them to libFuzzer;
//! `tests/fuzz_corpus.rs` (plain `cargo test`, stable) replays the
//! committed corpora through the very same functions, by including this
//! file, so it may only use what the server's own tests have: `chatroom`,
//! `serde_json`, `tempfile`, `tokio` and std.
//!
//! - [`client_frame`]: a WebSocket text frame, decoded as the connection
//!   does ([`ClientEvent::decode`]) and its fields validated as the chat
//!   layer does; every answer the server could send about it is valid JSON
//!   that carries the hostile strings intact.
//! - [`names`]: room names, usernames, message texts and `client_id`s; an
//!   accepted value is within its limits, holds no character it must not
//!   and round-trips.
//! - [`event_line`]: one line of a room file; a line that parses is written
//!   back and reads the same, and its redaction keeps its length, seq and
//!   kind and drops the text.
//! - [`room_file`]: a whole room file; the store opens it, repairs only its
//!   tail, answers reads, and a post stored after it reads back, also after
//!   a reopen.

use std::cell::RefCell;
use std::path::{Component, Path};

use chatroom::error::ChatError;
use chatroom::fuzzing::{line_of, parse_line, redact_in_place, seq_of};
use chatroom::model::{
    EventKind, MAX_CLIENT_ID, MAX_ROOM_NAME, MAX_TEXT, MAX_USERNAME, NewEvent, RoomName, StoredEvent, Username, validate_client_id,
    validate_text,
};
use chatroom::protocol::{ClientEvent, ServerEvent};
use chatroom::store::jsonl::JsonlStore;
use chatroom::store::{Appended, DEDUP_WINDOW, Fsync, HistoryQuery, MessageStore};

// ---- client frames ---------------------------------------------------------

/// A client's text frame. Non-UTF-8 bytes never reach the decoder (the
/// socket closes with 1007 first), so they are skipped here.
pub fn client_frame(data: &[u8]) {
    let Ok(frame) = std::str::from_utf8(data) else { return };
    match ClientEvent::decode(frame) {
        Err(err) => {
            assert_eq!(err.code(), "invalid_json", "a frame that does not decode is invalid_json: {err}");
            check_reply(&ServerEvent::error(&err), "error");
        }
        Ok(event) => check_client_event(event),
    }
}

/// Validates a decoded frame's fields as the chat layer would, and checks
/// the error frames the server would answer with.
fn check_client_event(event: ClientEvent) {
    let room = match &event {
        ClientEvent::Join { room, .. }
        | ClientEvent::Leave { room }
        | ClientEvent::Send { room, .. }
        | ClientEvent::Typing { room }
        | ClientEvent::Edit { room, .. }
        | ClientEvent::Delete { room, .. }
        | ClientEvent::Read { room, .. }
        | ClientEvent::React { room, .. } => room.clone(),
    };
    if let Err(err) = RoomName::parse(&room) {
        check_refusal(&err, "invalid_room_name", Some(&room), None);
    }
    // What `leave` of an unknown room answers: the name cut to 80 characters.
    check_refusal(&ChatError::NotJoined(room.chars().take(MAX_ROOM_NAME).collect()), "not_joined", None, None);
    match event {
        ClientEvent::Send { text, client_id, .. } => {
            check_text(&text);
            check_client_id(&client_id);
            let echoed = (client_id.len() <= MAX_CLIENT_ID).then_some(client_id.as_str());
            check_refusal(&ChatError::RateLimited, "rate_limited", Some(&room), echoed);
        }
        ClientEvent::Edit { text, .. } => check_text(&text),
        ClientEvent::React { emoji, .. } => {
            if let Err(err) = chatroom::model::validate_emoji(&emoji) {
                check_refusal(&err, "invalid_emoji", Some(&room), None);
            }
        }
        _ => {}
    }
}

/// The error frame for `err` about `room` and `client_id`: valid JSON with
/// the stable code, carrying both strings back exactly.
fn check_refusal(err: &ChatError, code: &str, room: Option<&str>, client_id: Option<&str>) {
    assert_eq!(err.code(), code);
    let reply = check_reply(&ServerEvent::error_for(err, room, client_id), "error");
    assert_eq!(reply["room"].as_str(), room, "the room comes back exactly");
    assert_eq!(reply["client_id"].as_str(), client_id, "the client_id comes back exactly");
}

/// A server frame is one JSON object of the given `type`, with no raw line
/// break (frames are also logged and written line by line); its parsed
/// value.
fn check_reply(event: &ServerEvent, kind: &str) -> serde_json::Value {
    let json = event.to_json();
    assert!(!json.contains('\n') && !json.contains('\r'), "a frame is one line: {json}");
    let value: serde_json::Value = serde_json::from_str(&json).expect("a server frame is valid JSON");
    assert_eq!(value["type"], kind, "{json}");
    if kind == "error" {
        assert!(value["code"].is_string() && value["message"].is_string(), "{json}");
    }
    value
}

// ---- names and texts -----------------------------------------------------

/// The same string as a room name, a username, a message text and a
/// `client_id`.
pub fn names(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    check_room_name(raw);
    check_username(raw);
    check_text(raw);
    check_client_id(raw);
}

/// An accepted room name is kept as given, short, and a safe file name:
/// `<name>.jsonl` is one plain component inside the rooms directory, on
/// any file system.
fn check_room_name(raw: &str) {
    let Ok(room) = RoomName::parse(raw) else { return };
    let name = room.as_str();
    assert_eq!(name, raw, "a room name is kept as given");
    assert!((1..=MAX_ROOM_NAME).contains(&name.chars().count()), "{name:?}");
    assert!(!name.chars().any(|c| c.is_control() || c.is_whitespace() || "/\\.:*?\"<>|".contains(c)), "{name:?}");
    let file = format!("{name}.jsonl");
    let components: Vec<Component> = Path::new(&file).components().collect();
    assert_eq!(components, [Component::Normal(file.as_ref())], "{name:?} stays inside the rooms directory");
    let device = name.to_ascii_lowercase();
    let numbered = |prefix: &str| device.strip_prefix(prefix).is_some_and(|n| n.len() == 1 && n.as_bytes()[0].is_ascii_digit());
    assert!(!["con", "prn", "aux", "nul"].contains(&device.as_str()) && !numbered("com") && !numbered("lpt"), "{name:?} is a device name");
    assert_eq!(RoomName::parse(name).expect("an accepted name is accepted again"), room);
    assert_eq!(room.to_string(), name);
    let json = serde_json::to_string(&room).expect("a room name serialises");
    assert_eq!(serde_json::from_str::<RoomName>(&json).expect("and reads back"), room);
}

/// Characters no username may hold: line breaks, bidi controls, zero-width
/// characters and the byte-order mark (besides every control character).
const INVISIBLE: [char; 19] = [
    '\u{2028}', '\u{2029}', '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}',
    '\u{2067}', '\u{2068}', '\u{2069}', '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}',
];

/// An accepted username is the input trimmed, 1–32 characters, without
/// control or invisible characters; it round-trips, and changing the case
/// of its ASCII letters changes neither its key nor what it looks like.
fn check_username(raw: &str) {
    let Ok(user) = Username::parse(raw) else { return };
    let name = user.as_str();
    assert_eq!(name, raw.trim(), "a username is the input trimmed");
    assert!((1..=MAX_USERNAME).contains(&name.chars().count()), "{name:?}");
    assert!(!name.chars().any(|c| c.is_control() || INVISIBLE.contains(&c)), "{name:?} holds an invisible character");
    assert_eq!(Username::parse(name).expect("an accepted name is accepted again"), user);
    let json = serde_json::to_string(&user).expect("a username serialises");
    assert_eq!(serde_json::from_str::<Username>(&json).expect("and reads back"), user);
    assert_eq!(user.key(), name.to_lowercase());
    let shouted = Username::parse(&name.to_ascii_uppercase()).expect("upper-case ASCII letters are as valid");
    assert_eq!(shouted.key(), user.key(), "case never tells two users apart");
    let skeletons = user.skeletons();
    assert!(!skeletons.is_empty());
    assert!(shouted.skeletons().iter().any(|s| skeletons.contains(s)), "{name:?} and its upper case look alike");
}

/// Accepted message text is the input trimmed, 1–4000 characters, with no
/// control character but line breaks and tabs.
fn check_text(raw: &str) {
    let Ok(text) = validate_text(raw) else { return };
    assert_eq!(text, raw.trim());
    assert!((1..=MAX_TEXT).contains(&text.chars().count()));
    assert!(!text.chars().any(|c| c.is_control() && !"\n\r\t".contains(c)), "{text:?}");
    assert_eq!(validate_text(&text).expect("accepted text is accepted again"), text);
}

/// An accepted `client_id` is kept as given: 1–64 printable ASCII
/// characters.
fn check_client_id(raw: &str) {
    let Ok(id) = validate_client_id(raw) else { return };
    assert_eq!(id, raw);
    assert!((1..=MAX_CLIENT_ID).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()), "{id:?}");
}

// ---- room-file lines ---------------------------------------------------------

/// One line of a room file. A line that parses has the seq `seq_of` reads
/// without parsing the rest; written back, it reads as the same event
/// (a redacted one as its redacted form, which is then a fixed point); its
/// in-place redaction has the same length, seq and message id, and no
/// author or text.
pub fn event_line(data: &[u8]) {
    let Some(event) = parse_line(data, "fuzz") else { return };
    assert_eq!(seq_of(data), Some(event.seq), "seq_of agrees with parse");
    let written = line_of(&event);
    assert!(!written.contains(&b'\n'), "a written line is one line");
    let again = parse_line(&written, "fuzz").expect("a written line reads back");
    if !is_redacted(&event) {
        assert_eq!(again, event, "{}", String::from_utf8_lossy(&written));
    }
    assert_eq!((again.seq, again.message_id(), kind_of(&again)), (event.seq, event.message_id(), kind_of(&event)));
    assert_eq!(line_of(&again), written, "writing is a fixed point");
    if let Some(redacted) = redact_in_place(data, "fuzz") {
        assert_eq!(redacted.len(), data.len(), "a redaction fits in place");
        assert!(!redacted.contains(&b'\n'), "a redaction is one line");
        let shown = parse_line(&redacted, "fuzz").expect("a redacted line reads back");
        assert_eq!((shown.seq, shown.message_id(), kind_of(&shown)), (event.seq, event.message_id(), kind_of(&event)));
        assert!(is_redacted(&shown), "{}", String::from_utf8_lossy(&redacted));
        match &shown.kind {
            EventKind::Post(m) => assert!(m.user.is_empty() && m.text.is_empty() && m.client_id.is_empty()),
            EventKind::Edit { user, .. } => assert!(user.is_empty()),
            EventKind::Delete { .. } => panic!("a delete line is never redacted"),
            EventKind::React { .. } => panic!("a react line is never redacted"),
            EventKind::Member { .. } => panic!("a member line is never redacted"),
        }
    }
}

fn is_redacted(event: &StoredEvent) -> bool {
    match &event.kind {
        EventKind::Post(m) => m.deleted,
        EventKind::Edit { text, .. } => text.is_none(),
            EventKind::Delete { .. } | EventKind::React { .. } | EventKind::Member { .. } => false,
    }
}

fn kind_of(event: &StoredEvent) -> &'static str {
    match event.kind {
        EventKind::Post(_) => "post",
        EventKind::Edit { .. } => "edit",
        EventKind::Delete { .. } => "delete",
        EventKind::React { .. } => "react",
        EventKind::Member { .. } => "member",
    }
}

// ---- whole room files ------------------------------------------------------

thread_local! {
    /// One runtime per thread for the store's async API (made once: a
    /// runtime per input would dominate the run).
    static RUNTIME: RefCell<tokio::runtime::Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime"),
    );
}

/// `data` as `rooms/general.jsonl` of a new data directory: the store opens
/// it, changing nothing but a torn last line (cut off, or given its
/// newline), answers every read, and a post stored after it gets a seq
/// above every seq before it and reads back — also after a reopen, from
/// the last line of the file.
pub fn room_file(data: &[u8]) {
    let dir = scratch_dir();
    let rooms = dir.path().join("rooms");
    std::fs::create_dir_all(&rooms).expect("the rooms directory");
    let path = rooms.join("general.jsonl");
    std::fs::write(&path, data).expect("the room file");
    RUNTIME.with(|runtime| runtime.borrow().block_on(check_room_file(dir.path(), &path, data)));
}

/// A temporary data directory, in memory where the machine has /dev/shm.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let made = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() };
    made.expect("a temporary directory")
}

async fn check_room_file(dir: &Path, path: &Path, data: &[u8]) {
    let room = RoomName::parse("general").expect("a valid name");
    let store = JsonlStore::open(dir, Fsync::Never).expect("any room file opens");
    let repaired = std::fs::read(path).expect("the room file is there");
    let newline_added = repaired.len() == data.len() + 1 && repaired.starts_with(data) && repaired.ends_with(b"\n");
    assert!(data.starts_with(&repaired) || newline_added, "opening only cuts a torn tail or adds its newline");
    assert!(repaired.is_empty() || repaired.ends_with(b"\n"), "after opening, the file ends with a whole line");

    let last = store.last_seq(&room).await.expect("the last seq");
    let latest = store.history(&room, HistoryQuery::latest(50)).await.expect("the latest messages");
    assert!(latest.len() <= 50);
    store.history(&room, HistoryQuery::after(0, 500)).await.expect("history from the start");
    store.history(&room, HistoryQuery { after: None, before: Some(last / 2), limit: 20 }).await.expect("history before a seq");
    store.events(&room, last / 3, 100).await.expect("events after a seq");

    let probe = || NewEvent::Post { user: Username::parse("fuzz").expect("a valid name"), text: "probe".into(), client_id: "fuzz-probe".into(), thread: None };
    let appended = store.append(&room, vec![probe()]).await;
    if last == u64::MAX {
        return assert!(appended.is_err(), "a room at the largest seq refuses a post instead of wrapping");
    }
    let mut answers = appended.expect("the store takes a post after any room file");
    let stored = match answers.pop().expect("one answer per event") {
        Ok(Appended::New(stored)) => stored,
        // The file already held this post (the fuzzer wrote it).
        Ok(Appended::Duplicate(message)) => return assert_eq!(message.client_id, "fuzz-probe"),
        Err(e) => panic!("the post was refused: {e}"),
    };
    assert!(stored.seq > last, "a new seq ({}) is above every seq before it ({last})", stored.seq);
    let (largest, posts) = largest_seq_and_posts(&repaired);
    if posts < DEDUP_WINDOW {
        // The store reads the whole file's tail at open (and the whole file
        // when the tail is out of order); a longer file in order ahead of
        // its tail is trusted to be.
        assert!(stored.seq > largest, "a new seq ({}) is above every seq in the file ({largest})", stored.seq);
    }
    check_probe_reads_back(&store, &room, &stored, last).await;
    assert!(std::fs::read(path).expect("the room file").ends_with(&[line_of(&stored), b"\n".to_vec()].concat()), "the post is the last line");
    drop(store);

    let store = JsonlStore::open(dir, Fsync::Never).expect("the room file opens again");
    check_probe_reads_back(&store, &room, &stored, last).await;
    let mut answers = store.append(&room, vec![probe()]).await.expect("a retry is answered");
    let retried = answers.pop();
    let is_probe = matches!(&retried, Some(Ok(Appended::Duplicate(m))) if m.id == stored.seq && m.client_id == "fuzz-probe" && m.user == "fuzz");
    assert!(is_probe, "a retry after a reopen is answered with the post: {retried:?}");
}

/// The largest seq among the lines of `file` that parse, and how many of
/// them are posts.
fn largest_seq_and_posts(file: &[u8]) -> (u64, usize) {
    let events = file.split(|&b| b == b'\n').filter_map(|line| parse_line(line, "fuzz"));
    events.fold((0, 0), |(largest, posts), e| (largest.max(e.seq), posts + usize::from(e.is_post())))
}

/// The post `stored` is the newest message, and the event after `last`.
async fn check_probe_reads_back(store: &JsonlStore, room: &RoomName, stored: &StoredEvent, last: u64) {
    let newest = store.history(room, HistoryQuery::latest(1)).await.expect("the latest message");
    assert_eq!(newest.last(), stored.as_post(), "the post is the newest message");
    assert_eq!(store.last_seq(room).await.expect("the last seq"), stored.seq);
    let events = store.events(room, last, 10).await.expect("events after the old last seq");
    assert!(events.contains(stored), "the post is among the events after {last}: {events:?}");
}
