//! Name claims: a log-in that is about to take a name holds a claim on it
//! from "is this name free?" to "it is mine now", so two log-ins (guest or
//! sign-up) can never both take one name or two names that look alike.
//!
//! A claim covers the name's skeletons ([`Username::skeletons`]): two names
//! look alike when they share one. Claims are taken under a short lock on
//! a set of skeletons, never held across a store round trip, so log-ins of
//! names that do not look alike run at once; a log-in whose name is claimed
//! waits for that claim to be released, then looks again.

use std::collections::HashSet;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::model::Username;

/// The skeletons claimed on this node.
#[derive(Default)]
pub struct NameClaims {
    claimed: Mutex<HashSet<String>>,
    /// Woken whenever a claim is released.
    released: Notify,
}

/// A held claim; dropping it (the log-in finished or failed) releases it.
pub struct Claim<'a> {
    claims: &'a NameClaims,
    skeletons: Vec<String>,
}

impl NameClaims {
    /// Claims `user`'s skeletons, waiting while any of them is claimed.
    pub async fn claim(&self, user: &Username) -> Claim<'_> {
        let skeletons = user.skeletons();
        loop {
            // Made before looking, so a release in between is not missed.
            let released = self.released.notified();
            if self.try_claim(&skeletons) {
                return Claim { claims: self, skeletons };
            }
            released.await;
        }
    }

    /// Claims every one of `skeletons` if none is claimed.
    fn try_claim(&self, skeletons: &[String]) -> bool {
        let mut claimed = self.claimed.lock().expect("name claims");
        if skeletons.iter().any(|s| claimed.contains(s)) {
            return false;
        }
        claimed.extend(skeletons.iter().cloned());
        true
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut claimed = self.claims.claimed.lock().expect("name claims");
        for skeleton in &self.skeletons {
            claimed.remove(skeleton);
        }
        drop(claimed);
        self.claims.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &str) -> Username {
        Username::parse(raw).unwrap()
    }

    #[tokio::test]
    async fn names_that_do_not_look_alike_are_claimed_at_once() {
        let claims = NameClaims::default();
        let _ann = claims.claim(&name("ann")).await;
        let bob = tokio::time::timeout(std::time::Duration::from_secs(1), claims.claim(&name("bob"))).await;
        assert!(bob.is_ok(), "bob waited for ann");
    }

    #[tokio::test]
    async fn a_look_alike_waits_until_the_claim_is_released() {
        let claims = NameClaims::default();
        let (upper, look_alike) = (name("ANN"), name("\u{0430}nn"));
        let ann = claims.claim(&name("ann")).await;
        let mut waiting = Box::pin(claims.claim(&upper));
        assert!(futures::poll!(waiting.as_mut()).is_pending(), "ANN claimed while ann is held");
        let mut cyrillic = Box::pin(claims.claim(&look_alike));
        assert!(futures::poll!(cyrillic.as_mut()).is_pending(), "аnn (Cyrillic а) claimed while ann is held");
        drop(ann);
        let ann_upper = tokio::time::timeout(std::time::Duration::from_secs(1), waiting).await.expect("claimed once released");
        assert!(futures::poll!(cyrillic.as_mut()).is_pending(), "still held, by ANN now");
        drop(ann_upper);
        tokio::time::timeout(std::time::Duration::from_secs(1), cyrillic).await.expect("claimed once released");
    }
}
