//! XEP-0313 message archive management (`urn:xmpp:mam:2`) over the domain's
//! [`crate::archive::Archive`], XEP-0359 stanza-ids on delivered messages, and the
//! archiving step of message routing.
//!
//! Guarantees: a message with a body (chat or normal) between two local accounts
//! is archived for both, and the recipient's copy carries
//! `<stanza-id by=recipient id=…/>` (client-supplied stanza-ids claiming to be by
//! the recipient are removed first, XEP-0359 §3.3); query results arrive as
//! `<result>` messages before the final `<iq type="result"><fin/></iq>`; bad or
//! oversized forms, unknown fields and unknown RSM ids are refused with
//! `bad-request` / `item-not-found`. Absent: `<prefs/>`, extended (`urn:xmpp:mam:2#extended`)
//! fields, archiving of messages without a body.

use super::*;
use crate::archive::{Copy, Query};

pub use crate::xmpp::{DATA_NS, FORWARD_NS, HINTS_NS, MAM_NS, RSM_NS, SID_NS};

/// Most fields a query form may carry.
const MAX_FORM_FIELDS: usize = 8;
/// Longest field value, in bytes.
const MAX_VALUE_BYTES: usize = 3071;

/// Why a query was refused: the stanza error condition.
type Refusal = &'static str;

/// Parses the query's form and RSM set.
fn parse_query(query: &Element) -> Result<Query, Refusal> {
    let mut out = Query::default();
    let mut children = 0;
    for child in query.children() {
        children += 1;
        if children > 2 {
            return Err("bad-request");
        }
        if child.is("x", DATA_NS) {
            parse_form(child, &mut out)?;
        } else if child.is("set", RSM_NS) {
            parse_rsm(child, &mut out)?;
        } else {
            return Err("bad-request");
        }
    }
    Ok(out)
}

fn parse_form(form: &Element, out: &mut Query) -> Result<(), Refusal> {
    if form.attr("type") != Some("submit") {
        return Err("bad-request");
    }
    let fields: Vec<&Element> = form.children().collect();
    if fields.len() > MAX_FORM_FIELDS {
        return Err("bad-request");
    }
    for field in fields {
        if !field.is("field", DATA_NS) {
            return Err("bad-request");
        }
        let values: Vec<String> = field
            .children()
            .filter(|v| v.is("value", DATA_NS))
            .map(Element::text)
            .collect();
        let [value] = values.as_slice() else {
            return Err("bad-request");
        };
        if value.len() > MAX_VALUE_BYTES {
            return Err("bad-request");
        }
        match field.attr("var") {
            Some("FORM_TYPE") if value == MAM_NS => {}
            Some("with") => {
                let jid = Jid::parse(value.trim()).ok_or("bad-request")?;
                out.with = Some(match &jid.resource {
                    Some(resource) => format!("{}/{resource}", jid.bare()),
                    None => jid.bare(),
                });
            }
            Some("start") => out.start_ms = Some(parse_stamp(value.trim()).ok_or("bad-request")?),
            Some("end") => out.end_ms = Some(parse_stamp(value.trim()).ok_or("bad-request")?),
            // Unknown fields (and a wrong FORM_TYPE) are refused, not ignored: a
            // filter the client thinks applied must not be silently dropped.
            _ => return Err("bad-request"),
        }
    }
    Ok(())
}

fn parse_rsm(set: &Element, out: &mut Query) -> Result<(), Refusal> {
    for child in set.children() {
        let text = child.text();
        if text.len() > 64 || child.ns() != RSM_NS {
            return Err("bad-request");
        }
        match child.name() {
            "max" => out.max = Some(text.trim().parse().map_err(|_| "bad-request")?),
            "after" if !text.is_empty() => out.after = Some(text),
            "before" if text.is_empty() => out.before = Some(None),
            "before" => out.before = Some(Some(text)),
            _ => return Err("bad-request"),
        }
    }
    if out.after.is_some() && out.before.is_some() {
        return Err("bad-request");
    }
    Ok(())
}

/// Parses a XEP-0082 DateTime (`2026-11-29T15:41:24[.123](Z|±hh:mm)`) to Unix
/// milliseconds.
pub fn parse_stamp(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[10] != b'T' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let first3 = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis = first3.parse().ok()?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hours: i64 = rest[1..3].parse().ok()?;
            let minutes: i64 = rest[4..6].parse().ok()?;
            sign * (hours * 60 + minutes)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    u64::try_from(secs * 1000 + millis).ok()
}

/// (year, month, day) → days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whether a message is archived (and carbon-copied): chat, or normal with a body;
/// not when the sender asked for no storage (XEP-0334).
pub(super) fn has_body_chat_or_normal(message: &Element) -> bool {
    match message.attr("type") {
        Some("chat") => true,
        None | Some("normal") => message.child("body", CLIENT_NS).is_some(),
        _ => false,
    }
}

impl Conn {
    /// Archives `message` (from this session to `to`, a local account) for both
    /// sides and stamps the recipient's stanza-id on it. The id is assigned at once
    /// and the append runs beside delivery (a sender is not serialised on fsync);
    /// a query waits for what was submitted before it. A crash within the log's
    /// group-commit window can lose the archive copy of a message already
    /// delivered live. A failure is logged and
    /// the message still goes out, unstamped: delivery matters more than history.
    pub(super) async fn archive_and_stamp(&mut self, message: &mut Element, to_bare: &str) {
        // A stanza-id "by" the recipient can only come from us (XEP-0359 §3.3).
        strip_children(message, |c| {
            c.is("stanza-id", SID_NS) && c.attr("by").is_some_and(|by| by == to_bare)
        });
        let archivable = self.shared.config.archive_messages
            && message.child("body", CLIENT_NS).is_some()
            && has_body_chat_or_normal(message)
            && message.child("no-store", HINTS_NS).is_none()
            && message.child("no-permanent-store", HINTS_NS).is_none();
        if !archivable {
            return;
        }
        let from_full = self.full_jid();
        let copies = vec![
            Copy {
                owner: self.bare_jid(),
                with: message.attr("to").unwrap_or(to_bare).to_owned(),
            },
            Copy {
                owner: to_bare.to_owned(),
                with: from_full,
            },
        ];
        let copies = if to_bare == self.bare_jid() {
            copies.into_iter().take(1).collect()
        } else {
            copies
        };
        match self
            .shared
            .domain
            .archive
            .submit(copies, message.to_xml())
            .await
        {
            Ok(id) => message.push_child(
                Element::new("stanza-id", SID_NS)
                    .with_attr("by", to_bare)
                    .with_attr("id", crate::archive::wire_id(id)),
            ),
            Err(error) => tracing::warn!(%error, "message not archived"),
        }
    }

    /// A MAM query (`query` is the iq's payload).
    pub(super) async fn mam_iq(&mut self, element: Element, query: Element) -> Result<(), Gone> {
        if element.attr("type") == Some("get") {
            // Form discovery (XEP-0313 §5.1): the fields this server filters on.
            let mut form = Element::new("x", DATA_NS).with_attr("type", "form");
            form.push_child(
                Element::new("field", DATA_NS)
                    .with_attr("var", "FORM_TYPE")
                    .with_attr("type", "hidden")
                    .with_child(Element::new("value", DATA_NS).with_text(MAM_NS)),
            );
            for (var, kind) in [
                ("with", "jid-single"),
                ("start", "text-single"),
                ("end", "text-single"),
            ] {
                form.push_child(
                    Element::new("field", DATA_NS)
                        .with_attr("var", var)
                        .with_attr("type", kind),
                );
            }
            let result = Element::new("query", MAM_NS).with_child(form);
            return self.iq_result(&element, Some(result)).await;
        }
        let parsed = match parse_query(&query) {
            Ok(parsed) => parsed,
            Err(condition) => return self.bounce(&element, "modify", condition).await,
        };
        let owner = self.bare_jid();
        let page = match self
            .shared
            .domain
            .archive
            .query_settled(&owner, &parsed)
            .await
        {
            Ok(page) => page,
            Err(crate::archive::ArchiveError::UnknownId(_)) => {
                return self.bounce(&element, "cancel", "item-not-found").await;
            }
            Err(error) => {
                tracing::warn!(%error, "archive query failed");
                return self.bounce(&element, "wait", "internal-server-error").await;
            }
        };
        let limits = Limits {
            max_stanza_bytes: self.shared.config.max_stanza_bytes + 4096,
            ..Limits::default()
        };
        let parser = FramedParser::new(limits);
        let full = self.full_jid();
        let mut out = String::new();
        for archived in &page.messages {
            let Ok(Frame::Stanza(stored)) = parser.parse(archived.payload.as_bytes()) else {
                tracing::warn!(id = archived.id, "unreadable archived payload skipped");
                continue;
            };
            let mut result = Element::new("result", MAM_NS).with_attr("id", archived.wire_id());
            if let Some(query_id) = query.attr("queryid") {
                result.set_attr("queryid", query_id);
            }
            result.push_child(
                Element::new("forwarded", FORWARD_NS)
                    .with_child(
                        Element::new("delay", DELAY_NS)
                            .with_attr("stamp", xep0082_stamp(archived.stamp_ms)),
                    )
                    .with_child(stored),
            );
            let message = Element::new("message", CLIENT_NS)
                .with_attr("to", full.clone())
                .with_attr("from", owner.clone())
                .with_attr("id", format!("mam-{}", archived.wire_id()))
                .with_child(result);
            out.push_str(&write_stanza(&message));
        }
        if !out.is_empty() {
            self.write(&out).await?;
        }
        let mut set = Element::new("set", RSM_NS)
            .with_child(Element::new("count", RSM_NS).with_text(page.count.to_string()));
        if let (Some(first), Some(last)) = (page.messages.first(), page.messages.last()) {
            set.push_child(Element::new("first", RSM_NS).with_text(first.wire_id()));
            set.push_child(Element::new("last", RSM_NS).with_text(last.wire_id()));
        }
        let mut fin = Element::new("fin", MAM_NS).with_child(set);
        if page.complete {
            fin.set_attr("complete", "true");
        }
        self.iq_result(&element, Some(fin)).await
    }
}

/// Removes the children `drop` selects.
pub(super) fn strip_children(element: &mut Element, drop: impl Fn(&Element) -> bool) {
    if !element.children().any(&drop) {
        return;
    }
    let mut rebuilt = Element::new(element.name(), element.ns());
    for (name, value) in element.attrs() {
        rebuilt.set_attr(name.clone(), value.clone());
    }
    for node in element.nodes() {
        match node {
            crate::xml::Node::Element(child) if drop(child) => {}
            crate::xml::Node::Element(child) => rebuilt.push_child(child.clone()),
            crate::xml::Node::Text(text) => rebuilt.push_text(text.clone()),
        }
    }
    *element = rebuilt;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_parse_with_offsets_and_fractions() {
        assert_eq!(parse_stamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_stamp("2026-11-29T15:41:24.005Z"),
            Some(1_795_966_884_005)
        );
        assert_eq!(
            parse_stamp("2026-11-29T16:41:24.005+01:00"),
            Some(1_795_966_884_005)
        );
        assert_eq!(
            parse_stamp("2000-02-29T00:00:00.123456Z"),
            Some(951_782_400_123)
        );
        for bad in [
            "",
            "2026-11-29",
            "2026-13-01T00:00:00Z",
            "2026-11-29T25:00:00Z",
            "2026-11-29T10:00:00",
            "2026-11-29T10:00:00.Z",
            "2026-11-29T10:00:00+0100",
            "20x6-11-29T10:00:00Z",
        ] {
            assert_eq!(parse_stamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn forms_and_rsm_parse_or_refuse() {
        let parser = FramedParser::new(Limits::default());
        let parse = |xml: &str| {
            let Ok(Frame::Stanza(e)) = parser.parse(xml.as_bytes()) else {
                panic!("{xml}")
            };
            parse_query(&e)
        };
        let ok = parse(&format!(
            "<query xmlns='{MAM_NS}'><x xmlns='{DATA_NS}' type='submit'><field var='FORM_TYPE'><value>{MAM_NS}</value></field><field var='with'><value>Bob@LocalHost</value></field></x><set xmlns='{RSM_NS}'><max>5</max><before/></set></query>"
        ))
        .unwrap();
        assert_eq!(ok.with.as_deref(), Some("bob@localhost"));
        assert_eq!((ok.max, ok.before), (Some(5), Some(None)));
        for bad in [
            format!(
                "<query xmlns='{MAM_NS}'><x xmlns='{DATA_NS}' type='submit'><field var='color'><value>red</value></field></x></query>"
            ),
            format!(
                "<query xmlns='{MAM_NS}'><x xmlns='{DATA_NS}' type='submit'><field var='start'><value>yesterday</value></field></x></query>"
            ),
            format!("<query xmlns='{MAM_NS}'><x xmlns='{DATA_NS}' type='form'/></query>"),
            format!("<query xmlns='{MAM_NS}'><set xmlns='{RSM_NS}'><max>-1</max></set></query>"),
            format!(
                "<query xmlns='{MAM_NS}'><set xmlns='{RSM_NS}'><after>a</after><before>b</before></set></query>"
            ),
            format!("<query xmlns='{MAM_NS}'><other/></query>"),
        ] {
            assert_eq!(parse(&bad), Err("bad-request"), "{bad}");
        }
    }
}
