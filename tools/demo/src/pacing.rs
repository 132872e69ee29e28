//! Token-bucket pacing for the load generator, as a pure state machine over explicit
//! instants so that it is tested without sleeping.

use std::time::{Duration, Instant};

/// Tokens accrue at `rate` per second up to `burst`; each request takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket refilling at `rate` tokens per second (must be positive), holding at most
    /// `burst` (at least 1), starting with one token at `now`.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        assert!(
            rate > 0.0 && rate.is_finite(),
            "rate must be positive, got {rate}"
        );
        let burst = burst.max(1.0);
        Self {
            rate,
            burst,
            tokens: 1.0,
            last: now,
        }
    }

    /// A burst that absorbs timer coarseness (tokio sleeps in whole milliseconds) and
    /// scheduling hiccups of up to 50 ms without letting a stall turn into a flood.
    pub fn default_burst(rate: f64) -> f64 {
        (rate / 20.0).max(1.0)
    }

    /// Takes a token if one is available at `now`; otherwise says how long until one is.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drains every token available at each of `steps` instants `dt` apart.
    fn taken_over(bucket: &mut TokenBucket, start: Instant, dt: Duration, steps: u32) -> u32 {
        let mut taken = 0;
        for step in 0..=steps {
            while bucket.try_take(start + dt * step).is_ok() {
                taken += 1;
            }
        }
        taken
    }

    #[test]
    fn paces_at_the_rate_whatever_the_polling_granularity() {
        let t0 = Instant::now();
        for dt_ms in [1, 7, 40] {
            let mut bucket = TokenBucket::new(200.0, TokenBucket::default_burst(200.0), t0);
            let steps = 10_000 / dt_ms; // 10 s
            let taken = taken_over(
                &mut bucket,
                t0,
                Duration::from_millis(u64::from(dt_ms)),
                steps,
            );
            assert!((1995..=2011).contains(&taken), "dt={dt_ms}ms: {taken}");
        }
    }

    #[test]
    fn a_stall_yields_at_most_one_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(100.0, 5.0, t0);
        assert!(bucket.try_take(t0).is_ok());
        let wait = bucket.try_take(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.01).abs() < 1e-9, "{wait:?}");
        assert_eq!(
            taken_over(&mut bucket, t0 + Duration::from_secs(60), Duration::ZERO, 0),
            5
        );
    }
}
