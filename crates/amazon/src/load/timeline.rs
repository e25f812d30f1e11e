//! Per-second outcomes per priority across the whole run, for plots of goodput
//! over time (the phase reports only hold totals and percentiles).
//!
//! Bounded: at most [`MAX_SECONDS`] buckets of three priorities; a request due
//! later than that is counted in the last bucket. A request is filed under the
//! second it was *due* (open loop), so a slow answer lands where it was asked for.

use std::time::Duration;

use casebook_kit::loadgen::Verdict;
use parking_lot::Mutex;
use serde::Serialize;

/// The most one-second buckets a run keeps (an hour).
pub const MAX_SECONDS: usize = 3_600;

/// A request's priority as the server ranks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Critical,
    Normal,
    Low,
}

/// One priority's counts in one second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Due in this second (sent or dropped by the generator's in-flight bound).
    pub due: u64,
    pub ok: u64,
    /// Ok and within the SLO: goodput.
    pub ok_within_slo: u64,
    pub shed: u64,
    /// Errors, timeouts and requests the generator dropped.
    pub error: u64,
}

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Second {
    /// Seconds since the first phase started.
    pub second: u64,
    /// The phase under way when this second started.
    pub phase: String,
    pub critical: Bucket,
    pub normal: Bucket,
    pub low: Bucket,
}

impl Second {
    fn bucket(&mut self, priority: Priority) -> &mut Bucket {
        match priority {
            Priority::Critical => &mut self.critical,
            Priority::Normal => &mut self.normal,
            Priority::Low => &mut self.low,
        }
    }
}

/// The live series, shared by every request of the run.
#[derive(Debug)]
pub struct Timeline {
    slo: Duration,
    seconds: Mutex<Vec<Second>>,
}

impl Timeline {
    pub fn new(slo: Duration) -> Self {
        Self {
            slo,
            seconds: Mutex::new(Vec::new()),
        }
    }

    fn with_second(&self, at: Duration, phase: &str, f: impl FnOnce(&mut Second)) {
        let index = (at.as_secs() as usize).min(MAX_SECONDS - 1);
        let mut seconds = self.seconds.lock();
        while seconds.len() <= index {
            let second = seconds.len() as u64;
            seconds.push(Second {
                second,
                phase: phase.to_owned(),
                ..Second::default()
            });
        }
        f(&mut seconds[index]);
    }

    /// A request came due `at` after the run's start.
    pub fn due(&self, at: Duration, phase: &str, priority: Priority) {
        self.with_second(at, phase, |s| s.bucket(priority).due += 1);
    }

    /// The request due `at` ended with `verdict` after `latency`; `None` is a
    /// request the generator dropped (never sent).
    pub fn outcome(
        &self,
        at: Duration,
        phase: &str,
        priority: Priority,
        outcome: Option<(Verdict, Duration)>,
    ) {
        self.with_second(at, phase, |s| {
            let bucket = s.bucket(priority);
            match outcome {
                Some((Verdict::Ok, latency)) => {
                    bucket.ok += 1;
                    if latency <= self.slo {
                        bucket.ok_within_slo += 1;
                    }
                }
                Some((Verdict::Shed, _)) => bucket.shed += 1,
                Some((Verdict::Error, _)) | None => bucket.error += 1,
            }
        });
    }

    pub fn snapshot(&self) -> Vec<Second> {
        self.seconds.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_land_in_the_second_they_were_due_and_the_series_is_bounded() {
        let timeline = Timeline::new(Duration::from_millis(300));
        let at = Duration::from_millis(2_500);
        timeline.due(at, "surge", Priority::Critical);
        timeline.outcome(
            at,
            "surge",
            Priority::Critical,
            Some((Verdict::Ok, Duration::from_millis(400))),
        );
        timeline.due(at, "surge", Priority::Low);
        timeline.outcome(at, "surge", Priority::Low, Some((Verdict::Shed, at)));
        let series = timeline.snapshot();
        assert_eq!(series.len(), 3);
        let second = &series[2];
        assert_eq!(second.phase, "surge");
        // Ok but slower than the SLO: an answer, not goodput.
        assert_eq!((second.critical.due, second.critical.ok), (1, 1));
        assert_eq!(second.critical.ok_within_slo, 0);
        assert_eq!(second.low.shed, 1);
        timeline.due(Duration::from_secs(1_000_000), "after", Priority::Normal);
        assert_eq!(timeline.snapshot().len(), MAX_SECONDS);
    }
}
