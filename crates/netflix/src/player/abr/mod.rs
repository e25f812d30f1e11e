//! Adaptive bitrate: which rendition the next segment is fetched at.
//!
//! Two algorithms, both buffer-based, selectable by [`AbrKind`]:
//!
//! - [`Bba`] — BBA-0 of Huang et al., "A Buffer-Based Approach to Rate Adaptation"
//!   (SIGCOMM 2014): below a *reservoir* the lowest rate, above reservoir +
//!   *cushion* the highest, in between a linear map from buffer level to rate, with
//!   the paper's hysteresis (the rate changes only when the map crosses the next
//!   rung up or down).
//! - [`Bola`] — BOLA-BASIC of Spiteri, Urgaonkar and Sitaraman, "BOLA: Near-Optimal
//!   Bitrate Adaptation for Online Videos" (INFOCOM 2016): each segment maximises
//!   `(V·(υ_m + γp) − Q) / S_m` (Lyapunov drift-plus-penalty over the buffer `Q`,
//!   utility `υ_m = ln(S_m / S_1)`), with `V` and `γp` derived from the buffer size
//!   as dash.js does, plus BOLA-O's guard against oscillation (never step up past
//!   what the measured throughput sustains, unless already there).
//!
//! Both are deterministic functions of their input and their own state; neither
//! reads a clock. The buffer model and the waits between segments are the
//! player's ([`crate::player::session`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

mod bba;
mod bola;

pub use bba::Bba;
pub use bola::Bola;

/// What an algorithm decides from.
#[derive(Debug, Clone, Copy)]
pub struct AbrInput<'a> {
    /// The ladder's bitrates, ascending, bits per second.
    pub bitrates: &'a [u64],
    /// Seconds of media buffered now.
    pub buffer: Duration,
    /// The buffer's capacity.
    pub buffer_max: Duration,
    /// The next segment's duration.
    pub segment: Duration,
    /// The rendition of the previous segment (`None` before the first).
    pub last: Option<usize>,
    /// The throughput estimate from the segments so far, bits per second.
    pub throughput_bps: Option<f64>,
}

/// What an algorithm decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbrDecision {
    /// The rendition's index in the ladder.
    pub rendition: usize,
    /// Wait this long before fetching (BOLA's pause when the buffer is above its
    /// target for the chosen rendition).
    pub wait: Duration,
}

/// An ABR algorithm.
pub trait Abr: Send + fmt::Debug {
    /// The algorithm's name, as reports show it.
    fn name(&self) -> &'static str;
    /// The next segment's rendition.
    fn choose(&mut self, input: &AbrInput<'_>) -> AbrDecision;
}

/// The algorithms, by name (`bba`, `bola`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AbrKind {
    #[default]
    Bba,
    Bola,
}

impl AbrKind {
    /// A fresh instance for a player whose buffer holds `buffer_max`.
    pub fn build(self, buffer_max: Duration) -> Box<dyn Abr> {
        match self {
            Self::Bba => Box::new(Bba::for_buffer(buffer_max)),
            Self::Bola => Box::new(Bola::for_buffer(buffer_max)),
        }
    }
}

impl FromStr for AbrKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "bba" => Ok(Self::Bba),
            "bola" => Ok(Self::Bola),
            other => Err(format!("unknown ABR `{other}`; expected bba or bola")),
        }
    }
}

impl fmt::Display for AbrKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bba => "bba",
            Self::Bola => "bola",
        })
    }
}

/// The highest rung whose bitrate is at most `bps` (the lowest if none is).
pub(crate) fn highest_at_most(bitrates: &[u64], bps: f64) -> usize {
    bitrates.iter().rposition(|&b| b as f64 <= bps).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const LADDER: [u64; 4] = [400_000, 1_200_000, 3_000_000, 6_000_000];

    pub(super) fn input(
        buffer_s: f64,
        last: Option<usize>,
        tput: Option<f64>,
    ) -> AbrInput<'static> {
        AbrInput {
            bitrates: &LADDER,
            buffer: Duration::from_secs_f64(buffer_s),
            buffer_max: Duration::from_secs(30),
            segment: Duration::from_secs(4),
            last,
            throughput_bps: tput,
        }
    }

    #[test]
    fn kinds_parse_and_print() {
        for kind in [AbrKind::Bba, AbrKind::Bola] {
            assert_eq!(kind.to_string().parse::<AbrKind>().unwrap(), kind);
            assert_eq!(kind.build(Duration::from_secs(30)).name(), kind.to_string());
        }
        assert!("mpc".parse::<AbrKind>().is_err());
    }

    #[test]
    fn both_start_low_and_end_high_as_the_buffer_fills() {
        for kind in [AbrKind::Bba, AbrKind::Bola] {
            let mut abr = kind.build(Duration::from_secs(30));
            assert_eq!(abr.choose(&input(0.0, None, None)).rendition, 0, "{kind}");
            let mut last = 0;
            let mut seen = vec![];
            for tenth in 0..=300 {
                let d = abr.choose(&input(f64::from(tenth) / 10.0, Some(last), Some(1e9)));
                // Monotone: a fuller buffer never lowers the rate.
                assert!(d.rendition >= last, "{kind} at {tenth}: {d:?} after {last}");
                last = d.rendition;
                seen.push(last);
            }
            assert_eq!(last, LADDER.len() - 1, "{kind}");
            seen.dedup();
            assert!(
                seen.len() >= 3,
                "{kind} passes through the ladder: {seen:?}"
            );
        }
    }

    #[test]
    fn highest_at_most_picks_the_rung_under_the_rate() {
        assert_eq!(highest_at_most(&LADDER, 100.0), 0);
        assert_eq!(highest_at_most(&LADDER, 1_200_000.0), 1);
        assert_eq!(highest_at_most(&LADDER, 5e6), 2);
        assert_eq!(highest_at_most(&LADDER, 1e12), 3);
    }
}
