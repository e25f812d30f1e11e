//! A flag and the assignment of users to its variants.

use casebook_kit::partition::stable_hash_bytes;
use serde::{Deserialize, Serialize};

/// Assignment resolution: a user falls in one of this many buckets, so
/// percentages have two decimals' worth of room for later refinement.
pub const BUCKETS: u64 = 10_000;
/// Most variants a flag may have.
pub const MAX_VARIANTS: usize = 16;
/// Longest flag or variant name.
pub const MAX_NAME_LEN: usize = 64;

/// One variant and the share of users it gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    /// Percent of users, 0 to 100; a flag's variants sum to 100.
    pub percent: u8,
}

/// A flag: its variants in bucket order, and the salt that decorrelates it from
/// other flags (two flags with one salt would split users identically).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub variants: Vec<Variant>,
    /// Defaults to the flag's name.
    #[serde(default)]
    pub salt: String,
}

/// A flag that cannot be stored; `field` names the request field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FlagError {
    pub field: String,
    pub message: String,
}

impl FlagError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// `[a-z0-9-]`, 1 to 64 characters.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Flag {
    /// Checks the flag as stored; errors name the request field.
    pub fn validate(&self) -> Result<(), FlagError> {
        if !valid_name(&self.name) {
            return Err(FlagError::new("name", "1 to 64 characters of [a-z0-9-]"));
        }
        if self.description.len() > 1024 {
            return Err(FlagError::new("description", "at most 1024 bytes"));
        }
        if self.salt.len() > MAX_NAME_LEN {
            return Err(FlagError::new("salt", "at most 64 bytes"));
        }
        if self.variants.is_empty() || self.variants.len() > MAX_VARIANTS {
            return Err(FlagError::new("variants", "1 to 16 variants"));
        }
        let mut sum = 0u32;
        for (i, variant) in self.variants.iter().enumerate() {
            if !valid_name(&variant.name) {
                return Err(FlagError::new(
                    format!("variants[{i}].name"),
                    "1 to 64 characters of [a-z0-9-]",
                ));
            }
            if self.variants[..i].iter().any(|v| v.name == variant.name) {
                return Err(FlagError::new(
                    format!("variants[{i}].name"),
                    format!("variant `{}` appears twice", variant.name),
                ));
            }
            if variant.percent > 100 {
                return Err(FlagError::new(
                    format!("variants[{i}].percent"),
                    "a percentage is 0 to 100",
                ));
            }
            sum += u32::from(variant.percent);
        }
        if sum != 100 {
            return Err(FlagError::new(
                "variants",
                format!("the percentages sum to {sum}, not 100"),
            ));
        }
        Ok(())
    }

    /// The user's bucket, `0..BUCKETS`: stable across processes and runs.
    pub fn bucket(&self, user: &str) -> u64 {
        let salt = if self.salt.is_empty() {
            &self.name
        } else {
            &self.salt
        };
        let mut bytes = Vec::with_capacity(salt.len() + user.len() + 1);
        bytes.extend_from_slice(salt.as_bytes());
        bytes.push(0); // "ab"+"c" and "a"+"bc" must not collide
        bytes.extend_from_slice(user.as_bytes());
        stable_hash_bytes(&bytes) % BUCKETS
    }

    /// The variant `user` is assigned to. Variants own consecutive ranges of
    /// buckets in their listed order.
    pub fn assign(&self, user: &str) -> &Variant {
        let bucket = self.bucket(user);
        let mut upper = 0u64;
        for variant in &self.variants {
            upper += u64::from(variant.percent) * (BUCKETS / 100);
            if bucket < upper {
                return variant;
            }
        }
        // Only reachable for an unvalidated flag; the last variant takes the rest.
        self.variants.last().expect("a validated flag has variants")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(variants: &[(&str, u8)]) -> Flag {
        Flag {
            name: "recs-strategy".into(),
            description: String::new(),
            variants: variants
                .iter()
                .map(|(name, percent)| Variant {
                    name: (*name).into(),
                    percent: *percent,
                })
                .collect(),
            salt: String::new(),
        }
    }

    // The buckets of three users under the salt `recs-strategy`, computed once.
    const PINNED_ALICE: u64 = 3_926;
    const PINNED_BOB: u64 = 9_519;
    const PINNED_USER_42: u64 = 2_690;

    #[test]
    fn assignment_is_stable_and_pinned_across_builds() {
        let f = flag(&[("blend", 50), ("popular", 50)]);
        let first: Vec<_> = (0..100)
            .map(|u| f.assign(&format!("user-{u}")).name.clone())
            .collect();
        let again: Vec<_> = (0..100)
            .map(|u| f.assign(&format!("user-{u}")).name.clone())
            .collect();
        assert_eq!(first, again);
        // Pinned: a change of the hash would silently reshuffle every running A/B test.
        assert_eq!(f.bucket("user-1"), flag(&[("x", 100)]).bucket("user-1"));
        let pinned: Vec<u64> = ["alice", "bob", "user-42"]
            .iter()
            .map(|u| f.bucket(u))
            .collect();
        assert_eq!(pinned, [PINNED_ALICE, PINNED_BOB, PINNED_USER_42]);
    }

    #[test]
    fn proportions_hold_within_half_a_point_on_100k_users() {
        // Tolerance: binomial σ for p = 0.2, n = 100k is 0.13 %; 0.5 points is ~4σ.
        let f = flag(&[("a", 20), ("b", 30), ("c", 50)]);
        let mut counts = [0u32; 3];
        for u in 0..100_000 {
            let v = f.assign(&format!("u{u}"));
            counts[f.variants.iter().position(|x| x == v).unwrap()] += 1;
        }
        for (count, want) in counts.iter().zip([20.0, 30.0, 50.0]) {
            let got = f64::from(*count) / 1_000.0;
            assert!((got - want).abs() < 0.5, "{got}% vs {want}%");
        }
    }

    #[test]
    fn growing_a_variant_moves_only_users_into_it() {
        let before = flag(&[("a", 10), ("b", 90)]);
        let after = flag(&[("a", 30), ("b", 70)]);
        for u in 0..10_000 {
            let user = format!("u{u}");
            if before.assign(&user).name == "a" {
                assert_eq!(
                    after.assign(&user).name,
                    "a",
                    "{user} left the grown variant"
                );
            }
        }
    }

    #[test]
    fn percentages_must_sum_to_100_and_errors_name_the_field() {
        let err = flag(&[("a", 50), ("b", 45)]).validate().unwrap_err();
        assert_eq!(err.field, "variants");
        assert!(err.message.contains("95"), "{err}");
        let err = flag(&[("a", 50), ("a", 50)]).validate().unwrap_err();
        assert_eq!(err.field, "variants[1].name");
        let err = flag(&[("a", 150)]).validate().unwrap_err();
        assert_eq!(err.field, "variants[0].percent");
        let err = flag(&[("Bad Name", 100)]).validate().unwrap_err();
        assert_eq!(err.field, "variants[0].name");
        assert!(flag(&[]).validate().is_err());
        assert!(flag(&[("a", 0), ("b", 100)]).validate().is_ok());
    }
}
