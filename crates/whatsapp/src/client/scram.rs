//! SCRAM-SHA-256 / SCRAM-SHA-1 and PLAIN, client side (RFC 5802, RFC 7677, RFC 4616).
//!
//! Uses the server's own primitives ([`ScramHash`]) so both ends compute the same
//! keys. The server's signature (`v=`) is verified: a server that does not know the
//! password cannot fake a success. [`ScramCache`] keeps the derived client and
//! server keys per (user, salt, iterations), as RFC 5802 §5.1 allows a client to do,
//! so a swarm that logs the same accounts in again does not spend its CPU on PBKDF2.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use parking_lot::Mutex;

use crate::auth::scram::encode_saslname;
use crate::auth::{ScramHash, encode_payload};

/// Largest number of cached key pairs (one per account a swarm logs in).
pub const MAX_CACHED_KEYS: usize = 1_000_000;

/// Derived SCRAM keys, shared between connections (bounded).
#[derive(Debug, Clone, Default)]
pub struct ScramCache {
    keys: Arc<Mutex<HashMap<CacheKey, Keys>>>,
}

type CacheKey = (ScramHash, String, Vec<u8>, u32);

#[derive(Debug, Clone)]
struct Keys {
    client_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl ScramCache {
    /// Pairs currently cached.
    pub fn len(&self) -> usize {
        self.keys.lock().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get_or_derive(
        &self,
        hash: ScramHash,
        user: &str,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Keys {
        let key = (hash, user.to_owned(), salt.to_vec(), iterations);
        if let Some(keys) = self.keys.lock().get(&key) {
            return keys.clone();
        }
        let salted = hash.salted_password(password.as_bytes(), salt, iterations);
        let keys = Keys {
            client_key: hash.hmac(&salted, &[b"Client Key"]),
            server_key: hash.hmac(&salted, &[b"Server Key"]),
        };
        let mut all = self.keys.lock();
        if all.len() < MAX_CACHED_KEYS {
            all.insert(key, keys.clone());
        }
        keys
    }
}

/// Why a SASL exchange could not go on (before the server's verdict).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed server-first-message: {0}")]
    ServerFirst(String),
    #[error("malformed server-final-message: {0}")]
    ServerFinal(String),
    #[error("the server's signature does not match: it does not know the password")]
    BadServerSignature,
}

/// One client-side SCRAM exchange: the one computation of the client's proof in
/// the crate (the swarm, the tests and the benchmarks all use it).
#[derive(Debug)]
pub struct ScramClient {
    hash: ScramHash,
    user: String,
    password: String,
    /// `n,,` here; other headers only through [`ScramClient::with_first`].
    gs2_header: String,
    client_first_bare: String,
    nonce: String,
    expected_server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// An exchange for `user` with a fresh random nonce and no channel binding.
    pub fn new(hash: ScramHash, user: &str, password: &str) -> Self {
        let nonce: String = {
            use rand::Rng as _;
            let bytes: [u8; 18] = rand::rng().random();
            encode_payload(&bytes)
        };
        Self::with_first(hash, user, password, "n,,", &nonce)
    }

    /// An exchange whose client-first is `gs2_header` (`n,,`, `y,,`,
    /// `n,a=authzid,`), then `n=user,r=nonce`: for RFC examples, fixed-nonce tests
    /// and benchmarks.
    pub fn with_first(
        hash: ScramHash,
        user: &str,
        password: &str,
        gs2_header: &str,
        nonce: &str,
    ) -> Self {
        let client_first_bare = format!("n={},r={nonce}", encode_saslname(user));
        Self {
            hash,
            user: user.to_owned(),
            password: password.to_owned(),
            gs2_header: gs2_header.to_owned(),
            client_first_bare,
            nonce: nonce.to_owned(),
            expected_server_signature: None,
        }
    }

    /// The mechanism name, e.g. `SCRAM-SHA-256`.
    pub fn mechanism(&self) -> &'static str {
        match self.hash {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }

    /// The client-first-message, raw bytes.
    pub fn client_first(&self) -> Vec<u8> {
        format!("{}{}", self.gs2_header, self.client_first_bare).into_bytes()
    }

    /// Answers the server-first-message with the client-final-message.
    pub fn client_final(
        &mut self,
        server_first: &[u8],
        cache: Option<&ScramCache>,
    ) -> Result<Vec<u8>, ScramError> {
        let ServerFirst {
            nonce,
            salt,
            iterations,
            message: server_first,
        } = parse_server_first(server_first)?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::ServerFirst(
                "the nonce does not extend ours".into(),
            ));
        }
        let keys = match cache {
            Some(cache) => {
                cache.get_or_derive(self.hash, &self.user, &self.password, &salt, iterations)
            }
            None => ScramCache::default().get_or_derive(
                self.hash,
                &self.user,
                &self.password,
                &salt,
                iterations,
            ),
        };
        let stored_key = self.hash.digest(&keys.client_key);
        let without_proof = format!("c={},r={nonce}", BASE64.encode(&self.gs2_header));
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = self.hash.hmac(&stored_key, &[auth_message.as_bytes()]);
        let proof: Vec<u8> = keys
            .client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        self.expected_server_signature =
            Some(self.hash.hmac(&keys.server_key, &[auth_message.as_bytes()]));
        Ok(format!("{without_proof},p={}", encode_payload(&proof)).into_bytes())
    }

    /// Checks the server-final-message carried by `<success/>`.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let got = parse_server_final(server_final)?;
        match &self.expected_server_signature {
            Some(expected) if crate::auth::scram::constant_time_eq(expected, &got) => Ok(()),
            _ => Err(ScramError::BadServerSignature),
        }
    }
}

/// The most PBKDF2 iterations a server may ask of us: a hostile server could ask
/// for billions to burn our CPU.
pub const MAX_SERVER_ITERATIONS: u32 = 10_000_000;

/// A parsed server-first-message (RFC 5802 §7: `r=`, `s=`, `i=`, in that order,
/// then optional extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFirst<'a> {
    /// The combined nonce (ours, then the server's).
    pub nonce: &'a str,
    /// The decoded salt.
    pub salt: Vec<u8>,
    /// The PBKDF2 iteration count, within `1..=MAX_SERVER_ITERATIONS`.
    pub iterations: u32,
    /// The whole message, part of AuthMessage.
    pub message: &'a str,
}

/// Parses a server-first-message strictly; nothing in it sizes an allocation
/// beyond the message itself.
pub fn parse_server_first(message: &[u8]) -> Result<ServerFirst<'_>, ScramError> {
    let bad = |why: &str| ScramError::ServerFirst(why.to_owned());
    let message = std::str::from_utf8(message).map_err(|_| bad("not UTF-8"))?;
    let mut attributes = message.split(',');
    let mut next = |key: &str| {
        attributes
            .next()
            .and_then(|a| a.strip_prefix(key))
            .ok_or_else(|| ScramError::ServerFirst(format!("expected {key} in order")))
    };
    if message.starts_with("m=") {
        return Err(bad("mandatory extensions are not supported"));
    }
    let nonce = next("r=")?;
    let salt = next("s=")?;
    let iterations = next("i=")?;
    if nonce.is_empty()
        || !nonce
            .bytes()
            .all(|b| (0x21..=0x7E).contains(&b) && b != b',')
    {
        return Err(bad("the nonce is not printable ASCII"));
    }
    let salt = BASE64.decode(salt).map_err(|_| bad("salt is not base64"))?;
    if salt.is_empty() {
        return Err(bad("empty salt"));
    }
    let iterations: u32 = iterations
        .parse()
        .map_err(|_| bad("iteration count is not a number"))?;
    if !(1..=MAX_SERVER_ITERATIONS).contains(&iterations) {
        return Err(ScramError::ServerFirst(format!(
            "iteration count {iterations} out of range"
        )));
    }
    Ok(ServerFirst {
        nonce,
        salt,
        iterations,
        message,
    })
}

/// Parses a server-final-message: the server's signature (`v=`), or the error the
/// server reported (`e=`).
pub fn parse_server_final(message: &[u8]) -> Result<Vec<u8>, ScramError> {
    let text =
        std::str::from_utf8(message).map_err(|_| ScramError::ServerFinal("not UTF-8".into()))?;
    let first = text.split(',').next().unwrap_or_default();
    if let Some(error) = first.strip_prefix("e=") {
        return Err(ScramError::ServerFinal(format!(
            "the server reports {error:?}"
        )));
    }
    let Some(verifier) = first.strip_prefix("v=") else {
        return Err(ScramError::ServerFinal("no verifier".into()));
    };
    BASE64
        .decode(verifier)
        .map_err(|_| ScramError::ServerFinal("verifier is not base64".into()))
}

/// The SASL PLAIN message: `\0user\0password` (no authorization identity).
pub fn plain_message(user: &str, password: &str) -> Vec<u8> {
    format!("\0{user}\0{password}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Lookup;
    use crate::auth::scram::{ScramSecrets, ScramServer};

    #[test]
    fn a_full_exchange_against_the_server_side_succeeds_and_verifies_the_server() {
        for hash in [ScramHash::Sha256, ScramHash::Sha1] {
            let secrets = ScramSecrets::derive(hash, "pencil", b"salt-salt-salt".to_vec(), 4096);
            let mut server = ScramServer::new(hash);
            let mut client = ScramClient::new(hash, "user,=x", "pencil");
            let first = server
                .client_first(&client.client_first(), "servernonce", |_| {
                    Ok(Lookup::Found(secrets.clone()))
                })
                .unwrap();
            let cache = ScramCache::default();
            let last = client.client_final(&first, Some(&cache)).unwrap();
            let success = server.client_final(&last).unwrap();
            assert_eq!(success.username, "user,=x");
            client.verify_server_final(&success.server_final).unwrap();
            assert_eq!(cache.len(), 1);
            assert_eq!(
                client.verify_server_final(b"v=AAAA"),
                Err(ScramError::BadServerSignature)
            );
        }
    }

    #[test]
    fn a_server_first_that_does_not_extend_our_nonce_is_refused() {
        let mut client = ScramClient::new(ScramHash::Sha256, "u", "p");
        assert!(matches!(
            client.client_final(b"r=other,s=c2FsdA==,i=4096", None),
            Err(ScramError::ServerFirst(_))
        ));
        let nonce = client.nonce.clone();
        assert!(matches!(
            client.client_final(format!("r={nonce}x,s=c2FsdA==,i=0").as_bytes(), None),
            Err(ScramError::ServerFirst(_))
        ));
    }
}
