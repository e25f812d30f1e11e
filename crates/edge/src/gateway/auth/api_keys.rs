//! API keys for machine clients: `x-api-key: <id>.<secret>`, checked against the
//! SHA-256 of the secret configured for `id`.
//!
//! Guarantees: the configuration holds no secret, only its hash; the comparison of
//! hashes takes the same time wherever they differ; an unknown id and a wrong secret
//! get the same answer (and an unknown id is hashed too, so the two take alike).
//! Not guaranteed: resistance to guessing a weak secret — hand out long random
//! secrets ([`generate_secret`]); the hash is fast because they are.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::AuthError;
use crate::gateway::config::ApiKeyConfig;

/// The longest `x-api-key` value read.
pub const MAX_API_KEY_BYTES: usize = 512;

/// The configured machine clients.
#[derive(Clone, Default)]
pub struct ApiKeys {
    by_id: HashMap<String, [u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("ids", &self.by_id.len())
            .finish()
    }
}

impl ApiKeys {
    /// The keys of a validated configuration (entries whose hash is not 64 hex
    /// digits are skipped: validation refuses them first).
    pub fn new(keys: &[ApiKeyConfig]) -> Self {
        let by_id = keys
            .iter()
            .filter_map(|k| Some((k.id.clone(), unhex32(&k.secret_sha256)?)))
            .collect();
        Self { by_id }
    }

    /// The key id of a valid `x-api-key` value.
    pub fn verify(&self, value: &str) -> Result<String, AuthError> {
        if value.len() > MAX_API_KEY_BYTES {
            return Err(AuthError::BadApiKey);
        }
        let (id, secret) = value.split_once('.').ok_or(AuthError::BadApiKey)?;
        let given: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let expected = self.by_id.get(id);
        let matches = constant_time_eq(&given, expected.unwrap_or(&[0; 32]));
        if matches && expected.is_some() && !secret.is_empty() {
            Ok(id.to_owned())
        } else {
            Err(AuthError::BadApiKey)
        }
    }
}

/// The lowercase hex SHA-256 of `secret`: what `api_keys[].secret_sha256` holds.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random secret: 32 bytes as 64 hex digits.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the compiler from ending the fold at the first difference.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_key_verifies_and_anything_else_is_refused_alike() {
        let secret = generate_secret();
        let keys = ApiKeys::new(&[ApiKeyConfig {
            id: "encoder".into(),
            secret_sha256: hash_secret(&secret),
        }]);
        assert_eq!(
            keys.verify(&format!("encoder.{secret}")).unwrap(),
            "encoder"
        );
        for bad in [
            format!("encoder.{secret}x"),
            format!("other.{secret}"),
            format!("encoder{secret}"),
            "encoder.".to_owned(),
            String::new(),
            format!("encoder.{}", "a".repeat(MAX_API_KEY_BYTES)),
        ] {
            assert_eq!(keys.verify(&bad), Err(AuthError::BadApiKey), "{bad}");
        }
    }

    #[test]
    fn the_hash_is_sha256_in_lowercase_hex() {
        assert_eq!(
            hash_secret("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        assert!(constant_time_eq(&[3; 32], &[3; 32]));
        let mut other = [3; 32];
        other[31] = 4;
        assert!(!constant_time_eq(&[3; 32], &other));
    }
}
