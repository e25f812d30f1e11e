//! An exponentially decaying rate: "how busy is this shard lately", on the injected
//! clock.
//!
//! Guarantees: the estimate is a pure function of the recorded `(time, weight)`
//! pairs and the time it is read at, so it is deterministic on a
//! [`ManualClock`](crate::clock::ManualClock). Under a constant rate `r` the
//! estimate converges to `r`; when recording stops it halves every `half_life`.
//!
//! Not guaranteed: it is an estimate, not a count — a burst shows up at once and
//! fades over a few half-lives. Times that go backwards (a recorder that read the
//! clock before another one) count as "no time passed", never as negative decay.

use std::time::{Duration, Instant};

/// Smallest half-life accepted: shorter ones make the estimate pure noise.
pub const MIN_HALF_LIFE: Duration = Duration::from_millis(1);

/// An exponentially decaying event rate, in weight units per second.
#[derive(Debug, Clone, PartialEq)]
pub struct DecayingRate {
    /// `half_life / ln 2`, in seconds: the time constant of the decay.
    tau_secs: f64,
    /// The decayed sum of weights as of `updated_at`.
    sum: f64,
    updated_at: Instant,
}

impl DecayingRate {
    /// A rate with the given half-life (at least [`MIN_HALF_LIFE`]), starting at
    /// `initial_rate` per second at `now`.
    pub fn new(half_life: Duration, now: Instant, initial_rate: f64) -> Self {
        let half_life = half_life.max(MIN_HALF_LIFE);
        let tau_secs = half_life.as_secs_f64() / std::f64::consts::LN_2;
        let initial_rate = if initial_rate.is_finite() {
            initial_rate.max(0.0)
        } else {
            0.0
        };
        Self {
            tau_secs,
            sum: initial_rate * tau_secs,
            updated_at: now,
        }
    }

    /// Records `weight` units at `now`; negative or non-finite weights are ignored.
    pub fn record(&mut self, now: Instant, weight: f64) {
        self.decay_to(now);
        if weight.is_finite() && weight > 0.0 {
            self.sum += weight;
        }
    }

    /// The estimated rate per second at `now`.
    pub fn per_second(&self, now: Instant) -> f64 {
        self.decayed_sum(now) / self.tau_secs
    }

    fn decayed_sum(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated_at).as_secs_f64();
        self.sum * (-elapsed / self.tau_secs).exp()
    }

    fn decay_to(&mut self, now: Instant) {
        if now > self.updated_at {
            self.sum = self.decayed_sum(now);
            self.updated_at = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    #[test]
    fn converges_to_a_constant_rate_and_halves_per_half_life() {
        let clock = ManualClock::new();
        let mut rate = DecayingRate::new(Duration::from_secs(1), clock.now(), 0.0);
        assert_eq!(rate.per_second(clock.now()), 0.0);
        // 200 events per second for 20 half-lives.
        for _ in 0..4_000 {
            clock.advance(Duration::from_millis(5));
            rate.record(clock.now(), 1.0);
        }
        let steady = rate.per_second(clock.now());
        assert!((190.0..210.0).contains(&steady), "steady {steady}");
        clock.advance(Duration::from_secs(1));
        let halved = rate.per_second(clock.now());
        assert!((halved / steady - 0.5).abs() < 1e-9, "{halved} vs {steady}");
        clock.advance(Duration::from_secs(10));
        assert!(rate.per_second(clock.now()) < steady / 1000.0);
    }

    #[test]
    fn initial_rate_is_reported_and_bad_weights_are_ignored() {
        let clock = ManualClock::new();
        let mut rate = DecayingRate::new(Duration::from_secs(2), clock.now(), 50.0);
        assert!((rate.per_second(clock.now()) - 50.0).abs() < 1e-9);
        rate.record(clock.now(), f64::NAN);
        rate.record(clock.now(), -5.0);
        assert!((rate.per_second(clock.now()) - 50.0).abs() < 1e-9);
    }

    #[test]
    fn a_stale_timestamp_never_inflates_the_estimate() {
        let clock = ManualClock::new();
        let early = clock.now();
        clock.advance(Duration::from_secs(3));
        let mut rate = DecayingRate::new(Duration::from_secs(1), clock.now(), 10.0);
        rate.record(early, 0.0);
        assert!((rate.per_second(clock.now()) - 10.0).abs() < 1e-9);
    }
}
