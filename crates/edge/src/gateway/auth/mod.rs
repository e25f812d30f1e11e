//! Who is calling: a bearer JWT (a user, issued by the user service) or an API key
//! (a machine client), read from the request head by [`Authenticator`].
//!
//! Guarantees: at most one credential is read — a request carrying both an
//! `Authorization` and an `x-api-key` header, or either header twice, is refused;
//! only the `Bearer` scheme is read; header values are bounded before parsing
//! ([`jwt::MAX_TOKEN_BYTES`], [`api_keys::MAX_API_KEY_BYTES`]). On a route whose
//! auth is `optional`, a credential that is sent must still be valid: a bad token is
//! never quietly treated as no token.

pub mod api_keys;
pub mod jwt;

use http::HeaderMap;
use http::header::AUTHORIZATION;

pub use self::api_keys::{ApiKeys, generate_secret, hash_secret};
pub use self::jwt::{Claims, JwtKey, TokenIssuer, TokenVerifier};
use super::config::AuthMode;

/// The header machine clients send their key in: `<id>.<secret>`.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Why a caller was refused (all answered 401 `unauthorized`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this route needs a bearer token or an API key")]
    Missing,
    #[error("bad credentials: {0}")]
    Malformed(&'static str),
    #[error("the token's signature does not match")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by someone else")]
    WrongIssuer,
    #[error("the token is meant for another audience")]
    WrongAudience,
    #[error("unknown API key or wrong secret")]
    BadApiKey,
}

/// The caller, as far as the gateway could tell.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Identity {
    /// No credential (on a route that allows it).
    #[default]
    Anonymous,
    /// A user: the token's subject.
    User(String),
    /// A machine client: its API key id.
    Machine(String),
}

/// A credential found in a request head, not yet checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    Bearer(&'a str),
    ApiKey(&'a str),
}

/// Finds the one credential of a request head, if any (module docs: the rules).
pub fn credential(headers: &HeaderMap) -> Result<Option<Credential<'_>>, AuthError> {
    let mut auth = headers.get_all(AUTHORIZATION).iter();
    let mut keys = headers.get_all(API_KEY_HEADER).iter();
    let (authorization, api_key) = (auth.next(), keys.next());
    if auth.next().is_some() || keys.next().is_some() {
        return Err(AuthError::Malformed("a credential header is sent twice"));
    }
    match (authorization, api_key) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(AuthError::Malformed(
            "send a bearer token or an API key, not both",
        )),
        (Some(value), None) => {
            if value.len() > jwt::MAX_TOKEN_BYTES + 16 {
                return Err(AuthError::Malformed("the token is too long"));
            }
            let text = value
                .to_str()
                .map_err(|_| AuthError::Malformed("the Authorization header is not ASCII"))?;
            let (scheme, token) = text.trim().split_once(' ').ok_or(AuthError::Malformed(
                "expected `Authorization: Bearer <token>`",
            ))?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(AuthError::Malformed("only Bearer tokens are accepted"));
            }
            let token = token.trim_start();
            if token.is_empty() {
                return Err(AuthError::Malformed("the bearer token is empty"));
            }
            Ok(Some(Credential::Bearer(token)))
        }
        (None, Some(value)) => {
            let text = value.to_str().map_err(|_| AuthError::BadApiKey)?.trim();
            Ok(Some(Credential::ApiKey(text)))
        }
    }
}

/// Checks credentials against a route's auth mode.
#[derive(Debug, Clone)]
pub struct Authenticator {
    tokens: TokenVerifier,
    api_keys: ApiKeys,
}

impl Authenticator {
    pub fn new(tokens: TokenVerifier, api_keys: ApiKeys) -> Self {
        Self { tokens, api_keys }
    }

    /// The caller of a request head on a route with auth `mode`.
    pub fn authenticate(&self, mode: AuthMode, headers: &HeaderMap) -> Result<Identity, AuthError> {
        if mode == AuthMode::None {
            return Ok(Identity::Anonymous);
        }
        match credential(headers)? {
            None if mode == AuthMode::Required => Err(AuthError::Missing),
            None => Ok(Identity::Anonymous),
            Some(Credential::Bearer(token)) => self
                .tokens
                .verify(token)
                .map(|claims| Identity::User(claims.sub)),
            Some(Credential::ApiKey(key)) => self.api_keys.verify(key).map(Identity::Machine),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use casebook_kit::clock::ManualClock;
    use http::HeaderValue;

    use super::*;
    use crate::gateway::config::{ApiKeyConfig, JwtConfig};

    fn authenticator() -> (Authenticator, TokenIssuer) {
        let clock = ManualClock::new();
        let key = Arc::new(JwtKey::from_bytes(&[9; 32]).unwrap());
        let config = JwtConfig::default();
        let keys = ApiKeys::new(&[ApiKeyConfig {
            id: "m".into(),
            secret_sha256: hash_secret("s3cret"),
        }]);
        (
            Authenticator::new(
                TokenVerifier::new(key.clone(), &config, clock.shared()),
                keys,
            ),
            TokenIssuer::new(key, &config, clock.shared()),
        )
    }

    fn head(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn modes_decide_what_a_missing_or_bad_credential_means() {
        let (auth, issuer) = authenticator();
        let token = format!("Bearer {}", issuer.issue("u1"));
        let none = head(&[]);
        let good = head(&[("authorization", &token)]);
        let bad = head(&[("authorization", "Bearer nope")]);
        let machine = head(&[("x-api-key", "m.s3cret")]);
        assert_eq!(
            auth.authenticate(AuthMode::Required, &none),
            Err(AuthError::Missing)
        );
        assert_eq!(
            auth.authenticate(AuthMode::Optional, &none),
            Ok(Identity::Anonymous)
        );
        assert_eq!(
            auth.authenticate(AuthMode::Required, &good),
            Ok(Identity::User("u1".into()))
        );
        assert!(auth.authenticate(AuthMode::Optional, &bad).is_err());
        assert_eq!(
            auth.authenticate(AuthMode::None, &bad),
            Ok(Identity::Anonymous)
        );
        assert_eq!(
            auth.authenticate(AuthMode::Required, &machine),
            Ok(Identity::Machine("m".into()))
        );
    }

    #[test]
    fn one_credential_of_a_known_scheme_is_read() {
        let (auth, issuer) = authenticator();
        let token = format!("bearer   {}", issuer.issue("u1"));
        assert!(
            auth.authenticate(AuthMode::Required, &head(&[("authorization", &token)]))
                .is_ok()
        );
        for pairs in [
            vec![("authorization", "Basic dTpw")],
            vec![("authorization", "Bearer")],
            vec![("authorization", "Bearer ")],
            vec![("authorization", token.as_str()), ("x-api-key", "m.s3cret")],
            vec![("x-api-key", "m.s3cret"), ("x-api-key", "m.s3cret")],
            vec![
                ("authorization", token.as_str()),
                ("authorization", token.as_str()),
            ],
        ] {
            assert!(
                auth.authenticate(AuthMode::Optional, &head(&pairs))
                    .is_err(),
                "{pairs:?}"
            );
        }
    }
}
