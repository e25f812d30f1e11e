//! Port plans: a service's ports across regions, checked against 65535 in one place.
//!
//! A service with one instance per region listens on `base + stride × i` for region
//! *i* (the chat nodes and uber replicas step by 100, gossip by 1). A base of 0 means
//! "a free port for every instance" and stays 0 for every region.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Where one listener of a service sits in region *i*: `base + stride × i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortPlan {
    /// Region 0's port; 0 picks a free port for every region.
    pub base: u16,
    /// The step between consecutive regions.
    pub stride: u16,
}

impl PortPlan {
    /// The plan `base + stride × i`.
    pub const fn new(base: u16, stride: u16) -> Self {
        Self { base, stride }
    }

    /// Region `index`'s port; `None` beyond 65535. Base 0 stays 0.
    pub fn port(&self, index: usize) -> Option<u16> {
        regional_port(self.base, self.stride, index)
    }

    /// Checks that `regions` regions all fit below 65536; the error names `key`.
    pub fn check(&self, key: &str, regions: usize) -> Result<(), ConfigError> {
        let last = regions.saturating_sub(1);
        if self.port(last).is_some() {
            return Ok(());
        }
        let highest = u64::from(self.base) + last as u64 * u64::from(self.stride);
        Err(ConfigError::new(
            key,
            format!("{regions} regions need ports up to {highest}, beyond 65535"),
        ))
    }
}

/// `base + stride × index`: region `index`'s port. 0 (free ports) stays 0; `None`
/// beyond 65535.
pub fn regional_port(base: u16, stride: u16, index: usize) -> Option<u16> {
    if base == 0 {
        return Some(0);
    }
    u16::try_from(index)
        .ok()
        .and_then(|i| i.checked_mul(stride))
        .and_then(|offset| base.checked_add(offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_step_by_the_stride_and_zero_stays_free() {
        let plan = PortPlan::new(8090, 100);
        assert_eq!(
            (0..3).map(|i| plan.port(i)).collect::<Vec<_>>(),
            [Some(8090), Some(8190), Some(8290)]
        );
        assert_eq!(PortPlan::new(0, 100).port(7), Some(0));
        assert_eq!(regional_port(65_500, 100, 1), None);
        assert_eq!(regional_port(1, 1, usize::MAX), None);
    }

    #[test]
    fn a_plan_past_65535_names_its_key() {
        assert!(
            PortPlan::new(65_300, 100)
                .check("uber.http_port", 3)
                .is_ok()
        );
        let err = PortPlan::new(65_400, 100)
            .check("uber.http_port", 3)
            .unwrap_err();
        assert_eq!(err.key(), "uber.http_port");
        assert_eq!(
            err.to_string(),
            "uber.http_port: 3 regions need ports up to 65600, beyond 65535"
        );
        assert!(PortPlan::new(0, 100).check("x", 1000).is_ok());
    }
}
