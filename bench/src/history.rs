//! History: a room with a million messages. Builds the data directory
//! through the library's store API (`JsonlStore`, the code the server
//! itself stores with: no data file is written here), starts the server on
//! it (start-up time: spawn → "listening"), then times pages over HTTP.
//!
//! The files were just written, so they sit in the page cache: these are
//! warm-disk figures.

use std::path::Path;
use std::time::{Duration, Instant};

use chatroom::model::{NewEvent, RoomName, Username};
use chatroom::store::jsonl::JsonlStore;
use chatroom::store::{Appended, Fsync, MessageStore};

use crate::client::HttpConn;
use crate::stats::Percentiles;
use crate::target::{ServerOpts, Target};

pub const ROOM: &str = "big";

/// Posts per `append`: each batch is one write of ~250 KiB.
pub const BATCH: u64 = 1024;
/// Distinct authors of the posts.
const AUTHORS: u64 = 97;

pub struct HistoryResult {
    pub messages: u64,
    /// Bytes in the data directory once the room is stored.
    pub data_bytes: u64,
    /// Building the room through the store API.
    pub write_time: Duration,
    pub startup: Duration,
    /// The first "latest 50": opens the room (reads its tail).
    pub first_latest: Duration,
    pub latest: Percentiles,
    pub middle: Percentiles,
    /// Pages at random places (`before=` and `after=`).
    pub random: Percentiles,
}

/// Creates the room in a data directory and posts `count` messages to it
/// through `JsonlStore`, in batches; they get ids 1..=count. Returns the
/// directory's size on disk.
pub async fn build_data_dir(dir: &Path, count: u64) -> Result<u64, String> {
    let store = JsonlStore::open(dir, Fsync::Never).map_err(|e| format!("opening the store: {e}"))?;
    let room = RoomName::parse(ROOM).map_err(|e| e.to_string())?;
    store.create_room(&room, "bench").await.map_err(|e| format!("creating room {ROOM}: {e}"))?;
    let authors = (0..AUTHORS).map(|n| Username::parse(&format!("user{n}"))).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    let mut next = 1;
    while next <= count {
        let last = (next + BATCH - 1).min(count);
        let batch = (next..=last)
            .map(|id| NewEvent::Post {
                user: authors[(id % AUTHORS) as usize].clone(),
                text: format!("message number {id} of the big room, long enough to look like a real line of chat text."),
                client_id: format!("seed-{id}"),
                thread: None,
            })
            .collect();
        let answers = store.append(&room, batch).await.map_err(|e| format!("storing messages {next}..={last}: {e}"))?;
        for (id, answer) in (next..=last).zip(answers) {
            match answer {
                Ok(Appended::New(event)) if event.seq == id => {}
                other => return Err(format!("storing message {id}: expected seq {id}, got {other:?}")),
            }
        }
        next = last + 1;
    }
    store.flush().await.map_err(|e| format!("flushing the store: {e}"))?;
    drop(store);
    dir_bytes(dir).map_err(|e| format!("measuring {}: {e}", dir.display()))
}

/// Bytes in the files under `dir`, whatever their layout.
fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_bytes(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}

pub async fn run(opts: &ServerOpts, dir: &Path, count: u64, samples: usize, tag: &str) -> Result<HistoryResult, String> {
    let started = Instant::now();
    let data_bytes = build_data_dir(dir, count).await.map_err(|e| format!("building the data directory: {e}"))?;
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
        data_bytes,
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

#[cfg(test)]
mod tests {
    use super::*;
    use chatroom::store::HistoryQuery;

    #[tokio::test]
    async fn the_room_is_built_through_the_store_with_ids_in_order() {
        let dir = crate::process::TempDir::new("history-test").unwrap();
        let count = 2 * BATCH + 7;
        let bytes = build_data_dir(&dir.0, count).await.unwrap();
        assert!(bytes > count * 100, "{bytes} bytes");
        // What the server will find there: the room, with ids 1..=count.
        let store = JsonlStore::open(&dir.0, Fsync::Never).unwrap();
        let room = RoomName::parse(ROOM).unwrap();
        assert_eq!(store.last_seq(&room).await.unwrap(), count);
        let page = store.history(&room, HistoryQuery { before: Some(BATCH + 2), ..HistoryQuery::latest(3) }).await.unwrap();
        let ids: Vec<u64> = page.iter().map(|m| m.id).collect();
        assert_eq!(ids, [BATCH - 1, BATCH, BATCH + 1]);
        assert_eq!(page[1].client_id, format!("seed-{BATCH}"));
    }
}
