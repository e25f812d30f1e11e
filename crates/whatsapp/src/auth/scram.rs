//! SCRAM (RFC 5802) server side, for SHA-1 and SHA-256 (RFC 7677).
//!
//! Guarantees: strict parsing of client-first and client-final messages (attribute
//! order, saslname escaping `=2C`/`=3D`, printable nonces, base64); the GS2 header
//! of client-first must come back byte-for-byte in client-final's `c=`; the nonce
//! must be the combined nonce; the proof is checked in constant time; the server
//! only ever holds [`ScramSecrets`] (StoredKey, ServerKey), never the password, so
//! a login costs two HMACs and one hash, no PBKDF2. An unknown user gets a
//! challenge indistinguishable in shape from a known one and fails at the proof.
//!
//! Not offered: channel binding (`-PLUS`); a client asking for it with `p=` gets
//! `malformed-request` saying so, a client sending `y` is accepted since we do not
//! advertise `-PLUS`. Mandatory extensions (`m=`) are refused.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

use super::SaslFailure;
use super::saslprep::saslprep;

/// The least iteration count accepted for stored secrets (RFC 7677's advice).
pub const MIN_ITERATIONS: u32 = 4096;
/// The most iteration count accepted, so a crafted accounts file cannot stall logins.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// The longest SCRAM message we parse; real ones are under 300 bytes.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Bytes of randomness in the server's half of the nonce.
const SERVER_NONCE_BYTES: usize = 18;

/// The hash a SCRAM mechanism is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SCRAM-SHA-1 (RFC 5802).
    Sha1,
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
}

impl ScramHash {
    /// Output length of the hash, in bytes.
    pub const fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    /// The SASL mechanism name.
    pub const fn mechanism_name(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }

    /// HMAC(key, concatenation of parts).
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            // HMAC takes keys of any length, so this cannot fail.
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .expect("HMAC accepts keys of any length");
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            ScramHash::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
            ScramHash::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
        }
    }

    /// H(data).
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest as _;
        match self {
            ScramHash::Sha1 => sha1::Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => sha2::Sha256::digest(data).to_vec(),
        }
    }

    /// SaltedPassword := Hi(password, salt, i), i.e. PBKDF2-HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        match self {
            ScramHash::Sha1 => {
                pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, iterations, &mut out);
            }
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, &mut out);
            }
        }
        out
    }
}

/// What the server stores for one user and one hash. It verifies SCRAM proofs
/// and PLAIN passwords and does not reveal the password, but whoever holds both
/// keys can pose as this server to the user (RFC 5802 section 9): keep it private.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScramSecrets {
    /// The per-user salt.
    #[serde(with = "base64_bytes")]
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// StoredKey := H(HMAC(SaltedPassword, "Client Key")).
    #[serde(with = "base64_bytes")]
    pub stored_key: Vec<u8>,
    /// ServerKey := HMAC(SaltedPassword, "Server Key").
    #[serde(with = "base64_bytes")]
    pub server_key: Vec<u8>,
}

impl fmt::Debug for ScramSecrets {
    // Never print keys: they are password-equivalent for SCRAM.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecrets")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .finish_non_exhaustive()
    }
}

impl ScramSecrets {
    /// Derives the secrets for an already SASLprep'd password.
    pub fn derive(
        hash: ScramHash,
        prepared_password: &str,
        salt: Vec<u8>,
        iterations: u32,
    ) -> Self {
        let salted = hash.salted_password(prepared_password.as_bytes(), &salt, iterations);
        Self::from_salted_password(hash, &salted, salt, iterations)
    }

    /// The secrets for a given SaltedPassword.
    pub fn from_salted_password(
        hash: ScramHash,
        salted_password: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> Self {
        let client_key = hash.hmac(salted_password, &[b"Client Key"]);
        let stored_key = hash.digest(&client_key);
        let server_key = hash.hmac(salted_password, &[b"Server Key"]);
        Self {
            salt,
            iterations,
            stored_key,
            server_key,
        }
    }

    /// Checks a SASLprep'd plain password (one PBKDF2) in constant time.
    pub fn verify_password(&self, hash: ScramHash, prepared_password: &str) -> bool {
        let candidate = Self::derive(hash, prepared_password, self.salt.clone(), self.iterations);
        constant_time_eq(&candidate.stored_key, &self.stored_key)
    }

    /// Checks the shape of stored secrets, e.g. after loading them from disk.
    pub fn validate(&self, hash: ScramHash) -> Result<(), String> {
        if self.salt.is_empty() || self.salt.len() > 1024 {
            return Err(format!("salt length {} not in 1..=1024", self.salt.len()));
        }
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&self.iterations) {
            return Err(format!(
                "iterations {} not in {MIN_ITERATIONS}..={MAX_ITERATIONS}",
                self.iterations
            ));
        }
        for (name, key) in [
            ("stored_key", &self.stored_key),
            ("server_key", &self.server_key),
        ] {
            if key.len() != hash.output_len() {
                return Err(format!(
                    "{name} is {} bytes, {} needs {}",
                    key.len(),
                    hash.mechanism_name(),
                    hash.output_len()
                ));
            }
        }
        Ok(())
    }
}

/// Equality whose running time depends only on the lengths, not on the contents.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A parsed client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// `n,,` / `y,a=x,` etc.: echoed back in client-final's `c=`.
    pub gs2_header: String,
    /// The authorization identity, unescaped, if the client sent one.
    pub authzid: Option<String>,
    /// The authentication identity, unescaped and SASLprep'd.
    pub username: String,
    /// The client's nonce.
    pub client_nonce: String,
    /// client-first-message-bare, part of AuthMessage.
    pub bare: String,
}

/// Parses a client-first message strictly.
pub fn parse_client_first(message: &[u8]) -> Result<ClientFirst, SaslFailure> {
    let text = utf8_message(message)?;
    let (flag, rest) = match text.as_bytes().first() {
        Some(b'n' | b'y') => (&text[..1], &text[1..]),
        Some(b'p') if text[1..].starts_with('=') => {
            return Err(SaslFailure::ChannelBindingUnsupported);
        }
        _ => {
            return Err(SaslFailure::Malformed(
                "GS2 header must start with n, y or p=",
            ));
        }
    };
    debug_assert!(flag == "n" || flag == "y");
    let rest = rest
        .strip_prefix(',')
        .ok_or(SaslFailure::Malformed("GS2 flag must be followed by ','"))?;
    let (authzid_part, bare) = rest
        .split_once(',')
        .ok_or(SaslFailure::Malformed("GS2 header must end with ','"))?;
    let authzid = if authzid_part.is_empty() {
        None
    } else {
        let raw = authzid_part
            .strip_prefix("a=")
            .ok_or(SaslFailure::Malformed("GS2 authzid must be a=saslname"))?;
        Some(decode_saslname(raw)?)
    };
    let gs2_header = text[..text.len() - bare.len()].to_string();

    if bare.starts_with("m=") {
        return Err(SaslFailure::Malformed(
            "mandatory extensions are not supported",
        ));
    }
    let mut attributes = bare.split(',');
    let raw_user =
        attributes
            .next()
            .and_then(|a| a.strip_prefix("n="))
            .ok_or(SaslFailure::Malformed(
                "client-first must start with n=username",
            ))?;
    let username = decode_saslname(raw_user)?;
    let username = saslprep(&username)
        .map_err(|_| SaslFailure::Malformed("username fails SASLprep"))?
        .into_owned();
    let client_nonce =
        attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(SaslFailure::Malformed(
                "client-first must have r=nonce after n=",
            ))?;
    check_nonce(client_nonce)?;
    for extension in attributes {
        check_extension(extension)?;
    }
    Ok(ClientFirst {
        gs2_header,
        authzid,
        username,
        client_nonce: client_nonce.to_string(),
        bare: bare.to_string(),
    })
}

/// A parsed client-final message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFinal {
    /// Decoded `c=`: the GS2 header plus channel-binding data (none here).
    pub channel_binding: Vec<u8>,
    /// `r=`: must be the combined nonce.
    pub nonce: String,
    /// Decoded `p=`.
    pub proof: Vec<u8>,
    /// client-final-message-without-proof, part of AuthMessage.
    pub without_proof: String,
}

/// Parses a client-final message strictly.
pub fn parse_client_final(message: &[u8]) -> Result<ClientFinal, SaslFailure> {
    let text = utf8_message(message)?;
    let (without_proof, proof) = text.rsplit_once(",p=").ok_or(SaslFailure::Malformed(
        "client-final must end with ,p=proof",
    ))?;
    let proof = decode_base64(proof, "p= is not valid base64")?;
    let mut attributes = without_proof.split(',');
    let channel_binding = attributes
        .next()
        .and_then(|a| a.strip_prefix("c="))
        .ok_or(SaslFailure::Malformed("client-final must start with c="))?;
    let channel_binding = decode_base64(channel_binding, "c= is not valid base64")?;
    let nonce =
        attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(SaslFailure::Malformed(
                "client-final must have r=nonce after c=",
            ))?;
    check_nonce(nonce)?;
    for extension in attributes {
        check_extension(extension)?;
    }
    Ok(ClientFinal {
        channel_binding,
        nonce: nonce.to_string(),
        proof,
        without_proof: without_proof.to_string(),
    })
}

fn utf8_message(message: &[u8]) -> Result<&str, SaslFailure> {
    if message.is_empty() {
        return Err(SaslFailure::Malformed("empty SCRAM message"));
    }
    if message.len() > MAX_MESSAGE_LEN {
        return Err(SaslFailure::Malformed("SCRAM message too long"));
    }
    std::str::from_utf8(message).map_err(|_| SaslFailure::Malformed("SCRAM message is not UTF-8"))
}

fn decode_base64(text: &str, what: &'static str) -> Result<Vec<u8>, SaslFailure> {
    BASE64
        .decode(text)
        .map_err(|_| SaslFailure::Malformed(what))
}

/// RFC 5802 saslname: `=2C` is ',', `=3D` is '=', any other '=' is an error.
pub fn decode_saslname(raw: &str) -> Result<String, SaslFailure> {
    if raw.is_empty() {
        return Err(SaslFailure::Malformed("empty saslname"));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3);
        match escape {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(SaslFailure::Malformed("'=' in saslname must be =2C or =3D")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The inverse of [`decode_saslname`], for clients and tests.
pub fn encode_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// RFC 5802: printable = %x21-2B / %x2D-7E (no ',').
fn check_nonce(nonce: &str) -> Result<(), SaslFailure> {
    if nonce.is_empty()
        || !nonce
            .bytes()
            .all(|b| (0x21..=0x7E).contains(&b) && b != b',')
    {
        return Err(SaslFailure::Malformed(
            "nonce must be non-empty printable ASCII",
        ));
    }
    Ok(())
}

/// An optional extension: `ALPHA "=" value`. Known attributes may not repeat there.
fn check_extension(attribute: &str) -> Result<(), SaslFailure> {
    let bytes = attribute.as_bytes();
    if bytes.len() < 2 || !bytes[0].is_ascii_alphabetic() || bytes[1] != b'=' {
        return Err(SaslFailure::Malformed(
            "attribute must be a letter, '=', value",
        ));
    }
    if matches!(
        bytes[0],
        b'n' | b'r' | b'c' | b'p' | b'm' | b'a' | b'v' | b'e' | b's' | b'i'
    ) {
        return Err(SaslFailure::Malformed("SCRAM attribute out of place"));
    }
    Ok(())
}

/// A fresh random server nonce half, printable and comma-free.
pub fn random_server_nonce() -> String {
    let bytes: [u8; SERVER_NONCE_BYTES] = rand::random();
    BASE64.encode(bytes)
}

/// What the server knows about the user named in client-first.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The user's stored secrets for this hash.
    Found(ScramSecrets),
    /// No such user: challenge with these decoy secrets (a salt stable per user
    /// name and the store's iteration count, so probes cannot tell) and fail at
    /// the proof whatever the client sends.
    Unknown(ScramSecrets),
}

impl Lookup {
    /// Decoy secrets for an unknown user, from a server-private key.
    pub fn decoy(hash: ScramHash, decoy_key: &[u8], username: &str, iterations: u32) -> Self {
        let salt = hash.hmac(
            decoy_key,
            &[hash.mechanism_name().as_bytes(), b"\0", username.as_bytes()],
        );
        let stored_key = hash.hmac(decoy_key, &[b"stored\0", username.as_bytes()]);
        Lookup::Unknown(ScramSecrets {
            salt: salt[..16].to_vec(),
            iterations,
            stored_key,
            server_key: vec![0; hash.output_len()],
        })
    }
}

/// The result of a successful SCRAM exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramSuccess {
    /// server-final-message (`v=...`), sent as SASL additional data.
    pub server_final: Vec<u8>,
    /// The authenticated username (SASLprep'd, as the client sent it).
    pub username: String,
    /// The authorization identity, if the client sent one.
    pub authzid: Option<String>,
}

/// Server-side SCRAM exchange for one authentication attempt.
///
/// Drive it with [`ScramServer::client_first`] then [`ScramServer::client_final`];
/// any failure ends the exchange, and a call out of order is `malformed-request`.
#[derive(Debug)]
pub struct ScramServer {
    hash: ScramHash,
    state: ScramState,
}

#[derive(Debug)]
enum ScramState {
    AwaitingClientFirst,
    AwaitingClientFinal(Box<Pending>),
    Finished,
}

#[derive(Debug)]
struct Pending {
    first: ClientFirst,
    server_first: String,
    nonce: String,
    secrets: ScramSecrets,
    /// False when the user does not exist: the exchange runs on dummy secrets and
    /// always fails at the proof, so unknown users look like wrong passwords.
    known_user: bool,
}

impl ScramServer {
    /// A new exchange over `hash`.
    pub fn new(hash: ScramHash) -> Self {
        Self {
            hash,
            state: ScramState::AwaitingClientFirst,
        }
    }

    /// The hash this exchange uses.
    pub fn hash(&self) -> ScramHash {
        self.hash
    }

    /// Handles client-first and returns server-first.
    ///
    /// `lookup` sees the parsed message and returns the user's secrets for this
    /// hash, decoy secrets for an unknown user, or a failure (e.g. rate limited,
    /// bad authzid) that ends the exchange. `server_nonce` is the server's nonce half
    /// ([`random_server_nonce`] outside tests).
    pub fn client_first(
        &mut self,
        message: &[u8],
        server_nonce: &str,
        lookup: impl FnOnce(&ClientFirst) -> Result<Lookup, SaslFailure>,
    ) -> Result<Vec<u8>, SaslFailure> {
        if !matches!(self.state, ScramState::AwaitingClientFirst) {
            self.state = ScramState::Finished;
            return Err(SaslFailure::Malformed("client-first sent twice"));
        }
        self.state = ScramState::Finished;
        check_nonce(server_nonce)?;
        let first = parse_client_first(message)?;
        let (secrets, known_user) = match lookup(&first)? {
            Lookup::Found(secrets) => (secrets, true),
            Lookup::Unknown(decoy) => (decoy, false),
        };
        let nonce = format!("{}{}", first.client_nonce, server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&secrets.salt),
            secrets.iterations
        );
        let reply = server_first.clone().into_bytes();
        self.state = ScramState::AwaitingClientFinal(Box::new(Pending {
            first,
            server_first,
            nonce,
            secrets,
            known_user,
        }));
        Ok(reply)
    }

    /// Handles client-final: verifies the proof and returns server-final.
    pub fn client_final(&mut self, message: &[u8]) -> Result<ScramSuccess, SaslFailure> {
        let pending = match std::mem::replace(&mut self.state, ScramState::Finished) {
            ScramState::AwaitingClientFinal(pending) => pending,
            _ => return Err(SaslFailure::Malformed("client-final out of order")),
        };
        let last = parse_client_final(message)?;
        if last.channel_binding != pending.first.gs2_header.as_bytes() {
            return Err(SaslFailure::NotAuthorized);
        }
        if last.nonce != pending.nonce {
            return Err(SaslFailure::NotAuthorized);
        }
        let hash = self.hash;
        if last.proof.len() != hash.output_len() {
            return Err(SaslFailure::NotAuthorized);
        }
        let auth_message = format!(
            "{},{},{}",
            pending.first.bare, pending.server_first, last.without_proof
        );
        let client_signature = hash.hmac(&pending.secrets.stored_key, &[auth_message.as_bytes()]);
        let client_key: Vec<u8> = last
            .proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let proof_ok = constant_time_eq(&hash.digest(&client_key), &pending.secrets.stored_key);
        if !(proof_ok && pending.known_user) {
            return Err(SaslFailure::NotAuthorized);
        }
        let server_signature = hash.hmac(&pending.secrets.server_key, &[auth_message.as_bytes()]);
        let pending = *pending;
        Ok(ScramSuccess {
            server_final: format!("v={}", BASE64.encode(server_signature)).into_bytes(),
            username: pending.first.username,
            authzid: pending.first.authzid,
        })
    }
}

/// Serde helper: bytes as standard base64 strings.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        BASE64.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The client-final the crate's client answers `server_first` with, for the
    /// client-first `gs2_header` + `client_first_bare`.
    pub(crate) fn client_final_for(
        hash: ScramHash,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        gs2_header: &str,
    ) -> String {
        let first = parse_client_first(format!("{gs2_header}{client_first_bare}").as_bytes())
            .expect("a valid client-first");
        let mut client = crate::client::ScramClient::with_first(
            hash,
            &first.username,
            password,
            gs2_header,
            &first.client_nonce,
        );
        assert_eq!(
            client.client_first(),
            format!("{gs2_header}{client_first_bare}").as_bytes()
        );
        String::from_utf8(client.client_final(server_first.as_bytes(), None).unwrap()).unwrap()
    }

    fn secrets_for(hash: ScramHash, password: &str, salt_b64: &str) -> ScramSecrets {
        ScramSecrets::derive(hash, password, BASE64.decode(salt_b64).unwrap(), 4096)
    }

    #[test]
    fn rfc5802_scram_sha1_example() {
        let secrets = secrets_for(ScramHash::Sha1, "pencil", "QSXCR+Q6sek8bf92");
        let mut server = ScramServer::new(ScramHash::Sha1);
        let server_first = server
            .client_first(
                b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
                "3rfcNHYJY1ZVvWVs7j",
                |first| {
                    assert_eq!(first.username, "user");
                    Ok(Lookup::Found(secrets.clone()))
                },
            )
            .unwrap();
        assert_eq!(
            server_first,
            b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
        );
        let success = server
            .client_final(
                b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            )
            .unwrap();
        assert_eq!(success.server_final, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
        assert_eq!(success.username, "user");
        assert_eq!(success.authzid, None);
    }

    #[test]
    fn rfc7677_scram_sha256_example() {
        let secrets = secrets_for(ScramHash::Sha256, "pencil", "W22ZaJ0SNY7soEsUEjb6gQ==");
        let mut server = ScramServer::new(ScramHash::Sha256);
        let server_first = server
            .client_first(
                b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
                "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
                |_| Ok(Lookup::Found(secrets.clone())),
            )
            .unwrap();
        assert_eq!(
            server_first,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let success = server
            .client_final(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(
            success.server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    fn exchange(
        hash: ScramHash,
        stored_password: &str,
        client_password: &str,
        client_first: &str,
    ) -> (Result<ScramSuccess, SaslFailure>, String, String) {
        let secrets = ScramSecrets::derive(hash, stored_password, b"salty-salt".to_vec(), 4096);
        let mut server = ScramServer::new(hash);
        let server_first = server
            .client_first(client_first.as_bytes(), "srvnonce", |_| {
                Ok(Lookup::Found(secrets.clone()))
            })
            .unwrap();
        let server_first = String::from_utf8(server_first).unwrap();
        let (gs2_len, _) = client_first.match_indices(',').nth(1).unwrap();
        let final_message = client_final_for(
            hash,
            client_password,
            &client_first[gs2_len + 1..],
            &server_first,
            &client_first[..gs2_len + 1],
        );
        (
            server.client_final(final_message.as_bytes()),
            server_first,
            final_message,
        )
    }

    #[test]
    fn right_password_succeeds_and_wrong_one_is_not_authorized() {
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            let (ok, _, _) = exchange(hash, "secret", "secret", "n,,n=alice,r=abc");
            assert_eq!(ok.unwrap().username, "alice");
            let (bad, _, _) = exchange(hash, "secret", "secreT", "n,,n=alice,r=abc");
            assert_eq!(bad, Err(SaslFailure::NotAuthorized));
        }
    }

    #[test]
    fn y_flag_and_authzid_are_carried() {
        let (ok, _, _) = exchange(
            ScramHash::Sha256,
            "pw",
            "pw",
            "y,a=al=2Cice,n=al=3Dice,r=n1",
        );
        let ok = ok.unwrap();
        assert_eq!(ok.username, "al=ice");
        assert_eq!(ok.authzid.as_deref(), Some("al,ice"));
    }

    #[test]
    fn tampered_nonce_or_binding_is_not_authorized() {
        let secrets = ScramSecrets::derive(ScramHash::Sha256, "pw", b"salt".to_vec(), 4096);
        let first = "n,,n=bob,r=clientnonce";
        let run = |edit: &dyn Fn(&str) -> String| {
            let mut server = ScramServer::new(ScramHash::Sha256);
            let sf = server
                .client_first(first.as_bytes(), "servernonce", |_| {
                    Ok(Lookup::Found(secrets.clone()))
                })
                .unwrap();
            let sf = String::from_utf8(sf).unwrap();
            let fin = client_final_for(ScramHash::Sha256, "pw", "n=bob,r=clientnonce", &sf, "n,,");
            server.client_final(edit(&fin).as_bytes())
        };
        assert!(run(&|f| f.to_string()).is_ok());
        assert_eq!(
            run(&|f| f.replace("servernonce", "servernoncX")),
            Err(SaslFailure::NotAuthorized)
        );
        assert_eq!(
            run(&|f| f.replace("c=biws", "c=eSws")),
            Err(SaslFailure::NotAuthorized)
        );
    }

    #[test]
    fn unknown_user_fails_only_at_the_proof() {
        let mut server = ScramServer::new(ScramHash::Sha256);
        let sf = server
            .client_first(b"n,,n=ghost,r=abc", "xyz", |first| {
                Ok(Lookup::decoy(
                    ScramHash::Sha256,
                    b"key",
                    &first.username,
                    4096,
                ))
            })
            .unwrap();
        let sf = String::from_utf8(sf).unwrap();
        // The same name gets the same salt every time, as a real user would.
        let mut again = ScramServer::new(ScramHash::Sha256);
        let sf_again = again
            .client_first(b"n,,n=ghost,r=abc", "xyz", |first| {
                Ok(Lookup::decoy(
                    ScramHash::Sha256,
                    b"key",
                    &first.username,
                    4096,
                ))
            })
            .unwrap();
        assert_eq!(sf.as_bytes(), sf_again);
        assert!(sf.starts_with("r=abcxyz,s=") && sf.ends_with(",i=4096"));
        let fin = client_final_for(ScramHash::Sha256, "any", "n=ghost,r=abc", &sf, "n,,");
        assert_eq!(
            server.client_final(fin.as_bytes()),
            Err(SaslFailure::NotAuthorized)
        );
    }

    #[test]
    fn malformed_client_first_messages_get_precise_conditions() {
        let cases: &[(&[u8], SaslFailure)] = &[
            (
                b"p=tls-unique,,n=u,r=x",
                SaslFailure::ChannelBindingUnsupported,
            ),
            (b"", SaslFailure::Malformed("empty SCRAM message")),
            (
                b"x,,n=u,r=x",
                SaslFailure::Malformed("GS2 header must start with n, y or p="),
            ),
            (
                b"n,n=u,r=x",
                SaslFailure::Malformed("GS2 authzid must be a=saslname"),
            ),
            (
                b"n,,r=x,n=u",
                SaslFailure::Malformed("client-first must start with n=username"),
            ),
            (
                b"n,,n=u",
                SaslFailure::Malformed("client-first must have r=nonce after n="),
            ),
            (
                b"n,,n=u=2X,r=x",
                SaslFailure::Malformed("'=' in saslname must be =2C or =3D"),
            ),
            (b"n,,n=,r=x", SaslFailure::Malformed("empty saslname")),
            (
                b"n,,n=u,r=",
                SaslFailure::Malformed("nonce must be non-empty printable ASCII"),
            ),
            (
                b"n,,m=ext,n=u,r=x",
                SaslFailure::Malformed("mandatory extensions are not supported"),
            ),
            (
                b"n,,n=u,r=x,r=y",
                SaslFailure::Malformed("SCRAM attribute out of place"),
            ),
            (
                b"n,,n=u\xff,r=x",
                SaslFailure::Malformed("SCRAM message is not UTF-8"),
            ),
            (
                b"n,,n=u\x07,r=x",
                SaslFailure::Malformed("username fails SASLprep"),
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(
                parse_client_first(message).err().as_ref(),
                Some(expected),
                "{:?}",
                String::from_utf8_lossy(message)
            );
        }
        assert_eq!(
            SaslFailure::ChannelBindingUnsupported.as_condition(),
            "malformed-request"
        );
        // Extensions are allowed and ignored.
        assert_eq!(
            parse_client_first(b"n,,n=u,r=x,x=ext").unwrap().username,
            "u"
        );
    }

    #[test]
    fn malformed_client_final_messages_and_order() {
        let mut server = ScramServer::new(ScramHash::Sha1);
        assert_eq!(
            server.client_final(b"c=biws,r=x,p=AAAA"),
            Err(SaslFailure::Malformed("client-final out of order"))
        );
        for (message, expected) in [
            (&b"c=biws,r=x"[..], "client-final must end with ,p=proof"),
            (b"c=biws,r=x,p=!!", "p= is not valid base64"),
            (b"r=x,c=biws,p=AAAA", "client-final must start with c="),
            (b"c=b!ws,r=x,p=AAAA", "c= is not valid base64"),
            (b"c=biws,p=AAAA", "client-final must have r=nonce after c="),
        ] {
            assert_eq!(
                parse_client_final(message),
                Err(SaslFailure::Malformed(expected))
            );
        }
    }

    #[test]
    fn secrets_validate_and_never_print_keys() {
        let s = ScramSecrets::derive(ScramHash::Sha1, "pw", b"salt".to_vec(), 4096);
        assert!(s.validate(ScramHash::Sha1).is_ok());
        assert!(
            s.validate(ScramHash::Sha256)
                .unwrap_err()
                .contains("stored_key")
        );
        let weak = ScramSecrets {
            iterations: 1,
            ..s.clone()
        };
        assert!(
            weak.validate(ScramHash::Sha1)
                .unwrap_err()
                .contains("iterations")
        );
        let printed = format!("{s:?}");
        assert!(!printed.contains(&BASE64.encode(&s.stored_key)));
        assert!(s.verify_password(ScramHash::Sha1, "pw"));
        assert!(!s.verify_password(ScramHash::Sha1, "pW"));
    }
}
