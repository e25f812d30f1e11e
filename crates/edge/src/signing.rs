//! Signed, expiring URLs in the manner of CloudFront and Akamai signed URLs: the
//! query string carries `exp` (Unix seconds) and `sig`, the HMAC-SHA256 of the path
//! and the expiry under a key that the playback service and every edge share.
//!
//! Guaranteed: a signature covers exactly one path and one expiry, so a URL for
//! another object, a changed expiry or a tampered signature fails [`SigningKey::verify`];
//! comparison is constant-time. Not guaranteed: that clocks agree (the edge judges
//! `exp` on its own clock) or that a leaked URL is not replayed before it expires.

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a generated key.
pub const KEY_BYTES: usize = 32;

/// The shared secret behind signed URLs.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// Why a signed URL is refused (all answered 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the URL is not signed (no `exp` and `sig`)")]
    Missing,
    #[error("the URL's `exp` is not a number")]
    BadExpiry,
    #[error("the URL expired")]
    Expired,
    #[error("the URL's signature does not match its path and expiry")]
    Mismatch,
}

impl SigningKey {
    /// A key from raw bytes (at least 16).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> anyhow::Result<Self> {
        let bytes = bytes.into();
        anyhow::ensure!(bytes.len() >= 16, "a signing key needs at least 16 bytes");
        Ok(Self(bytes))
    }

    /// The key in `path`, made (random, mode 0600) when the file does not exist.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => Self::from_bytes(bytes)
                .map_err(|e| anyhow::anyhow!("signing key {}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let key: [u8; KEY_BYTES] = rand::random();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(path) {
                    Ok(mut file) => {
                        file.write_all(&key)?;
                        file.sync_all()?;
                        Self::from_bytes(key.to_vec())
                    }
                    // Another instance made it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::from_bytes(std::fs::read(path)?)
                    }
                    Err(e) => Err(anyhow::anyhow!("signing key {}: {e}", path.display())),
                }
            }
            Err(e) => Err(anyhow::anyhow!("signing key {}: {e}", path.display())),
        }
    }

    fn mac(&self, path: &str, exp: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(path.as_bytes());
        mac.update(b"\n");
        mac.update(exp.to_string().as_bytes());
        mac
    }

    /// The query string (`exp=…&sig=…`) that signs `path` until `exp` (Unix seconds).
    pub fn sign(&self, path: &str, exp: u64) -> String {
        let sig = self.mac(path, exp).finalize().into_bytes();
        format!("exp={exp}&sig={}", hex(&sig))
    }

    /// Checks the `exp` and `sig` of `query` against `path` at `now` (Unix seconds).
    pub fn verify(&self, path: &str, query: Option<&str>, now: u64) -> Result<(), SignatureError> {
        self.verify_expiry(path, query, now).map(|_| ())
    }

    /// [`verify`](Self::verify), answering the verified `exp`: what an edge re-signs
    /// a playlist's URLs with.
    pub fn verify_expiry(
        &self,
        path: &str,
        query: Option<&str>,
        now: u64,
    ) -> Result<u64, SignatureError> {
        let (mut exp, mut sig) = (None, None);
        for pair in query.unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("exp", v)) => exp = Some(v),
                Some(("sig", v)) => sig = Some(v),
                _ => {}
            }
        }
        let (Some(exp), Some(sig)) = (exp, sig) else {
            return Err(SignatureError::Missing);
        };
        let exp: u64 = exp.parse().map_err(|_| SignatureError::BadExpiry)?;
        let sig = unhex(sig).ok_or(SignatureError::Mismatch)?;
        self.mac(path, exp)
            .verify_slice(&sig)
            .map_err(|_| SignatureError::Mismatch)?;
        if now > exp {
            return Err(SignatureError::Expired);
        }
        Ok(exp)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(vec![7; 32]).unwrap()
    }

    #[test]
    fn a_signed_path_verifies_until_it_expires() {
        let query = key().sign("/o/titles/a/master.m3u8", 1_000);
        assert_eq!(
            key().verify("/o/titles/a/master.m3u8", Some(&query), 999),
            Ok(())
        );
        assert_eq!(
            key().verify("/o/titles/a/master.m3u8", Some(&query), 1_000),
            Ok(())
        );
        assert_eq!(
            key().verify("/o/titles/a/master.m3u8", Some(&query), 1_001),
            Err(SignatureError::Expired)
        );
    }

    #[test]
    fn another_path_a_changed_expiry_or_another_key_is_refused() {
        let query = key().sign("/o/a", 1_000);
        assert_eq!(
            key().verify("/o/b", Some(&query), 0),
            Err(SignatureError::Mismatch)
        );
        let stretched = query.replace("exp=1000", "exp=9999");
        assert_eq!(
            key().verify("/o/a", Some(&stretched), 0),
            Err(SignatureError::Mismatch)
        );
        let other = SigningKey::from_bytes(vec![8; 32]).unwrap();
        assert_eq!(
            other.verify("/o/a", Some(&query), 0),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(key().verify("/o/a", None, 0), Err(SignatureError::Missing));
        assert_eq!(
            key().verify("/o/a", Some("exp=x&sig=00"), 0),
            Err(SignatureError::BadExpiry)
        );
    }

    #[test]
    fn a_key_file_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netflix/signing.key");
        let made = SigningKey::load_or_create(&path).unwrap();
        let read = SigningKey::load_or_create(&path).unwrap();
        assert_eq!(made.0, read.0);
        assert_eq!(made.0.len(), KEY_BYTES);
    }
}
