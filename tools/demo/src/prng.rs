//! A tiny xorshift64* generator: enough to draw latency jitter and error decisions for
//! a demo without pulling in `rand`. Not for anything security related.

use std::time::{SystemTime, UNIX_EPOCH};

/// xorshift64* (Vigna, 2014).
#[derive(Debug, Clone)]
pub struct Xorshift64 {
    state: u64,
}

impl Xorshift64 {
    /// A generator seeded from `seed`; any value, zero included, gives a usable stream.
    pub fn new(seed: u64) -> Self {
        // splitmix64 scrambles close seeds (consecutive pids) apart and never yields the
        // all-zero state xorshift cannot leave.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self {
            state: if z == 0 { 1 } else { z },
        }
    }

    /// A generator seeded from the process id and the clock, so that a thousand
    /// instances started in the same millisecond still draw different streams.
    pub fn from_entropy() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self::new(nanos ^ (u64::from(std::process::id()) << 32))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `true` with probability `p` (clamped to [0, 1]): never for 0, always for 1.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Uniform in [-half_width, +half_width].
    pub fn jitter(&mut self, half_width: f64) -> f64 {
        (self.next_f64() * 2.0 - 1.0) * half_width
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_in_range_and_roughly_uniform() {
        let mut rng = Xorshift64::new(0);
        let n = 100_000;
        let mut hits = 0;
        let mut sum = 0.0;
        for _ in 0..n {
            let u = rng.next_f64();
            assert!((0.0..1.0).contains(&u));
            sum += u;
            let j = rng.jitter(3.0);
            assert!((-3.0..=3.0).contains(&j));
            hits += usize::from(rng.chance(0.25));
        }
        assert!((sum / n as f64 - 0.5).abs() < 0.01);
        assert!((hits as f64 / n as f64 - 0.25).abs() < 0.01);
        assert!(!Xorshift64::new(1).chance(0.0));
        assert!(Xorshift64::new(1).chance(1.0));
    }

    #[test]
    fn close_seeds_give_different_streams() {
        assert_ne!(
            Xorshift64::new(1000).next_u64(),
            Xorshift64::new(1001).next_u64()
        );
    }
}
