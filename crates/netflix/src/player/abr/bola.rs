//! BOLA-BASIC (Spiteri et al. 2016) with dash.js's parameters and BOLA-O.
//!
//! Utilities are `υ_m = ln(S_m / S_1) + 1` (shifted so the lowest is 1, as dash.js
//! does). With `Q_low` the buffer level that maps to the lowest rendition and
//! `Q_high` the level that maps to the highest, dash.js solves for
//!
//! ```text
//! γp = (υ_max − 1) / (Q_high / Q_low − 1)        Vp = Q_low / γp
//! ```
//!
//! and every segment takes `argmax_m (Vp·(υ_m + γp) − Q) / S_m` (Q in seconds).
//! Here `Q_low` is BBA's reservoir (20 % of the buffer, at least 2 s) and `Q_high`
//! 80 % of the buffer, so the two algorithms span the same levels.
//!
//! When the buffer is above `Vp·(υ_m + γp)` for the chosen rendition, BOLA waits
//! for it to drain there before fetching (its "placeholder" pause).
//!
//! BOLA-O: once playing, a step **up** is capped at the highest rendition the
//! throughput estimate sustains, or the previous rendition if that is higher —
//! buffer-based choices otherwise oscillate on a link between two rungs.

use std::time::Duration;

use super::{Abr, AbrDecision, AbrInput, highest_at_most};
use crate::player::abr::bba::RESERVOIR_SHARE;

/// Share of the buffer at which the highest rendition is chosen.
pub const HIGH_SHARE: f64 = 0.8;

/// BOLA-BASIC + BOLA-O.
#[derive(Debug, Clone, PartialEq)]
pub struct Bola {
    low: Duration,
    high: Duration,
}

impl Bola {
    /// The buffer levels that map to the lowest and the highest rendition.
    pub fn new(low: Duration, high: Duration) -> Self {
        let low = low.max(Duration::from_millis(100));
        Self {
            low,
            high: high.max(low + Duration::from_millis(100)),
        }
    }

    /// Levels as shares of `buffer_max` (see the module docs).
    pub fn for_buffer(buffer_max: Duration) -> Self {
        Self::new(
            buffer_max
                .mul_f64(RESERVOIR_SHARE)
                .max(Duration::from_secs(2).min(buffer_max / 2)),
            buffer_max.mul_f64(HIGH_SHARE),
        )
    }
}

impl Abr for Bola {
    fn name(&self) -> &'static str {
        "bola"
    }

    fn choose(&mut self, input: &AbrInput<'_>) -> AbrDecision {
        let rates = input.bitrates;
        let lowest = rates[0] as f64;
        let utility = |m: usize| (rates[m] as f64 / lowest).ln() + 1.0;
        let top = rates.len() - 1;
        let start = |rendition| AbrDecision {
            rendition,
            wait: Duration::ZERO,
        };
        let Some(last) = input.last.map(|l| l.min(top)) else {
            // Nothing buffered and nothing measured: the fastest start.
            return start(0);
        };
        if top == 0 {
            return start(0);
        }
        let (low, high) = (self.low.as_secs_f64(), self.high.as_secs_f64());
        let gp = (utility(top) - 1.0) / (high / low - 1.0);
        let vp = low / gp;
        let q = input.buffer.as_secs_f64();
        let score = |m: usize| (vp * (utility(m) + gp) - q) / rates[m] as f64;
        let mut chosen = (0..=top)
            .max_by(|&a, &b| score(a).total_cmp(&score(b)))
            .unwrap_or(0);
        if chosen > last
            && let Some(tput) = input.throughput_bps
        {
            let sustained = highest_at_most(rates, tput);
            if chosen > sustained {
                chosen = sustained.max(last);
            }
        }
        let target = vp * (utility(chosen) + gp);
        let wait = if q > target {
            Duration::from_secs_f64(q - target)
        } else {
            Duration::ZERO
        };
        AbrDecision {
            rendition: chosen,
            wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::input;
    use super::*;

    #[test]
    fn lowest_at_the_low_level_highest_at_the_high_one() {
        let mut bola = Bola::for_buffer(Duration::from_secs(30));
        // low = 6 s, high = 24 s.
        assert_eq!(bola.choose(&input(6.0, Some(2), None)).rendition, 0);
        assert_eq!(bola.choose(&input(24.0, Some(0), None)).rendition, 3);
        let mid = bola.choose(&input(15.0, Some(0), None)).rendition;
        assert!((1..3).contains(&mid), "{mid}");
    }

    #[test]
    fn bola_o_caps_a_step_up_at_the_throughput_and_waits_when_full() {
        let mut bola = Bola::for_buffer(Duration::from_secs(30));
        // The buffer says top, the link sustains 1.5 Mbit/s: rung 1, not 3.
        assert_eq!(bola.choose(&input(24.0, Some(0), Some(1.5e6))).rendition, 1);
        // Already at the top: not pushed down by the cap.
        assert_eq!(bola.choose(&input(24.0, Some(3), Some(1.5e6))).rendition, 3);
        // A buffer well above the top's target (8 s + Vp ≈ 10.2 s): pause until
        // it drains there.
        let mut small = Bola::new(Duration::from_secs(2), Duration::from_secs(8));
        let d = small.choose(&input(20.0, Some(3), Some(1e9)));
        assert_eq!(d.rendition, 3);
        assert!(
            d.wait > Duration::from_secs(9) && d.wait < Duration::from_secs(11),
            "{d:?}"
        );
        assert_eq!(
            small.choose(&input(9.0, Some(3), Some(1e9))).wait,
            Duration::ZERO
        );
    }
}
