//! The workload's configuration and the prime-day profile.

use std::time::Duration;

use casebook_kit::sampling::Zipf;
use serde::Serialize;

use super::{WorkloadError, bad};

/// The share of each operation, in percent (they sum to 100).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mix {
    pub browse: u32,
    pub recs: u32,
    pub cart_add: u32,
    pub cart_remove: u32,
    pub reserve: u32,
    pub checkout: u32,
}

impl Default for Mix {
    fn default() -> Self {
        // Mostly browsing, as a storefront is; critical traffic about a sixth.
        Self {
            browse: 40,
            recs: 20,
            cart_add: 20,
            cart_remove: 5,
            reserve: 10,
            checkout: 5,
        }
    }
}

impl Mix {
    fn total(&self) -> u32 {
        self.browse + self.recs + self.cart_add + self.cart_remove + self.reserve + self.checkout
    }
}

/// One phase of a run: a multiple of the base rate for a while.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    pub name: String,
    pub multiplier: f64,
    #[serde(rename = "duration_ms", with = "casebook_kit::api::duration_ms")]
    pub duration: Duration,
}

/// Prime Day, compressed: `base` of normal load, the surge (10× for twice
/// `base`), then `base` of normal load again. The pre-scale is scheduled `lead`
/// before the surge (see the runner).
pub fn prime_day_phases(base: Duration) -> Vec<Phase> {
    vec![
        Phase {
            name: "before".into(),
            multiplier: 1.0,
            duration: base,
        },
        Phase {
            name: "surge".into(),
            multiplier: 10.0,
            duration: base * 2,
        },
        Phase {
            name: "after".into(),
            multiplier: 1.0,
            duration: base,
        },
    ]
}

/// What `casebook load amazon` runs.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadConfig {
    /// The API's base URL, e.g. `http://127.0.0.1:8100`.
    pub target: String,
    /// The control plane's base URL and token, for the pre-scale of `--prime-day`.
    pub control: Option<(String, Option<String>)>,
    pub users: usize,
    pub skus: usize,
    /// Zipf exponent of SKU and user popularity.
    pub zipf_s: f64,
    /// Requests per second at multiplier 1.
    pub rate_per_sec: f64,
    pub phases: Vec<Phase>,
    pub mix: Mix,
    /// Stock set on every SKU before the run (0: leave the stock as it is).
    pub stock_per_sku: u64,
    pub max_in_flight: usize,
    /// A success slower than this does not count as goodput.
    #[serde(rename = "slo_ms", with = "casebook_kit::api::duration_ms")]
    pub slo: Duration,
    pub timeout: Duration,
    /// The service the pre-scale raises, and to how many instances.
    pub prescale: Option<(String, usize)>,
    pub seed: u64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            target: "http://127.0.0.1:8100".into(),
            control: None,
            users: 10_000,
            skus: 10_000,
            zipf_s: 1.0,
            rate_per_sec: 200.0,
            phases: vec![Phase {
                name: "steady".into(),
                multiplier: 1.0,
                duration: Duration::from_secs(10),
            }],
            mix: Mix::default(),
            stock_per_sku: 1_000_000,
            max_in_flight: 4_096,
            slo: Duration::from_millis(300),
            timeout: Duration::from_secs(5),
            prescale: None,
            seed: 1,
        }
    }
}

impl WorkloadConfig {
    /// Checks every field; the error names the first at fault.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        if !self.target.starts_with("http://") {
            return Err(bad("target", "an http:// URL"));
        }
        if self.users == 0 || self.users > 10_000_000 {
            return Err(bad("users", "1 to 10,000,000"));
        }
        if self.skus == 0 || self.skus > 99_999 {
            return Err(bad("skus", "1 to 99,999 (the catalog's five-digit SKUs)"));
        }
        Zipf::new(self.skus, self.zipf_s, 0.0).map_err(|e| bad("zipf_s", e.to_string()))?;
        if !(self.rate_per_sec.is_finite() && self.rate_per_sec > 0.0) {
            return Err(bad("rate_per_sec", "a positive number"));
        }
        if self.phases.is_empty() {
            return Err(bad("phases", "at least one"));
        }
        for phase in &self.phases {
            if !(phase.multiplier.is_finite() && phase.multiplier > 0.0) || phase.duration.is_zero()
            {
                return Err(bad(
                    "phases",
                    format!("phase `{}` needs a positive rate and length", phase.name),
                ));
            }
        }
        if self.mix.total() != 100 {
            return Err(bad(
                "mix",
                format!("the shares sum to {}, not 100", self.mix.total()),
            ));
        }
        if self.max_in_flight == 0 {
            return Err(bad("max_in_flight", "at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_validate_and_mistakes_name_their_field() {
        assert!(WorkloadConfig::default().validate().is_ok());
        let mut config = WorkloadConfig::default();
        config.mix.browse += 1;
        assert!(matches!(
            config.validate(),
            Err(WorkloadError::Config { field: "mix", .. })
        ));
        let config = WorkloadConfig {
            skus: 100_000,
            ..WorkloadConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(WorkloadError::Config { field: "skus", .. })
        ));
        let phases = prime_day_phases(Duration::from_secs(10));
        assert_eq!(phases[1].multiplier, 10.0);
        assert_eq!(
            phases.iter().map(|p| p.duration).sum::<Duration>(),
            Duration::from_secs(40)
        );
    }
}
