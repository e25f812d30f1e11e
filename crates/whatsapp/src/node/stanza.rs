//! Stanza helpers: stanza error replies, XEP-0082
//! timestamps and the stream errors the XML layer does not raise itself.
//!
//! Guarantees: error replies follow RFC 6120 §8.3 (addresses swapped, `type="error"`,
//! the original payload dropped); timestamps are UTC with milliseconds. JIDs are
//! [`crate::xmpp::Jid`] (re-exported here).

use crate::xml::{Element, STREAM_ERRORS_NS, STREAMS_NS, write_stanza};

pub use crate::xmpp::{Jid, STANZAS_NS};

/// The error reply to `stanza` (RFC 6120 §8.3): `to`/`from` swapped, `type="error"`,
/// children dropped, one `<error type=…><condition/></error>`.
pub fn error_reply(stanza: &Element, error_type: &str, condition: &str) -> Element {
    let mut reply = Element::new(stanza.name(), stanza.ns());
    if let Some(id) = stanza.attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(from) = stanza.attr("from") {
        reply.set_attr("to", from);
    }
    if let Some(to) = stanza.attr("to") {
        reply.set_attr("from", to);
    }
    reply.set_attr("type", "error");
    reply.with_child(
        Element::new("error", stanza.ns())
            .with_attr("type", error_type)
            .with_child(Element::new(condition, STANZAS_NS)),
    )
}

/// `<stream:error><condition/></stream:error>` for conditions outside the XML
/// layer (`resource-constraint`, `not-authorized`, `system-shutdown`, …).
pub fn stream_error_text(condition: &str) -> String {
    write_stanza(
        &Element::new("error", STREAMS_NS).with_child(Element::new(condition, STREAM_ERRORS_NS)),
    )
}

/// XEP-0082 UTC timestamp with milliseconds, e.g. `2026-11-29T15:41:24.123Z`.
pub fn xep0082_stamp(unix_millis: u64) -> String {
    let secs = unix_millis / 1000;
    let millis = unix_millis % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard
/// Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_calendar_dates() {
        assert_eq!(xep0082_stamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(xep0082_stamp(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(xep0082_stamp(1_795_966_884_005), "2026-11-29T15:41:24.005Z");
    }

    #[test]
    fn jids_parse_and_reject() {
        let jid = Jid::parse("Alice@LocalHost/phone").unwrap();
        assert_eq!(jid.local.as_deref(), Some("alice"));
        assert_eq!(jid.domain, "localhost");
        assert_eq!(jid.resource.as_deref(), Some("phone"));
        assert_eq!(jid.bare(), "alice@localhost");
        assert_eq!(Jid::parse("localhost").unwrap().bare(), "localhost");
        assert!(Jid::parse("a@").is_none());
        assert!(Jid::parse("a@b/").is_none());
        assert!(Jid::parse("a@b@c").is_none());
    }

    #[test]
    fn error_reply_swaps_addresses() {
        let iq = Element::new("iq", "jabber:client")
            .with_attr("id", "x")
            .with_attr("from", "a@d/r")
            .with_attr("to", "d")
            .with_child(Element::new("query", "urn:unknown"));
        let reply = error_reply(&iq, "cancel", "service-unavailable");
        assert_eq!(reply.attr("to"), Some("a@d/r"));
        assert_eq!(reply.attr("from"), Some("d"));
        assert_eq!(reply.attr("type"), Some("error"));
        let error = reply.child("error", "jabber:client").unwrap();
        assert!(error.child("service-unavailable", STANZAS_NS).is_some());
        assert!(reply.child("query", "urn:unknown").is_none());
    }
}
