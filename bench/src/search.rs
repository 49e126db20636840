//! Search: a 1,000,000-message corpus (words with a long tail, URLs,
//! ticket ids, file names, Russian, Japanese, French and German), stored
//! through the library's store API into a data directory (`JsonlStore`,
//! which indexes it with tantivy as the server would) and into a fresh
//! PostgreSQL database (`PgStore`, batches of many rooms per transaction);
//! then, per store, a server is started on the data and a mix of queries
//! is timed over HTTP, and the index catch-up: a message sent over HTTP,
//! then searched for until it is found.

use std::path::Path;
use std::time::{Duration, Instant};

use chatroom::model::{NewEvent, RoomName, Username};
use chatroom::store::jsonl::JsonlStore;
use chatroom::store::postgres::PgStore;
use chatroom::store::{Fsync, MessageStore};

use crate::backends::FreshDatabase;
use crate::client::HttpConn;
use crate::stats::Percentiles;
use crate::target::{ServerOpts, Target};

/// Rooms the corpus is spread over.
pub const ROOMS: u64 = 100;
/// Posts per `append` (one room's); a batch shares one time stamp.
pub const BATCH: u64 = 64;
const AUTHORS: u64 = 97;

/// What one store measured.
pub struct StoreResult {
    pub store: &'static str,
    pub build: Duration,
    pub startup: Duration,
    /// All query samples together.
    pub all: Percentiles,
    /// The slowest query kind: its name and percentiles.
    pub worst: (String, Percentiles),
    /// Each query kind's p50/p99 and result count.
    pub kinds: Vec<(String, Percentiles, usize)>,
    /// Send answered → found by search.
    pub catch_up: Percentiles,
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Skewed towards 0 (a long tail): the min of two draws, squared-ish.
    fn skewed(&mut self, n: u64) -> u64 {
        let a = self.below(n);
        let b = self.below(n);
        (a * b) / n.max(1)
    }
}

const COMMON: &[&str] = &[
    "the", "a", "to", "and", "is", "it", "we", "on", "for", "go", "qa", "ok", "deploy", "build", "release", "meeting", "today",
    "tomorrow", "review", "merge", "fix", "bug", "test", "staging", "prod", "customer", "ticket", "please", "thanks", "lunch",
    "report", "numbers", "budget", "design", "draft", "ship", "rollback", "incident", "oncall", "pager", "latency", "database",
];
const SYLLABLES: &[&str] = &["ka", "lo", "mi", "tren", "vor", "sal", "qui", "dex", "pra", "lun", "zor", "bet", "nim", "fa", "gro", "sy"];
const FOREIGN: &[&str] = &[
    "встреча", "пятницу", "отчёт", "сервер", "привет", "завтра", "東京", "会議", "明日", "資料", "確認", "ありがとう", "café", "crème",
    "déjà", "réunion", "à", "volonté", "straße", "größe", "über", "müller", "señor", "mañana",
];
const HOSTS: &[&str] = &["example.com", "docs.rs", "github.com", "intranet.acme.io", "grafana.acme.io", "jira.acme.io", "news.ycombinator.com"];
const PROJECTS: &[&str] = &["ABC", "OPS", "WEB", "API", "DATA", "SEC", "INFRA", "MOB"];
const EXTENSIONS: &[&str] = &["pdf", "xlsx", "png", "docx", "csv", "zip"];

/// A made-up word of the long tail (`n` < 4,096).
fn tail_word(n: u64) -> String {
    let mut word = String::new();
    let mut n = n;
    for _ in 0..3 {
        word.push_str(SYLLABLES[(n % SYLLABLES.len() as u64) as usize]);
        n /= SYLLABLES.len() as u64;
    }
    word
}

/// Message `n`'s text (the same on every run).
pub fn text_of(n: u64) -> String {
    let mut rng = Rng(n.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x1234_5678);
    let words = 6 + rng.below(14);
    let mut parts: Vec<String> = Vec::with_capacity(words as usize + 2);
    for _ in 0..words {
        parts.push(match rng.below(10) {
            0..=5 => COMMON[rng.skewed(COMMON.len() as u64) as usize].to_string(),
            6 | 7 => tail_word(rng.skewed(4096)),
            _ => FOREIGN[rng.below(FOREIGN.len() as u64) as usize].to_string(),
        });
    }
    match rng.below(20) {
        0 | 1 => parts.push(format!(
            "https://{}/{}/{}?id={}",
            HOSTS[rng.below(HOSTS.len() as u64) as usize],
            COMMON[rng.below(COMMON.len() as u64) as usize],
            tail_word(rng.below(4096)),
            rng.below(10_000)
        )),
        2 | 3 => parts.push(format!("{}-{}", PROJECTS[rng.below(PROJECTS.len() as u64) as usize], rng.below(10_000))),
        4 => parts.push(format!("{}_v{}.{}", COMMON[rng.below(COMMON.len() as u64) as usize], rng.below(20), EXTENSIONS[rng.below(6) as usize])),
        _ => {}
    }
    if n % 10 == 0 {
        // A capitalised start, like people type.
        if let Some(first) = parts.first_mut() {
            let mut chars = first.chars();
            *first = chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default();
        }
    }
    parts.join(" ")
}

fn room_name(r: u64) -> String {
    format!("room-{r:02}")
}

/// The posts of room `r`'s batch `k` (message numbers `r + ROOMS·i`).
fn batch_of(r: u64, k: u64, count: u64, authors: &[Username]) -> Vec<NewEvent> {
    let per_room = count.div_ceil(ROOMS);
    (k * BATCH..((k + 1) * BATCH).min(per_room))
        .map(|i| r + ROOMS * i)
        .filter(|&n| n < count)
        .map(|n| NewEvent::Post { user: authors[(n % AUTHORS) as usize].clone(), text: text_of(n), client_id: format!("seed-{n}"), thread: None })
        .collect()
}

fn authors() -> Result<Vec<Username>, String> {
    (0..AUTHORS).map(|n| Username::parse(&format!("user{n}")).map_err(|e| e.to_string())).collect()
}

/// Stores the corpus through `store`: `parallel` rooms' batches at once.
async fn build(store: std::sync::Arc<dyn MessageStore>, count: u64, parallel: bool) -> Result<(), String> {
    let authors = std::sync::Arc::new(authors()?);
    for r in 0..ROOMS {
        let room = RoomName::parse(&room_name(r)).map_err(|e| e.to_string())?;
        store.create_room(&room, "bench").await.map_err(|e| format!("creating {room}: {e}"))?;
    }
    let batches = count.div_ceil(ROOMS).div_ceil(BATCH);
    let mut tasks = Vec::new();
    for r in 0..ROOMS {
        let (store, authors) = (store.clone(), authors.clone());
        let room = RoomName::parse(&room_name(r)).map_err(|e| e.to_string())?;
        let work = async move {
            for k in 0..batches {
                let batch = batch_of(r, k, count, &authors);
                if batch.is_empty() {
                    break;
                }
                let answers = store.append(&room, batch).await.map_err(|e| format!("storing into {room}: {e}"))?;
                if let Some(Err(e)) = answers.into_iter().find(Result::is_err) {
                    return Err(format!("storing into {room}: {e}"));
                }
            }
            Ok::<(), String>(())
        };
        if parallel {
            tasks.push(tokio::spawn(work));
        } else {
            work.await?;
        }
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    store.flush().await.map_err(|e| format!("flushing: {e}"))
}

/// The query mix: (kind, query string after `/api/search?`).
fn queries() -> Vec<(&'static str, String)> {
    let q = |s: &str| format!("q={}", encode(s));
    vec![
        ("common word", q("deploy")),
        ("two common words", q("deploy staging")),
        ("2-letter term", q("qa")),
        ("2-letter term (go)", q("go")),
        ("1-letter prefix", q("k")),
        ("long-tail word", q(&tail_word(3001))),
        ("word prefix", q("rollb")),
        ("URL host", q("grafana.acme.io")),
        ("whole URL", q("https://github.com/deploy")),
        ("URL query part", q("id=4242")),
        ("ticket id", q("OPS-1234")),
        ("file name", q("report_v3.pdf")),
        ("Cyrillic", q("пятницу")),
        ("Japanese", q("東京")),
        ("accented", q("crème")),
        ("phrase", q("\"deploy the\"")),
        ("one room", format!("{}&room=room-07", q("budget"))),
        ("no match", q("zzqxv")),
        ("limit 100", format!("{}&limit=100", q("release"))),
    ]
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// GET /api/search?…; the time and the page.
async fn timed_search(api: &mut HttpConn, query: &str) -> Result<(Duration, serde_json::Value), String> {
    let path = format!("/api/search?{query}");
    let started = Instant::now();
    let res = api.get(&path).await.map_err(|e| format!("GET {path}: {e}"))?;
    let took = started.elapsed();
    if res.status != 200 {
        return Err(format!("GET {path}: HTTP {} {}", res.status, String::from_utf8_lossy(&res.body)));
    }
    Ok((took, serde_json::from_slice(&res.body).map_err(|e| format!("GET {path}: {e}"))?))
}

/// Times the mix on a running server, then the catch-up.
async fn measure(target: &Target, samples: usize, catch_ups: usize, tag: &str) -> Result<(Vec<(String, Percentiles, usize)>, Percentiles, Percentiles), String> {
    let mut api = target.api(&format!("{tag}searcher")).await?;
    let mut all = Vec::new();
    let mut kinds = Vec::new();
    for (kind, query) in queries() {
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..samples {
            let (took, page) = timed_search(&mut api, &query).await?;
            found = page["results"].as_array().map_or(0, Vec::len);
            times.push(took.as_micros() as u32);
        }
        // The next page, through the cursor, counts as the same kind.
        all.extend(&times);
        kinds.push((kind.to_string(), Percentiles::of(times), found));
    }
    let mut paged = Vec::new();
    let (_, first) = timed_search(&mut api, "q=deploy").await?;
    if let Some(cursor) = first["next_before"].as_str() {
        let query = format!("q=deploy&before={}", encode(cursor));
        for _ in 0..samples {
            paged.push(timed_search(&mut api, &query).await?.0.as_micros() as u32);
        }
    }
    all.extend(&paged);
    kinds.push(("second page (before)".into(), Percentiles::of(paged), 0));

    let mut catch_up = Vec::new();
    for i in 0..catch_ups {
        let word = format!("fresh{tag}x{i}");
        let body = serde_json::json!({"text": format!("just sent {word} now"), "client_id": format!("{tag}-c{i}")}).to_string();
        let res = api.post_json("/api/rooms/room-00/messages", &body).await.map_err(|e| e.to_string())?;
        if res.status != 201 {
            return Err(format!("POST a message: HTTP {} {}", res.status, String::from_utf8_lossy(&res.body)));
        }
        let sent = Instant::now();
        loop {
            let (_, page) = timed_search(&mut api, &format!("q={word}")).await?;
            if page["results"].as_array().is_some_and(|r| !r.is_empty()) {
                break;
            }
            if sent.elapsed() > Duration::from_secs(10) {
                return Err(format!("{word} not found 10 s after it was sent"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        catch_up.push(sent.elapsed().as_micros() as u32);
    }
    Ok((kinds, Percentiles::of(all), Percentiles::of(catch_up)))
}

fn summarise(store: &'static str, build: Duration, startup: Duration, measured: (Vec<(String, Percentiles, usize)>, Percentiles, Percentiles)) -> StoreResult {
    let (kinds, all, catch_up) = measured;
    let worst = kinds.iter().max_by_key(|(_, p, _)| p.p99).map(|(k, p, _)| (k.clone(), *p)).unwrap_or_default();
    StoreResult { store, build, startup, all, worst, kinds, catch_up }
}

/// The JSON-lines store: the corpus into `dir`, then a server on it.
pub async fn run_jsonl(opts: &ServerOpts, dir: &Path, count: u64, samples: usize, catch_ups: usize, tag: &str) -> Result<StoreResult, String> {
    let started = Instant::now();
    let store = std::sync::Arc::new(JsonlStore::open(dir, Fsync::Never).map_err(|e| format!("opening the store: {e}"))?);
    build(store.clone(), count, false).await?;
    drop(store);
    let built = started.elapsed();
    eprintln!("  JSON-lines: {count} messages stored and indexed in {built:?}");
    let target = Target::chatroom_on(opts, dir)?;
    let startup = target.process.as_ref().map(|p| p.startup).unwrap_or_default();
    Ok(summarise("JSON-lines (tantivy)", built, startup, measure(&target, samples, catch_ups, tag).await?))
}

/// PostgreSQL: the corpus into a fresh database on `server_url`, then a
/// server on it; the database is dropped afterwards.
pub async fn run_postgres(opts: &ServerOpts, dir: &Path, server_url: &str, count: u64, samples: usize, catch_ups: usize, tag: &str) -> Result<StoreResult, String> {
    let database = FreshDatabase::create(server_url)?;
    let started = Instant::now();
    let store = std::sync::Arc::new(PgStore::open(&database.url, Fsync::Never).await.map_err(|e| format!("opening the database: {e}"))?);
    build(store.clone(), count, true).await?;
    drop(store);
    let built = started.elapsed();
    eprintln!("  PostgreSQL: {count} messages stored in {built:?}");
    crate::backends::analyze(&database.url)?;
    let target = Target::chatroom_on_database(opts, dir, &database.url)?;
    let startup = target.process.as_ref().map(|p| p.startup).unwrap_or_default();
    let measured = measure(&target, samples, catch_ups, tag).await?;
    drop(target);
    drop(database);
    Ok(summarise("PostgreSQL (GIN)", built, startup, measured))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_is_varied_and_the_same_every_run() {
        assert_eq!(text_of(7), text_of(7));
        let texts: Vec<String> = (0..2000).map(text_of).collect();
        for needle in ["https://", "-", "_v", "東京", "пятницу", "crème", " qa", "deploy"] {
            assert!(texts.iter().any(|t| t.contains(needle)), "{needle}");
        }
        let authors = authors().unwrap();
        let batch = batch_of(3, 1, 1_000_000, &authors);
        assert_eq!(batch.len(), BATCH as usize);
        assert_eq!(encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
