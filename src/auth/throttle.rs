//! Log-in throttling: after too many failures for one username, or from one
//! address, within a window, further attempts are refused with 429 until
//! the oldest failure leaves the window.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(15 * 60);
pub const MAX_FAILURES_PER_USER: usize = 5;
pub const MAX_FAILURES_PER_ADDRESS: usize = 20;

#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Throttle {
    /// `Some(wait)` when `key` has `max` failures in the window.
    pub fn blocked(&self, key: &str, max: usize) -> Option<Duration> {
        let mut failures = self.failures.lock().expect("throttle lock");
        let list = failures.get_mut(key)?;
        let now = Instant::now();
        while list.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            list.pop_front();
        }
        if list.is_empty() {
            failures.remove(key);
            return None;
        }
        (list.len() >= max).then(|| WINDOW.saturating_sub(now.duration_since(list[0])))
    }

    pub fn record_failure(&self, key: &str) {
        let mut failures = self.failures.lock().expect("throttle lock");
        let list = failures.entry(key.to_string()).or_default();
        list.push_back(Instant::now());
        if list.len() > MAX_FAILURES_PER_ADDRESS {
            list.pop_front();
        }
    }

    /// Forgets entries whose failures all left the window.
    pub fn prune(&self) {
        let now = Instant::now();
        self.failures
            .lock()
            .expect("throttle lock")
            .retain(|_, list| list.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit() {
        let t = Throttle::default();
        for _ in 0..4 {
            t.record_failure("user:ann");
        }
        assert!(t.blocked("user:ann", 5).is_none());
        t.record_failure("user:ann");
        let wait = t.blocked("user:ann", 5).expect("blocked");
        assert!(wait <= WINDOW && wait > WINDOW - Duration::from_secs(5));
        assert!(t.blocked("user:bob", 5).is_none());
    }
}
