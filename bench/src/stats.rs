//! Latency percentiles and number formatting.
//!
//! Latencies are kept as whole microseconds in a plain vector and sorted
//! once at the end of a phase: a few million samples sort in well under a
//! second, and the result is exact (no histogram buckets).

use std::time::Duration;

/// Exact percentiles of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    pub p50: u32,
    pub p99: u32,
    pub p999: u32,
    pub max: u32,
}

impl Percentiles {
    pub fn of(mut samples: Vec<u32>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
        Self { p50: at(0.50), p99: at(0.99), p999: at(0.999), max: *samples.last().expect("not empty") }
    }

    /// "p50 / p99 / p99.9 / max" in milliseconds.
    pub fn summary(&self) -> String {
        format!("{} / {} / {} / {}", ms(self.p50), ms(self.p99), ms(self.p999), ms(self.max))
    }
}

/// Microseconds as milliseconds with sensible precision.
pub fn ms(us: u32) -> String {
    let ms = f64::from(us) / 1000.0;
    if ms < 10.0 { format!("{ms:.2} ms") } else if ms < 100.0 { format!("{ms:.1} ms") } else { format!("{ms:.0} ms") }
}

pub fn dur_ms(d: Duration) -> String {
    ms(u32::try_from(d.as_micros()).unwrap_or(u32::MAX))
}

/// 12345.6 → "12,346".
pub fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// CPU time per item, in microseconds with two decimals.
pub fn cpu_per(cpu: Duration, items: u64) -> f64 {
    if items == 0 { f64::NAN } else { cpu.as_secs_f64() * 1e6 / items as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_exact() {
        let p = Percentiles::of((1..=1000).rev().collect());
        assert_eq!((p.p50, p.p99, p.p999, p.max), (500, 990, 999, 1000));
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }
}
