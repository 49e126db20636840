//! A token bucket: `per_second` tokens flow in, up to `burst` are kept;
//! each action takes one. [`KeyedLimiter`] keeps one bucket per key (a
//! user, an address).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket's refill rate and size.
#[derive(Debug, Clone, Copy)]
pub struct SendRate {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug)]
pub struct RateLimiter {
    rate: SendRate,
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    pub fn new(rate: SendRate) -> Self {
        Self { rate, tokens: f64::from(rate.burst), refilled: Instant::now() }
    }

    /// Takes a token if one is there.
    pub fn allow(&mut self) -> bool {
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.rate.per_second;
        self.tokens = (self.tokens + earned).min(f64::from(self.rate.burst));
        self.refilled = now;
    }

    /// How long until a token is there (zero if one is now).
    pub fn wait(&mut self) -> Duration {
        self.refill();
        let missing = (1.0 - self.tokens).max(0.0);
        Duration::from_secs_f64(missing / self.rate.per_second)
    }

    /// Whether the bucket is full (it can be forgotten and made anew).
    fn is_full(&mut self) -> bool {
        self.refill();
        self.tokens >= f64::from(self.rate.burst)
    }
}

/// Buckets kept before full ones are swept out.
const SWEEP_ABOVE: usize = 10_000;

/// One token bucket per key, made on first use; full buckets are forgotten.
pub struct KeyedLimiter {
    rate: SendRate,
    buckets: Mutex<HashMap<String, RateLimiter>>,
}

impl KeyedLimiter {
    pub fn new(rate: SendRate) -> Self {
        Self { rate, buckets: Mutex::new(HashMap::new()) }
    }

    /// How long until `key`'s bucket has a token (zero: it has one now).
    pub fn wait(&self, key: &str) -> Duration {
        self.with_bucket(key, RateLimiter::wait)
    }

    /// Takes a token from `key`'s bucket; `false` if it had none.
    pub fn take(&self, key: &str) -> bool {
        self.with_bucket(key, RateLimiter::allow)
    }

    fn with_bucket<T>(&self, key: &str, f: impl FnOnce(&mut RateLimiter) -> T) -> T {
        let mut buckets = self.buckets.lock().expect("rate buckets");
        if buckets.len() > SWEEP_ABOVE {
            buckets.retain(|_, bucket| !bucket.is_full());
        }
        f(buckets.entry(key.to_string()).or_insert_with(|| RateLimiter::new(self.rate)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_buckets_are_separate() {
        let limiter = KeyedLimiter::new(SendRate { per_second: 0.001, burst: 2 });
        assert!(limiter.take("ann") && limiter.take("ann"));
        assert!(!limiter.take("ann"));
        let wait = limiter.wait("ann");
        assert!(wait > Duration::from_secs(900), "{wait:?}");
        assert_eq!(limiter.wait("bob"), Duration::ZERO);
        assert!(limiter.take("bob"));
    }

    #[test]
    fn allows_the_burst_then_refuses() {
        let mut limiter = RateLimiter::new(SendRate { per_second: 0.001, burst: 3 });
        assert!(limiter.allow() && limiter.allow() && limiter.allow());
        assert!(!limiter.allow());
    }
}
