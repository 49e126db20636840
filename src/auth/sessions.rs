//! Live sessions: who holds which cookie, until when.
//!
//! A session id is 256 random bits, shown to the client once (in its
//! cookie) and kept here only as its SHA-256 hash, so a leaked data file or
//! log never reveals a usable id. The [`SessionTable`] is this process's
//! cache of the sessions store: a session another process saved is
//! adopted on its first use here (`Auth::session`). A session ends at logout, after
//! `idle` without activity, or `absolute` after it began; when it ends,
//! everyone watching [`Session::ended`] (its open sockets) hears why.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::TryRngCore;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::model::{Username, unix_ms};
pub use crate::store::SessionRecord;
use crate::rate::{RateLimiter, SendRate};

/// Why a session ended; sent to its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    LoggedOut,
    Expired,
    Replaced,
}

impl EndReason {
    /// The reason's name, as the fan-out carries it between nodes.
    pub fn name(self) -> &'static str {
        match self {
            EndReason::LoggedOut => "logged_out",
            EndReason::Expired => "expired",
            EndReason::Replaced => "replaced",
        }
    }

    /// The reason a name stands for (an unknown one reads as expired).
    pub fn from_name(name: &str) -> Self {
        match name {
            "logged_out" => EndReason::LoggedOut,
            "replaced" => EndReason::Replaced,
            _ => EndReason::Expired,
        }
    }
}

pub struct Session {
    pub id_hash: String,
    pub user: Username,
    pub guest: bool,
    created_ms: u64,
    last_seen_ms: AtomicU64,
    /// The last activity written to disk.
    persisted_seen_ms: AtomicU64,
    open_sockets: AtomicUsize,
    ended: watch::Sender<Option<EndReason>>,
    /// Paces messages posted over HTTP (the WebSocket paces its own).
    posts: Mutex<Option<RateLimiter>>,
}

impl Session {
    fn new(id_hash: String, user: Username, guest: bool, created_ms: u64, last_seen_ms: u64) -> Self {
        Self {
            id_hash,
            user,
            guest,
            created_ms,
            last_seen_ms: AtomicU64::new(last_seen_ms),
            persisted_seen_ms: AtomicU64::new(last_seen_ms),
            open_sockets: AtomicUsize::new(0),
            ended: watch::channel(None).0,
            posts: Mutex::new(None),
        }
    }

    pub fn record(&self) -> SessionRecord {
        SessionRecord {
            id_hash: self.id_hash.clone(),
            user: self.user.to_string(),
            guest: self.guest,
            created_ms: self.created_ms,
            last_seen_ms: self.last_seen_ms.load(Ordering::Relaxed),
        }
    }

    /// Notes activity now.
    pub fn touch(&self) {
        self.last_seen_ms.fetch_max(unix_ms(), Ordering::Relaxed);
    }

    /// The activity time to write to disk, when it moved on by `every`
    /// since the last write (and marks it written).
    pub fn take_unpersisted_activity(&self, every: Duration) -> Option<u64> {
        let seen = self.last_seen_ms();
        let persisted = self.persisted_seen_ms.load(Ordering::Relaxed);
        (seen.saturating_sub(persisted) >= every.as_millis() as u64).then(|| {
            self.persisted_seen_ms.store(seen, Ordering::Relaxed);
            seen
        })
    }

    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms.load(Ordering::Relaxed)
    }

    /// Whether the session is still within both of its time limits.
    pub fn is_live(&self, limits: &SessionLimits, now_ms: u64) -> bool {
        self.ended.borrow().is_none()
            && now_ms.saturating_sub(self.last_seen_ms()) < limits.idle.as_millis() as u64
            && now_ms.saturating_sub(self.created_ms) < limits.absolute.as_millis() as u64
    }

    /// Resolves (with the reason) when the session ends.
    pub fn ended(&self) -> watch::Receiver<Option<EndReason>> {
        self.ended.subscribe()
    }

    fn end(&self, reason: EndReason) {
        self.ended.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// Whether one more message may be posted over HTTP now, at `rate`.
    pub fn allow_post(&self, rate: SendRate) -> bool {
        self.posts.lock().expect("posts lock").get_or_insert_with(|| RateLimiter::new(rate)).allow()
    }

    /// Counts an open WebSocket; the guard uncounts it when dropped.
    pub fn socket_opened(self: &Arc<Self>) -> SocketGuard {
        self.open_sockets.fetch_add(1, Ordering::Relaxed);
        SocketGuard(self.clone())
    }

    pub fn open_sockets(&self) -> usize {
        self.open_sockets.load(Ordering::Relaxed)
    }
}

/// Keeps a session's socket count while a socket is open.
pub struct SocketGuard(Arc<Session>);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.0.open_sockets.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// A session ends after this long without activity.
    pub idle: Duration,
    /// A session ends this long after it began, whatever the activity.
    pub absolute: Duration,
}

/// The table of live sessions, keyed by id hash and indexed by the
/// skeletons of their names (so "who holds this name, or one that looks
/// like it?" does not walk every session). It also remembers the sessions
/// ended here whose end is not yet written, so the store, which still
/// holds them, cannot hand them back meanwhile.
#[derive(Default)]
pub struct SessionTable {
    tables: Mutex<Tables>,
}

#[derive(Default)]
struct Tables {
    by_hash: HashMap<String, Arc<Session>>,
    /// name skeleton ([`Username::skeletons`]) → id hashes of the sessions
    /// whose name has it
    by_skeleton: HashMap<String, Vec<String>>,
    /// id hashes of sessions ended here whose end is not written yet
    ending: HashSet<String>,
}

impl Tables {
    fn insert(&mut self, session: Arc<Session>) {
        for skeleton in session.user.skeletons() {
            self.by_skeleton.entry(skeleton).or_default().push(session.id_hash.clone());
        }
        self.by_hash.insert(session.id_hash.clone(), session);
    }

    fn remove(&mut self, id_hash: &str) -> Option<Arc<Session>> {
        let session = self.by_hash.remove(id_hash)?;
        for skeleton in session.user.skeletons() {
            if let Some(hashes) = self.by_skeleton.get_mut(&skeleton) {
                hashes.retain(|h| h != id_hash);
                if hashes.is_empty() {
                    self.by_skeleton.remove(&skeleton);
                }
            }
        }
        Some(session)
    }
}

impl SessionTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().expect("sessions lock")
    }

    /// Starts a session; returns the raw id for the cookie.
    pub fn create(&self, user: Username, guest: bool) -> (String, Arc<Session>) {
        let raw = new_session_id();
        let now = unix_ms();
        let session = Arc::new(Session::new(hash_session_id(&raw), user, guest, now, now));
        self.lock().insert(session.clone());
        (raw, session)
    }

    /// Restores a persisted session (at start); `None` if its stored name
    /// is no longer valid. A session already here is kept as it is.
    pub fn restore(&self, record: SessionRecord) -> Option<Arc<Session>> {
        let user = Username::parse(&record.user).ok()?;
        let mut tables = self.lock();
        if let Some(known) = tables.by_hash.get(&record.id_hash) {
            return Some(known.clone());
        }
        let session = Arc::new(Session::new(record.id_hash, user, record.guest, record.created_ms, record.last_seen_ms));
        tables.insert(session.clone());
        Some(session)
    }

    /// Takes in a session found in the store on a cache miss, if it is
    /// live and was not ended here (its end may not be written yet). Two
    /// requests that both missed get the same session.
    pub fn adopt(&self, record: SessionRecord, limits: &SessionLimits) -> Option<Arc<Session>> {
        let user = Username::parse(&record.user).ok()?;
        let mut tables = self.lock();
        if tables.ending.contains(&record.id_hash) {
            return None;
        }
        if let Some(known) = tables.by_hash.get(&record.id_hash) {
            return Some(known.clone());
        }
        let session = Arc::new(Session::new(record.id_hash, user, record.guest, record.created_ms, record.last_seen_ms));
        session.is_live(limits, unix_ms()).then(|| {
            tables.insert(session.clone());
            session
        })
    }

    /// The live session with this id hash, if it is in the table.
    pub fn find(&self, id_hash: &str, limits: &SessionLimits) -> Option<Arc<Session>> {
        let session = self.lock().by_hash.get(id_hash).cloned()?;
        session.is_live(limits, unix_ms()).then_some(session)
    }

    /// Ends a session and forgets it; it stays refused until
    /// [`ends_written`](Self::ends_written). Returns it if it existed.
    pub fn end(&self, id_hash: &str, reason: EndReason) -> Option<Arc<Session>> {
        let mut tables = self.lock();
        let session = tables.remove(id_hash)?;
        tables.ending.insert(session.id_hash.clone());
        session.end(reason);
        Some(session)
    }

    /// Drops a session that was never stored nor handed out.
    pub fn discard(&self, id_hash: &str) {
        if let Some(session) = self.lock().remove(id_hash) {
            session.end(EndReason::Expired);
        }
    }

    /// The ends of these sessions are in the store now.
    pub fn ends_written(&self, ended: &[Arc<Session>]) {
        let mut tables = self.lock();
        for session in ended {
            tables.ending.remove(&session.id_hash);
        }
    }

    /// Ends every session past its limits; returns them.
    pub fn end_expired(&self, limits: &SessionLimits) -> Vec<Arc<Session>> {
        let now = unix_ms();
        let mut tables = self.lock();
        let expired: Vec<String> =
            tables.by_hash.values().filter(|s| !s.is_live(limits, now)).map(|s| s.id_hash.clone()).collect();
        let ended: Vec<Arc<Session>> = expired.iter().filter_map(|h| tables.remove(h)).collect();
        for session in &ended {
            tables.ending.insert(session.id_hash.clone());
            session.end(EndReason::Expired);
        }
        ended
    }

    /// Every session whose name is `user` or looks like it (shares a
    /// skeleton with it), each once.
    pub fn look_alikes_of(&self, user: &Username) -> Vec<Arc<Session>> {
        let tables = self.lock();
        let mut hashes: Vec<&String> =
            user.skeletons().iter().filter_map(|k| tables.by_skeleton.get(k)).flatten().collect();
        hashes.sort_unstable();
        hashes.dedup();
        hashes.into_iter().filter_map(|h| tables.by_hash.get(h).cloned()).collect()
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        self.lock().by_hash.values().cloned().collect()
    }
}

/// 256 bits from the operating system's CSPRNG, hex-encoded.
fn new_session_id() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes).expect("the OS random source works");
    hex::encode(bytes)
}

/// Whether a cookie value could be a session id (64 hex digits): anything
/// else is refused without a look in the store.
pub fn is_well_formed_id(raw: &str) -> bool {
    raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn hash_session_id(raw: &str) -> String {
    hex::encode(Sha256::digest(raw.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_found_by_user_until_they_end() {
        let table = SessionTable::default();
        let ann = Username::parse("ann").unwrap();
        let (_, a) = table.create(Username::parse("Ann").unwrap(), true);
        let (raw_b, b) = table.create(Username::parse("ANN").unwrap(), false);
        table.create(Username::parse("bob").unwrap(), true);
        assert_eq!(table.look_alikes_of(&ann).len(), 2);
        table.end(&a.id_hash, EndReason::LoggedOut);
        let left: Vec<String> = table.look_alikes_of(&ann).iter().map(|s| s.id_hash.clone()).collect();
        assert_eq!(left, vec![b.id_hash.clone()]);
        let limits = SessionLimits { idle: Duration::from_secs(60), absolute: Duration::from_secs(60) };
        assert!(table.find(&hash_session_id(&raw_b), &limits).is_some());
        assert_eq!(*a.ended().borrow(), Some(EndReason::LoggedOut));
        table.end(&b.id_hash, EndReason::LoggedOut);
        assert!(table.look_alikes_of(&ann).is_empty());
        assert!(table.find(&hash_session_id(&raw_b), &limits).is_none());
    }

    #[test]
    fn look_alike_names_find_each_others_sessions_once() {
        let table = SessionTable::default();
        let name = |n: &str| Username::parse(n).unwrap();
        // "PayPal" is indexed under two skeletons ("paypal", "PayPal").
        let (_, held) = table.create(name("PayPal"), true);
        table.create(name("root"), true);
        for look_alike in ["PayPal", "paypal", "PayPaI"] {
            let found: Vec<String> = table.look_alikes_of(&name(look_alike)).iter().map(|s| s.id_hash.clone()).collect();
            assert_eq!(found, vec![held.id_hash.clone()], "{look_alike}");
        }
        assert_eq!(table.look_alikes_of(&name("r\u{043E}\u{043E}t")).len(), 1);
        table.end(&held.id_hash, EndReason::LoggedOut);
        assert!(table.look_alikes_of(&name("PayPaI")).is_empty());
    }
}
