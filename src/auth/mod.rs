//! Who is who: guest names, sessions and (later) accounts.
//!
//! Knows nothing of HTTP: the `http` module reads the cookie and calls in
//! here with its raw value.

pub mod sessions;

use std::sync::Arc;
use std::time::Duration;

use self::sessions::{EndReason, Session, SessionLimits, SessionTable, now_ms};
use crate::error::ChatError;
use crate::model::Username;

/// A guest name stays held this long after its holder's last activity,
/// even with no socket open (so a polling client keeps its name).
const GUEST_NAME_GRACE: Duration = Duration::from_secs(60);

pub struct Auth {
    sessions: SessionTable,
    limits: SessionLimits,
    guests_allowed: bool,
}

impl Auth {
    pub fn new(limits: SessionLimits, guests_allowed: bool) -> Self {
        Self { sessions: SessionTable::default(), limits, guests_allowed }
    }

    pub fn limits(&self) -> &SessionLimits {
        &self.limits
    }

    /// Starts a guest session under `name`, unless someone online holds it.
    ///
    /// A name is held by a live guest session that has a socket open or was
    /// active in the last minute; an idle holder loses the name (and its
    /// session). `current` is the caller's own session, which never blocks
    /// it: a new session replaces it (a fresh id at every log-in).
    pub fn guest_login(&self, name: &str, current: Option<&Arc<Session>>) -> Result<(String, Arc<Session>), ChatError> {
        if !self.guests_allowed {
            return Err(ChatError::GuestsDisabled);
        }
        let user = Username::parse(name)?;
        let now = now_ms();
        for holder in self.sessions.of_user(&user.key()) {
            let own = current.is_some_and(|c| c.id_hash == holder.id_hash);
            let online = holder.is_live(&self.limits, now)
                && (holder.open_sockets() > 0
                    || now.saturating_sub(holder.last_seen_ms()) < GUEST_NAME_GRACE.as_millis() as u64);
            if online && !own {
                return Err(ChatError::NameTaken(user.to_string()));
            }
            let reason = if own { EndReason::Replaced } else { EndReason::Expired };
            self.sessions.end(&holder.id_hash, reason);
        }
        if let Some(current) = current {
            self.sessions.end(&current.id_hash, EndReason::Replaced);
        }
        Ok(self.sessions.create(user, true))
    }

    /// The live session behind a cookie value, marked active now.
    pub fn session(&self, raw_id: &str) -> Option<Arc<Session>> {
        let session = self.sessions.find(raw_id, &self.limits)?;
        session.touch();
        Some(session)
    }

    /// Ends a session at the user's request.
    pub fn logout(&self, session: &Session) {
        self.sessions.end(&session.id_hash, EndReason::LoggedOut);
    }

    /// Ends sessions past their limits (run periodically).
    pub fn end_expired(&self) -> usize {
        self.sessions.end_expired(&self.limits).len()
    }
}
