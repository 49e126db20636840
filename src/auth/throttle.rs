//! Log-in throttling: at most [`MAX_FAILURES_PER_USER`] passwords per
//! username, and [`MAX_FAILURES_PER_ADDRESS`] per address, are checked in a
//! window; further attempts are refused with 429 until the oldest one
//! leaves the window.
//!
//! An attempt is counted *before* its password is hashed
//! ([`Throttle::begin`]), so attempts still in flight count too and a burst
//! of parallel log-ins cannot slip past the limit. A wrong password leaves
//! its attempt counted as a failure; a right one (or an attempt that never
//! got to check the password) gives it back ([`Throttle::release`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(15 * 60);
pub const MAX_FAILURES_PER_USER: usize = 5;
pub const MAX_FAILURES_PER_ADDRESS: usize = 20;

#[derive(Default)]
pub struct Throttle {
    /// Per key, the times of its failed and in-flight attempts, oldest first.
    attempts: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// One counted log-in attempt: the keys it was counted under, and when.
#[derive(Debug)]
pub struct Attempt {
    keys: Vec<String>,
    at: Instant,
}

impl Throttle {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        self.attempts.lock().expect("throttle lock")
    }

    /// Counts an attempt under every `(key, max)`, or — when any key already
    /// has `max` attempts in the window — under none, and says how long to
    /// wait. Checking and counting happen under one lock.
    pub fn begin(&self, limits: &[(&str, usize)]) -> Result<Attempt, Duration> {
        let now = Instant::now();
        let mut attempts = self.lock();
        let wait = limits.iter().filter_map(|&(key, max)| wait_for(&mut attempts, key, max, now)).max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        for &(key, _) in limits {
            attempts.entry(key.to_string()).or_default().push_back(now);
        }
        Ok(Attempt { keys: limits.iter().map(|(key, _)| key.to_string()).collect(), at: now })
    }

    /// Gives an attempt back: it was not a failure.
    pub fn release(&self, attempt: Attempt) {
        let mut attempts = self.lock();
        for key in &attempt.keys {
            let Some(list) = attempts.get_mut(key) else { continue };
            if let Some(i) = list.iter().rposition(|t| *t == attempt.at) {
                list.remove(i);
            }
            if list.is_empty() {
                attempts.remove(key);
            }
        }
    }

    /// Forgets entries whose attempts all left the window.
    pub fn prune(&self) {
        let now = Instant::now();
        self.lock().retain(|_, list| list.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
    }
}

/// `Some(wait)` when `key` has `max` attempts in the window (dropping those
/// that left it).
fn wait_for(attempts: &mut HashMap<String, VecDeque<Instant>>, key: &str, max: usize, now: Instant) -> Option<Duration> {
    let list = attempts.get_mut(key)?;
    while list.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
        list.pop_front();
    }
    if list.is_empty() {
        attempts.remove(key);
        return None;
    }
    (list.len() >= max).then(|| WINDOW.saturating_sub(now.duration_since(list[0])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit() {
        let t = Throttle::default();
        for _ in 0..4 {
            t.begin(&[("user:ann", 5)]).expect("under the limit");
        }
        t.begin(&[("user:ann", 5)]).expect("the fifth attempt");
        let wait = t.begin(&[("user:ann", 5)]).expect_err("blocked");
        assert!(wait <= WINDOW && wait > WINDOW - Duration::from_secs(5));
        assert!(t.begin(&[("user:bob", 5)]).is_ok());
    }

    #[test]
    fn attempts_in_flight_count_and_released_ones_do_not() {
        let t = Throttle::default();
        let in_flight: Vec<Attempt> = (0..2).map(|_| t.begin(&[("user:ann", 2)]).expect("a slot")).collect();
        assert!(t.begin(&[("user:ann", 2)]).is_err(), "two unfinished attempts fill the window");
        for attempt in in_flight {
            t.release(attempt);
        }
        assert!(t.begin(&[("user:ann", 2)]).is_ok(), "released attempts are not failures");
    }

    #[test]
    fn a_refused_attempt_counts_under_no_key() {
        let t = Throttle::default();
        t.begin(&[("addr:1", 1)]).expect("a slot");
        assert!(t.begin(&[("user:ann", 5), ("addr:1", 1)]).is_err());
        for _ in 0..5 {
            t.begin(&[("user:ann", 5)]).expect("user:ann was not counted by the refused attempt");
        }
    }
}
