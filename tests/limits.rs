//! Limits that stop one client from pinning the server's resources:
//! deadlines on request heads and idle keep-alive connections, caps on
//! connections (total and per address), file descriptors running out, room
//! creation, and rooms released when nobody uses them.
//!
//! Tests that measure the server from outside (file descriptors, CPU time)
//! run the real binary as a child process (`common::process`).

mod common;

use std::time::{Duration, Instant};

use common::process::ServerProcess;
use common::TestServer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Reads until the server closes the connection (or `within` passes);
/// how long that took, or `None` if it stayed open.
async fn time_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + within).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// Sends one GET and reads its whole response (headers + Content-Length body).
async fn get_on(stream: &mut TcpStream, path: &str, host: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(common::TIMEOUT, stream.read(&mut buf)).await.expect("a response").unwrap();
        assert!(n > 0, "closed before the response was whole: {}", String::from_utf8_lossy(&response));
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn a_request_head_must_arrive_whole_within_the_header_timeout() {
    let server = TestServer::start_with(|c| {
        c.limits.header_timeout = Duration::from_secs(1);
        c.limits.keepalive_idle = Duration::from_secs(30);
    })
    .await;
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream.write_all(format!("GET / HTTP/1.1\r\nHost: {}\r\n", server.addr()).as_bytes()).await.unwrap();
    let started = Instant::now();
    // A header line every 200 ms: each byte is "on time", the whole head never is.
    let trickle = async {
        for i in 0.. {
            if stream.write_all(format!("X-Slow-{i}: a\r\n").as_bytes()).await.is_err() {
                return started.elapsed();
            }
            let mut buf = [0u8; 1024];
            if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
                return started.elapsed();
            }
            if started.elapsed() > Duration::from_secs(8) {
                break;
            }
        }
        panic!("a head trickled for 8 s was never cut off (header timeout 1 s)");
    };
    let closed_after = trickle.await;
    assert!(closed_after < Duration::from_secs(3), "closed only after {closed_after:?}");

    // A connection that sends nothing at all is closed too.
    let mut silent = TcpStream::connect(server.addr()).await.unwrap();
    let closed = time_until_closed(&mut silent, Duration::from_secs(6)).await;
    assert!(closed.is_some_and(|t| t >= Duration::from_millis(900)), "silent connection: {closed:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_closes_after_the_keepalive_time_not_the_header_time() {
    let server = TestServer::start_with(|c| {
        c.limits.header_timeout = Duration::from_secs(1);
        c.limits.keepalive_idle = Duration::from_secs(3);
    })
    .await;
    let host = server.addr().to_string();
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    assert!(get_on(&mut stream, "/api/rooms", &host).await.starts_with("HTTP/1.1 401"));
    // Idle longer than the header timeout: still open, and it serves.
    let idle_since = Instant::now();
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(get_on(&mut stream, "/api/rooms", &host).await.starts_with("HTTP/1.1 401"), "reused after 1.8 s idle");
    // Then idle for good: closed after about 3 s.
    let idle_since_second = Instant::now();
    let closed = time_until_closed(&mut stream, Duration::from_secs(8)).await;
    let closed = closed.expect("an idle keep-alive connection was never closed");
    assert!(closed >= Duration::from_millis(2500), "closed after {closed:?}, before the keep-alive time");
    assert!(idle_since.elapsed() > idle_since_second.elapsed());
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_with_server_full_and_fds_stay_bounded() {
    let Some(server) = ServerProcess::start(&["--max-connections", "20", "--header-timeout-secs", "60"]) else { return };
    let endpoint = server.endpoint();
    let baseline = server.open_fds();
    // ann's HTTP connection (kept alive), 10 WebSockets and 9 connections
    // that say nothing fill the cap.
    let ann = endpoint.guest("ann").await;
    let mut sockets = Vec::new();
    for _ in 0..10 {
        sockets.push(ann.ws_in("general").await);
    }
    let mut idle = Vec::new();
    for _ in 0..9 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Wait until the server has accepted all 20 (the sockets are its fds).
    assert!(server.wait_until(common::TIMEOUT, |s| s.open_fds() >= baseline + 20).await);

    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    let refused = get_on(&mut extra, "/api/rooms", &server.addr.to_string()).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("\"server_full\""), "{refused}");
    assert!(refused.to_ascii_lowercase().contains("retry-after: 5"), "{refused}");

    // A flood of connections does not take the server's descriptors.
    let mut flood = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = TcpStream::connect(server.addr).await {
            flood.push(s);
        }
    }
    let peak = server.open_fds();
    assert!(peak <= baseline + 20 + 64 + 10, "{peak} open fds (baseline {baseline}) with a cap of 20");
    drop(flood);
    drop(extra);

    // The WebSockets still work, and closing the idle ones makes room.
    sockets[0].send_and_echo("general", "still served", "c1").await;
    drop(idle);
    let user = endpoint.anonymous();
    let mut answered = None;
    let deadline = Instant::now() + common::TIMEOUT;
    while Instant::now() < deadline {
        let (status, _) = user.get("/api/rooms").await;
        if status != 503 {
            answered = Some(status);
            break;
        }
    }
    assert_eq!(answered, Some(401), "room was made when connections closed");
}

#[tokio::test]
async fn one_address_may_hold_at_most_max_connections_per_ip() {
    let server = TestServer::start_with(|c| c.limits.max_per_ip = Some(4)).await;
    // ann's HTTP client keeps its one connection alive: with 3 sockets, 4.
    let ann = server.guest("ann").await;
    let _a = ann.ws_in("general").await;
    let _b = ann.ws_in("general").await;
    let _c = ann.ws_in("general").await;
    // The fourth from 127.0.0.1 is refused.
    let mut fourth = TcpStream::connect(server.addr()).await.unwrap();
    let refused = get_on(&mut fourth, "/api/me", &server.addr().to_string()).await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(refused.contains("\"too_many_connections\""), "{refused}");
    // Another address is not.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = socket.connect(server.addr()).await.unwrap();
    let answered = get_on(&mut other, "/api/me", &server.addr().to_string()).await;
    assert!(answered.starts_with("HTTP/1.1 401"), "{answered}");
}

#[tokio::test]
async fn running_out_of_file_descriptors_neither_spins_nor_crashes() {
    // 64 descriptors in all, and a connection cap the server cannot reach.
    let prefix = ["prlimit", "--nofile=64:64"];
    let args = ["--max-connections", "1000", "--header-timeout-secs", "60"];
    if std::process::Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("SKIPPED running_out_of_file_descriptors: prlimit (util-linux) is not installed");
        return;
    }
    let Some(mut server) = ServerProcess::start_with_prefix(&prefix, &args) else { return };
    let mut held = Vec::new();
    for _ in 0..120 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    assert!(server.wait_until(common::TIMEOUT, |s| s.open_fds() >= 60).await, "the server's descriptors filled up");
    // Out of descriptors with clients waiting in the backlog: no busy loop.
    let cpu_before = server.cpu_time();
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = server.cpu_time() - cpu_before;
    assert!(cpu < wall.elapsed() / 4, "the server used {cpu:?} of CPU in {:?} while out of descriptors", wall.elapsed());
    assert!(server.is_running(), "the server died when it ran out of descriptors");
    // Once clients let go, it serves again.
    drop(held);
    let user = server.endpoint().anonymous();
    let (status, _) = user.get("/api/rooms").await;
    assert_eq!(status, 401);
}

fn room_count(rooms: &Value) -> usize {
    rooms.as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn room_creation_is_rate_limited_per_user_and_per_address() {
    let server = TestServer::start().await;
    let ann = server.guest("ann").await;
    for i in 0..20 {
        let (status, body) = ann.post("/api/rooms", json!({"name": format!("ann-{i}")})).await;
        assert_eq!(status, 201, "room {i}: {body}");
    }
    let response = ann.request(reqwest::Method::POST, "/api/rooms").json(&json!({"name": "ann-20"})).send().await.unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    let (_, rooms) = ann.get("/api/rooms?limit=100").await;
    assert_eq!(room_count(&rooms), 21, "general + 20: {rooms}");

    // One address may create five times a user's burst (here 2 × 5 = 10).
    let server = TestServer::start_with(|c| c.room_create_rate.as_mut().unwrap().burst = 2).await;
    for guest in 0..5 {
        let user = server.guest(&format!("g{guest}")).await;
        for i in 0..2 {
            let (status, body) = user.post("/api/rooms", json!({"name": format!("g{guest}-{i}")})).await;
            assert_eq!(status, 201, "{body}");
        }
    }
    let sixth = server.guest("g5").await;
    let (status, body) = sixth.post("/api/rooms", json!({"name": "one-too-many"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")), "{body}");
}

#[tokio::test]
async fn rooms_nobody_uses_release_their_files() {
    let args = ["--room-idle-secs", "1", "--room-create-burst", "0", "--send-rate", "0"];
    let Some(server) = ServerProcess::start(&args) else { return };
    let ann = server.endpoint().guest("ann").await;
    for i in 0..150 {
        let room = format!("r{i}");
        let (status, body) = ann.post("/api/rooms", json!({ "name": room })).await;
        assert_eq!(status, 201, "{body}");
        ann.send_http(&room, "hello", &format!("m{i}")).await;
    }
    let baseline = server.open_fds();
    // Reading one message from each room opens its file again.
    for i in 0..150 {
        assert_eq!(ann.messages(&format!("r{i}"), "").await.len(), 1);
    }
    let busy = server.open_fds();
    let rss_busy = server.rss_kib();
    eprintln!("open fds: {baseline} after writing, {busy} after reading 150 rooms; RSS {rss_busy} KiB");
    // A minute is the default; here a second, plus the sweep's period.
    let released = server.wait_until(Duration::from_secs(15), |s| s.open_fds() + 100 <= busy.max(baseline)).await;
    let after = server.open_fds();
    eprintln!("open fds after release: {after}; RSS {} KiB", server.rss_kib());
    assert!(released, "open files stayed at {after} (peak {busy}) with every room idle");
    // And a released room reopens on demand, its history intact.
    assert_eq!(common::texts(&ann.messages("r7", "").await), vec!["hello"]);
    ann.send_http("r7", "again", "m-again").await;
    assert_eq!(common::ids(&ann.messages("r7", "").await), vec![1, 2]);
}

