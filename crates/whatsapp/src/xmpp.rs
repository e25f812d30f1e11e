//! The XMPP vocabulary every other module speaks: namespace constants and JIDs.
//!
//! A leaf: it depends on nothing of the crate but SASLprep, so `xml`, `roster`,
//! `client` and `node` all take their namespaces and JID handling from here (the
//! older paths, e.g. `node::conn::PING_NS` or `xml::CLIENT_NS`, re-export these).
//!
//! Guarantees: a parsed [`Jid`] has a canonical (lower-case, nodeprep-lite)
//! localpart and a lower-case domain of at most 253 bytes. Not here: full RFC 7622
//! PRECIS preparation (no width mapping or NFC), resourceprep (resources are taken
//! as sent).

use crate::auth::saslprep::saslprep;

/// The client-to-server content namespace.
pub const CLIENT_NS: &str = "jabber:client";
/// The server-to-server content namespace.
pub const SERVER_NS: &str = "jabber:server";
/// The XML streams namespace (`stream:` prefix).
pub const STREAMS_NS: &str = "http://etherx.jabber.org/streams";
/// Stream error conditions (RFC 6120 §4.9.3).
pub const STREAM_ERRORS_NS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// Stanza error conditions (RFC 6120 §8.3.3).
pub const STANZAS_NS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// RFC 7395 framing (`<open/>`, `<close/>`).
pub const FRAMING_NS: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// The namespace bound to the reserved `xml` prefix.
pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
/// STARTTLS (RFC 6120 §5).
pub const TLS_NS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// SASL (RFC 6120 §6): mechanisms, `<auth/>`, `<success/>`, ….
pub const SASL_NS: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Resource binding (RFC 6120 §7).
pub const BIND_NS: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// The legacy session establishment (RFC 3921), still sent by clients.
pub const SESSION_NS: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// Rosters (RFC 6121 §2).
pub const ROSTER_NS: &str = "jabber:iq:roster";
/// XEP-0030 disco#info.
pub const DISCO_INFO_NS: &str = "http://jabber.org/protocol/disco#info";
/// XEP-0199 ping.
pub const PING_NS: &str = "urn:xmpp:ping";
/// XEP-0198 stream management.
pub const SM_NS: &str = "urn:xmpp:sm:3";
/// XEP-0184 message delivery receipts.
pub const RECEIPTS_NS: &str = "urn:xmpp:receipts";
/// XEP-0203 delayed delivery.
pub const DELAY_NS: &str = "urn:xmpp:delay";
/// XEP-0280 message carbons.
pub const CARBONS_NS: &str = "urn:xmpp:carbons:2";
/// XEP-0297 stanza forwarding.
pub const FORWARD_NS: &str = "urn:xmpp:forward:0";
/// XEP-0313 message archive management.
pub const MAM_NS: &str = "urn:xmpp:mam:2";
/// XEP-0359 stanza ids.
pub const SID_NS: &str = "urn:xmpp:sid:0";
/// XEP-0004 data forms.
pub const DATA_NS: &str = "jabber:x:data";
/// XEP-0059 result set management.
pub const RSM_NS: &str = "http://jabber.org/protocol/rsm";
/// XEP-0334 processing hints.
pub const HINTS_NS: &str = "urn:xmpp:hints";
/// XEP-0077 in-band registration.
pub const REGISTER_NS: &str = "jabber:iq:register";
/// XEP-0077's stream feature.
pub const REGISTER_FEATURE_NS: &str = "http://jabber.org/features/iq-register";
/// This server's own application-specific conditions (`<retry-after/>`).
pub const CASEBOOK_XMPP_NS: &str = "urn:casebook:xmpp";

/// The longest localpart, in bytes (RFC 7622 §3.3).
pub const MAX_LOCALPART_LEN: usize = 1023;
/// The longest domainpart, in bytes.
pub const MAX_DOMAIN_LEN: usize = 253;

/// Canonicalises a localpart: lower case; no `" & ' / : < > @`, whitespace or
/// control characters; at most [`MAX_LOCALPART_LEN`] bytes; SASLprep-clean. The
/// error says what is wrong.
///
/// This is "nodeprep-lite": RFC 7622's casing and forbidden-character rules, not
/// its full PRECIS IdentifierClass (no width mapping or NFC).
pub fn prep_localpart(localpart: &str) -> Result<String, String> {
    if localpart.is_empty() {
        return Err("empty".into());
    }
    let lower = localpart.to_lowercase();
    if lower.len() > MAX_LOCALPART_LEN {
        return Err(format!("longer than {MAX_LOCALPART_LEN} bytes"));
    }
    if let Some(c) = lower.chars().find(|&c| {
        matches!(c, '"' | '&' | '\'' | '/' | ':' | '<' | '>' | '@')
            || c.is_whitespace()
            || c.is_control()
    }) {
        return Err(format!("character {c:?} is not allowed"));
    }
    if saslprep(&lower).is_err() {
        return Err("prohibited character".into());
    }
    Ok(lower)
}

/// A JID split into its parts; the localpart is canonical (lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jid {
    pub local: Option<String>,
    pub domain: String,
    pub resource: Option<String>,
}

impl Jid {
    /// Parses `[local@]domain[/resource]`; `None` for anything malformed.
    pub fn parse(text: &str) -> Option<Self> {
        let (bare, resource) = match text.split_once('/') {
            Some((bare, resource)) if !resource.is_empty() => (bare, Some(resource.to_owned())),
            Some(_) => return None,
            None => (text, None),
        };
        let (local, domain) = match bare.split_once('@') {
            Some((local, domain)) => (Some(prep_localpart(local).ok()?), domain),
            None => (None, bare),
        };
        if domain.is_empty() || domain.contains('@') || domain.len() > MAX_DOMAIN_LEN {
            return None;
        }
        Some(Self {
            local,
            domain: domain.to_ascii_lowercase(),
            resource,
        })
    }

    /// `local@domain` (or the domain alone).
    pub fn bare(&self) -> String {
        match &self.local {
            Some(local) => format!("{local}@{}", self.domain),
            None => self.domain.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jids_parse_with_a_canonical_localpart_and_refuse_malformed_ones() {
        let jid = Jid::parse("Alice@Example.COM/Phone").unwrap();
        assert_eq!(jid.bare(), "alice@example.com");
        assert_eq!(jid.resource.as_deref(), Some("Phone"));
        assert_eq!(Jid::parse("example.com").unwrap().bare(), "example.com");
        for bad in ["a@b@c", "alice@example.com/", "@example.com", "a b@x", ""] {
            assert_eq!(Jid::parse(bad), None, "{bad:?}");
        }
        assert!(prep_localpart(&"x".repeat(MAX_LOCALPART_LEN + 1)).is_err());
    }
}
