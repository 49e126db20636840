//! A token bucket: `per_second` tokens flow in, up to `burst` are kept;
//! each action takes one.

use std::time::Instant;

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
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.rate.per_second;
        self.tokens = (self.tokens + earned).min(f64::from(self.rate.burst));
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_refuses() {
        let mut limiter = RateLimiter::new(SendRate { per_second: 0.001, burst: 3 });
        assert!(limiter.allow() && limiter.allow() && limiter.allow());
        assert!(!limiter.allow());
    }
}
