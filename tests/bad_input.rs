//! Bad input: each gets a clear error, nothing is lost, others are
//! unaffected, and nothing hostile reaches the file system.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{TestServer, encode_segment, id, ids, list_files, refused_status, texts};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test]
async fn a_malformed_json_frame_is_an_error_and_the_socket_stays_open() {
    let server = TestServer::start().await;
    let (_ann, mut a) = server.guest_in("ann", "general").await;
    for bad in ["{not json", "", "null", "[]", "42", "\"join\"", r#"{"type":"send","room":"general"}"#, r#"{"room":"general"}"#] {
        a.send_text(bad).await;
        let err = a.expect_error("invalid_json").await;
        assert!(err.get("client_id").is_none(), "{err}");
    }
    a.send_and_echo("general", "still works", "c1").await;
}

#[tokio::test]
async fn an_unknown_event_type_is_an_error() {
    let server = TestServer::start().await;
    let (_ann, mut a) = server.guest_in("ann", "general").await;
    a.send_json(json!({"type": "nuke", "room": "general"})).await;
    a.expect_error("invalid_json").await;
    a.send_json(json!({"type": "JOIN", "room": "general"})).await;
    a.expect_error("invalid_json").await;
    a.send_json(json!({"room": "general", "text": "no type", "client_id": "x"})).await;
    a.expect_error("invalid_json").await;
    a.send_and_echo("general", "still works", "c1").await;
}

#[tokio::test]
async fn a_frame_over_64_kib_closes_with_1009_and_others_carry_on() {
    let server = TestServer::start().await;
    let (ann, mut a) = server.guest_in("ann", "general").await;
    let (bob, mut b) = server.guest_in("bob", "general").await;

    // Just under the limit: an ordinary error (the text is too long).
    let text = "x".repeat(60 * 1024);
    a.send_message("general", &text, "big-but-ok").await;
    let err = a.expect_error("invalid_text").await;
    assert_eq!(err["client_id"], "big-but-ok");

    // Over it: closed with 1009 "message too big".
    let frame = json!({"type": "send", "room": "general", "text": "y".repeat(64 * 1024), "client_id": "huge"});
    a.send_text(frame.to_string()).await;
    assert_eq!(a.expect_close_code().await, 1009);

    // Bob is unaffected; nothing was stored.
    let echo = b.send_and_echo("general", "still here", "b1").await;
    assert_eq!(id(&echo), 1);
    assert_eq!(texts(&bob.messages("general", "").await), vec!["still here"]);
    // Ann can come back.
    let mut a = ann.ws_in("general").await;
    a.send_and_echo("general", "back", "a2").await;
}

#[tokio::test]
async fn a_text_frame_with_invalid_utf8_closes_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let server = TestServer::start().await;
    let (ann, mut a) = server.guest_in("ann", "general").await;
    let (_bob, mut b) = server.guest_in("bob", "general").await;

    // 0xC3 0x28 is not UTF-8: RFC 6455 §8.1 says close with 1007.
    let bad = Frame::message(vec![b'{', 0xC3, 0x28, b'}'], OpCode::Data(Data::Text), true);
    a.send_raw(WsMessage::Frame(bad)).await;
    assert_eq!(a.expect_close_code().await, 1007);

    // Everyone else carries on, and ann can come back.
    b.send_and_echo("general", "still here", "b1").await;
    let mut a = ann.ws_in("general").await;
    a.send_and_echo("general", "back", "a1").await;
}

#[tokio::test]
async fn a_binary_frame_is_an_error_and_the_socket_stays_open() {
    let server = TestServer::start().await;
    let (ann, mut a) = server.guest_in("ann", "general").await;
    let frame = json!({"type": "send", "room": "general", "text": "as binary", "client_id": "bin"}).to_string();
    a.send_raw(WsMessage::binary(frame.into_bytes())).await;
    let err = a.next_of_type("error").await;
    assert_eq!(err["code"], "bad_request", "{err}");
    assert!(err["message"].as_str().unwrap().contains("binary"), "{err}");
    a.send_raw(WsMessage::binary(vec![0xff, 0x00, 0x13])).await;
    a.next_of_type("error").await;
    a.send_and_echo("general", "as text", "txt").await;
    assert_eq!(texts(&ann.messages("general", "").await), vec!["as text"], "the binary frame was not stored");
}

/// Room names that must never reach the file system.
fn hostile_room_names() -> Vec<String> {
    vec![
        "../etc".into(),
        "../../etc/passwd".into(),
        "a/b".into(),
        "a\\b".into(),
        "CON".into(),
        "con".into(),
        "nul".into(),
        "com1".into(),
        "..".into(),
        ".".into(),
        ".hidden".into(),
        "room.jsonl".into(),
        "x".repeat(81),
        "a\u{0}b".into(),
        "a\nb".into(),
        "a\tb".into(),
        "\u{7}".into(),
        "a b".into(),
        "General".into(),
        "café".into(),
        "r".repeat(10_000),
    ]
}

#[tokio::test]
async fn hostile_room_names_are_refused_everywhere_and_never_touch_the_disk() {
    let server = TestServer::start().await;
    let ann = server.guest("ann").await;
    let mut a = ann.ws().await;
    let before = list_files(server.data_dir());

    let mut names = hostile_room_names();
    names.push(String::new());
    for name in &names {
        // WebSocket join and send.
        a.send_json(json!({"type": "join", "room": name})).await;
        let err = a.next_of_type("error").await;
        assert_eq!(err["code"], "invalid_room_name", "join {name:?}: {err}");
        a.send_message(name, "hi", "c1").await;
        let err = a.next_of_type("error").await;
        assert_eq!(err["code"], "invalid_room_name", "send {name:?}: {err}");
        assert_eq!(err["client_id"], "c1");
        // Creating it.
        let (status, body) = ann.post("/api/rooms", json!({"name": name})).await;
        assert_eq!(status, 400, "create {name:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_room_name", "create {name:?}: {body}");
    }
    // In a URL. Empty, "." and ".." segments are routing matters (URL
    // parsers resolve dot segments; see http_api's unknown paths).
    for name in hostile_room_names().into_iter().filter(|n| n != "." && n != "..") {
        let path = format!("/api/rooms/{}/messages", encode_segment(&name));
        let (status, body) = ann.get(&path).await;
        assert_eq!(status, 400, "GET {path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_room_name", "GET {path}: {body}");
        let (status, body) = ann.post(&path, json!({"text": "hi", "client_id": "c1"})).await;
        assert_eq!(status, 400, "POST {path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_room_name", "POST {path}: {body}");
    }
    // Unencoded traversal is normalised away by the client or refused.
    for path in ["/api/rooms/../messages", "/api/rooms/..%2f..%2fetc/messages", "/api/rooms/%2e%2e/messages"] {
        let (status, body) = ann.get(path).await;
        assert!((400..500).contains(&status), "GET {path}: {status} {body}");
    }

    // The socket still works, and the disk holds nothing new.
    a.join("general").await;
    a.send_and_echo("general", "safe", "ok").await;
    let after = list_files(server.data_dir());
    let new: Vec<_> = after.iter().filter(|f| !before.contains(f)).collect();
    // Only general's log, its change index and the search index (both
    // derived from it) are new.
    let derived = |f: &str| f == "rooms/general.jsonl" || f == "rooms/general.jsonl.changes" || f.starts_with("search/");
    assert!(new.iter().all(|f| derived(f)), "unexpected new files: {new:?}");
    for file in &after {
        let ok = file == "rooms/"
            || file.starts_with("search/")
            || file.strip_prefix("rooms/").is_some_and(|f| f == "general.jsonl" || f == "general.jsonl.changes")
            || (!file.contains('/') && file.ends_with(".jsonl") && file.trim_end_matches(".jsonl").bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'-'));
        assert!(ok, "unexpected file in the data directory: {file} (all: {after:?})");
    }
    let (_, rooms) = ann.get("/api/rooms").await;
    assert_eq!(rooms, json!([{"name": "general", "private": false}]));
}

#[tokio::test]
async fn invalid_usernames_are_refused_and_names_are_trimmed() {
    let server = TestServer::start().await;
    let bad: Vec<String> = vec![
        String::new(),
        "   ".into(),
        "\t\n".into(),
        "x".repeat(33),
        "é".repeat(33),
        "a\u{0}b".into(),
        "a\nb".into(),
        "bell\u{7}".into(),
        "a\u{1b}[31mred".into(),
        "evil\u{202E}txt.exe".into(),
        "zero\u{200B}width".into(),
        "\u{FEFF}bom".into(),
        "iso\u{2066}late".into(),
        "x".repeat(10_000),
    ];
    for name in &bad {
        let anon = server.anonymous();
        let (status, body) = anon.post("/api/guest", json!({"username": name})).await;
        assert_eq!(status, 400, "{name:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_username", "{name:?}: {body}");
        let (status, _) = anon.get("/api/me").await;
        assert_eq!(status, 401, "{name:?} got a session anyway");
    }
    // Not a string at all, or no name.
    for body in [json!({"username": 42}), json!({}), json!({"username": null})] {
        let (status, reply) = server.anonymous().post("/api/guest", body.clone()).await;
        assert_eq!(status, 400, "{body}: {reply}");
    }
    // Far too big a body.
    let (status, reply) = server.anonymous().post("/api/guest", json!({"username": "x".repeat(100_000)})).await;
    assert_eq!(status, 413, "{reply}");

    // The limits themselves, and trimming.
    for (raw, stored) in [
        ("  Zoë 🙂  ", "Zoë 🙂"),
        (&*"x".repeat(32), &*"x".repeat(32)),
        (&*"é".repeat(32), &*"é".repeat(32)),
        ("\t tabbed \n", "tabbed"),
        ("a", "a"),
    ] {
        let user = server.guest(raw).await;
        assert_eq!(user.name, stored);
        let (status, me) = user.get("/api/me").await;
        assert_eq!(status, 200);
        assert_eq!(me["username"], stored);
        // And that is the name on messages.
        let m = user.send_http("general", "hi", &format!("c-{}", stored.len())).await;
        assert_eq!(m["user"], stored);
    }
}

/// Step 5: invisible and look-alike characters. Every default-ignorable
/// code point, every format (Cf) character, the line and paragraph
/// separators and the blank look-alikes are refused inside a name, whether
/// a guest or a new account picks it; names in any script still pass.
#[tokio::test]
async fn invisible_format_and_blank_look_alike_characters_are_refused_in_usernames() {
    let server = TestServer::start().await;
    let refused = [
        '\u{061C}',  // ARABIC LETTER MARK (Cf)
        '\u{3164}',  // HANGUL FILLER (default-ignorable)
        '\u{2800}',  // BRAILLE PATTERN BLANK (a blank look-alike)
        '\u{1160}',  // HANGUL JUNGSEONG FILLER (default-ignorable)
        '\u{115F}',  // HANGUL CHOSEONG FILLER (default-ignorable)
        '\u{FFA0}',  // HALFWIDTH HANGUL FILLER (default-ignorable)
        '\u{2028}',  // LINE SEPARATOR (Zl)
        '\u{2029}',  // PARAGRAPH SEPARATOR (Zp)
        '\u{034F}',  // COMBINING GRAPHEME JOINER (default-ignorable)
        '\u{180E}',  // MONGOLIAN VOWEL SEPARATOR (Cf)
        '\u{E0000}', // tag characters U+E0000–E007F
        '\u{E0001}',
        '\u{E0041}',
        '\u{E007F}',
        '\u{FFF9}',  // INTERLINEAR ANNOTATION ANCHOR (Cf)
        '\u{FE0F}',  // VARIATION SELECTOR-16 (default-ignorable)
        '\u{17B4}',  // KHMER VOWEL INHERENT AQ (default-ignorable)
        '\u{1D173}', // MUSICAL SYMBOL BEGIN BEAM (Cf)
        '\u{E0100}', // VARIATION SELECTOR-17 (default-ignorable)
    ];
    for c in refused {
        let name = format!("ad{c}min");
        let anon = server.anonymous();
        let (status, body) = anon.post("/api/guest", json!({"username": name})).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_username")), "guest U+{:04X}: {body}", c as u32);
        let (status, body) = anon.post("/api/signup", json!({"username": name, "password": "correct horse battery"})).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_username")), "sign-up U+{:04X}: {body}", c as u32);
        let (status, _) = anon.get("/api/me").await;
        assert_eq!(status, 401, "U+{:04X} got a session anyway", c as u32);
    }

    // Names in other scripts are names, for guests and accounts alike.
    let ordinary = ["Zoë", "Мария", "太郎", "ali_2", "محمد", "Zoë 🙂"];
    for name in ordinary {
        assert_eq!(server.guest(name).await.name, name);
    }
    let accounts = TestServer::start().await;
    for name in ordinary {
        let user = common::User::sign_up(&accounts, name, "correct horse battery").await;
        assert_eq!(user.get("/api/me").await, (200, json!({"username": name, "guest": false})));
    }
}

#[tokio::test]
async fn empty_or_oversize_text_is_refused() {
    let server = TestServer::start().await;
    let (ann, mut a) = server.guest_in("ann", "general").await;
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "empty"),
        ("   \n\t  ".into(), "blank"),
        ("y".repeat(4001), "long"),
        (format!("  {}  ", "é".repeat(4001)), "long-multibyte"),
        ("bell\u{7}".into(), "control"),
    ];
    for (text, client_id) in &cases {
        a.send_message("general", text, client_id).await;
        let err = a.expect_error("invalid_text").await;
        assert_eq!(err["client_id"], *client_id, "{err}");
        assert_eq!(err["room"], "general", "{err}");
        let (status, body) = ann.post_message("general", text, client_id).await;
        assert_eq!(status, 400, "{client_id}: {body}");
        assert_eq!(body["error"]["code"], "invalid_text", "{client_id}: {body}");
    }
    // Exactly 4000 characters (after trimming) is fine, by socket and by POST.
    let longest = "z".repeat(4000);
    let echo = a.send_and_echo("general", &format!("  {longest}\n"), "max-ws").await;
    assert_eq!(echo["text"].as_str().unwrap().chars().count(), 4000);
    let posted = ann.send_http("general", &"é".repeat(4000), "max-http").await;
    assert_eq!(posted["text"].as_str().unwrap().chars().count(), 4000);
    assert_eq!(common::without_type(&a.next_of_type("message").await), posted);
    // Newlines inside are kept.
    let multi = a.send_and_echo("general", "line 1\nline 2", "multi").await;
    assert_eq!(multi["text"], "line 1\nline 2");

    // Bad client ids.
    for client_id in [String::new(), "x".repeat(65), "has space".into()] {
        let (status, body) = ann.post_message("general", "hi", &client_id).await;
        assert_eq!(status, 400, "{client_id:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_client_id");
        a.send_message("general", "hi", &client_id).await;
        a.expect_error("invalid_client_id").await;
    }

    let stored = ann.messages("general", "").await;
    let ids_by_client: Vec<&str> = stored.iter().map(|m| m["client_id"].as_str().unwrap()).collect();
    assert_eq!(ids_by_client, vec!["max-ws", "max-http", "multi"], "nothing refused was stored");
}

#[tokio::test]
async fn a_websocket_needs_a_session() {
    let server = TestServer::start().await;
    let status = refused_status(common::connect_ws(&server.ws_url(), None, None).await);
    assert_eq!(status, 401);
    let forged = format!("{}={}", common::COOKIE, "ab".repeat(32));
    let status = refused_status(common::connect_ws(&server.ws_url(), Some(&forged), None).await);
    assert_eq!(status, 401);
    let status = refused_status(common::connect_ws(&server.ws_url(), Some("chatroom_session="), None).await);
    assert_eq!(status, 401);

    // A logged-out session is refused too.
    let (ann, mut a) = server.guest_in("ann", "general").await;
    let (status, _) = ann.post("/api/logout", json!({})).await;
    assert!(status == 204 || status == 200, "logout: {status}");
    assert_eq!(a.expect_close_code().await, 4401, "the open socket is closed: session ended");
    let status = refused_status(common::connect_ws(&server.ws_url(), ann.cookie.as_deref(), None).await);
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_foreign_origin_is_refused() {
    let server = TestServer::start().await;
    let ann = server.guest("ann").await;
    for origin in ["http://evil.example", "null", &format!("{}.evil.example", server.origin()), "https://127.0.0.1"] {
        let status = refused_status(ann.try_ws(Some(origin)).await);
        assert_eq!(status, 403, "WebSocket from {origin}");

        for (path, body) in [
            ("/api/guest", json!({"username": "mallory"})),
            ("/api/rooms", json!({"name": "evil"})),
            ("/api/rooms/general/messages", json!({"text": "csrf", "client_id": "evil-1"})),
        ] {
            let response =
                ann.http.post(ann.url(path)).header("origin", origin).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 403, "POST {path} from {origin}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "forbidden_origin", "POST {path} from {origin}");
        }
    }
    // Nothing happened.
    assert_eq!(ann.messages("general", "").await, Vec::<Value>::new());
    assert_eq!(ann.get("/api/me").await.1["username"], "ann", "the session was not replaced");
    let (_, rooms) = ann.get("/api/rooms").await;
    assert_eq!(rooms, json!([{"name": "general", "private": false}]));

    // The server's own origin is fine.
    let mut a = ann.try_ws(Some(&server.origin())).await.expect("same-origin WebSocket");
    a.join("general").await;
    let response = ann
        .http
        .post(ann.url("/api/rooms/general/messages"))
        .header("origin", server.origin())
        .json(&json!({"text": "same origin", "client_id": "so-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn a_post_must_be_json() {
    let server = TestServer::start().await;
    let ann = server.guest("ann").await;
    let body = json!({"text": "hi", "client_id": "c1"}).to_string();
    for content_type in [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("multipart/form-data")] {
        let mut request = ann.http.post(ann.url("/api/rooms/general/messages")).body(body.clone());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 415, "{content_type:?}");
        let reply: Value = response.json().await.unwrap();
        assert_eq!(reply["error"]["code"], "unsupported_media_type", "{content_type:?}");
    }
    let response = ann
        .http
        .post(ann.url("/api/rooms/general/messages"))
        .header("content-type", "application/json; charset=utf-8")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["error"]["code"], "invalid_json");
    assert_eq!(ann.messages("general", "").await, Vec::<Value>::new());
}

#[tokio::test]
async fn sending_before_joining_is_refused() {
    let server = TestServer::start().await;
    let ann = server.guest("ann").await;
    let mut a = ann.ws().await;
    a.send_message("general", "too early", "early-1").await;
    let err = a.expect_error("not_joined").await;
    assert_eq!(err["client_id"], "early-1");
    a.send_json(json!({"type": "typing", "room": "general"})).await;
    a.expect_error("not_joined").await;
    assert_eq!(ann.messages("general", "").await, Vec::<Value>::new());
    a.join("general").await;
    a.send_and_echo("general", "now", "early-2").await;
}

#[tokio::test]
async fn a_flooding_client_is_rate_limited_without_hurting_others_or_losing_messages() {
    let server = TestServer::start().await;
    let (flooder, mut f) = server.guest_in("flooder", "general").await;
    let (_calm, mut c) = server.guest_in("calm", "general").await;

    const N: usize = 200;
    for i in 0..N {
        f.send_message("general", &format!("flood {i}"), &format!("f{i}")).await;
    }
    // Meanwhile the calm client is served.
    let calm_echo = c.send_and_echo_skipping_others("general", "I am fine", "calm-1").await;

    // Every flood send is answered: its echo (stored) or an error.
    let mut accepted: BTreeMap<String, Value> = BTreeMap::new();
    let mut refused: BTreeSet<String> = BTreeSet::new();
    let mut frames_dropped = false;
    while accepted.len() + refused.len() < N {
        let wait = if frames_dropped { Duration::from_secs(2) } else { common::TIMEOUT };
        let Some(event) = f.try_next_event(wait).await else {
            assert!(frames_dropped, "unanswered sends: {} of {N}", N - accepted.len() - refused.len());
            break;
        };
        match event["type"].as_str().unwrap() {
            "message" if event["user"] == "flooder" => {
                let cid = event["client_id"].as_str().unwrap().to_string();
                assert!(accepted.insert(cid.clone(), event).is_none(), "{cid} echoed twice");
                assert!(!refused.contains(&cid), "{cid} both refused and stored");
            }
            "error" => {
                assert_eq!(event["code"], "rate_limited", "{event}");
                match event["client_id"].as_str() {
                    Some(cid) => {
                        assert!(refused.insert(cid.to_string()), "{cid} refused twice");
                        assert!(!accepted.contains_key(cid), "{cid} both stored and refused");
                    }
                    // The whole-frame limit drops frames with one warning.
                    None => frames_dropped = true,
                }
            }
            _ => {}
        }
    }
    eprintln!("flood: {} stored, {} rate limited, frames dropped: {frames_dropped}", accepted.len(), refused.len());
    assert!(accepted.len() >= 10, "only {} of {N} sends were accepted", accepted.len());
    assert!(refused.len() >= N / 2, "only {} of {N} sends were rate limited", refused.len());

    // Nothing accepted is lost; nothing refused (or dropped) is stored.
    let stored = flooder.all_messages("general").await;
    let stored_flood: BTreeMap<String, Value> = stored
        .iter()
        .filter(|m| m["user"] == "flooder")
        .map(|m| (m["client_id"].as_str().unwrap().to_string(), m.clone()))
        .collect();
    let echoed: BTreeMap<String, Value> =
        accepted.iter().map(|(k, v)| (k.clone(), common::without_type(v))).collect();
    assert_eq!(stored_flood, echoed);
    assert!(stored.iter().any(|m| m["client_id"] == "calm-1" && m["id"] == calm_echo["id"]));
    let all_ids = ids(&stored);
    assert!(all_ids.windows(2).all(|w| w[1] == w[0] + 1), "ids have gaps: {all_ids:?}");

    // A new connection of the flooder is served.
    let mut f2 = flooder.ws_in("general").await;
    f2.send_and_echo("general", "sorry", "after-flood").await;
}

#[tokio::test]
async fn posting_too_fast_over_http_is_rate_limited_and_nothing_accepted_is_lost() {
    let server = TestServer::start().await;
    let flooder = server.guest("flooder").await;
    let calm = server.guest("calm").await;
    let mut created = Vec::new();
    let mut limited = 0;
    for i in 0..100 {
        let (status, body) = flooder.post_message("general", &format!("flood {i}"), &format!("f{i}")).await;
        match status {
            201 => created.push(body),
            429 => {
                assert_eq!(body["error"]["code"], "rate_limited", "{body}");
                limited += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(limited >= 50, "only {limited} of 100 posts were limited");
    assert!(created.len() >= 10, "only {} of 100 posts were stored", created.len());
    // Someone else is served meanwhile.
    calm.send_http("general", "I am fine", "calm-1").await;
    let stored: Vec<Value> =
        flooder.all_messages("general").await.into_iter().filter(|m| m["user"] == "flooder").collect();
    assert_eq!(stored, created, "exactly the accepted posts are stored");
}

#[tokio::test]
async fn every_send_dropped_by_the_frame_limit_is_answered_with_its_client_id() {
    let server = TestServer::start_with(|config| {
        config.send_rate = None;
        config.frame_rate = Some(chatroom::rate::SendRate { per_second: 0.001, burst: 6 });
    })
    .await;
    // The join takes one frame of the burst of 6: five sends get through.
    let (ann, mut a) = server.guest_in("ann", "general").await;
    for n in 0..10 {
        a.send_message("general", &format!("m{n}"), &format!("c{n}")).await;
    }
    let mut stored = Vec::new();
    let mut refused = Vec::new();
    while stored.len() + refused.len() < 10 {
        let event = a.next_significant().await;
        let client_id = event["client_id"].as_str().expect("every answer names its send").to_string();
        match event["type"].as_str() {
            Some("message") => stored.push(client_id),
            Some("error") => {
                assert_eq!(event["code"], "rate_limited", "{event}");
                refused.push(client_id);
            }
            _ => panic!("unexpected {event}"),
        }
    }
    assert_eq!(stored, ["c0", "c1", "c2", "c3", "c4"]);
    assert_eq!(refused, ["c5", "c6", "c7", "c8", "c9"]);
    let on_disk: Vec<Value> = ann.all_messages("general").await;
    assert_eq!(on_disk.len(), 5);
}

/// Binary frames are frames too: beyond the frame rate they are dropped
/// like text frames (one `rate_limited` a second), not each answered, or a
/// client could make the server write one error frame per frame it sends
/// without limit (found by tests/fault_flood.rs).
#[tokio::test]
async fn binary_frames_count_against_the_frame_rate() {
    let server = TestServer::start_with(|config| {
        config.send_rate = None;
        config.frame_rate = Some(chatroom::rate::SendRate { per_second: 0.001, burst: 6 });
    })
    .await;
    // The join takes one frame of the burst of 6: five binary frames are answered.
    let (_ann, mut a) = server.guest_in("ann", "general").await;
    for _ in 0..20 {
        a.send_raw(WsMessage::binary(vec![0xff, 0x00, 0x13])).await;
    }
    for _ in 0..5 {
        a.expect_error("bad_request").await;
    }
    let warning = a.expect_error("rate_limited").await;
    assert!(warning.get("client_id").is_none(), "{warning}");
    a.expect_silence().await;
}

#[tokio::test]
async fn a_retry_of_a_stored_message_is_answered_even_over_the_send_rate() {
    let server = TestServer::start_with(|config| {
        config.send_rate = Some(chatroom::rate::SendRate { per_second: 0.001, burst: 2 });
    })
    .await;
    let (ann, mut a) = server.guest_in("ann", "general").await;
    let first = a.send_and_echo("general", "one", "c1").await;
    a.send_and_echo("general", "two", "c2").await;
    // The bucket is empty now: a new message is refused…
    a.send_message("general", "three", "c3").await;
    let refused = a.expect_error("rate_limited").await;
    assert_eq!(refused["client_id"], "c3");
    // …but a retry of a stored one is answered with the stored copy, so a
    // client that resends its outbox after a reconnect never sees it "lost".
    a.send_message("general", "one", "c1").await;
    let answer = a.next_of_type("message").await;
    assert_eq!((answer["id"].clone(), answer["client_id"].clone()), (first["id"].clone(), json!("c1")));

    // The same over HTTP (posts have a bucket of their own, also 2).
    assert_eq!(ann.post_message("general", "four", "c4").await.0, 201);
    assert_eq!(ann.post_message("general", "five", "c5").await.0, 201);
    let (status, body) = ann.post_message("general", "six", "c6").await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")));
    let (status, body) = ann.post_message("general", "one", "c1").await;
    assert_eq!((status, body["id"].clone()), (200, first["id"].clone()));
    let stored: Vec<String> = ann.all_messages("general").await.iter().map(|m| m["client_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(stored, ["c1", "c2", "c4", "c5"]);
}

#[tokio::test]
async fn one_connection_cannot_join_more_than_256_rooms() {
    // No frame limit here: 256 joins in a row would exceed its burst; and
    // no room-creation pace: 257 rooms are made in a row.
    let server = TestServer::start_with(|config| {
        config.frame_rate = None;
        config.room_create_rate = None;
    })
    .await;
    let (ann, mut a) = server.guest_in("ann", "general").await;
    for n in 0..256 {
        ann.create_room(&format!("r{n}")).await;
    }
    for n in 0..255 {
        a.join(&format!("r{n}")).await; // with general: 256 joined
    }
    a.send_json(json!({"type": "join", "room": "r255"})).await;
    let refused = a.expect_error("too_many_rooms").await;
    assert_eq!(refused["room"], "r255");
    // Re-joining a room it has is fine, and leaving one makes room.
    a.join("general").await;
    a.send_json(json!({"type": "leave", "room": "r0"})).await;
    assert_eq!(a.next_of_type("left").await["room"], "r0");
    a.join("r255").await;
    a.send_and_echo("r255", "still works", "c1").await;
}

/// A request whose Host names the attacker's site and whose Origin is that
/// same site (what a DNS-rebinding page sends to a server on 127.0.0.1).
async fn rebound(server: &TestServer, method: reqwest::Method, path: &str, host: &str, origin: Option<&str>) -> (u16, Value) {
    let client = common::http_client();
    let mut request = client.request(method, server.url(path)).header("host", host);
    if let Some(origin) = origin {
        static GUESTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = GUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        request = request.header("origin", origin).json(&json!({"username": format!("rebound{n}")}));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_foreign_host_is_refused_on_a_loopback_bind() {
    let server = TestServer::start().await;
    let port = server.addr().port();
    let evil = format!("evil.example:{port}");
    let evil_origin = format!("http://{evil}");

    // Same-origin as far as Host goes, but Host is the attacker's name.
    let (status, body) = rebound(&server, reqwest::Method::POST, "/api/guest", &evil, Some(&evil_origin)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden_host", "{body}");
    // Pages and reads too: a rebound page must not read anything.
    for path in ["/", "/home", "/style.css", "/api/rooms", "/api/me", "/nope"] {
        let (status, body) = rebound(&server, reqwest::Method::GET, path, &evil, None).await;
        assert_eq!(status, 403, "GET {path} with Host {evil}: {body}");
        assert_eq!(body["error"]["code"], "forbidden_host", "GET {path}");
    }
    // A WebSocket upgrade with that Host is refused as well.
    let request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(server.ws_url())
        .map(|mut r| {
            r.headers_mut().insert("host", evil.parse().unwrap());
            r.headers_mut().insert("origin", evil_origin.parse().unwrap());
            r
        })
        .unwrap();
    let refused = tokio_tungstenite::connect_async(request).await.map(|_| ()).unwrap_err();
    assert!(matches!(&refused, tokio_tungstenite::tungstenite::Error::Http(r) if r.status() == 403), "{refused}");

    // Loopback names are this server's own names.
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("chat.localhost:{port}")] {
        let (status, body) = rebound(&server, reqwest::Method::POST, "/api/guest", &host, Some(&format!("http://{host}"))).await;
        assert_eq!(status, 200, "Host {host}: {body}");
    }
}

#[tokio::test]
async fn a_public_url_names_the_one_origin_and_host_to_trust() {
    let server = TestServer::start_with(|config| config.public_urls = vec!["https://chat.example.com".into()]).await;
    let port = server.addr().port();
    // The operator's name works, behind a proxy that keeps Host.
    let (status, body) =
        rebound(&server, reqwest::Method::POST, "/api/guest", "chat.example.com", Some("https://chat.example.com")).await;
    assert_eq!(status, 200, "{body}");
    // The same host with the wrong scheme is another origin.
    let (status, body) =
        rebound(&server, reqwest::Method::POST, "/api/guest", "chat.example.com", Some("http://chat.example.com")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden_origin")), "{body}");
    // Any other name is still refused; loopback still answers (health checks, the operator's own curl).
    let (status, _) = rebound(&server, reqwest::Method::GET, "/", "evil.example", None).await;
    assert_eq!(status, 403);
    let (status, _) = rebound(&server, reqwest::Method::GET, "/", &format!("127.0.0.1:{port}"), None).await;
    assert_eq!(status, 200);
}

/// Found by tests/openapi.rs: `after=u64::MAX` overflowed `after + 1` in the
/// room log, and the panic poisoned the room for every later request.
#[tokio::test]
async fn a_cursor_at_the_largest_seq_is_an_empty_page_and_harms_no_room() {
    let server = TestServer::start().await;
    let (ann, mut a) = server.guest_in("ann", "general").await;
    let first = ann.send_http("general", "before the probe", "c1").await;
    assert_eq!(common::without_type(&a.next_of_type("message").await), first);
    let max = u64::MAX;

    let (status, body) = ann.get(&format!("/api/rooms/general/events?after={max}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"events": [], "seq": id(&first), "has_more": false}));
    let (status, body) = ann.get(&format!("/api/rooms/general/messages?after={max}")).await;
    assert_eq!((status, body), (200, json!({"messages": []})));
    a.send_json(json!({"type": "join", "room": "general", "after": max})).await;
    let joined = a.next_of_type("joined").await;
    assert_eq!(joined["history"], json!([]), "{joined}");

    // The room still works for everyone.
    let second = ann.send_http("general", "after the probe", "c2").await;
    assert_eq!(ids(&ann.messages("general", "").await), vec![id(&first), id(&second)]);
    let (status, body) = ann.get(&format!("/api/rooms/general/events?after={}", id(&first))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"][0]["text"], "after the probe", "{body}");
}
