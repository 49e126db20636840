//! Who is who: accounts, guests, sessions, log-in throttling and room
//! subscriptions.
//!
//! Knows nothing of HTTP: the `http` module reads the cookie and the client
//! address and calls in here. Persistence goes through
//! [`AccountStore`](crate::store::AccountStore).

pub mod password;
pub mod sessions;
pub mod throttle;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use self::password::Hasher;
use self::sessions::{EndReason, Session, SessionLimits, SessionTable, now_ms};
use self::throttle::{Attempt, MAX_FAILURES_PER_ADDRESS, MAX_FAILURES_PER_USER, Throttle};
use crate::error::ChatError;
use crate::model::{RoomName, Username, now_rfc3339};
use crate::store::jsonl::DEFAULT_ROOM;
use crate::store::{AccountStore, UserRecord};

/// A guest name stays held this long after its holder's last activity,
/// even with no socket open (so a polling client keeps its name).
const GUEST_NAME_GRACE: Duration = Duration::from_secs(60);
/// Activity is written to disk at most this often per session.
const PERSIST_ACTIVITY_EVERY: Duration = Duration::from_secs(60);

/// A new session: the raw id (for the cookie, shown once) and the session.
pub type NewSession = (String, Arc<Session>);

pub struct Auth {
    store: Arc<dyn AccountStore>,
    sessions: SessionTable,
    limits: SessionLimits,
    guests_allowed: bool,
    hasher: Hasher,
    throttle: Throttle,
    /// Held from "is this name free?" to "it is mine now", so two log-ins
    /// (guest or sign-up) can never both take one name.
    name_claims: tokio::sync::Mutex<()>,
}

impl Auth {
    /// Builds the service and restores the stored sessions still live.
    pub async fn open(store: Arc<dyn AccountStore>, limits: SessionLimits, guests_allowed: bool) -> Result<Self, ChatError> {
        let auth = Self {
            store,
            sessions: SessionTable::default(),
            limits,
            guests_allowed,
            hasher: Hasher::default(),
            throttle: Throttle::default(),
            name_claims: tokio::sync::Mutex::new(()),
        };
        let mut unreadable = Vec::new();
        for record in auth.store.load_sessions().await? {
            let id_hash = record.id_hash.clone();
            if auth.sessions.restore(record).is_none() {
                unreadable.push(id_hash);
            }
        }
        auth.store.delete_sessions(unreadable).await?;
        auth.upkeep().await?; // ends those that expired while the server was down
        tokio::task::spawn_blocking(password::warm_up).await.map_err(|e| ChatError::Internal(e.to_string()))?;
        Ok(auth)
    }

    pub fn limits(&self) -> &SessionLimits {
        &self.limits
    }

    /// POST /api/signup: creates an account and logs it in.
    pub async fn sign_up(&self, name: &str, password: String, current: Option<&Arc<Session>>) -> Result<NewSession, ChatError> {
        let user = Username::parse(name)?;
        password::check_strength(&password)?;
        if self.store.find_user(&user.key()).await?.is_some() {
            return Err(ChatError::NameTaken(user.to_string()));
        }
        let password_hash = self.hasher.hash(password).await?;
        let _claim = self.name_claims.lock().await;
        if self.guest_holds(&user, current) {
            return Err(ChatError::NameTaken(user.to_string()));
        }
        let record = UserRecord { username: user.to_string(), password_hash, created_at: now_rfc3339() };
        self.store.create_user(record).await?;
        tracing::info!(user = %user, "account created");
        self.subscribe_to_default_room(&user.key()).await?;
        self.start_session(user, false, current).await
    }

    /// POST /api/login: checks the password (same answer and about the same
    /// time for an unknown user and a wrong password) and starts a session.
    ///
    /// The attempt is counted by the throttle before the password is hashed,
    /// so parallel attempts cannot get past its limits; a right password
    /// gives the attempt back, a wrong one leaves it counted as a failure.
    pub async fn log_in(&self, name: &str, password: String, from: Option<IpAddr>, current: Option<&Arc<Session>>) -> Result<NewSession, ChatError> {
        let attempt = self.begin_attempt(name, from)?;
        match self.check_password(name, password).await {
            Ok(Some(user)) => {
                self.throttle.release(attempt);
                self.start_session(user, false, current).await
            }
            Ok(None) => {
                tracing::info!(user = %name.chars().take(32).collect::<String>(), from = ?from, "failed log-in");
                Err(ChatError::BadCredentials)
            }
            Err(e) => {
                // The password was not checked (e.g. too many hashes queued).
                self.throttle.release(attempt);
                Err(e)
            }
        }
    }

    /// Counts a log-in attempt for the name and the address, or refuses it
    /// when either has used up its attempts in the window.
    fn begin_attempt(&self, name: &str, from: Option<IpAddr>) -> Result<Attempt, ChatError> {
        let user_key = format!("user:{}", name.trim().to_lowercase());
        let addr_key = from.map(|a| format!("addr:{a}"));
        let mut limits = vec![(user_key.as_str(), MAX_FAILURES_PER_USER)];
        if let Some(addr_key) = &addr_key {
            limits.push((addr_key.as_str(), MAX_FAILURES_PER_ADDRESS));
        }
        self.throttle.begin(&limits).map_err(|wait| {
            tracing::warn!(user_key, addr_key, "log-in throttled after repeated failures");
            ChatError::TooManyAttempts { retry_after_secs: wait.as_secs().max(1) }
        })
    }

    /// The account `name`, if `password` is its password. An unknown or
    /// invalid name is checked against a dummy hash, so it takes as long.
    async fn check_password(&self, name: &str, password: String) -> Result<Option<Username>, ChatError> {
        let record = match Username::parse(name) {
            Ok(user) => self.store.find_user(&user.key()).await?,
            Err(_) => None,
        };
        let phc = record.as_ref().map(|r| r.password_hash.clone());
        let password_ok = self.hasher.verify(password, phc).await?;
        Ok(record.filter(|_| password_ok).and_then(|r| Username::parse(&r.username).ok()))
    }

    /// POST /api/guest: starts a guest session under `name`, unless an
    /// account has that name or someone online holds it.
    ///
    /// A guest name is held by a live guest session that has a socket open
    /// or was active in the last minute; an idle holder loses the name (and
    /// its session).
    pub async fn guest_login(&self, name: &str, current: Option<&Arc<Session>>) -> Result<NewSession, ChatError> {
        if !self.guests_allowed {
            return Err(ChatError::GuestsDisabled);
        }
        let user = Username::parse(name)?;
        let _claim = self.name_claims.lock().await;
        if self.guest_holds(&user, current) || self.store.find_user(&user.key()).await?.is_some() {
            return Err(ChatError::NameTaken(user.to_string()));
        }
        let idle_holders: Vec<String> = self
            .sessions
            .of_user(&user.key())
            .into_iter()
            .filter(|s| s.guest && current.is_none_or(|c| c.id_hash != s.id_hash))
            .map(|s| s.id_hash.clone())
            .collect();
        self.end_sessions(idle_holders, EndReason::Expired).await?;
        self.start_session(user, true, current).await
    }

    /// Whether a guest other than `current` is online under this name.
    fn guest_holds(&self, user: &Username, current: Option<&Arc<Session>>) -> bool {
        let now = now_ms();
        self.sessions.of_user(&user.key()).iter().any(|holder| {
            let own = current.is_some_and(|c| c.id_hash == holder.id_hash);
            holder.guest
                && !own
                && holder.is_live(&self.limits, now)
                && (holder.open_sockets() > 0
                    || now.saturating_sub(holder.last_seen_ms()) < GUEST_NAME_GRACE.as_millis() as u64)
        })
    }

    /// A new session with a fresh id; the caller's previous one ends.
    async fn start_session(&self, user: Username, guest: bool, current: Option<&Arc<Session>>) -> Result<NewSession, ChatError> {
        if let Some(current) = current {
            self.end_sessions(vec![current.id_hash.clone()], EndReason::Replaced).await?;
        }
        let (raw, session) = self.sessions.create(user, guest);
        self.store.save_session(session.record()).await?;
        if guest {
            self.subscribe_to_default_room(&subscriber_key(&session)).await?;
        }
        Ok((raw, session))
    }

    /// Every new subscriber (an account, or a guest's session) starts in
    /// the default room.
    async fn subscribe_to_default_room(&self, subscriber: &str) -> Result<(), ChatError> {
        let general = RoomName::parse(DEFAULT_ROOM).expect("valid default room");
        self.store.subscribe(subscriber, &general).await
    }

    /// The live session behind a cookie value, marked active now.
    pub fn session(&self, raw_id: &str) -> Option<Arc<Session>> {
        let session = self.sessions.find(raw_id, &self.limits)?;
        session.touch();
        Some(session)
    }

    /// POST /api/logout: ends the session; its sockets close with 4401.
    pub async fn log_out(&self, session: &Session) -> Result<(), ChatError> {
        self.end_sessions(vec![session.id_hash.clone()], EndReason::LoggedOut).await
    }

    async fn end_sessions(&self, id_hashes: Vec<String>, reason: EndReason) -> Result<(), ChatError> {
        if id_hashes.is_empty() {
            return Ok(());
        }
        let ended: Vec<Arc<Session>> = id_hashes.iter().filter_map(|hash| self.sessions.end(hash, reason)).collect();
        self.forget(&ended).await
    }

    /// Deletes ended sessions from the store, and guests' subscriptions with
    /// them (a guest's last as long as its session).
    async fn forget(&self, ended: &[Arc<Session>]) -> Result<(), ChatError> {
        for session in ended.iter().filter(|s| s.guest) {
            self.store.clear_subscriptions(&subscriber_key(session)).await?;
        }
        self.store.delete_sessions(ended.iter().map(|s| s.id_hash.clone()).collect()).await
    }

    /// Periodic upkeep: ends sessions past their limits and writes recent
    /// activity to disk. Returns how many sessions ended.
    pub async fn upkeep(&self) -> Result<usize, ChatError> {
        let expired = self.sessions.end_expired(&self.limits);
        self.forget(&expired).await?;
        let seen: Vec<(String, u64)> = self
            .sessions
            .all()
            .into_iter()
            .filter_map(|s| s.take_unpersisted_activity(PERSIST_ACTIVITY_EVERY).map(|at| (s.id_hash.clone(), at)))
            .collect();
        if !seen.is_empty() {
            self.store.touch_sessions(seen).await?;
        }
        self.throttle.prune();
        Ok(expired.len())
    }

    /// Rooms the session's user subscribes to.
    pub async fn subscriptions(&self, session: &Session) -> Result<Vec<String>, ChatError> {
        self.store.subscriptions(&subscriber_key(session)).await
    }

    pub async fn subscribe(&self, session: &Session, room: &RoomName) -> Result<(), ChatError> {
        self.store.subscribe(&subscriber_key(session), room).await
    }

    pub async fn unsubscribe(&self, session: &Session, room: &RoomName) -> Result<(), ChatError> {
        self.store.unsubscribe(&subscriber_key(session), room).await
    }
}

/// Whose subscriptions these are: an account's lower-cased name, or for a
/// guest its session (64 hex characters: no name can be that long).
fn subscriber_key(session: &Session) -> String {
    if session.guest { session.id_hash.clone() } else { session.user.key() }
}
