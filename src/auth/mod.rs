//! Who is who: accounts, guests, sessions, log-in throttling and room
//! subscriptions.
//!
//! Knows nothing of HTTP: the `http` module reads the cookie and the client
//! address and calls in here. Persistence goes through the store traits
//! it is given ([`AuthStores`]), whatever the backend.

mod claims;
pub mod password;
pub mod sessions;
pub mod throttle;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use self::claims::NameClaims;
use self::password::Hasher;
use self::sessions::{EndReason, Session, SessionLimits, SessionTable, hash_session_id};
use self::throttle::{Attempt, MAX_FAILURES_PER_ADDRESS, MAX_FAILURES_PER_USER, Throttle};
use crate::error::ChatError;
use crate::model::DEFAULT_ROOM;
use crate::model::{RoomName, Username, now_rfc3339, unix_ms};
use crate::store::{ReadMarkerStore, SessionStore, SubscriptionStore, UserRecord, UserStore};

/// A guest name stays held this long after its holder's last activity,
/// even with no socket open (so a polling client keeps its name).
const GUEST_NAME_GRACE: Duration = Duration::from_secs(60);
/// Activity is written to disk at most this often per session.
const PERSIST_ACTIVITY_EVERY: Duration = Duration::from_secs(60);

/// A new session: the raw id (for the cookie, shown once) and the session.
pub type NewSession = (String, Arc<Session>);

/// The stores auth works through, one per concern.
#[derive(Clone)]
pub struct AuthStores {
    pub users: Arc<dyn UserStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub subscriptions: Arc<dyn SubscriptionStore>,
    /// Read markers, per subscriber (forgotten with a guest's session).
    pub read_markers: Arc<dyn ReadMarkerStore>,
}

impl AuthStores {
    /// Every store from one backend that keeps them all.
    pub fn of<B: UserStore + SessionStore + SubscriptionStore + ReadMarkerStore>(backend: Arc<B>) -> Self {
        Self { users: backend.clone(), sessions: backend.clone(), subscriptions: backend.clone(), read_markers: backend }
    }
}

/// Ends announced before a slow listener loses the oldest.
const ENDED_HERE_CAPACITY: usize = 1024;

pub struct Auth {
    stores: AuthStores,
    sessions: SessionTable,
    limits: SessionLimits,
    guests_allowed: bool,
    hasher: Hasher,
    throttle: Throttle,
    /// Held per name (and its look-alikes) from "is this name free?" to
    /// "it is mine now", so two log-ins (guest or sign-up) can never both
    /// take one name, while log-ins of other names go ahead at once.
    name_claims: NameClaims,
    /// Sessions ended in memory whose end could not be written yet (a full
    /// disk); [`Auth::upkeep`] writes them, so a restart cannot revive them.
    unwritten_ends: std::sync::Mutex<Vec<Arc<Session>>>,
    /// Sessions ended here (log-out, replaced, expired), for the fan-out to
    /// tell the other nodes (see [`Auth::sessions_ended_here`]).
    ended_here: tokio::sync::broadcast::Sender<(String, EndReason)>,
}

impl Auth {
    /// Builds the service and restores the stored sessions still live.
    pub async fn open(stores: AuthStores, limits: SessionLimits, guests_allowed: bool) -> Result<Self, ChatError> {
        let auth = Self {
            stores,
            sessions: SessionTable::default(),
            limits,
            guests_allowed,
            hasher: Hasher::default(),
            throttle: Throttle::default(),
            name_claims: NameClaims::default(),
            unwritten_ends: std::sync::Mutex::new(Vec::new()),
            ended_here: tokio::sync::broadcast::channel(ENDED_HERE_CAPACITY).0,
        };
        let mut unreadable = Vec::new();
        for record in auth.stores.sessions.load_sessions().await? {
            let id_hash = record.id_hash.clone();
            if auth.sessions.restore(record).is_none() {
                unreadable.push(id_hash);
            }
        }
        auth.stores.sessions.delete_sessions(unreadable).await?;
        auth.upkeep().await?; // ends those that expired while the server was down
        tokio::task::spawn_blocking(password::warm_up).await.map_err(|e| ChatError::Internal(e.to_string()))?;
        Ok(auth)
    }

    pub fn limits(&self) -> &SessionLimits {
        &self.limits
    }

    /// POST /api/signup: creates an account and logs it in, unless the name
    /// or one that looks like it is an account or held by a guest online.
    pub async fn sign_up(&self, name: &str, password: String, current: Option<&Arc<Session>>) -> Result<NewSession, ChatError> {
        let user = Username::parse(name)?;
        password::check_strength(&password)?;
        if self.stores.users.find_look_alike(&user).await?.is_some() {
            return Err(ChatError::NameTaken(user.to_string()));
        }
        let password_hash = self.hasher.hash(password).await?;
        let _claim = self.name_claims.claim(&user).await;
        if self.guest_holds(&user, current) {
            return Err(ChatError::NameTaken(user.to_string()));
        }
        let record = UserRecord { username: user.to_string(), password_hash, created_at: now_rfc3339() };
        self.stores.users.create_user(record).await?;
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
            Ok(user) => self.stores.users.find_user(&user.key()).await?,
            Err(_) => None,
        };
        let phc = record.as_ref().map(|r| r.password_hash.clone());
        let password_ok = self.hasher.verify(password, phc).await?;
        Ok(record.filter(|_| password_ok).and_then(|r| Username::parse(&r.username).ok()))
    }

    /// POST /api/guest: starts a guest session under `name`, unless an
    /// account has that name or one that looks like it (see
    /// [`Username::skeletons`]), or a guest online holds such a name.
    ///
    /// A guest name is held by a live guest session that has a socket open
    /// or was active in the last minute; an idle holder loses the name (and
    /// its session).
    pub async fn guest_login(&self, name: &str, current: Option<&Arc<Session>>) -> Result<NewSession, ChatError> {
        if !self.guests_allowed {
            return Err(ChatError::GuestsDisabled);
        }
        let user = Username::parse(name)?;
        let _claim = self.name_claims.claim(&user).await;
        if self.guest_holds(&user, current) || self.stores.users.find_look_alike(&user).await?.is_some() {
            return Err(ChatError::NameTaken(user.to_string()));
        }
        let idle_holders: Vec<String> = self
            .sessions
            .look_alikes_of(&user)
            .into_iter()
            .filter(|s| s.guest && current.is_none_or(|c| c.id_hash != s.id_hash))
            .map(|s| s.id_hash.clone())
            .collect();
        self.end_sessions(idle_holders, EndReason::Expired).await?;
        self.start_session(user, true, current).await
    }

    /// Whether a guest other than `current` is online under this name or
    /// one that looks like it.
    fn guest_holds(&self, user: &Username, current: Option<&Arc<Session>>) -> bool {
        let now = unix_ms();
        self.sessions.look_alikes_of(user).iter().any(|holder| {
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
        if let Err(e) = self.stores.sessions.save_session(session.record()).await {
            // Never written, never handed out: just drop it.
            self.sessions.discard(&session.id_hash);
            return Err(e.into());
        }
        if guest && let Err(e) = self.subscribe_to_default_room(&subscriber_key(&session)).await {
            // Written but never handed out: end it. The caller logs `e`; a
            // failed end is only logged here (upkeep retries it).
            if let Err(end) = self.end_sessions(vec![session.id_hash.clone()], EndReason::Expired).await {
                tracing::warn!(error = %end, "could not write the end of a session never handed out; will retry");
            }
            return Err(e);
        }
        Ok((raw, session))
    }

    /// Every new subscriber (an account, or a guest's session) starts in
    /// the default room.
    async fn subscribe_to_default_room(&self, subscriber: &str) -> Result<(), ChatError> {
        let general = RoomName::parse(DEFAULT_ROOM).expect("valid default room");
        Ok(self.stores.subscriptions.subscribe(subscriber, &general).await?)
    }

    /// The live session behind a cookie value, marked active now: from
    /// this process's table, or on a miss from the sessions store (a
    /// session made by another process on the same data).
    pub async fn session(&self, raw_id: &str) -> Result<Option<Arc<Session>>, ChatError> {
        if !sessions::is_well_formed_id(raw_id) {
            return Ok(None);
        }
        let id_hash = hash_session_id(raw_id);
        let session = match self.sessions.find(&id_hash, &self.limits) {
            Some(session) => Some(session),
            None => self.adopt_stored(&id_hash).await?,
        };
        Ok(session.inspect(|s| s.touch()))
    }

    /// A live session the store has and this process does not.
    async fn adopt_stored(&self, id_hash: &str) -> Result<Option<Arc<Session>>, ChatError> {
        let Some(record) = self.stores.sessions.find_session(id_hash).await? else { return Ok(None) };
        Ok(self.sessions.adopt(record, &self.limits))
    }

    /// POST /api/logout: ends the session; its sockets close with 4401.
    ///
    /// The session ends in memory first, so its cookie stops working even
    /// when the end cannot be written; then the error is returned and
    /// upkeep writes the end later.
    pub async fn log_out(&self, session: &Session) -> Result<(), ChatError> {
        self.end_sessions(vec![session.id_hash.clone()], EndReason::LoggedOut).await
    }

    async fn end_sessions(&self, id_hashes: Vec<String>, reason: EndReason) -> Result<(), ChatError> {
        let ended: Vec<Arc<Session>> = id_hashes.iter().filter_map(|hash| self.sessions.end(hash, reason)).collect();
        self.announce(&ended, reason);
        self.forget(ended).await
    }

    /// Tells whoever listens (the fan-out, for the other nodes) which
    /// sessions ended here.
    fn announce(&self, ended: &[Arc<Session>], reason: EndReason) {
        for session in ended {
            // Nobody listening (a single node in a test) is fine.
            let _ = self.ended_here.send((session.id_hash.clone(), reason));
        }
    }

    /// Sessions that end on this node, as they end.
    pub fn sessions_ended_here(&self) -> tokio::sync::broadcast::Receiver<(String, EndReason)> {
        self.ended_here.subscribe()
    }

    /// A session another node ended: ends it here too, in memory only (that
    /// node writes the end), so its sockets on this node close with 4401
    /// and its cookie stops working here at once. Not announced again.
    pub fn end_elsewhere(&self, id_hash: &str, reason: EndReason) {
        self.sessions.end(id_hash, reason);
    }

    /// Writes the end of sessions already ended in memory. Those it cannot
    /// write are kept for [`Auth::upkeep`] to retry.
    async fn forget(&self, ended: Vec<Arc<Session>>) -> Result<(), ChatError> {
        if ended.is_empty() {
            return Ok(());
        }
        let written = self.write_ends(&ended).await;
        if written.is_ok() {
            self.sessions.ends_written(&ended);
        } else {
            // The caller logs the failure; upkeep retries the write.
            self.unwritten_ends.lock().expect("unwritten ends lock").extend(ended);
        }
        written
    }

    /// Deletes ended sessions from the store, and guests' subscriptions and
    /// read markers with them (a guest's last as long as its session).
    /// Safe to repeat.
    async fn write_ends(&self, ended: &[Arc<Session>]) -> Result<(), ChatError> {
        for session in ended.iter().filter(|s| s.guest) {
            self.stores.subscriptions.clear_subscriptions(&subscriber_key(session)).await?;
            self.stores.read_markers.clear_markers(&subscriber_key(session)).await?;
        }
        Ok(self.stores.sessions.delete_sessions(ended.iter().map(|s| s.id_hash.clone()).collect()).await?)
    }

    /// Retries writing the ends that failed before (upkeep, and shutdown).
    pub async fn write_unwritten_ends(&self) -> Result<(), ChatError> {
        let pending = std::mem::take(&mut *self.unwritten_ends.lock().expect("unwritten ends lock"));
        let count = pending.len();
        self.forget(pending).await?;
        if count > 0 {
            tracing::info!(sessions = count, "wrote the end of sessions that had failed before");
        }
        Ok(())
    }

    /// Periodic upkeep: ends sessions past their limits, retries ends that
    /// could not be written, and writes recent activity to disk. Returns how
    /// many sessions ended.
    pub async fn upkeep(&self) -> Result<usize, ChatError> {
        self.throttle.prune();
        let expired = self.sessions.end_expired(&self.limits);
        self.announce(&expired, EndReason::Expired);
        let count = expired.len();
        self.unwritten_ends.lock().expect("unwritten ends lock").extend(expired);
        self.write_unwritten_ends().await?;
        let seen: Vec<(String, u64)> = self
            .sessions
            .all()
            .into_iter()
            .filter_map(|s| s.take_unpersisted_activity(PERSIST_ACTIVITY_EVERY).map(|at| (s.id_hash.clone(), at)))
            .collect();
        if !seen.is_empty() {
            self.stores.sessions.touch_sessions(seen).await?;
        }
        Ok(count)
    }

    /// Rooms the session's user subscribes to.
    pub async fn subscriptions(&self, session: &Session) -> Result<Vec<String>, ChatError> {
        Ok(self.stores.subscriptions.subscriptions(&subscriber_key(session)).await?)
    }

    pub async fn subscribe(&self, session: &Session, room: &RoomName) -> Result<(), ChatError> {
        Ok(self.stores.subscriptions.subscribe(&subscriber_key(session), room).await?)
    }

    pub async fn unsubscribe(&self, session: &Session, room: &RoomName) -> Result<(), ChatError> {
        Ok(self.stores.subscriptions.unsubscribe(&subscriber_key(session), room).await?)
    }

    /// The last message id the session's user has read in `room` (0: none).
    pub async fn read_marker(&self, session: &Session, room: &RoomName) -> Result<u64, ChatError> {
        Ok(self.stores.read_markers.read_marker(&subscriber_key(session), room).await?.unwrap_or(0))
    }

    /// Every read marker of the session's user: room → last read id.
    pub async fn read_markers(&self, session: &Session) -> Result<std::collections::BTreeMap<String, u64>, ChatError> {
        Ok(self.stores.read_markers.markers(&subscriber_key(session)).await?)
    }

    /// Moves the user's marker in `room` forward to `id`; whether it moved.
    pub async fn advance_read_marker(&self, session: &Session, room: &RoomName, id: u64) -> Result<bool, ChatError> {
        Ok(self.stores.read_markers.advance_marker(&subscriber_key(session), room, id).await?)
    }

    /// The account named `name` (any case), as its owner spells it.
    pub async fn account(&self, name: &Username) -> Result<Option<Username>, ChatError> {
        let Some(record) = self.stores.users.find_user(&name.key()).await? else { return Ok(None) };
        Ok(Username::parse(&record.username).ok())
    }

    /// Drops an account's subscription to a room (it lost access to it).
    pub async fn unsubscribe_account(&self, user: &Username, room: &RoomName) -> Result<(), ChatError> {
        Ok(self.stores.subscriptions.unsubscribe(&user.key(), room).await?)
    }

    /// Who a session's per-user state belongs to: an account (all its
    /// sessions and devices share it) or one guest session.
    pub fn subscriber(&self, session: &Session) -> String {
        subscriber_key(session)
    }
}

/// Whose subscriptions these are: an account's lower-cased name, or for a
/// guest its session (64 hex characters: no name can be that long).
fn subscriber_key(session: &Session) -> String {
    if session.guest { session.id_hash.clone() } else { session.user.key() }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::store::{SessionRecord, StoreError};

    /// Remembers sessions and which were deleted, nothing else; every
    /// write fails while `full` is set.
    #[derive(Default)]
    struct FlakyStore {
        full: AtomicBool,
        saved: Mutex<std::collections::HashMap<String, SessionRecord>>,
        deleted: Mutex<Vec<String>>,
    }

    impl FlakyStore {
        fn write(&self) -> Result<(), StoreError> {
            if self.full.load(Ordering::SeqCst) {
                Err(StoreError::Unavailable("the disk is full".into()))
            } else {
                Ok(())
            }
        }

        fn deleted(&self) -> Vec<String> {
            self.deleted.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl UserStore for FlakyStore {
        async fn create_user(&self, _: UserRecord) -> Result<(), StoreError> {
            self.write()
        }
        async fn find_user(&self, _: &str) -> Result<Option<UserRecord>, StoreError> {
            Ok(None)
        }
        async fn find_look_alike(&self, _: &crate::model::Username) -> Result<Option<UserRecord>, StoreError> {
            Ok(None)
        }
    }

    #[async_trait]
    impl SessionStore for FlakyStore {
        async fn save_session(&self, session: SessionRecord) -> Result<(), StoreError> {
            self.write()?;
            self.saved.lock().unwrap().insert(session.id_hash.clone(), session);
            Ok(())
        }
        async fn find_session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
            Ok(self.saved.lock().unwrap().get(id_hash).cloned())
        }
        async fn load_sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
            Ok(Vec::new())
        }
        async fn touch_sessions(&self, _: Vec<(String, u64)>) -> Result<(), StoreError> {
            self.write()
        }
        async fn delete_sessions(&self, id_hashes: Vec<String>) -> Result<(), StoreError> {
            self.write()?;
            let mut saved = self.saved.lock().unwrap();
            id_hashes.iter().for_each(|hash| drop(saved.remove(hash)));
            self.deleted.lock().unwrap().extend(id_hashes);
            Ok(())
        }
    }

    #[async_trait]
    impl SubscriptionStore for FlakyStore {
        async fn subscribe(&self, _: &str, _: &RoomName) -> Result<(), StoreError> {
            self.write()
        }
        async fn subscriptions(&self, _: &str) -> Result<Vec<String>, StoreError> {
            Ok(Vec::new())
        }
        async fn unsubscribe(&self, _: &str, _: &RoomName) -> Result<(), StoreError> {
            self.write()
        }
        async fn clear_subscriptions(&self, _: &str) -> Result<(), StoreError> {
            self.write()
        }
    }

    #[async_trait]
    impl ReadMarkerStore for FlakyStore {
        async fn read_marker(&self, _: &str, _: &RoomName) -> Result<Option<u64>, StoreError> {
            Ok(None)
        }
        async fn markers(&self, _: &str) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
            Ok(Default::default())
        }
        async fn advance_marker(&self, _: &str, _: &RoomName, _: u64) -> Result<bool, StoreError> {
            self.write().map(|()| true)
        }
        async fn clear_markers(&self, _: &str) -> Result<(), StoreError> {
            self.write()
        }
    }

    async fn auth_over(store: &Arc<FlakyStore>) -> Auth {
        let limits = SessionLimits { idle: Duration::from_secs(600), absolute: Duration::from_secs(600) };
        Auth::open(AuthStores::of(store.clone()), limits, true).await.expect("auth opens")
    }

    #[tokio::test]
    async fn a_log_out_that_cannot_be_written_ends_the_session_now_and_is_written_by_upkeep() {
        let store = Arc::new(FlakyStore::default());
        let auth = auth_over(&store).await;
        let (raw, session) = auth.guest_login("gus", None).await.unwrap();
        store.full.store(true, Ordering::SeqCst);
        assert!(matches!(auth.log_out(&session).await, Err(ChatError::Storage(_))));
        assert!(auth.session(&raw).await.unwrap().is_none(), "the cookie stops working at once");
        assert_eq!(*session.ended().borrow(), Some(EndReason::LoggedOut));
        assert!(auth.upkeep().await.is_err(), "the disk is still full");
        assert!(store.deleted().is_empty());

        store.full.store(false, Ordering::SeqCst);
        auth.upkeep().await.unwrap();
        assert_eq!(store.deleted(), vec![session.id_hash.clone()]);
        auth.upkeep().await.unwrap();
        assert_eq!(store.deleted().len(), 1, "written once");
    }

    #[tokio::test]
    async fn a_session_that_cannot_be_saved_holds_no_name() {
        let store = Arc::new(FlakyStore::default());
        let auth = auth_over(&store).await;
        store.full.store(true, Ordering::SeqCst);
        assert!(auth.guest_login("gus", None).await.is_err());
        store.full.store(false, Ordering::SeqCst);
        assert!(auth.guest_login("gus", None).await.is_ok(), "the failed log-in left no guest behind");
    }

    #[tokio::test]
    async fn a_session_saved_by_another_process_is_found_on_its_first_use() {
        let store = Arc::new(FlakyStore::default());
        let (here, there) = (auth_over(&store).await, auth_over(&store).await);
        let (raw, made_here) = here.guest_login("gus", None).await.unwrap();
        let found = there.session(&raw).await.unwrap().expect("found through the store");
        assert_eq!((found.id_hash.as_str(), found.user.as_str(), found.guest), (made_here.id_hash.as_str(), "gus", true));
        let again = there.session(&raw).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&found, &again), "then cached: one session per process");
        there.log_out(&found).await.unwrap();
        assert!(there.session(&raw).await.unwrap().is_none());
        assert!(there.session("not-a-session-id").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_storage_failure_is_returned_to_the_caller_not_logged_here() {
        let store = Arc::new(FlakyStore::default());
        let auth = auth_over(&store).await;
        let (_, session) = auth.guest_login("gus", None).await.unwrap();
        store.full.store(true, Ordering::SeqCst);
        let (logged, _capturing) = crate::test_logs::capture();
        assert!(matches!(auth.log_out(&session).await, Err(ChatError::Storage(_))));
        assert!(matches!(auth.upkeep().await, Err(ChatError::Storage(_))));
        assert!(matches!(auth.subscribe(&session, &RoomName::parse("rust").unwrap()).await, Err(ChatError::Storage(_))));
        assert_eq!(logged.lines(), Vec::<String>::new(), "the caller that gives up logs it, once");
    }
}
