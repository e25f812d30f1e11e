//! SASL PLAIN (RFC 4616), verified against stored SCRAM secrets.
//!
//! Guarantees: the message is parsed strictly (`[authzid] NUL authcid NUL passwd`,
//! UTF-8, no empty authcid or password, each part at most [`MAX_FIELD_LEN`] bytes);
//! the password is SASLprep'd and checked by deriving SaltedPassword with the
//! stored salt and iterations and comparing StoredKey in constant time, so no plain
//! password is ever stored. The cost is one PBKDF2 per login, by design of PLAIN.
//!
//! Not here: whether PLAIN may be used at all on this stream; that is
//! [`allow_plain`], which the connection consults before offering it.

use std::fmt;

use super::SaslFailure;
use super::saslprep::saslprep;

/// The longest authzid, authcid or password accepted.
pub const MAX_FIELD_LEN: usize = 1023;

/// Whether PLAIN may be offered: only on an encrypted stream, unless the operator
/// set `allow_insecure_plain` for local testing.
pub fn allow_plain(encrypted: bool, allow_insecure_plain: bool) -> bool {
    encrypted || allow_insecure_plain
}

/// The three fields of a PLAIN message.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainCredentials {
    /// Authorization identity, if the client sent one.
    pub authzid: Option<String>,
    /// Authentication identity (SASLprep'd).
    pub authcid: String,
    /// Password (SASLprep'd).
    pub password: String,
}

impl fmt::Debug for PlainCredentials {
    // The password never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainCredentials")
            .field("authzid", &self.authzid)
            .field("authcid", &self.authcid)
            .finish_non_exhaustive()
    }
}

fn text(bytes: &[u8]) -> Result<&str, SaslFailure> {
    std::str::from_utf8(bytes).map_err(|_| SaslFailure::Malformed("PLAIN field is not UTF-8"))
}

/// Parses a PLAIN message strictly.
pub fn parse_plain(message: &[u8]) -> Result<PlainCredentials, SaslFailure> {
    let mut fields = message.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(SaslFailure::Malformed(
            "PLAIN needs exactly authzid NUL authcid NUL password",
        ));
    };
    for field in [authzid, authcid, password] {
        if field.len() > MAX_FIELD_LEN {
            return Err(SaslFailure::Malformed("PLAIN field too long"));
        }
    }
    let authzid = text(authzid)?;
    let authcid = saslprep(text(authcid)?)
        .map_err(|_| SaslFailure::Malformed("PLAIN authcid fails SASLprep"))?
        .into_owned();
    let password = saslprep(text(password)?)
        .map_err(|_| SaslFailure::Malformed("PLAIN password fails SASLprep"))?
        .into_owned();
    Ok(PlainCredentials {
        authzid: (!authzid.is_empty()).then(|| authzid.to_string()),
        authcid,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_fields() {
        let c = parse_plain(b"\0alice\0pencil").unwrap();
        assert_eq!(
            (c.authzid, c.authcid.as_str(), c.password.as_str()),
            (None, "alice", "pencil")
        );
        let c = parse_plain(b"alice@example.com\0alice\0pen cil").unwrap();
        assert_eq!(c.authzid.as_deref(), Some("alice@example.com"));
        assert_eq!(c.password, "pen cil");
        assert!(!format!("{c:?}").contains("pen cil"));
    }

    #[test]
    fn refuses_malformed_messages() {
        for (message, why) in [
            (
                &b"alice\0pencil"[..],
                "PLAIN needs exactly authzid NUL authcid NUL password",
            ),
            (
                b"\0a\0b\0c",
                "PLAIN needs exactly authzid NUL authcid NUL password",
            ),
            (b"\0\0pencil", "PLAIN authcid fails SASLprep"),
            (b"\0alice\0", "PLAIN password fails SASLprep"),
            (b"\0al\xffice\0pw", "PLAIN field is not UTF-8"),
            (b"\0alice\0p\x01w", "PLAIN password fails SASLprep"),
        ] {
            assert_eq!(parse_plain(message), Err(SaslFailure::Malformed(why)));
        }
        let long = [b"\0a\0".as_slice(), &[b'x'; MAX_FIELD_LEN + 1]].concat();
        assert_eq!(
            parse_plain(&long),
            Err(SaslFailure::Malformed("PLAIN field too long"))
        );
    }

    #[test]
    fn plain_is_offered_only_when_encrypted_or_explicitly_allowed() {
        assert!(allow_plain(true, false));
        assert!(allow_plain(true, true));
        assert!(allow_plain(false, true));
        assert!(!allow_plain(false, false));
    }
}
