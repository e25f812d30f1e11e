//! The Amazon workload behind `casebook load amazon`: browsing, recommendations,
//! cart adds and removes, reservations and checkout over Zipf SKUs and users, open
//! loop, against the API on :8100 — and `--prime-day`, a surge profile: normal
//! load, a scheduled pre-scale, ten times the load for a window, then back.
//!
//! # Guarantees
//! - **Open loop, no coordinated omission**: each phase is one run of the kit's
//!   loadgen; latency counts from the intended send time.
//! - **Priorities as the server sees them**: every operation is one request class
//!   (`browse`, `recs` low; `cart_add`, `cart_remove` normal; `reserve`,
//!   `checkout` critical), so the report shows what shedding kept and what it
//!   refused, per priority.
//! - **Answers, not failures**: a 409 `insufficient_stock` is a correct answer
//!   (counted ok); 503 and 429 are shedding (counted shed); anything else, or no
//!   answer in time, is an error.
//! - **Bounded**: requests in flight ≤ `max_in_flight` per phase; the stock
//!   set-up sends at most [`SETUP_CONCURRENCY`] requests at once, and tries a
//!   shed one again after a pause (the shedder's limit starts low and grows).
//!
//! # Deliberately absent
//! Sessions with think time (each request is independent, drawn from the mix);
//! a checkout is preceded by one add to the same user's cart so it has a line to buy.
//!
//! | file | holds |
//! |---|---|
//! | `config` | [`WorkloadConfig`], the mix, the prime-day [`Phase`]s, validation |
//! | `run` | the runner: stock set-up, the phases, the requests |
//! | `report` | live counters ([`WorkloadProgress`]) and the report with its verdict lines |
//! | `timeline` | per-second outcomes per priority across the run (`--json`'s `timeline`) |

mod config;
mod report;
mod run;
mod timeline;

pub use config::{Mix, Phase, WorkloadConfig, prime_day_phases};
pub use report::{PhaseReport, WorkloadProgress, WorkloadReport};
pub use run::run;
pub use timeline::{Bucket, MAX_SECONDS, Second};

/// Stock set-up requests in flight at most.
pub const SETUP_CONCURRENCY: usize = 16;
/// Times a shed stock set-up request is tried again (after a pause).
pub const SETUP_RETRIES: usize = 50;

/// A bad workload configuration; names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkloadError {
    #[error("invalid workload: {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error(transparent)]
    Load(#[from] casebook_kit::loadgen::LoadError),
    #[error("stock set-up failed: {0}")]
    Setup(String),
}

fn bad(field: &'static str, reason: impl Into<String>) -> WorkloadError {
    WorkloadError::Config {
        field,
        reason: reason.into(),
    }
}
