//! The buffer model: media buffered ahead of the playhead, drained in real (or
//! simulated) time while playing.
//!
//! States: **starting** (nothing plays until the buffer reaches the start-up
//! threshold; this wait is the video start time, not a stall), **playing** (the
//! buffer drains one second per second), **stalled** (the buffer ran dry while
//! playing; playback resumes once the resume threshold is buffered). Time only
//! moves forward: an update at an earlier time than the last is taken as the last.
//!
//! Accounting: `play` is media time rendered, `stall` the time spent stalled after
//! playback began, `stalls` how many times it ran dry; [`BufferModel::finish`]
//! plays out what is left, so a finished session's `play` is all the media it
//! fetched.

use std::time::Duration;

/// When playback begins and resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Media buffered before the first frame.
    pub startup: Duration,
    /// Media buffered before playback resumes after a stall.
    pub resume: Duration,
}

/// A change worth reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferEvent {
    /// Playback began at `at` (session time).
    Started { at: Duration },
    /// The buffer ran dry at `at`, `position` into the media.
    StallBegan { at: Duration, position: Duration },
    /// Playback resumed after a stall of `lasted`.
    StallEnded { lasted: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Playing,
    Stalled { since: Duration },
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct BufferModel {
    thresholds: Thresholds,
    level: Duration,
    at: Duration,
    state: State,
    started_at: Option<Duration>,
    play: Duration,
    stall: Duration,
    stalls: u32,
}

impl BufferModel {
    /// An empty buffer at session time 0.
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            level: Duration::ZERO,
            at: Duration::ZERO,
            state: State::Starting,
            started_at: None,
            play: Duration::ZERO,
            stall: Duration::ZERO,
            stalls: 0,
        }
    }

    /// Plays (or stalls) until `now`.
    pub fn advance(&mut self, now: Duration, events: &mut Vec<BufferEvent>) {
        let now = now.max(self.at);
        let dt = now - self.at;
        match self.state {
            State::Starting => {}
            State::Playing if self.level > dt => {
                self.level -= dt;
                self.play += dt;
            }
            State::Playing => {
                let dry_at = self.at + self.level;
                self.play += self.level;
                self.level = Duration::ZERO;
                self.stalls += 1;
                self.stall += now - dry_at;
                self.state = State::Stalled { since: dry_at };
                events.push(BufferEvent::StallBegan {
                    at: dry_at,
                    position: self.play,
                });
            }
            State::Stalled { .. } => self.stall += dt,
        }
        self.at = now;
    }

    /// `media` arrived at `now`.
    pub fn add(&mut self, now: Duration, media: Duration, events: &mut Vec<BufferEvent>) {
        self.advance(now, events);
        self.level += media;
        match self.state {
            State::Starting if self.level >= self.thresholds.startup => {
                self.state = State::Playing;
                self.started_at = Some(self.at);
                events.push(BufferEvent::Started { at: self.at });
            }
            State::Stalled { since } if self.level >= self.thresholds.resume => {
                self.state = State::Playing;
                events.push(BufferEvent::StallEnded {
                    lasted: self.at - since,
                });
            }
            _ => {}
        }
    }

    /// No more media will come: plays out the rest (starting playback if the
    /// title was shorter than the start-up threshold). Returns the session time
    /// the last frame is rendered at.
    pub fn finish(&mut self, now: Duration, events: &mut Vec<BufferEvent>) -> Duration {
        self.advance(now, events);
        match self.state {
            State::Starting if !self.level.is_zero() => {
                self.started_at = Some(self.at);
                events.push(BufferEvent::Started { at: self.at });
            }
            State::Stalled { since } if !self.level.is_zero() => {
                events.push(BufferEvent::StallEnded {
                    lasted: self.at - since,
                });
            }
            _ => {}
        }
        self.play += self.level;
        let end = self.at + self.level;
        self.level = Duration::ZERO;
        self.state = State::Playing;
        end
    }

    /// Media buffered ahead of the playhead.
    pub fn level(&self) -> Duration {
        self.level
    }

    /// When playback began, if it has.
    pub fn started_at(&self) -> Option<Duration> {
        self.started_at
    }

    /// Media rendered so far.
    pub fn played(&self) -> Duration {
        self.play
    }

    /// Time stalled after playback began.
    pub fn stalled(&self) -> Duration {
        self.stall
    }

    /// How many times the buffer ran dry.
    pub fn stalls(&self) -> u32 {
        self.stalls
    }

    /// Whether the buffer is dry after playback began.
    pub fn is_stalled(&self) -> bool {
        matches!(self.state, State::Stalled { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn startup_play_stall_resume_and_finish() {
        let mut buffer = BufferModel::new(Thresholds {
            startup: s(4),
            resume: s(4),
        });
        let mut events = Vec::new();
        // Start-up wait: 3 s before the first segment is not a stall.
        buffer.add(s(3), s(4), &mut events);
        assert_eq!(events, [BufferEvent::Started { at: s(3) }]);
        // Plays 4 s, dry at 7, next segment at 10: a 3 s stall.
        buffer.add(s(10), s(4), &mut events);
        assert_eq!(
            events[1..],
            [
                BufferEvent::StallBegan {
                    at: s(7),
                    position: s(4)
                },
                BufferEvent::StallEnded { lasted: s(3) }
            ]
        );
        assert_eq!((buffer.stalled(), buffer.stalls()), (s(3), 1));
        // 2 s later, 2 s left; finish plays them out.
        let end = buffer.finish(s(12), &mut events);
        assert_eq!(end, s(14));
        assert_eq!(buffer.played(), s(8));
        assert_eq!(buffer.stalled(), s(3));
        assert_eq!(buffer.started_at(), Some(s(3)));
    }

    #[test]
    fn time_never_runs_backwards() {
        let mut buffer = BufferModel::new(Thresholds {
            startup: s(1),
            resume: s(1),
        });
        let mut events = Vec::new();
        buffer.add(s(5), s(4), &mut events);
        buffer.advance(s(2), &mut events);
        assert_eq!(buffer.level(), s(4));
        assert_eq!(buffer.played(), Duration::ZERO);
    }
}
