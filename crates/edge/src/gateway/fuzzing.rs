//! The check behind the `gateway_auth` fuzz target, shared with the stable replay
//! of its corpus (`tests/gateway_fuzz_corpus.rs`). Not an API.
//!
//! Input: lines — a path with its query, an `Authorization` value, an `x-api-key`
//! value, and a subject to mint a token for. Invariants beyond "no panic":
//! - the matcher returns exactly the longest configured prefix that covers the path
//!   on a segment boundary (checked by brute force);
//! - an accepted path's upstream path starts with `/` and is itself accepted
//!   (nothing that passed can climb out of its prefix upstream);
//! - a credential is read only from a well-formed head; a bearer token that
//!   verifies carries a valid subject and re-signs to a token that verifies equal;
//! - an API key verifies only as the one configured key;
//! - a token minted for any valid subject verifies to the same claims.

use std::sync::{Arc, OnceLock};

use casebook_kit::clock::{ManualClock, SharedClock};
use http::{HeaderMap, HeaderValue};

use super::auth::{
    ApiKeys, Credential, JwtKey, TokenIssuer, TokenVerifier, credential, hash_secret,
};
use super::config::{ApiKeyConfig, JwtConfig};
use super::routes::{RouteTable, clean_path, covers, upstream_path};

const PREFIXES: &[&str] = &[
    "/",
    "/api",
    "/api/users",
    "/api/users/me",
    "/v1/catalog",
    "/a",
];
const KEY_SECRET: &str = "fuzz-secret";

struct Fixture {
    table: RouteTable<&'static str>,
    issuer: TokenIssuer,
    verifier: TokenVerifier,
    keys: ApiKeys,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let clock: SharedClock = ManualClock::new().shared();
        let key = Arc::new(JwtKey::from_bytes(&[42; 32]).expect("a 32-byte key"));
        let config = JwtConfig::default();
        Fixture {
            table: RouteTable::new(PREFIXES.iter().map(|p| ((*p).to_owned(), *p))),
            issuer: TokenIssuer::new(key.clone(), &config, clock.clone()),
            verifier: TokenVerifier::new(key, &config, clock),
            keys: ApiKeys::new(&[ApiKeyConfig {
                id: "fuzzer".into(),
                secret_sha256: hash_secret(KEY_SECRET),
            }]),
        }
    })
}

/// Runs one input; returns how many of its parts were accepted (a replay test
/// checks the seeds exercise the accepting paths, not only refusals).
pub fn check_gateway_auth(data: &[u8]) -> usize {
    let fx = fixture();
    let mut lines = data.split(|b| *b == b'\n');
    let path_and_query = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let authorization = lines.next().unwrap_or_default();
    let api_key = lines.next().unwrap_or_default();
    let subject = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut accepted = 0;

    // Routing.
    let path = path_and_query.split('?').next().unwrap_or("");
    let expected = PREFIXES
        .iter()
        .filter(|p| covers(p, path))
        .max_by_key(|p| p.len());
    let found = fx.table.find(path).map(|(p, _)| p);
    assert_eq!(found, expected.copied(), "matcher disagrees for {path:?}");
    if let Some(prefix) = expected {
        assert!(path == *prefix || *prefix == "/" || path[prefix.len()..].starts_with('/'));
    }
    if clean_path(path).is_ok() && !path_and_query.contains('#') {
        accepted += 1;
        if let Some(prefix) = found {
            for strip in [false, true] {
                for base in ["", "/v2"] {
                    let upstream = upstream_path(prefix, strip, base, &path_and_query);
                    assert!(upstream.starts_with('/'), "{upstream:?}");
                    let upstream_only = upstream.split('?').next().unwrap_or("");
                    assert_eq!(
                        clean_path(upstream_only),
                        Ok(()),
                        "{path_and_query:?} → {upstream:?}"
                    );
                }
            }
        }
    }

    // Credentials.
    let mut headers = HeaderMap::new();
    if !authorization.is_empty()
        && let Ok(value) = HeaderValue::from_bytes(authorization)
    {
        headers.insert(http::header::AUTHORIZATION, value);
    }
    if !api_key.is_empty()
        && let Ok(value) = HeaderValue::from_bytes(api_key)
    {
        headers.insert("x-api-key", value);
    }
    match credential(&headers) {
        Ok(Some(Credential::Bearer(token))) => {
            if let Ok(claims) = fx.verifier.verify(token) {
                accepted += 1;
                assert!(!claims.sub.is_empty() && claims.sub.bytes().all(|b| b.is_ascii_graphic()));
                let again = fx.issuer.issue_token(&claims);
                assert_eq!(fx.verifier.verify(&again).as_ref(), Ok(&claims));
            }
        }
        Ok(Some(Credential::ApiKey(key))) => {
            if let Ok(id) = fx.keys.verify(key) {
                accepted += 1;
                assert_eq!(id, "fuzzer");
                assert_eq!(key, format!("fuzzer.{KEY_SECRET}"));
            }
        }
        Ok(None) => assert!(headers.is_empty()),
        Err(_) => assert!(!headers.is_empty()),
    }

    // Minting.
    if !subject.is_empty() && subject.len() <= 256 && subject.bytes().all(|b| b.is_ascii_graphic())
    {
        let claims = fx.issuer.claims_for(&subject);
        let token = fx.issuer.issue_token(&claims);
        assert_eq!(fx.verifier.verify(&token), Ok(claims));
        accepted += 1;
    }
    accepted
}
