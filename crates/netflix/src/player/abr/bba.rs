//! BBA-0 (Huang et al. 2014), the rate map with its hysteresis.
//!
//! The paper's map over a 240 s buffer has a 90 s reservoir; players here hold
//! tens of seconds, so the reservoir and cushion are fractions of the buffer:
//! reservoir = 20 % (at least one 2 s segment's worth), cushion = 60 %, leaving the
//! top 20 % as the upper reservoir where the highest rate is always chosen.

use std::time::Duration;

use super::{Abr, AbrDecision, AbrInput};

/// Share of the buffer below which the lowest rate is chosen.
pub const RESERVOIR_SHARE: f64 = 0.2;
/// Share of the buffer over which the rate climbs from lowest to highest.
pub const CUSHION_SHARE: f64 = 0.6;

/// BBA-0.
#[derive(Debug, Clone, PartialEq)]
pub struct Bba {
    reservoir: Duration,
    cushion: Duration,
}

impl Bba {
    /// Explicit reservoir and cushion.
    pub fn new(reservoir: Duration, cushion: Duration) -> Self {
        Self {
            reservoir,
            cushion: cushion.max(Duration::from_millis(1)),
        }
    }

    /// Reservoir and cushion as shares of `buffer_max`.
    pub fn for_buffer(buffer_max: Duration) -> Self {
        Self::new(
            buffer_max
                .mul_f64(RESERVOIR_SHARE)
                .max(Duration::from_secs(2).min(buffer_max / 2)),
            buffer_max.mul_f64(CUSHION_SHARE),
        )
    }

    /// f(B): the rate the buffer level maps to, bits per second.
    fn rate_map(&self, bitrates: &[u64], buffer: Duration) -> f64 {
        let (low, high) = (bitrates[0] as f64, bitrates[bitrates.len() - 1] as f64);
        let into = buffer.saturating_sub(self.reservoir).as_secs_f64() / self.cushion.as_secs_f64();
        low + (high - low) * into.clamp(0.0, 1.0)
    }
}

impl Abr for Bba {
    fn name(&self) -> &'static str {
        "bba"
    }

    fn choose(&mut self, input: &AbrInput<'_>) -> AbrDecision {
        let rates = input.bitrates;
        let top = rates.len() - 1;
        let decide = |rendition| AbrDecision {
            rendition,
            wait: Duration::ZERO,
        };
        let Some(previous) = input.last.map(|l| l.min(top)) else {
            return decide(0);
        };
        if input.buffer <= self.reservoir {
            return decide(0);
        }
        if input.buffer >= self.reservoir + self.cushion {
            return decide(top);
        }
        let f = self.rate_map(rates, input.buffer);
        let up = rates[(previous + 1).min(top)] as f64;
        let down = rates[previous.saturating_sub(1)] as f64;
        let next = if previous < top && f >= up {
            // max{R_i : R_i < f(B)}
            rates.iter().rposition(|&r| (r as f64) < f).unwrap_or(0)
        } else if previous > 0 && f <= down {
            // min{R_i : R_i > f(B)}
            rates.iter().position(|&r| (r as f64) > f).unwrap_or(top)
        } else {
            previous
        };
        decide(next)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{LADDER, input};
    use super::*;

    #[test]
    fn reservoir_cushion_and_hysteresis() {
        let mut bba = Bba::for_buffer(Duration::from_secs(30));
        // reservoir 6 s, cushion 18 s.
        assert_eq!(bba.choose(&input(5.0, Some(3), None)).rendition, 0);
        assert_eq!(bba.choose(&input(24.0, Some(0), None)).rendition, 3);
        // f(15 s) = 0.4 + 5.6 × 9/18 = 3.2 Mbit/s: from rung 1 the step up is 3.0,
        // crossed, so max{R < 3.2} = rung 2.
        assert_eq!(bba.choose(&input(15.0, Some(1), None)).rendition, 2);
        // From rung 3 the step down (3.0) is not crossed by 3.2: stay.
        assert_eq!(bba.choose(&input(15.0, Some(3), None)).rendition, 3);
        // f(8 s) = 1.02 Mbit/s; from rung 3 it is under the step down: min{R > f} = 1.
        assert_eq!(bba.choose(&input(8.0, Some(3), None)).rendition, 1);
        assert_eq!(LADDER.len(), 4);
    }
}
