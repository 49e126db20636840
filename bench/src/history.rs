//! History: a room with a million messages on disk. Writes the data
//! directory in chatroom's own format, starts the server on it (start-up
//! time: spawn → "listening"), then times pages over HTTP.
//!
//! The file was just written, so it sits in the page cache: these are
//! warm-disk figures.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use chatroom::model::Message;
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;

use crate::client::HttpConn;
use crate::stats::Percentiles;
use crate::target::{ServerOpts, Target};

pub const ROOM: &str = "big";

pub struct HistoryResult {
    pub messages: u64,
    pub file_bytes: u64,
    pub write_time: Duration,
    pub startup: Duration,
    /// The first "latest 50": opens the room (reads its tail).
    pub first_latest: Duration,
    pub latest: Percentiles,
    pub middle: Percentiles,
    /// Pages at random places (`before=` and `after=`).
    pub random: Percentiles,
}

/// Writes `rooms.jsonl` and `rooms/big.jsonl` with ids 1..=count.
pub fn write_data_dir(dir: &Path, count: u64) -> std::io::Result<u64> {
    std::fs::create_dir_all(dir.join("rooms"))?;
    let record = serde_json::json!({ "name": ROOM, "created_by": "bench", "created_at": "2026-01-01T00:00:00.000Z" });
    std::fs::write(dir.join("rooms.jsonl"), format!("{record}\n"))?;
    let path = dir.join("rooms").join(format!("{ROOM}.jsonl"));
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
    let base = datetime!(2026-01-01 0:00 UTC);
    for id in 1..=count {
        let ts = (base + time::Duration::seconds(id as i64)).format(&Rfc3339).expect("formats");
        let message = Message {
            id,
            room: ROOM.into(),
            user: format!("user{}", id % 97),
            text: format!("message number {id} of the big room, long enough to look like a real line of chat text."),
            ts,
            client_id: format!("seed-{id}"),
            edited_at: None,
            deleted: false,
        };
        serde_json::to_writer(&mut out, &message)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(std::fs::metadata(&path)?.len())
}

pub async fn run(opts: &ServerOpts, dir: &Path, count: u64, samples: usize, tag: &str) -> Result<HistoryResult, String> {
    let started = Instant::now();
    let file_bytes = write_data_dir(dir, count).map_err(|e| format!("writing the data directory: {e}"))?;
    let write_time = started.elapsed();
    let target = Target::chatroom_on(opts, dir)?;
    let startup = target.process.as_ref().map(|p| p.startup).unwrap_or_default();
    let mut api = target.api(&format!("{tag}reader")).await?;

    let latest_path = format!("/api/rooms/{ROOM}/messages?limit=50");
    let (first_latest, first_ids) = timed_page(&mut api, &latest_path).await?;
    expect_ids(&first_ids, count - 49, count)?;
    let mut latest = Vec::new();
    for _ in 0..samples {
        latest.push(timed_page(&mut api, &latest_path).await?.0);
    }

    let middle_id = count / 2;
    let middle_path = format!("/api/rooms/{ROOM}/messages?before={}&limit=50", middle_id + 1);
    let mut middle = Vec::new();
    for _ in 0..samples {
        let (took, ids) = timed_page(&mut api, &middle_path).await?;
        expect_ids(&ids, middle_id - 49, middle_id)?;
        middle.push(took);
    }

    let mut random = Vec::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..samples {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let at = 100 + (seed >> 11) % (count - 200);
        let (path, first) = if i % 2 == 0 {
            (format!("/api/rooms/{ROOM}/messages?before={at}&limit=50"), at - 50)
        } else {
            (format!("/api/rooms/{ROOM}/messages?after={at}&limit=50"), at + 1)
        };
        let (took, ids) = timed_page(&mut api, &path).await?;
        expect_ids(&ids, first, first + 49)?;
        random.push(took);
    }
    let micros = |v: Vec<Duration>| Percentiles::of(v.into_iter().map(|d| d.as_micros() as u32).collect());
    Ok(HistoryResult {
        messages: count,
        file_bytes,
        write_time,
        startup,
        first_latest,
        latest: micros(latest),
        middle: micros(middle),
        random: micros(random),
    })
}

/// GETs a page; returns the round-trip time and the ids it held.
async fn timed_page(api: &mut HttpConn, path: &str) -> Result<(Duration, Vec<u64>), String> {
    let started = Instant::now();
    let res = api.get(path).await.map_err(|e| format!("GET {path}: {e}"))?;
    let took = started.elapsed();
    if res.status != 200 {
        return Err(format!("GET {path}: HTTP {} {}", res.status, String::from_utf8_lossy(&res.body)));
    }
    let body: serde_json::Value = serde_json::from_slice(&res.body).map_err(|e| format!("GET {path}: {e}"))?;
    let ids = body["messages"].as_array().map(|ms| ms.iter().filter_map(|m| m["id"].as_u64()).collect()).unwrap_or_default();
    Ok((took, ids))
}

fn expect_ids(ids: &[u64], first: u64, last: u64) -> Result<(), String> {
    let want: Vec<u64> = (first..=last).collect();
    if ids == want.as_slice() {
        Ok(())
    } else {
        Err(format!("expected ids {first}..={last}, got {} ids starting {:?}", ids.len(), ids.first()))
    }
}
