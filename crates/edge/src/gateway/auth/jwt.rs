//! Bearer tokens: HS256 JWTs under one shared secret, issued by the user service
//! ([`TokenIssuer`]) and verified by the gateway ([`TokenVerifier`]).
//!
//! Guarantees of [`TokenVerifier::verify`]:
//! - only `alg: HS256` is accepted (`none` and every other algorithm are refused
//!   before any signature check), and the signature is checked in constant time
//!   (the `jsonwebtoken` crate, RustCrypto's HMAC);
//! - `sub`, `iss`, `aud` and `exp` must be present; `iss` and `aud` must equal the
//!   configured ones; `aud` is one string;
//! - `exp` and `nbf` are judged on the injected clock's wall time with the
//!   configured leeway: valid while `now < exp + leeway` and `now + leeway >= nbf`;
//! - a token longer than [`MAX_TOKEN_BYTES`] is refused unread.
//!
//! Not guaranteed: revocation (a token is good until it expires), or agreement
//! between the issuer's and the gateway's clocks beyond the leeway.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use casebook_kit::clock::SharedClock;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::AuthError;
use crate::gateway::config::JwtConfig;
use crate::signing::SigningKey;

/// The longest token read.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// The fewest secret bytes an HS256 key may have (its hash's width).
pub const MIN_KEY_BYTES: usize = 32;

/// The shared secret of HS256 tokens.
#[derive(Clone)]
pub struct JwtKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtKey(..)")
    }
}

impl JwtKey {
    /// A key from raw secret bytes (at least [`MIN_KEY_BYTES`]).
    pub fn from_bytes(secret: &[u8]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            secret.len() >= MIN_KEY_BYTES,
            "an HS256 key needs at least {MIN_KEY_BYTES} bytes, got {}",
            secret.len()
        );
        Ok(Self {
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
        })
    }

    /// The key in `path`, made (random, mode 0600) when the file does not exist —
    /// by the same code that makes the CDN's signing key, so both files behave alike.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        SigningKey::load_or_create(path)?;
        let secret =
            std::fs::read(path).map_err(|e| anyhow::anyhow!("JWT key {}: {e}", path.display()))?;
        Self::from_bytes(&secret).map_err(|e| anyhow::anyhow!("JWT key {}: {e}", path.display()))
    }
}

/// The claims the gateway reads. Issued tokens carry exactly these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user: passed upstream as `x-user-id`, and the rate-limit key.
    pub sub: String,
    pub iss: String,
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, Unix seconds.
    #[serde(default)]
    pub iat: u64,
}

fn unix_secs(clock: &SharedClock) -> u64 {
    clock
        .wall()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Mints tokens: the user service's half, with the gateway's key and settings.
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    key: Arc<JwtKey>,
    issuer: String,
    audience: String,
    ttl: Duration,
    clock: SharedClock,
}

impl TokenIssuer {
    pub fn new(key: Arc<JwtKey>, config: &JwtConfig, clock: SharedClock) -> Self {
        Self {
            key,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl: config.token_ttl,
            clock,
        }
    }

    /// The claims of a token for `subject`, valid from now for the configured TTL.
    pub fn claims_for(&self, subject: &str) -> Claims {
        let now = unix_secs(&self.clock);
        Claims {
            sub: subject.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + self.ttl.as_secs().max(1),
            nbf: None,
            iat: now,
        }
    }

    /// Signs `claims` as they are.
    pub fn issue_token(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.key.encoding)
            .expect("HS256 over serialisable claims with an HMAC key cannot fail")
    }

    /// A token for `subject`, valid from now for the configured TTL.
    pub fn issue(&self, subject: &str) -> String {
        self.issue_token(&self.claims_for(subject))
    }
}

/// Checks bearer tokens (module docs say how).
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    key: Arc<JwtKey>,
    validation: Arc<Validation>,
    leeway: u64,
    clock: SharedClock,
}

impl TokenVerifier {
    pub fn new(key: Arc<JwtKey>, config: &JwtConfig, clock: SharedClock) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Time is ours to judge, on the injected clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        Self {
            key,
            validation: Arc::new(validation),
            leeway: config.leeway.as_secs(),
            clock,
        }
    }

    /// The claims of a valid token.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed("the token is too long"));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError::Malformed("the token is not signed with HS256")
                }
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
                    AuthError::Malformed("the token lacks a required claim (sub, iss, aud, exp)")
                }
                _ => AuthError::Malformed("the token is not a well-formed JWT"),
            })?;
        let claims = data.claims;
        let now = unix_secs(&self.clock);
        if now >= claims.exp.saturating_add(self.leeway) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = claims.nbf
            && now.saturating_add(self.leeway) < nbf
        {
            return Err(AuthError::NotYetValid);
        }
        if claims.sub.is_empty()
            || claims.sub.len() > 256
            || !claims.sub.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(AuthError::Malformed(
                "the token's subject is not 1-256 printable ASCII characters",
            ));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use casebook_kit::clock::ManualClock;

    use super::*;

    fn pair(clock: &ManualClock) -> (TokenIssuer, TokenVerifier) {
        let key = Arc::new(JwtKey::from_bytes(&[7; 32]).unwrap());
        let config = JwtConfig::default();
        (
            TokenIssuer::new(key.clone(), &config, clock.shared()),
            TokenVerifier::new(key, &config, clock.shared()),
        )
    }

    #[test]
    fn an_issued_token_verifies_until_it_expires_past_the_leeway() {
        let clock = ManualClock::new();
        let (issuer, verifier) = pair(&clock);
        let token = issuer.issue("alice");
        assert_eq!(verifier.verify(&token).unwrap().sub, "alice");
        clock.advance(Duration::from_secs(3600 + 29));
        assert!(verifier.verify(&token).is_ok(), "inside the 30 s leeway");
        clock.advance(Duration::from_secs(1));
        assert_eq!(verifier.verify(&token), Err(AuthError::Expired));
    }

    #[test]
    fn a_future_nbf_waits_for_the_leeway() {
        let clock = ManualClock::new();
        let (issuer, verifier) = pair(&clock);
        let mut claims = issuer.claims_for("bob");
        claims.nbf = Some(claims.iat + 60);
        let token = issuer.issue_token(&claims);
        assert_eq!(verifier.verify(&token), Err(AuthError::NotYetValid));
        clock.advance(Duration::from_secs(30));
        assert!(verifier.verify(&token).is_ok());
    }

    #[test]
    fn other_keys_issuers_audiences_and_algorithms_are_refused() {
        let clock = ManualClock::new();
        let (issuer, verifier) = pair(&clock);
        let other_key = Arc::new(JwtKey::from_bytes(&[8; 32]).unwrap());
        let forged =
            TokenIssuer::new(other_key, &JwtConfig::default(), clock.shared()).issue("eve");
        assert_eq!(verifier.verify(&forged), Err(AuthError::BadSignature));

        let mut claims = issuer.claims_for("eve");
        claims.iss = "elsewhere".into();
        assert_eq!(
            verifier.verify(&issuer.issue_token(&claims)),
            Err(AuthError::WrongIssuer)
        );
        let mut claims = issuer.claims_for("eve");
        claims.aud = "amazon".into();
        assert_eq!(
            verifier.verify(&issuer.issue_token(&claims)),
            Err(AuthError::WrongAudience)
        );

        // `alg: none` with the signature dropped, and a tampered payload.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let good = issuer.issue("alice");
        let mut parts: Vec<&str> = good.split('.').collect();
        let none_header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        parts[0] = &none_header;
        assert!(matches!(
            verifier.verify(&format!("{}.{}.", parts[0], parts[1])),
            Err(AuthError::Malformed(_))
        ));
        let payload = serde_json::to_vec(&issuer.claims_for("admin")).unwrap();
        let tampered_payload = b64.encode(payload);
        let good_parts: Vec<&str> = good.split('.').collect();
        let tampered = format!("{}.{}.{}", good_parts[0], tampered_payload, good_parts[2]);
        assert_eq!(verifier.verify(&tampered), Err(AuthError::BadSignature));
        for junk in ["", "a.b", "a.b.c", "....", &"x".repeat(MAX_TOKEN_BYTES + 1)] {
            assert!(
                matches!(verifier.verify(junk), Err(AuthError::Malformed(_))),
                "{junk}"
            );
        }
    }

    #[test]
    fn a_key_file_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netflix/jwt.key");
        let clock = ManualClock::new();
        let made = Arc::new(JwtKey::load_or_create(&path).unwrap());
        let read = Arc::new(JwtKey::load_or_create(&path).unwrap());
        let config = JwtConfig::default();
        let token = TokenIssuer::new(made, &config, clock.shared()).issue("carol");
        let verifier = TokenVerifier::new(read, &config, clock.shared());
        assert_eq!(verifier.verify(&token).unwrap().sub, "carol");
        assert!(JwtKey::from_bytes(&[1; 16]).is_err());
    }
}
