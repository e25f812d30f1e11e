//! Network traces: a player's access link as bandwidth and round-trip latency over
//! time, as the ABR literature replays them (mahimahi, Pensieve's FCC and 3G/HSDPA
//! traces).
//!
//! A trace is a list of rows `(t, bandwidth, latency)`: each row holds from its `t`
//! until the next row's; the last row holds as long as the gap before it (1 s for a
//! one-row trace), and then the trace **loops**, as mahimahi's do, so a trace of any
//! length serves a session of any length.
//!
//! - [`NetworkTrace::transfer_time`] is the time `bytes` take from a moment of the
//!   trace, integrating the piecewise-constant bandwidth exactly (integer
//!   nanoseconds, so the simulator is bit-for-bit deterministic); a row of 0 kbps is
//!   an outage the transfer waits through.
//! - [`NetworkTrace::latency_at`] is the round trip a request pays before its first
//!   byte.
//!
//! The file format ([`NetworkTrace::parse_csv`]) is CSV `t_ms,kbps,latency_ms`, an
//! optional header line of exactly those names, `#` comments and blank lines
//! ignored; `t_ms` integers starting at 0 and strictly increasing; `kbps` and
//! `latency_ms` non-negative decimals; at least one row with bandwidth. Every
//! refusal names the line and the column ([`TraceError`]). Bounds: at most
//! [`MAX_TRACE_BYTES`] of text and [`MAX_TRACE_ROWS`] rows; bandwidth up to
//! [`MAX_KBPS`], latency up to [`MAX_LATENCY_MS`].
//!
//! Built-in profiles ([`NetworkTrace::profile`]): `fiber`, `cable`, `4g`,
//! `3g-flaky` (see [`PROFILES`]). They are fixed patterns, not random: players
//! differ by where in the trace they start (an offset from their seed).
//!
//! Not modelled: packet loss beyond outages, TCP slow start, shared bottlenecks
//! between players (every player has its own link).

use std::fmt;
use std::time::Duration;

/// The most bytes of trace text read.
pub const MAX_TRACE_BYTES: usize = 8 << 20;
/// The most rows a trace may have.
pub const MAX_TRACE_ROWS: usize = 200_000;
/// The highest bandwidth a row may state: 100 Gbit/s.
pub const MAX_KBPS: f64 = 100_000_000.0;
/// The highest round trip a row may state: one minute.
pub const MAX_LATENCY_MS: f64 = 60_000.0;
/// The latest first column: a trace spans at most a week.
pub const MAX_T_MS: u64 = 7 * 86_400_000;

/// The built-in profiles and what they model.
pub const PROFILES: [(&str, &str); 4] = [
    ("fiber", "100 Mbit/s steady, 5 ms"),
    ("cable", "18-35 Mbit/s in 20 s steps, 20 ms"),
    ("4g", "3-20 Mbit/s every 5 s, 60 ms"),
    ("3g-flaky", "0.5-2 Mbit/s, 150 ms, a 3 s outage every 30 s"),
];

/// One row: from `at`, the link carries `bandwidth_bps` with `latency` round trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TracePoint {
    pub at: Duration,
    pub bandwidth_bps: u64,
    pub latency: Duration,
}

/// A network trace (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkTrace {
    name: String,
    points: Vec<TracePoint>,
    period: Duration,
    /// Bits the link carries in one period (at least 1: a trace has bandwidth).
    bits_per_period: u128,
}

/// Why a trace file was refused: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", location(*line, column))]
pub struct TraceError {
    /// 1-based line number (0: the file as a whole).
    pub line: usize,
    /// The column at fault, if one is.
    pub column: Option<&'static str>,
    pub reason: String,
}

fn location(line: usize, column: &Option<&'static str>) -> String {
    match (line, column) {
        (0, _) => String::new(),
        (line, Some(column)) => format!("line {line}, {column}: "),
        (line, None) => format!("line {line}: "),
    }
}

fn refuse(line: usize, column: Option<&'static str>, reason: impl Into<String>) -> TraceError {
    TraceError {
        line,
        column,
        reason: reason.into(),
    }
}

const NANOS: u128 = 1_000_000_000;

impl NetworkTrace {
    /// A trace from rows (sorted by `at`, the first at 0, one with bandwidth).
    pub fn new(name: impl Into<String>, points: Vec<TracePoint>) -> Result<Self, TraceError> {
        let Some(first) = points.first() else {
            return Err(refuse(0, None, "a trace needs at least one row"));
        };
        if !first.at.is_zero() {
            return Err(refuse(1, Some("t_ms"), "the first row must be at 0"));
        }
        if points.len() > MAX_TRACE_ROWS {
            return Err(refuse(0, None, format!("more than {MAX_TRACE_ROWS} rows")));
        }
        for (i, pair) in points.windows(2).enumerate() {
            if pair[1].at <= pair[0].at {
                return Err(refuse(i + 2, Some("t_ms"), "times must increase"));
            }
        }
        let last = points[points.len() - 1];
        let tail = match points.len() {
            1 => Duration::from_secs(1),
            n => last.at - points[n - 2].at,
        };
        let period = last.at + tail;
        let mut trace = Self {
            name: name.into(),
            points,
            period,
            bits_per_period: 0,
        };
        let bits: u128 = (0..trace.points.len())
            .map(|i| trace.points[i].bandwidth_bps as u128 * trace.row_length(i).as_nanos() / NANOS)
            .sum();
        if bits == 0 {
            return Err(refuse(
                0,
                None,
                "the link never carries anything (every row is 0 kbps)",
            ));
        }
        trace.bits_per_period = bits;
        Ok(trace)
    }

    /// A built-in profile by name (see [`PROFILES`]).
    pub fn profile(name: &str) -> Option<Self> {
        let ms = Duration::from_millis;
        let row = |t: u64, kbps: u64, latency: u64| TracePoint {
            at: ms(t),
            bandwidth_bps: kbps * 1000,
            latency: ms(latency),
        };
        let points = match name {
            "fiber" => vec![row(0, 100_000, 5), row(60_000, 100_000, 5)],
            "cable" => [30_000, 22_000, 35_000, 18_000, 28_000, 25_000]
                .iter()
                .enumerate()
                .map(|(i, kbps)| row(i as u64 * 20_000, *kbps, 20))
                .collect(),
            "4g" => [
                12_000, 8_000, 20_000, 5_000, 3_000, 9_000, 15_000, 6_000, 11_000, 4_000, 18_000,
                7_000,
            ]
            .iter()
            .enumerate()
            .map(|(i, kbps)| row(i as u64 * 5_000, *kbps, 60))
            .collect(),
            "3g-flaky" => vec![
                row(0, 1_500, 150),
                row(5_000, 900, 150),
                row(10_000, 2_000, 150),
                row(15_000, 600, 180),
                row(20_000, 1_200, 150),
                row(24_000, 500, 200),
                // The outage: nothing gets through for 3 s.
                row(27_000, 0, 150),
                row(30_000, 1_500, 150),
            ],
            _ => return None,
        };
        // The rows above are sorted, start at 0 and carry bandwidth.
        Self::new(name, points).ok()
    }

    /// The trace in a CSV file's text (see the module docs for the format).
    pub fn parse_csv(name: impl Into<String>, text: &str) -> Result<Self, TraceError> {
        if text.len() > MAX_TRACE_BYTES {
            return Err(refuse(
                0,
                None,
                format!("the file is over {MAX_TRACE_BYTES} bytes"),
            ));
        }
        let mut points: Vec<TracePoint> = Vec::new();
        let mut seen_data = false;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let fields: Vec<&str> = content.split(',').map(str::trim).collect();
            if !seen_data && fields == ["t_ms", "kbps", "latency_ms"] {
                seen_data = true;
                continue;
            }
            seen_data = true;
            if fields.len() != 3 {
                return Err(refuse(
                    line,
                    None,
                    format!(
                        "expected 3 columns `t_ms,kbps,latency_ms`, found {}",
                        fields.len()
                    ),
                ));
            }
            if points.len() == MAX_TRACE_ROWS {
                return Err(refuse(
                    line,
                    None,
                    format!("more than {MAX_TRACE_ROWS} rows"),
                ));
            }
            let t_ms: u64 = fields[0].parse().map_err(|_| {
                refuse(
                    line,
                    Some("t_ms"),
                    format!("`{}` is not a whole number of milliseconds", fields[0]),
                )
            })?;
            if t_ms > MAX_T_MS {
                return Err(refuse(
                    line,
                    Some("t_ms"),
                    format!("{t_ms} is past the {MAX_T_MS} ms a trace may span"),
                ));
            }
            let kbps = decimal(fields[1], line, "kbps", MAX_KBPS)?;
            let latency_ms = decimal(fields[2], line, "latency_ms", MAX_LATENCY_MS)?;
            let at = Duration::from_millis(t_ms);
            match points.last() {
                None if t_ms != 0 => {
                    return Err(refuse(
                        line,
                        Some("t_ms"),
                        format!("the first row must be at 0, not {t_ms}"),
                    ));
                }
                Some(previous) if at <= previous.at => {
                    return Err(refuse(
                        line,
                        Some("t_ms"),
                        format!(
                            "{t_ms} does not come after the previous row's {}",
                            previous.at.as_millis()
                        ),
                    ));
                }
                _ => {}
            }
            points.push(TracePoint {
                at,
                bandwidth_bps: (kbps * 1000.0).round() as u64,
                // Microseconds: what a rendered trace writes back exactly.
                latency: Duration::from_micros((latency_ms * 1000.0).round() as u64),
            });
        }
        if points.is_empty() {
            return Err(refuse(0, None, "the file has no rows"));
        }
        Self::new(name, points)
    }

    /// The trace in the file format (what [`parse_csv`](Self::parse_csv) reads
    /// back; latency kept to the microsecond, bandwidth to the bit per second).
    pub fn to_csv(&self) -> String {
        let mut out = String::from("t_ms,kbps,latency_ms\n");
        for p in &self.points {
            let us = p.latency.as_micros();
            out.push_str(&format!(
                "{},{}.{:03},{}.{:03}\n",
                p.at.as_millis(),
                p.bandwidth_bps / 1000,
                p.bandwidth_bps % 1000,
                us / 1000,
                us % 1000
            ));
        }
        out
    }

    /// The trace's name (a profile's, or the file's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rows.
    pub fn points(&self) -> &[TracePoint] {
        &self.points
    }

    /// How long until the trace repeats.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The mean bandwidth over one period, bits per second.
    pub fn mean_bandwidth_bps(&self) -> f64 {
        self.bits_per_period as f64 / self.period.as_secs_f64()
    }

    fn row_length(&self, i: usize) -> Duration {
        match self.points.get(i + 1) {
            Some(next) => next.at - self.points[i].at,
            None => self.period - self.points[i].at,
        }
    }

    /// The row in force at `t` (trace time, looping).
    fn row_at(&self, t: Duration) -> usize {
        self.row_within(t.as_nanos() % self.period.as_nanos())
    }

    /// The row in force `within` nanoseconds into a period.
    fn row_within(&self, within: u128) -> usize {
        // The first row is at 0, so at least one row is at or before `within`.
        self.points.partition_point(|p| p.at.as_nanos() <= within) - 1
    }

    /// The bandwidth at `t`, bits per second.
    pub fn bandwidth_at(&self, t: Duration) -> u64 {
        self.points[self.row_at(t)].bandwidth_bps
    }

    /// The round trip a request started at `t` pays before its first byte.
    pub fn latency_at(&self, t: Duration) -> Duration {
        self.points[self.row_at(t)].latency
    }

    /// How long `bytes` take to arrive when their transfer starts at `t`.
    pub fn transfer_time(&self, t: Duration, bytes: u64) -> Duration {
        let period = self.period.as_nanos();
        let start = t.as_nanos();
        let mut now = start;
        let mut bits = bytes as u128 * 8;
        // Whole periods at once: a large transfer on a slow trace stays O(rows).
        let periods = bits / self.bits_per_period;
        if periods > 1 {
            let skip = periods - 1;
            bits -= skip * self.bits_per_period;
            now += skip * period;
        }
        let mut row = self.row_within(now % period);
        while bits > 0 {
            let within = now % period;
            let row_end = match self.points.get(row + 1) {
                Some(next) => next.at.as_nanos(),
                None => period,
            };
            let left = row_end - within;
            let bps = self.points[row].bandwidth_bps as u128;
            let capacity = bps * left / NANOS;
            if bps > 0 && bits <= capacity {
                // Round up: the last bit has arrived only once its time has passed.
                now += (bits * NANOS).div_ceil(bps);
                bits = 0;
            } else {
                bits -= capacity;
                now += left;
                row = (row + 1) % self.points.len();
            }
        }
        Duration::from_nanos(u64::try_from(now - start).unwrap_or(u64::MAX))
    }
}

fn decimal(text: &str, line: usize, column: &'static str, max: f64) -> Result<f64, TraceError> {
    // Plain decimals only: `inf`, `NaN` and exponents are not bandwidths.
    let plain = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_digit() || c == '.')
        && text.chars().filter(|c| *c == '.').count() <= 1
        && text != ".";
    let value: f64 = if plain { text.parse().ok() } else { None }.ok_or_else(|| {
        refuse(
            line,
            Some(column),
            format!("`{text}` is not a non-negative decimal number"),
        )
    })?;
    if value > max {
        return Err(refuse(
            line,
            Some(column),
            format!("{value} is over the limit of {max}"),
        ));
    }
    Ok(value)
}

impl fmt::Display for NetworkTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} rows, {:?} period, mean {:.2} Mbit/s)",
            self.name,
            self.points.len(),
            self.period,
            self.mean_bandwidth_bps() / 1e6
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_is_built_and_named() {
        for (name, _) in PROFILES {
            let trace = NetworkTrace::profile(name).unwrap();
            assert_eq!(trace.name(), name);
            assert!(trace.mean_bandwidth_bps() > 0.0);
        }
        assert!(NetworkTrace::profile("dialup").is_none());
    }

    #[test]
    fn transfer_time_integrates_the_bandwidth_over_rows_and_outages() {
        let trace = NetworkTrace::parse_csv(
            "t",
            "t_ms,kbps,latency_ms\n0,8000,10\n1000,0,10\n2000,4000,20\n",
        )
        .unwrap();
        // Period: 2000 + the 1000 ms gap before the last row.
        assert_eq!(trace.period(), Duration::from_secs(3));
        // 1 MB at 8 Mbit/s: exactly 1 s.
        assert_eq!(
            trace.transfer_time(Duration::ZERO, 1_000_000),
            Duration::from_secs(1)
        );
        // 1.5 MB: 1 s at 8 Mbit/s, 1 s of outage, then 0.5 MB at 4 Mbit/s = 1 s.
        assert_eq!(
            trace.transfer_time(Duration::ZERO, 1_500_000),
            Duration::from_secs(3)
        );
        // Starting inside the outage waits for it to end.
        assert_eq!(
            trace.transfer_time(Duration::from_millis(1500), 500_000),
            Duration::from_millis(1500)
        );
        // The trace loops: at 3 s it is 8 Mbit/s again.
        assert_eq!(
            trace.transfer_time(Duration::from_secs(3), 1_000_000),
            Duration::from_secs(1)
        );
        assert_eq!(
            trace.latency_at(Duration::from_millis(2500)),
            Duration::from_millis(20)
        );
        assert_eq!(trace.bandwidth_at(Duration::from_millis(3500)), 8_000_000);
    }

    #[test]
    fn a_huge_transfer_on_a_slow_trace_skips_whole_periods() {
        let trace = NetworkTrace::profile("3g-flaky").unwrap();
        let bytes = 10_000_000_000; // 10 GB at ~1.2 Mbit/s: hours of trace
        let took = trace.transfer_time(Duration::from_millis(7), bytes);
        let expected = bytes as f64 * 8.0 / trace.mean_bandwidth_bps();
        assert!((took.as_secs_f64() - expected).abs() / expected < 0.01);
    }

    #[test]
    fn bad_files_are_refused_naming_line_and_column() {
        let cases = [
            ("", 0, None),
            ("t_ms,kbps,latency_ms\n", 0, None),
            ("5,100,10\n", 1, Some("t_ms")),
            ("0,100,10\n0,100,10\n", 2, Some("t_ms")),
            ("0,100,10\n# gap\n\n7,abc,10\n", 4, Some("kbps")),
            ("0,100\n", 1, None),
            ("0,100,10,4\n", 1, None),
            ("0,-1,10\n", 1, Some("kbps")),
            ("0,NaN,10\n", 1, Some("kbps")),
            ("0,inf,10\n", 1, Some("kbps")),
            ("0,1e3,10\n", 1, Some("kbps")),
            ("0,100,99999999\n", 1, Some("latency_ms")),
            ("0,0,10\n1000,0,10\n", 0, None),
            ("x,100,10\n", 1, Some("t_ms")),
        ];
        for (text, line, column) in cases {
            let err = NetworkTrace::parse_csv("bad", text).unwrap_err();
            assert_eq!((err.line, err.column), (line, column), "{text:?}: {err}");
            assert!(!err.to_string().is_empty());
        }
        let err = NetworkTrace::parse_csv("bad", "0,100,10\n7,abc,10\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2, kbps: `abc` is not a non-negative decimal number"
        );
    }

    #[test]
    fn comments_header_and_decimals_are_read() {
        let trace = NetworkTrace::parse_csv(
            "ok",
            "# a comment\n t_ms , kbps , latency_ms \n0, 1500.5 ,12.5 # trailing\n\n500,0.5,0\n",
        )
        .unwrap();
        assert_eq!(trace.points().len(), 2);
        assert_eq!(trace.points()[0].bandwidth_bps, 1_500_500);
        assert_eq!(trace.points()[0].latency, Duration::from_micros(12_500));
        assert_eq!(trace.points()[1].bandwidth_bps, 500);
    }
}
