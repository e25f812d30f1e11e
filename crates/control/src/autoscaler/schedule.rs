//! Predictive scaling: scheduled entries that raise a service's floor ahead of a
//! known surge.
//!
//! An entry says "`service` needs at least `instances` from `at` until `until`, and
//! start getting there `lead` before `at`". Times are either
//!
//! - **once**, an RFC 3339 UTC wall time to the second (`2026-07-15T08:00:00Z`; a
//!   fraction of a second is dropped; offsets other than `Z` are refused), or
//! - **daily**, `HH:MM` in UTC (`09:00`): the entry repeats every day. A daily
//!   `until` earlier than its `at` ends the next day (`22:00` → `02:00`).
//!
//! `at` and `until` are of the same kind. The floor holds on the half-open wall-time
//! interval `[at - lead, until)`; the wall time is the injected clock's.
//!
//! Guaranteed: parsing and [`ScheduleTime`]'s `Display` round-trip (fuzzed); a
//! daily entry's window is found whatever the day, `lead` and `until` (at most a
//! day each). Not guaranteed: time zones or daylight saving (UTC only); a wall clock
//! stepped backwards replays a window.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use casebook_kit::config::ConfigError;
use serde::{Deserialize, Serialize};

const DAY_SECS: u64 = 86_400;
/// The longest `lead` an entry may have.
pub const MAX_LEAD: Duration = Duration::from_secs(DAY_SECS);

/// When an entry starts or ends: once (a wall time) or daily (minutes after UTC
/// midnight). Written as in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ScheduleTime {
    /// Seconds since the Unix epoch.
    Once(u64),
    /// Minutes after midnight UTC, `0..1440`.
    Daily(u16),
}

impl ScheduleTime {
    /// Parses `HH:MM` (daily) or an RFC 3339 UTC time (once).
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(minutes) = parse_hh_mm(text) {
            return minutes;
        }
        let at = humantime::parse_rfc3339(text).map_err(|e| {
            format!(
                "`{}` is neither `HH:MM` (daily, UTC) nor an RFC 3339 UTC time like \
                 `2026-07-15T08:00:00Z`: {e}",
                text.escape_debug()
            )
        })?;
        let secs = at
            .duration_since(UNIX_EPOCH)
            .map_err(|_| format!("`{text}` is before 1970"))?
            .as_secs();
        Ok(Self::Once(secs))
    }

    fn kind(self) -> &'static str {
        match self {
            Self::Once(_) => "an RFC 3339 time",
            Self::Daily(_) => "a daily HH:MM",
        }
    }
}

/// `Some` when `text` has the shape `DD:DD` (then the result says whether it is a
/// valid time of day); `None` for anything else.
fn parse_hh_mm(text: &str) -> Option<Result<ScheduleTime, String>> {
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 5
        && bytes[2] == b':'
        && [0, 1, 3, 4].iter().all(|&i| bytes[i].is_ascii_digit());
    if !shaped {
        return None;
    }
    let hours = u16::from(bytes[0] - b'0') * 10 + u16::from(bytes[1] - b'0');
    let minutes = u16::from(bytes[3] - b'0') * 10 + u16::from(bytes[4] - b'0');
    Some(if hours < 24 && minutes < 60 {
        Ok(ScheduleTime::Daily(hours * 60 + minutes))
    } else {
        Err(format!("`{text}` is not a time of day (00:00 to 23:59)"))
    })
}

impl fmt::Display for ScheduleTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Once(secs) => write!(
                f,
                "{}",
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs))
            ),
            Self::Daily(minutes) => write!(f, "{:02}:{:02}", minutes / 60, minutes % 60),
        }
    }
}

impl TryFrom<String> for ScheduleTime {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<ScheduleTime> for String {
    fn from(time: ScheduleTime) -> String {
        time.to_string()
    }
}

/// One scheduled entry (`[[autoscaler.schedule]]`, or `POST /api/autoscaler/schedule`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledScale {
    /// The service; it needs a policy, whose `max_instances` bounds `instances`.
    pub service: String,
    /// When the surge starts.
    pub at: ScheduleTime,
    /// When the floor is released (the reactive rule takes over again).
    pub until: ScheduleTime,
    /// The floor: at least this many instances during the window.
    pub instances: u32,
    /// How long before `at` to start scaling (instances take time to start and warm).
    #[serde(with = "humantime_serde", default)]
    pub lead: Duration,
}

/// A window of wall time, `[from, until)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: SystemTime,
    pub until: SystemTime,
}

impl ScheduledScale {
    /// Checks the entry on its own (the policy's bound is checked by the caller);
    /// `at` is where it sits in the config (`autoscaler.schedule[0]`, or empty for an
    /// API body).
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let key = |field: &str| super::config::dotted(at, field);
        if self.instances == 0 {
            return Err(ConfigError::new(key("instances"), "must be at least 1"));
        }
        if self.lead > MAX_LEAD {
            return Err(ConfigError::new(key("lead"), "must be at most 24h"));
        }
        match (self.at, self.until) {
            (ScheduleTime::Once(from), ScheduleTime::Once(until)) if until <= from => Err(
                ConfigError::new(key("until"), format!("must be after `at` ({})", self.at)),
            ),
            (ScheduleTime::Daily(from), ScheduleTime::Daily(until)) if until == from => {
                Err(ConfigError::new(
                    key("until"),
                    "must differ from `at` (a window of a whole day or none)",
                ))
            }
            (ScheduleTime::Once(_), ScheduleTime::Once(_))
            | (ScheduleTime::Daily(_), ScheduleTime::Daily(_)) => Ok(()),
            (at, _) => Err(ConfigError::new(
                key("until"),
                format!("must be {} like `at`", at.kind()),
            )),
        }
    }

    /// The window holding `wall`, or else the next one; `None` once a one-off entry
    /// is over. The window starts `lead` before `at`.
    pub fn window_at_or_after(&self, wall: SystemTime) -> Option<Window> {
        let lead = self.lead.as_secs();
        let now = secs(wall);
        let (from, until) = match (self.at, self.until) {
            (ScheduleTime::Once(at), ScheduleTime::Once(until)) => {
                (until > now).then_some((at.saturating_sub(lead), until))?
            }
            (ScheduleTime::Daily(at), ScheduleTime::Daily(until)) => {
                let length = (u64::from(until) + 1440 - u64::from(at)) % 1440 * 60;
                // A window is shorter than two days (lead and length at most a day
                // each), so the one holding `now`, or the next, starts within these.
                let today = now / DAY_SECS;
                (today.saturating_sub(2)..=today + 2)
                    .map(|day| day * DAY_SECS + u64::from(at) * 60)
                    .map(|start| (start.saturating_sub(lead), start + length))
                    .find(|&(_, end)| end > now)?
            }
            _ => return None, // refused by `validate`
        };
        Some(Window {
            from: UNIX_EPOCH + Duration::from_secs(from),
            until: UNIX_EPOCH + Duration::from_secs(until),
        })
    }

    /// Whether the floor holds at `wall`.
    pub fn is_active(&self, wall: SystemTime) -> bool {
        self.window_at_or_after(wall)
            .is_some_and(|w| w.from <= wall && wall < w.until)
    }
}

/// The highest floor any active entry sets for `service` at `wall`.
pub fn floor(schedule: &[ScheduledScale], service: &str, wall: SystemTime) -> Option<u32> {
    schedule
        .iter()
        .filter(|entry| entry.service == service && entry.is_active(wall))
        .map(|entry| entry.instances)
        .max()
}

fn secs(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    fn entry(from: &str, until: &str, lead_secs: u64) -> ScheduledScale {
        ScheduledScale {
            service: "api".into(),
            at: ScheduleTime::parse(from).unwrap(),
            until: ScheduleTime::parse(until).unwrap(),
            instances: 4,
            lead: Duration::from_secs(lead_secs),
        }
    }

    #[test]
    fn times_parse_and_display_canonically() {
        for text in ["00:00", "09:05", "23:59", "2026-07-15T08:00:00Z"] {
            assert_eq!(ScheduleTime::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            ScheduleTime::parse("2026-07-15T08:00:00.750Z").unwrap(),
            ScheduleTime::parse("2026-07-15T08:00:00Z").unwrap(),
            "fractions are dropped"
        );
        for bad in [
            "24:00",
            "12:60",
            "9:00",
            "2026-07-15T08:00:00+02:00",
            "",
            "soon",
        ] {
            assert!(ScheduleTime::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_one_off_window_starts_lead_before_at_and_ends_at_until() {
        let e = entry("2026-07-15T08:00:00Z", "2026-07-15T10:00:00Z", 600);
        assert!(!e.is_active(at("2026-07-15T07:49:59Z")));
        assert!(e.is_active(at("2026-07-15T07:50:00Z")), "lead");
        assert!(e.is_active(at("2026-07-15T09:59:59Z")));
        assert!(
            !e.is_active(at("2026-07-15T10:00:00Z")),
            "until is exclusive"
        );
        assert_eq!(e.window_at_or_after(at("2026-07-15T10:00:00Z")), None);
    }

    #[test]
    fn a_daily_window_repeats_and_may_cross_midnight() {
        let e = entry("22:00", "02:00", 3600);
        for day in ["2026-01-01", "2026-03-31", "2027-12-31"] {
            assert!(!e.is_active(at(&format!("{day}T20:59:59Z"))));
            assert!(e.is_active(at(&format!("{day}T21:00:00Z"))), "lead");
            assert!(e.is_active(at(&format!("{day}T23:59:59Z"))));
            assert!(!e.is_active(at(&format!("{day}T12:00:00Z"))));
        }
        assert!(e.is_active(at("2026-01-02T01:59:59Z")), "ends the next day");
        assert!(!e.is_active(at("2026-01-02T02:00:00Z")));
        let next = e.window_at_or_after(at("2026-01-02T12:00:00Z")).unwrap();
        assert_eq!(next.from, at("2026-01-02T21:00:00Z"));
        assert_eq!(next.until, at("2026-01-03T02:00:00Z"));
    }

    #[test]
    fn a_lead_reaching_into_the_previous_day_is_found() {
        let e = entry("01:00", "03:00", 6 * 3600);
        assert!(
            e.is_active(at("2026-05-04T19:00:00Z")),
            "for tomorrow's 01:00"
        );
        assert!(!e.is_active(at("2026-05-04T18:59:59Z")));
    }

    #[test]
    fn the_highest_active_floor_of_the_service_wins() {
        let mut low = entry("08:00", "10:00", 0);
        low.instances = 2;
        let high = entry("09:00", "10:00", 0);
        let mut other = entry("08:00", "10:00", 0);
        other.service = "other".into();
        other.instances = 9;
        let schedule = [low, high, other];
        assert_eq!(floor(&schedule, "api", at("2026-01-01T08:30:00Z")), Some(2));
        assert_eq!(floor(&schedule, "api", at("2026-01-01T09:30:00Z")), Some(4));
        assert_eq!(floor(&schedule, "api", at("2026-01-01T10:30:00Z")), None);
    }

    #[test]
    fn validation_names_the_field() {
        let mut e = entry("08:00", "2026-07-15T10:00:00Z", 0);
        assert_eq!(
            e.validate("autoscaler.schedule[1]").unwrap_err().key(),
            "autoscaler.schedule[1].until"
        );
        e = entry("2026-07-15T10:00:00Z", "2026-07-15T10:00:00Z", 0);
        assert_eq!(e.validate("").unwrap_err().key(), "until");
        e = entry("08:00", "08:00", 0);
        assert_eq!(e.validate("").unwrap_err().key(), "until");
        e = entry("08:00", "09:00", 2 * DAY_SECS);
        assert_eq!(e.validate("").unwrap_err().key(), "lead");
        e = entry("08:00", "09:00", 0);
        e.instances = 0;
        assert_eq!(e.validate("").unwrap_err().key(), "instances");
    }
}
