//! One player's decisions, apart from any clock or network.
//!
//! The caller (the simulator or the HTTP driver) asks [`Player::next_action`] at a
//! session time (the play request is time 0) and does what it says: fetch a
//! segment at a rendition, wait, or stop. It tells the player what happened:
//! [`Player::downloaded`], [`Player::fetch_failed`], [`Player::failed_over`]. Times
//! only move forward.
//!
//! Rules:
//! - a segment is fetched only when it fits: `buffer + segment ≤ buffer_max`,
//!   otherwise the player waits for the buffer to drain (and BOLA may wait longer);
//! - the rendition is the ABR's, given the buffer level and a throughput estimate
//!   (the harmonic mean of the last [`THROUGHPUT_SAMPLES`] segments' request →
//!   last byte throughput, as FESTIVE and MPC estimate it);
//! - heartbeats are due every `heartbeat` of session time; QoE events (start,
//!   stalls, switches, errors, heartbeats) queue for the caller to post, at most
//!   [`MAX_PENDING_EVENTS`] (the oldest heartbeats are the ones dropped).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::Ladder;
use super::abr::{Abr, AbrInput, AbrKind};
use super::buffer::{BufferEvent, BufferModel, Thresholds};
use super::report::{QoeWeights, SessionReport};
use crate::playback::events::QoeEvent;

/// Segments the throughput estimate looks back over.
pub const THROUGHPUT_SAMPLES: usize = 5;
/// QoE events queued for posting at most.
pub const MAX_PENDING_EVENTS: usize = 1024;
/// Failovers one session records at most.
pub const MAX_FAILOVERS_RECORDED: usize = 64;
/// The shortest wait worth making (shorter ones are rounding).
const MIN_WAIT: Duration = Duration::from_millis(1);

/// How a player plays.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayerConfig {
    pub abr: AbrKind,
    /// The buffer's capacity.
    pub buffer_max: Duration,
    /// Media buffered before the first frame (zero: one segment).
    pub startup: Duration,
    /// Media buffered before playback resumes after a stall (zero: one segment).
    pub resume: Duration,
    /// Media watched at most (`None`: the whole title).
    pub watch: Option<Duration>,
    /// How often a heartbeat is due.
    pub heartbeat: Duration,
    pub qoe: QoeWeights,
}

impl Default for PlayerConfig {
    fn default() -> Self {
        Self {
            abr: AbrKind::Bba,
            buffer_max: Duration::from_secs(30),
            startup: Duration::ZERO,
            resume: Duration::ZERO,
            watch: None,
            heartbeat: Duration::from_secs(10),
            qoe: QoeWeights::default(),
        }
    }
}

impl PlayerConfig {
    /// Checks the numbers; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.buffer_max < Duration::from_secs(2) {
            return Err("buffer: must be at least 2s".into());
        }
        if self.startup > self.buffer_max || self.resume > self.buffer_max {
            return Err("startup/resume thresholds: must not exceed the buffer".into());
        }
        if self.heartbeat < Duration::from_millis(100) {
            return Err("heartbeat: must be at least 100ms".into());
        }
        if self.watch.is_some_and(|w| w.is_zero()) {
            return Err("watch: must be positive".into());
        }
        Ok(())
    }
}

/// What the player wants done next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Fetch segment `segment` at rendition `rendition` (indexes into the ladder).
    Fetch { segment: usize, rendition: usize },
    /// Nothing to do for this long.
    Wait(Duration),
    /// Every planned segment is in.
    Done,
}

/// One player (see the module docs).
#[derive(Debug)]
pub struct Player {
    config: PlayerConfig,
    ladder: Ladder,
    abr: Box<dyn Abr>,
    buffer: BufferModel,
    /// Segments to fetch: the title, or what `watch` covers.
    end: usize,
    next: usize,
    last: Option<usize>,
    throughput: VecDeque<f64>,
    next_heartbeat: Duration,
    now: Duration,
    events: VecDeque<QoeEvent>,
    buffer_events: Vec<BufferEvent>,
    // QoE accounting.
    bits_weighted: f64,
    media: Duration,
    quality_sum: f64,
    quality_changes: f64,
    switches: u32,
    bytes: u64,
    failovers: Vec<Duration>,
    errors: BTreeMap<String, u32>,
}

impl Player {
    /// A player about to play `ladder` (time 0 is its play request).
    pub fn new(config: PlayerConfig, ladder: Ladder) -> Self {
        let first = ladder.segments()[0];
        let or_first = |d: Duration| if d.is_zero() { first } else { d };
        let thresholds = Thresholds {
            startup: or_first(config.startup),
            resume: or_first(config.resume),
        };
        let end = match config.watch {
            None => ladder.segments().len(),
            Some(watch) => {
                let mut covered = Duration::ZERO;
                let n = ladder
                    .segments()
                    .iter()
                    .take_while(|d| {
                        let before = covered;
                        covered += **d;
                        before < watch
                    })
                    .count();
                n.max(1)
            }
        };
        Self {
            abr: config.abr.build(config.buffer_max),
            buffer: BufferModel::new(thresholds),
            next_heartbeat: config.heartbeat,
            config,
            ladder,
            end,
            next: 0,
            last: None,
            throughput: VecDeque::with_capacity(THROUGHPUT_SAMPLES),
            now: Duration::ZERO,
            events: VecDeque::new(),
            buffer_events: Vec::new(),
            bits_weighted: 0.0,
            media: Duration::ZERO,
            quality_sum: 0.0,
            quality_changes: 0.0,
            switches: 0,
            bytes: 0,
            failovers: Vec::new(),
            errors: BTreeMap::new(),
        }
    }

    /// The ladder being played.
    pub fn ladder(&self) -> &Ladder {
        &self.ladder
    }

    /// Segments this session will fetch.
    pub fn planned_segments(&self) -> usize {
        self.end
    }

    /// Media buffered now.
    pub fn buffer_level(&self) -> Duration {
        self.buffer.level()
    }

    /// Whether the buffer is dry after playback began.
    pub fn is_stalled(&self) -> bool {
        self.buffer.is_stalled()
    }

    /// Whether playback has begun.
    pub fn has_started(&self) -> bool {
        self.buffer.started_at().is_some()
    }

    fn at(&mut self, now: Duration) {
        self.now = self.now.max(now);
        self.buffer.advance(self.now, &mut self.buffer_events);
        self.heartbeats();
        self.take_buffer_events();
    }

    fn heartbeats(&mut self) {
        while self.now >= self.next_heartbeat {
            let bitrate_bps = self.last.map_or(0, |r| self.ladder.bitrates()[r]);
            self.push_event(QoeEvent::Heartbeat {
                position_ms: ms(self.buffer.played()),
                buffer_ms: ms(self.buffer.level()),
                bitrate_bps,
            });
            self.next_heartbeat += self.config.heartbeat;
        }
    }

    fn take_buffer_events(&mut self) {
        let bitrate_bps = self.last.map_or(0, |r| self.ladder.bitrates()[r]);
        let happened: Vec<BufferEvent> = self.buffer_events.drain(..).collect();
        for event in happened {
            self.push_event(match event {
                BufferEvent::Started { at } => QoeEvent::Start {
                    start_ms: ms(at),
                    bitrate_bps,
                },
                BufferEvent::StallBegan { position, .. } => QoeEvent::StallBegin {
                    position_ms: ms(position),
                },
                BufferEvent::StallEnded { lasted } => QoeEvent::StallEnd {
                    stall_ms: ms(lasted),
                },
            });
        }
    }

    fn push_event(&mut self, event: QoeEvent) {
        if self.events.len() == MAX_PENDING_EVENTS {
            // Heartbeats are the cheapest to lose; otherwise the oldest event.
            match self
                .events
                .iter()
                .position(|e| matches!(e, QoeEvent::Heartbeat { .. }))
            {
                Some(i) => {
                    self.events.remove(i);
                }
                None => {
                    self.events.pop_front();
                }
            }
        }
        self.events.push_back(event);
    }

    /// What to do at `now`.
    pub fn next_action(&mut self, now: Duration) -> Action {
        self.at(now);
        if self.next >= self.end {
            return Action::Done;
        }
        let segment = self.ladder.segments()[self.next];
        let room_after = self.buffer.level() + segment;
        if room_after > self.config.buffer_max {
            return Action::Wait((room_after - self.config.buffer_max).max(MIN_WAIT));
        }
        let decision = self.abr.choose(&AbrInput {
            bitrates: self.ladder.bitrates(),
            buffer: self.buffer.level(),
            buffer_max: self.config.buffer_max,
            segment,
            last: self.last,
            throughput_bps: self.throughput_estimate(),
        });
        // A wait longer than the buffer would stall by choice: never.
        let wait = decision.wait.min(self.buffer.level());
        if wait >= MIN_WAIT {
            return Action::Wait(wait);
        }
        Action::Fetch {
            segment: self.next,
            rendition: decision.rendition.min(self.ladder.bitrates().len() - 1),
        }
    }

    /// Segment `segment` at `rendition` arrived at `now`: `bytes` in `took`
    /// (request to last byte).
    pub fn downloaded(
        &mut self,
        now: Duration,
        segment: usize,
        rendition: usize,
        bytes: u64,
        took: Duration,
    ) {
        debug_assert_eq!(segment, self.next, "segments arrive in order");
        self.now = self.now.max(now);
        let media = self.ladder.segments()[segment.min(self.ladder.segments().len() - 1)];
        let bitrate = self.ladder.bitrates()[rendition];
        if let Some(previous) = self.last
            && previous != rendition
        {
            self.switches += 1;
            let from = self.ladder.bitrates()[previous];
            self.quality_changes += (mbps(bitrate) - mbps(from)).abs();
            self.push_event(QoeEvent::BitrateSwitch {
                from_bps: from,
                to_bps: bitrate,
            });
        }
        self.last = Some(rendition);
        self.buffer.add(self.now, media, &mut self.buffer_events);
        self.heartbeats();
        self.take_buffer_events();
        if self.throughput.len() == THROUGHPUT_SAMPLES {
            self.throughput.pop_front();
        }
        let seconds = took.as_secs_f64().max(1e-6);
        self.throughput.push_back(bytes as f64 * 8.0 / seconds);
        self.bits_weighted += bitrate as f64 * media.as_secs_f64();
        self.media += media;
        self.quality_sum += mbps(bitrate);
        self.bytes += bytes;
        self.next = segment + 1;
    }

    /// A request failed at `now` (`kind`: `edge_transport`, `edge_status`, …).
    pub fn fetch_failed(&mut self, now: Duration, kind: &str) {
        self.at(now);
        *self.errors.entry(kind.to_owned()).or_default() += 1;
        self.push_event(QoeEvent::Error {
            kind: kind.to_owned(),
        });
    }

    /// The player moved to another edge at `now`, `took` after the failure.
    pub fn failed_over(&mut self, now: Duration, took: Duration) {
        self.at(now);
        if self.failovers.len() < MAX_FAILOVERS_RECORDED {
            self.failovers.push(took);
        }
    }

    /// The events queued since the last call, oldest first.
    pub fn drain_events(&mut self) -> Vec<QoeEvent> {
        self.events.drain(..).collect()
    }

    /// The harmonic mean of the last segments' throughput, bits/s.
    pub fn throughput_estimate(&self) -> Option<f64> {
        if self.throughput.is_empty() {
            return None;
        }
        let inverse: f64 = self.throughput.iter().map(|t| 1.0 / t.max(1.0)).sum();
        Some(self.throughput.len() as f64 / inverse)
    }

    /// Ends the session at `now`: what was buffered plays out (no stall can
    /// follow), a last heartbeat is queued, and the QoE is computed.
    pub fn finish(&mut self, now: Duration) -> SessionReport {
        self.now = self.now.max(now);
        let end = self.buffer.finish(self.now, &mut self.buffer_events);
        self.take_buffer_events();
        let bitrate_bps = self.last.map_or(0, |r| self.ladder.bitrates()[r]);
        self.push_event(QoeEvent::Heartbeat {
            position_ms: ms(self.buffer.played()),
            buffer_ms: 0,
            bitrate_bps,
        });
        self.now = end;
        let segments = u32::try_from(self.next).unwrap_or(u32::MAX);
        let start = self.buffer.started_at();
        let w = self.config.qoe;
        let qoe = if segments == 0 {
            0.0
        } else {
            (self.quality_sum
                - w.switch_penalty * self.quality_changes
                - w.rebuffer_penalty * self.buffer.stalled().as_secs_f64()
                - w.startup_penalty * start.unwrap_or_default().as_secs_f64())
                / f64::from(segments)
        };
        SessionReport {
            start,
            played: self.buffer.played(),
            stalled: self.buffer.stalled(),
            stalls: self.buffer.stalls(),
            segments,
            bytes: self.bytes,
            avg_bitrate_bps: if self.media.is_zero() {
                0.0
            } else {
                self.bits_weighted / self.media.as_secs_f64()
            },
            switches: self.switches,
            qoe,
            failovers: self.failovers.clone(),
            errors: self.errors.clone(),
            completed: self.next >= self.end,
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn mbps(bps: u64) -> f64 {
    bps as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder() -> Ladder {
        Ladder::synthetic(Duration::from_secs(40))
    }

    #[test]
    fn the_player_waits_for_room_and_reports_a_stall_free_session() {
        let mut player = Player::new(PlayerConfig::default(), ladder());
        assert_eq!(player.planned_segments(), 10);
        let mut now = Duration::ZERO;
        let mut waits = 0;
        loop {
            match player.next_action(now) {
                Action::Fetch { segment, rendition } => {
                    now += Duration::from_millis(100);
                    player.downloaded(
                        now,
                        segment,
                        rendition,
                        1_000_000,
                        Duration::from_millis(100),
                    );
                }
                Action::Wait(d) => {
                    waits += 1;
                    now += d;
                }
                Action::Done => break,
            }
            assert!(player.buffer_level() <= Duration::from_secs(30));
        }
        assert!(waits > 0, "a 40 s title on a fast link fills a 30 s buffer");
        let report = player.finish(now);
        assert_eq!(report.start, Some(Duration::from_millis(100)));
        assert_eq!(report.stalled, Duration::ZERO);
        assert_eq!(report.played, Duration::from_secs(40));
        assert!(report.completed);
        let events = player.drain_events();
        assert!(matches!(events[0], QoeEvent::Start { start_ms: 100, .. }));
        assert!(
            events
                .iter()
                .any(|e| matches!(e, QoeEvent::Heartbeat { .. }))
        );
    }

    #[test]
    fn watch_limits_the_segments_fetched() {
        let config = PlayerConfig {
            watch: Some(Duration::from_secs(9)),
            ..PlayerConfig::default()
        };
        assert_eq!(Player::new(config, ladder()).planned_segments(), 3);
    }

    #[test]
    fn a_bad_config_is_refused_naming_the_setting() {
        let bad = PlayerConfig {
            buffer_max: Duration::from_secs(1),
            ..PlayerConfig::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("buffer"));
        assert!(PlayerConfig::default().validate().is_ok());
    }
}
