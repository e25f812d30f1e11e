//! The invariants the `scram` fuzz target checks, shared with the stable corpus
//! replay test (`tests/fuzz_corpus.rs`) so both exercise exactly the same property.
//!
//! The first byte picks the message (client-first, client-final, server-first,
//! server-final, or a user name for the client's client-first), the rest is the
//! message. Each check panics when an invariant is broken; a message refused with
//! a [`SaslFailure`](crate::auth::SaslFailure) or [`ScramError`] is the expected
//! outcome. It lives with the client because it drives both ends (the client
//! depends on `auth`, not the other way round).

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::scram::{
    MAX_SERVER_ITERATIONS, ScramClient, ScramError, parse_server_final, parse_server_first,
};
use crate::auth::saslprep::saslprep;
use crate::auth::scram::{
    Lookup, MAX_MESSAGE_LEN, ScramHash, ScramSecrets, ScramServer, parse_client_final,
    parse_client_first,
};

/// The server's nonce half in every exchange the checks drive.
pub const SERVER_NONCE: &str = "fuzz-server-nonce";
/// The client-first the client-final check is answered after.
pub const CLIENT_FIRST: &str = "n,,n=user,r=fuzz-client-nonce";
/// The password behind the checks' secrets (so a seed may hold a correct proof).
pub const PASSWORD: &str = "pencil";

/// Secrets for `PASSWORD`, derived once (PBKDF2 per input would slow fuzzing).
fn secrets() -> &'static ScramSecrets {
    static SECRETS: OnceLock<ScramSecrets> = OnceLock::new();
    SECRETS.get_or_init(|| {
        ScramSecrets::derive(ScramHash::Sha256, PASSWORD, b"fuzz-salt".to_vec(), 4096)
    })
}

/// Checks one input; returns whether its message parsed (so the replay can tell
/// that the corpus really exercises the accepting paths).
pub fn check_scram_input(data: &[u8]) -> bool {
    let Some((&selector, message)) = data.split_first() else {
        return false;
    };
    match selector % 5 {
        0 => check_client_first(message),
        1 => check_client_final(message),
        2 => check_server_first(message),
        3 => check_server_final(message),
        _ => check_user_name(message),
    }
}

/// A parsed client-first is exactly its GS2 header plus its bare part, and the
/// server's answer to it is a server-first the client side parses, carrying the
/// combined nonce.
fn check_client_first(message: &[u8]) -> bool {
    let Ok(first) = parse_client_first(message) else {
        return false;
    };
    assert!(message.len() <= MAX_MESSAGE_LEN);
    assert_eq!(
        format!("{}{}", first.gs2_header, first.bare).as_bytes(),
        message
    );
    assert!(first.bare.starts_with("n="), "{first:?}");
    let mut server = ScramServer::new(ScramHash::Sha256);
    let reply = server
        .client_first(message, SERVER_NONCE, |_| {
            Ok(Lookup::Found(secrets().clone()))
        })
        .expect("a parsed client-first is answered");
    let answer = parse_server_first(&reply).expect("our server-first parses");
    assert_eq!(
        answer.nonce,
        format!("{}{SERVER_NONCE}", first.client_nonce)
    );
    assert_eq!(answer.salt, secrets().salt);
    true
}

/// A parsed client-final re-encodes to itself, and a server expecting it never
/// panics and accepts it only with the proof for `PASSWORD`.
fn check_client_final(message: &[u8]) -> bool {
    let parsed = parse_client_final(message);
    let mut server = ScramServer::new(ScramHash::Sha256);
    server
        .client_first(CLIENT_FIRST.as_bytes(), SERVER_NONCE, |_| {
            Ok(Lookup::Found(secrets().clone()))
        })
        .expect("the fixed client-first is answered");
    let outcome = server.client_final(message);
    let Ok(last) = parsed else {
        assert!(outcome.is_err(), "an unparsable client-final was accepted");
        return false;
    };
    assert_eq!(
        format!("{},p={}", last.without_proof, BASE64.encode(&last.proof)).as_bytes(),
        message
    );
    assert!(
        last.without_proof
            .starts_with(&format!("c={},r=", BASE64.encode(&last.channel_binding)))
    );
    if let Ok(success) = outcome {
        assert_eq!(success.username, "user");
        assert_eq!(last.proof.len(), ScramHash::Sha256.output_len());
    }
    true
}

/// A parsed server-first bounds the client's work (iterations) and keeps the
/// nonce printable; the salt re-encodes to what was sent.
fn check_server_first(message: &[u8]) -> bool {
    let Ok(first) = parse_server_first(message) else {
        let mut client = ScramClient::new(ScramHash::Sha256, "user", PASSWORD);
        assert!(matches!(
            client.client_final(message, None),
            Err(ScramError::ServerFirst(_))
        ));
        return false;
    };
    assert!((1..=MAX_SERVER_ITERATIONS).contains(&first.iterations));
    assert!(!first.nonce.is_empty() && !first.nonce.contains(','));
    assert!(first.message.starts_with(&format!(
        "r={},s={},",
        first.nonce,
        BASE64.encode(&first.salt)
    )));
    true
}

/// A server-final is a signature the client checks (never accepted before the
/// client sent its proof) or the server's error.
fn check_server_final(message: &[u8]) -> bool {
    let parsed = parse_server_final(message);
    let client = ScramClient::new(ScramHash::Sha256, "user", PASSWORD);
    let verdict = client.verify_server_final(message);
    match parsed {
        Ok(signature) => {
            let text = std::str::from_utf8(message).expect("parsed as UTF-8");
            assert!(text.starts_with(&format!("v={}", BASE64.encode(signature))));
            assert_eq!(verdict, Err(ScramError::BadServerSignature));
            true
        }
        Err(error) => {
            assert_eq!(verdict, Err(error));
            false
        }
    }
}

/// Whatever the user name, the client's client-first is one the server parses
/// back to that name (after SASLprep), or one it refuses: never a different user.
fn check_user_name(name: &[u8]) -> bool {
    let Ok(name) = std::str::from_utf8(name) else {
        return false;
    };
    let client = ScramClient::new(ScramHash::Sha256, name, PASSWORD);
    let Ok(first) = parse_client_first(&client.client_first()) else {
        return false;
    };
    let prepared = saslprep(name).expect("the server accepted its SASLprep");
    assert_eq!(first.username, prepared.as_ref());
    assert_eq!(first.authzid, None);
    assert_eq!(first.gs2_header, "n,,");
    true
}
