//! The simulator: a session, or a fleet of them, on a simulated clock.
//!
//! Nothing here reads a clock or sleeps: a session's time is a number that the
//! simulator advances by what each request would take on the trace — one round
//! trip ([`NetworkTrace::latency_at`]) plus the transfer
//! ([`NetworkTrace::transfer_time`]) — and by the player's waits. Every random
//! choice (where in the trace a player starts, each segment's size around its
//! nominal `bitrate × duration`) comes from the seed through a stable hash, so
//! **the same configuration and seed give the same report**, on any machine.
//!
//! A session makes the requests a real player makes: `POST /v1/playback`, the
//! master playlist, each rendition's media playlist the first time it is needed,
//! and the segments. An [`EdgeFailure`] kills the session's edge at a moment: a
//! request in flight then, or sent after, fails one round trip plus `detect`
//! later (0 for a refused connection, a timeout for a black hole); the player
//! fails over — a new `POST /v1/playback` with its session, the new edge's master
//! playlist, its media playlist — and fetches the failed segment again there.
//! The new edge does not fail.
//!
//! Not modelled: CDN capacity and queueing (each player has its own link and the
//! servers answer instantly), players sharing a bottleneck.

use std::sync::Arc;
use std::time::Duration;

use casebook_kit::partition::hashing::fmix64;

use super::Ladder;
use super::report::{FleetReport, FleetSetup, FleetStats, SessionReport};
use super::session::{Action, Player, PlayerConfig};
use super::trace::NetworkTrace;

/// Bytes of a `POST /v1/playback` answer.
pub const GRANT_BYTES: u64 = 512;
/// Bytes of a master playlist.
pub const MASTER_BYTES: u64 = 1_024;
/// Bytes a media playlist has per segment (a signed URI and its `#EXTINF`).
pub const MEDIA_BYTES_PER_SEGMENT: u64 = 160;

/// The session's edge dies at `at` (session time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeFailure {
    pub at: Duration,
    /// Beyond one round trip, how long a request to the dead edge takes to fail.
    pub detect: Duration,
}

/// One simulated session.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub player: PlayerConfig,
    pub ladder: Ladder,
    pub trace: Arc<NetworkTrace>,
    pub seed: u64,
    /// Segment sizes vary by up to this share around the nominal (VBR).
    pub vbr: f64,
    pub failure: Option<EdgeFailure>,
}

impl SimConfig {
    /// A session of `ladder` on `trace` with the default player, ±20 % VBR.
    pub fn new(ladder: Ladder, trace: Arc<NetworkTrace>, seed: u64) -> Self {
        Self {
            player: PlayerConfig::default(),
            ladder,
            trace,
            seed,
            vbr: 0.2,
            failure: None,
        }
    }
}

/// A uniform number in [0, 1) from a hash.
fn unit(hash: u64) -> f64 {
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// A segment's size: nominal `bitrate × duration / 8`, varied by the seed.
pub fn segment_bytes(
    seed: u64,
    segment: usize,
    rendition: usize,
    bitrate_bps: u64,
    duration: Duration,
    vbr: f64,
) -> u64 {
    let nominal = bitrate_bps as f64 * duration.as_secs_f64() / 8.0;
    let h = fmix64(seed ^ fmix64(segment as u64 ^ ((rendition as u64) << 40) ^ 0x5EED));
    let factor = 1.0 + vbr.clamp(0.0, 0.9) * (2.0 * unit(h) - 1.0);
    (nominal * factor).round().max(1.0) as u64
}

struct Run<'a> {
    config: &'a SimConfig,
    offset: Duration,
    /// The current edge's death, until the player has failed over.
    dead_at: Option<Duration>,
    has_playlist: Vec<bool>,
}

/// A request that failed at `at`, the failure having begun at `began`.
struct Failed {
    at: Duration,
    began: Duration,
}

impl Run<'_> {
    fn took(&self, t: Duration, bytes: u64) -> Duration {
        let trace = &self.config.trace;
        let latency = trace.latency_at(self.offset + t);
        latency + trace.transfer_time(self.offset + t + latency, bytes)
    }

    /// A request to the edge sent at `t`: when it completes, or when it fails.
    fn edge_request(&self, t: Duration, bytes: u64) -> Result<Duration, Failed> {
        let end = t + self.took(t, bytes);
        let detect = |from: Duration| {
            from + self.config.trace.latency_at(self.offset + from) + self.failure_detect()
        };
        match self.dead_at {
            Some(dead) if t >= dead => Err(Failed {
                at: detect(t),
                began: t,
            }),
            Some(dead) if end > dead => Err(Failed {
                at: detect(dead),
                began: dead,
            }),
            _ => Ok(end),
        }
    }

    fn failure_detect(&self) -> Duration {
        self.config.failure.map_or(Duration::ZERO, |f| f.detect)
    }

    /// A failed edge request: re-steer and fetch the new master playlist.
    fn fail_over(&mut self, player: &mut Player, failed: Failed) -> Duration {
        player.fetch_failed(failed.at, "edge_transport");
        let mut t = failed.at;
        t += self.took(t, GRANT_BYTES);
        t += self.took(t, MASTER_BYTES);
        self.dead_at = None;
        self.has_playlist.fill(false);
        player.failed_over(t, t - failed.began);
        t
    }
}

/// Plays one session to its end.
pub fn simulate(config: &SimConfig) -> SessionReport {
    let ladder = config.ladder.clone();
    let media_bytes = MEDIA_BYTES_PER_SEGMENT * ladder.segments().len() as u64 + 128;
    let mut run = Run {
        config,
        offset: Duration::from_nanos(
            fmix64(config.seed ^ 0x0FF5E7) % config.trace.period().as_nanos().max(1) as u64,
        ),
        dead_at: config.failure.map(|f| f.at),
        has_playlist: vec![false; ladder.bitrates().len()],
    };
    let mut player = Player::new(config.player.clone(), ladder);
    // The play request goes to the playback API, which does not fail here.
    let mut t = run.took(Duration::ZERO, GRANT_BYTES);
    t = match run.edge_request(t, MASTER_BYTES) {
        Ok(end) => end,
        Err(failed) => run.fail_over(&mut player, failed),
    };
    loop {
        match player.next_action(t) {
            Action::Done => break,
            Action::Wait(d) => t += d,
            Action::Fetch { segment, rendition } => {
                let requested = t;
                if !run.has_playlist[rendition] {
                    match run.edge_request(t, media_bytes) {
                        Ok(end) => {
                            t = end;
                            run.has_playlist[rendition] = true;
                        }
                        Err(failed) => {
                            t = run.fail_over(&mut player, failed);
                            continue;
                        }
                    }
                }
                let bytes = segment_bytes(
                    config.seed,
                    segment,
                    rendition,
                    player.ladder().bitrates()[rendition],
                    player.ladder().segments()[segment],
                    config.vbr,
                );
                match run.edge_request(t, bytes) {
                    Ok(end) => {
                        t = end;
                        player.downloaded(t, segment, rendition, bytes, t - requested);
                    }
                    Err(failed) => t = run.fail_over(&mut player, failed),
                }
            }
        }
    }
    player.finish(t)
}

/// A fleet of simulated sessions arriving open loop.
#[derive(Debug, Clone)]
pub struct FleetSim {
    /// Every session's settings; each session's seed is derived from this one's.
    pub session: SimConfig,
    pub players: u64,
    /// Arrivals per second.
    pub rate: f64,
    /// An edge dies at this time from the first arrival…
    pub edge_failure_at: Option<Duration>,
    /// …taking down the sessions of this share of players (those it served).
    pub failure_share: f64,
    /// Beyond one round trip, how long a request to the dead edge takes to fail.
    pub detect: Duration,
    /// The title's name, for the report.
    pub title: String,
}

/// Plays every session of a fleet and reports it (deterministic for a seed).
pub fn simulate_fleet(fleet: &FleetSim) -> FleetReport {
    let mut stats = FleetStats::new();
    let mut last_end = Duration::ZERO;
    let rate = if fleet.rate.is_finite() && fleet.rate > 0.0 {
        fleet.rate
    } else {
        1.0
    };
    for i in 0..fleet.players {
        let arrival = Duration::from_secs_f64(i as f64 / rate);
        let mut session = fleet.session.clone();
        session.seed = fmix64(fleet.session.seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let on_failed_edge = unit(fmix64(session.seed ^ 0xED6E)) < fleet.failure_share;
        session.failure = match fleet.edge_failure_at {
            Some(kill) if on_failed_edge && kill >= arrival => Some(EdgeFailure {
                at: kill - arrival,
                detect: fleet.detect,
            }),
            _ => None,
        };
        let report = simulate(&session);
        let length = report.start.unwrap_or_default() + report.played + report.stalled;
        last_end = last_end.max(arrival + length);
        stats.record(&report);
    }
    stats.report(
        FleetSetup {
            mode: "simulated".into(),
            abr: fleet.session.player.abr.to_string(),
            trace: fleet.session.trace.name().to_owned(),
            buffer: fleet.session.player.buffer_max,
            title: fleet.title.clone(),
            seed: fleet.session.seed,
        },
        last_end,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::player::abr::AbrKind;

    fn trace(name: &str) -> Arc<NetworkTrace> {
        Arc::new(NetworkTrace::profile(name).unwrap())
    }

    fn config(abr: AbrKind, trace: Arc<NetworkTrace>, seconds: u64) -> SimConfig {
        let mut config = SimConfig::new(Ladder::synthetic(Duration::from_secs(seconds)), trace, 7);
        config.player.abr = abr;
        config
    }

    /// Plays `config` and returns the renditions of its segments, in order.
    fn renditions(config: &SimConfig) -> Vec<usize> {
        // The same loop as `simulate`, without failures, recording choices.
        let mut player = Player::new(config.player.clone(), config.ladder.clone());
        let run = Run {
            config,
            offset: Duration::ZERO,
            dead_at: None,
            has_playlist: vec![true; config.ladder.bitrates().len()],
        };
        let mut t = Duration::ZERO;
        let mut chosen = Vec::new();
        loop {
            match player.next_action(t) {
                Action::Done => return chosen,
                Action::Wait(d) => t += d,
                Action::Fetch { segment, rendition } => {
                    let bytes = segment_bytes(
                        config.seed,
                        segment,
                        rendition,
                        config.ladder.bitrates()[rendition],
                        config.ladder.segments()[segment],
                        config.vbr,
                    );
                    let took = run.took(t, bytes);
                    t += took;
                    player.downloaded(t, segment, rendition, bytes, took);
                    chosen.push(rendition);
                }
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_report_and_another_seed_another() {
        for abr in [AbrKind::Bba, AbrKind::Bola] {
            let fleet = FleetSim {
                session: config(abr, trace("4g"), 120),
                players: 40,
                rate: 2.0,
                edge_failure_at: Some(Duration::from_secs(10)),
                failure_share: 0.5,
                detect: Duration::from_millis(200),
                title: "t".into(),
            };
            let a = simulate_fleet(&fleet);
            let b = simulate_fleet(&fleet);
            assert_eq!(a, b, "{abr}");
            assert_eq!(
                serde_json::to_string(&a).unwrap(),
                serde_json::to_string(&b).unwrap()
            );
            assert!(a.failovers > 0, "{abr}: the edge failure hit someone");
            let mut other = fleet.clone();
            other.session.seed = 8;
            assert_ne!(simulate_fleet(&other), a, "{abr}");
        }
    }

    #[test]
    fn both_climb_to_the_top_on_fiber() {
        for abr in [AbrKind::Bba, AbrKind::Bola] {
            let config = config(abr, trace("fiber"), 240);
            let chosen = renditions(&config);
            let top = config.ladder.bitrates().len() - 1;
            assert_eq!(chosen[0], 0, "{abr} starts low");
            assert!(
                chosen[chosen.len() / 2..].iter().all(|&r| r == top),
                "{abr}: {chosen:?}"
            );
            let report = simulate(&config);
            assert_eq!(report.stalled, Duration::ZERO, "{abr}");
            assert!(report.completed);
            assert!(
                report.start.unwrap() < Duration::from_millis(100),
                "{abr}: {report:?}"
            );
        }
    }

    #[test]
    fn both_drop_on_a_bandwidth_cliff() {
        // 50 Mbit/s for 60 s, then 1.2 Mbit/s for good (60 s rows that loop
        // would come back; this trace's last row is long enough not to).
        let cliff = Arc::new(
            NetworkTrace::parse_csv("cliff", "0,50000,20\n60000,1200,20\n1000000,1200,20\n")
                .unwrap(),
        );
        for abr in [AbrKind::Bba, AbrKind::Bola] {
            let config = config(abr, cliff.clone(), 300);
            let chosen = renditions(&config);
            let top = config.ladder.bitrates().len() - 1;
            // Segments are 4 s; by 60 s the player is high, by the end low.
            assert!(chosen[..20].contains(&top), "{abr}: {chosen:?}");
            let tail = &chosen[chosen.len() - 10..];
            assert!(tail.iter().all(|&r| r <= 1), "{abr} drops: {chosen:?}");
        }
    }

    #[test]
    fn a_link_below_the_lowest_rendition_stalls() {
        let slow = Arc::new(NetworkTrace::parse_csv("slow", "0,500,50\n").unwrap());
        for abr in [AbrKind::Bba, AbrKind::Bola] {
            let report = simulate(&config(abr, slow.clone(), 60));
            assert!(report.stalls > 0, "{abr}: {report:?}");
            assert!(
                report.stalled > Duration::from_secs(10),
                "{abr}: {report:?}"
            );
            assert_eq!(
                report.avg_bitrate_bps, 800_000.0,
                "{abr} stays at the bottom"
            );
            assert!(report.completed);
        }
    }

    #[test]
    fn a_failover_within_the_buffer_does_not_stall() {
        for abr in [AbrKind::Bba, AbrKind::Bola] {
            let mut config = config(abr, trace("cable"), 120);
            // At 40 s the buffer is full; a 2 s timeout to notice is well within it.
            config.failure = Some(EdgeFailure {
                at: Duration::from_secs(40),
                detect: Duration::from_secs(2),
            });
            let report = simulate(&config);
            assert_eq!(report.failovers.len(), 1, "{abr}: {report:?}");
            assert_eq!(report.errors.get("edge_transport"), Some(&1));
            assert_eq!(report.stalled, Duration::ZERO, "{abr}: {report:?}");
            assert!(report.completed);
            // The failover took the detection plus two round trips and change.
            assert!(report.failovers[0] >= Duration::from_secs(2));
        }
    }

    #[test]
    fn a_failover_longer_than_the_buffer_stalls() {
        let mut config = config(AbrKind::Bba, trace("cable"), 120);
        config.player.buffer_max = Duration::from_secs(8);
        config.failure = Some(EdgeFailure {
            at: Duration::from_secs(40),
            detect: Duration::from_secs(20),
        });
        let report = simulate(&config);
        assert_eq!(report.failovers.len(), 1);
        assert!(report.stalled > Duration::from_secs(10), "{report:?}");
    }

    #[test]
    fn segment_sizes_vary_around_the_nominal_and_are_stable() {
        let d = Duration::from_secs(4);
        let nominal = 3_000_000 * 4 / 8;
        let sizes: Vec<u64> = (0..100)
            .map(|i| segment_bytes(1, i, 2, 3_000_000, d, 0.2))
            .collect();
        assert!(
            sizes
                .iter()
                .all(|&s| s >= nominal * 8 / 10 && s <= nominal * 12 / 10)
        );
        assert!(sizes.iter().any(|&s| s != nominal));
        assert_eq!(sizes[5], segment_bytes(1, 5, 2, 3_000_000, d, 0.2));
        assert_eq!(segment_bytes(1, 5, 2, 3_000_000, d, 0.0), nominal);
    }
}
