//! Heartbeats and QoE events: the wire shape players post to
//! `POST /v1/playback/{session}/events`, and how the playback API turns them into
//! metrics.
//!
//! ```json
//! {"events": [
//!   {"type": "start", "start_ms": 48, "bitrate_bps": 800000},
//!   {"type": "heartbeat", "position_ms": 10000, "buffer_ms": 22000, "bitrate_bps": 3000000},
//!   {"type": "bitrate_switch", "from_bps": 800000, "to_bps": 3000000},
//!   {"type": "stall_begin", "position_ms": 31000},
//!   {"type": "stall_end", "stall_ms": 1200},
//!   {"type": "error", "kind": "edge_transport"}
//! ]}
//! ```
//!
//! Metrics (through the process recorder, so they reach the control plane's store),
//! tagged with the **session's** `title`, `edge` and `region` — values the playback
//! API chose, never free text from the client, so the series stay bounded by the
//! catalog, the edges and the topology:
//!
//! | metric | kind | from |
//! |---|---|---|
//! | `casebook_netflix_qoe_events_total{type}` | counter | every event |
//! | `casebook_netflix_qoe_start_seconds` | histogram | `start` |
//! | `casebook_netflix_qoe_stall_seconds` | histogram | `stall_end` |
//! | `casebook_netflix_qoe_stall_seconds_total` | counter (ms) | `stall_end` (as milliseconds) |
//! | `casebook_netflix_qoe_switches_total` | counter | `bitrate_switch` |
//! | `casebook_netflix_qoe_bitrate_mbps` | histogram | `heartbeat`, `start` |
//! | `casebook_netflix_qoe_buffer_seconds` | histogram | `heartbeat` |
//! | `casebook_netflix_qoe_errors_total{kind}` | counter | `error` (`kind` checked: `[a-z0-9_]{1,32}`, at most [`MAX_ERROR_KINDS`] distinct kinds, the rest counted as `other`) |

use serde::{Deserialize, Serialize};

/// The most events one post may carry.
pub const MAX_EVENTS_PER_POST: usize = 256;
/// The longest error `kind`.
pub const MAX_KIND_LEN: usize = 32;
/// Distinct error kinds counted by name; further kinds are counted as `other`.
pub const MAX_ERROR_KINDS: usize = 32;

/// One heartbeat or QoE event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum QoeEvent {
    /// A periodic sign of life with where the player is.
    Heartbeat {
        /// Media played so far.
        position_ms: u64,
        /// Media buffered ahead.
        buffer_ms: u64,
        /// The rendition playing.
        bitrate_bps: u64,
    },
    /// Playback began: the play request → first frame.
    Start { start_ms: u64, bitrate_bps: u64 },
    /// The buffer ran dry.
    StallBegin { position_ms: u64 },
    /// Playback resumed after `stall_ms`.
    StallEnd { stall_ms: u64 },
    /// The player moved to another rendition.
    BitrateSwitch { from_bps: u64, to_bps: u64 },
    /// Something failed (`edge_transport`, `edge_status`, …).
    Error { kind: String },
}

impl QoeEvent {
    /// The event's `type`, as the metrics tag it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Heartbeat { .. } => "heartbeat",
            Self::Start { .. } => "start",
            Self::StallBegin { .. } => "stall_begin",
            Self::StallEnd { .. } => "stall_end",
            Self::BitrateSwitch { .. } => "bitrate_switch",
            Self::Error { .. } => "error",
        }
    }
}

/// The body of `POST /v1/playback/{session}/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    pub events: Vec<QoeEvent>,
}

/// Whether an error kind may become a metric tag.
pub fn valid_error_kind(kind: &str) -> bool {
    (1..=MAX_KIND_LEN).contains(&kind.len())
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_unknown_fields_or_types_are_refused() {
        let batch = EventBatch {
            events: vec![
                QoeEvent::Start {
                    start_ms: 48,
                    bitrate_bps: 800_000,
                },
                QoeEvent::Error {
                    kind: "edge_transport".into(),
                },
            ],
        };
        let json = serde_json::to_string(&batch).unwrap();
        assert!(json.contains(r#""type":"start""#), "{json}");
        assert_eq!(serde_json::from_str::<EventBatch>(&json).unwrap(), batch);
        for bad in [
            r#"{"events":[{"type":"start","start_ms":1,"bitrate_bps":2,"extra":3}]}"#,
            r#"{"events":[{"type":"teleport"}]}"#,
            r#"{"events":[{"type":"stall_end"}]}"#,
            r#"{"events":[{"type":"stall_end","stall_ms":-4}]}"#,
        ] {
            assert!(serde_json::from_str::<EventBatch>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_kinds_are_short_snake_case() {
        assert!(valid_error_kind("edge_transport"));
        assert!(!valid_error_kind(""));
        assert!(!valid_error_kind("Edge"));
        assert!(!valid_error_kind(&"a".repeat(33)));
    }
}
