//! Deterministic tests of the XML layer against real inputs.

use super::*;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' xml:lang='en'>";

fn parse_all(input: &[u8]) -> Result<Vec<StreamEvent>, XmlError> {
    let mut parser = StreamParser::default();
    let mut events = Vec::new();
    parser.feed_events(input, &mut events)?;
    Ok(events)
}

fn stanzas(input: &str) -> Result<Vec<Element>, XmlError> {
    let events = parse_all(format!("{HEADER}{input}").as_bytes())?;
    Ok(events
        .into_iter()
        .filter_map(|event| match event {
            StreamEvent::Stanza(element) => Some(element),
            _ => None,
        })
        .collect())
}

fn condition_of(input: &str) -> StreamErrorCondition {
    match parse_all(input.as_bytes()) {
        Ok(events) => panic!("expected an error for {input:?}, got {events:?}"),
        Err(error) => error.condition,
    }
}

fn in_stream(body: &str) -> String {
    format!("{HEADER}{body}")
}

#[test]
fn stream_open_stanzas_and_close() {
    let events = parse_all(
        in_stream(
            "<message to='juliet@example.com' type='chat' id='m1'><body>Wherefore &amp; why?</body></message>\
             <presence/><stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>\
             </stream:stream>",
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(events.len(), 5, "{events:?}");
    let StreamEvent::StreamOpen { attrs } = &events[0] else {
        panic!("first event {:?}", events[0]);
    };
    assert_eq!(
        attrs,
        &vec![
            ("to".to_owned(), "example.com".to_owned()),
            ("version".to_owned(), "1.0".to_owned()),
            ("xml:lang".to_owned(), "en".to_owned()),
        ]
    );
    let StreamEvent::Stanza(message) = &events[1] else {
        panic!("{:?}", events[1]);
    };
    assert!(message.is("message", CLIENT_NS));
    assert_eq!(message.attr("to"), Some("juliet@example.com"));
    assert_eq!(message.attr("missing"), None);
    let body = message.child("body", CLIENT_NS).unwrap();
    assert_eq!(body.text(), "Wherefore & why?");
    assert_eq!(
        events[2],
        StreamEvent::Stanza(Element::new("presence", CLIENT_NS))
    );
    let StreamEvent::Stanza(features) = &events[3] else {
        panic!("{:?}", events[3]);
    };
    assert!(features.is("features", STREAMS_NS));
    assert!(
        features
            .child("starttls", "urn:ietf:params:xml:ns:xmpp-tls")
            .is_some()
    );
    assert_eq!(events[4], StreamEvent::StreamClose);
}

#[test]
fn whitespace_keepalives_between_stanzas_are_ignored() {
    let got = stanzas(" \n\t<presence/>\n \r\n <r xmlns='urn:xmpp:sm:3'/>   \n").unwrap();
    assert_eq!(got.len(), 2);
    assert!(got[1].is("r", "urn:xmpp:sm:3"));
    // A keepalive alone, fed byte by byte, yields nothing and buffers nothing.
    let mut parser = StreamParser::default();
    parser.feed(HEADER.as_bytes()).unwrap();
    assert!(matches!(
        parser.next_event().unwrap(),
        Some(StreamEvent::StreamOpen { .. })
    ));
    for _ in 0..10_000 {
        parser.feed(b" ").unwrap();
        assert_eq!(parser.next_event().unwrap(), None);
        assert_eq!(parser.buffered_len(), 0);
    }
}

#[test]
fn stanza_split_mid_utf8_across_reads() {
    let stanza = "<message><body>caf\u{e9} \u{1F600} \u{4E2D}</body></message>";
    let whole = in_stream(stanza);
    let bytes = whole.as_bytes();
    // Split inside the 4-byte emoji and inside the 3-byte CJK character.
    let emoji = whole.find('\u{1F600}').unwrap();
    let cjk = whole.find('\u{4E2D}').unwrap();
    let mut parser = StreamParser::default();
    let mut events = Vec::new();
    for part in [
        &bytes[..emoji + 1],
        &bytes[emoji + 1..emoji + 3],
        &bytes[emoji + 3..cjk + 2],
        &bytes[cjk + 2..],
    ] {
        parser.feed_events(part, &mut events).unwrap();
    }
    assert_eq!(events.len(), 2);
    let StreamEvent::Stanza(message) = &events[1] else {
        panic!()
    };
    assert_eq!(
        message.child("body", CLIENT_NS).unwrap().text(),
        "caf\u{e9} \u{1F600} \u{4E2D}"
    );
}

#[test]
fn namespaces_resolve_through_prefixes_and_defaults() {
    let got = stanzas(
        "<iq type='get' id='1'><q:query xmlns:q='jabber:iq:roster' q:ver='7' xml:lang='fr'>\
         <item/><x xmlns=''/></q:query></iq>",
    )
    .unwrap();
    let query = got[0].child("query", "jabber:iq:roster").unwrap();
    assert_eq!(query.attr("{jabber:iq:roster}ver"), Some("7"));
    assert_eq!(query.attr("xml:lang"), Some("fr"));
    // Prefixes do not change the default namespace of unprefixed children.
    assert!(query.child("item", CLIENT_NS).is_some());
    assert!(query.child("x", "").is_some());
}

#[test]
fn character_references_and_predefined_entities_resolve() {
    let got = stanzas("<message id='a&#x26;b&lt;&#10;'><body>&lt;&gt;&amp;&apos;&quot;&#65;&#x1F600;</body></message>").unwrap();
    assert_eq!(got[0].attr("id"), Some("a&b<\n"));
    assert_eq!(
        got[0].child("body", CLIENT_NS).unwrap().text(),
        "<>&'\"A\u{1F600}"
    );
}

#[test]
fn attribute_and_text_whitespace_normalisation() {
    let got = stanzas("<message id='a\tb\r\nc'><body>x\r\ny\rz</body></message>").unwrap();
    assert_eq!(got[0].attr("id"), Some("a b c"));
    assert_eq!(got[0].child("body", CLIENT_NS).unwrap().text(), "x\ny\nz");
}

#[test]
fn cdata_is_text() {
    let got = stanzas("<message><body>a<![CDATA[<b>&amp;]]>c</body></message>").unwrap();
    let body = got[0].child("body", CLIENT_NS).unwrap();
    assert_eq!(body.nodes(), &[Node::Text("a<b>&amp;c".to_owned())]);
}

#[test]
fn not_well_formed_inputs() {
    use StreamErrorCondition::NotWellFormed;
    for body in [
        "<message></presence>",
        "<message><body></message></body>",
        "<x:message/>",
        "<message a='1' a='2'/>",
        "<message a=1/>",
        "<message a='<'/>",
        "<message>&#0;</message>",
        "<message>&#x1;</message>",
        "<message>a\u{1}b</message>",
        "<message>&amp</message>",
        "<1message/>",
        "<message xmlns:p=''/>",
        "<message>]]></message>",
        "<xml:lang/>",
        "</nothing>",
        "<a xmlns:p='urn:x' xmlns:q='urn:x' p:k='1' q:k='2'/>",
    ] {
        assert_eq!(condition_of(&in_stream(body)), NotWellFormed, "{body}");
    }
    let mut bad_utf8 = in_stream("<message><body>").into_bytes();
    bad_utf8.extend_from_slice(&[0xC3, 0x28]);
    bad_utf8.extend_from_slice(b"</body></message>");
    assert_eq!(parse_all(&bad_utf8).unwrap_err().condition, NotWellFormed);
    // Declaration not first; content after the stream closed.
    assert_eq!(condition_of(&format!(" {HEADER}")), NotWellFormed);
    assert_eq!(
        condition_of(&in_stream("</stream:stream><presence/>")),
        NotWellFormed
    );
    assert_eq!(condition_of(&in_stream("</stream:other>")), NotWellFormed);
}

#[test]
fn restricted_xml_inputs() {
    use StreamErrorCondition::RestrictedXml;
    for body in [
        "<!-- hi -->",
        "<message><!-- hi --></message>",
        "<?php echo 1 ?>",
        "<message><?pi x?></message>",
        "<message>&custom;</message>",
        "<message a='&custom;'/>",
        "<!ENTITY x 'y'>",
    ] {
        assert_eq!(condition_of(&in_stream(body)), RestrictedXml, "{body}");
    }
    assert_eq!(condition_of("<!DOCTYPE stream>"), RestrictedXml);
    assert_eq!(
        condition_of("<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]>"),
        RestrictedXml
    );
}

#[test]
fn billion_laughs_is_refused_without_expansion() {
    let mut attack = String::from("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>");
    for level in 1..10 {
        let previous = if level == 1 {
            "lol".to_owned()
        } else {
            format!("lol{}", level - 1)
        };
        attack.push_str(&format!(
            "<!ENTITY lol{level} '{}'>",
            format!("&{previous};").repeat(10)
        ));
    }
    attack.push_str(
        "]><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>\
                     <message><body>&lol9;</body></message>",
    );
    let mut parser = StreamParser::default();
    let error = parser
        .feed(attack.as_bytes())
        .and_then(|()| parser.next_event())
        .unwrap_err();
    assert_eq!(error.condition, StreamErrorCondition::RestrictedXml);
    // Refused at the DOCTYPE itself, having buffered nothing beyond the input.
    assert_eq!(error.offset, "<?xml version='1.0'?>".len() as u64);
    // Even inside a stanza, the reference is refused rather than looked up.
    let error = stanzas("<message><body>&lol9;</body></message>").unwrap_err();
    assert_eq!(error.condition, StreamErrorCondition::RestrictedXml);
}

#[test]
fn namespace_and_format_errors() {
    use StreamErrorCondition::{BadFormat, InvalidNamespace, UnsupportedEncoding};
    assert_eq!(
        condition_of("<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong'>"),
        InvalidNamespace
    );
    assert_eq!(
        condition_of(
            "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>"
        ),
        InvalidNamespace
    );
    assert_eq!(
        condition_of("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>"),
        InvalidNamespace
    );
    assert_eq!(
        condition_of(
            "<stream:flow xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        ),
        BadFormat
    );
    assert_eq!(condition_of(&in_stream("hello<presence/>")), BadFormat);
    assert_eq!(condition_of(&in_stream("<![CDATA[x]]>")), BadFormat);
    assert_eq!(
        condition_of("<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream>"),
        UnsupportedEncoding
    );
    // The server-to-server namespace is accepted when configured.
    let mut parser = StreamParser::with_content_namespace(Limits::default(), SERVER_NS);
    parser
        .feed(b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>")
        .unwrap();
    assert!(matches!(
        parser.next_event(),
        Ok(Some(StreamEvent::StreamOpen { .. }))
    ));
}

/// A stanza of exactly `total` bytes: `<message><body>xxxx</body></message>`.
fn message_of_size(total: usize) -> String {
    let frame = "<message><body></body></message>".len();
    format!(
        "<message><body>{}</body></message>",
        "x".repeat(total - frame)
    )
}

#[test]
fn stanza_size_limit_is_inclusive() {
    let limit = Limits::default().max_stanza_bytes;
    assert_eq!(limit, 64 * 1024);
    let exact = message_of_size(limit);
    assert_eq!(exact.len(), limit);
    let got = stanzas(&exact).unwrap();
    assert_eq!(
        got[0].child("body", CLIENT_NS).unwrap().text().len(),
        limit - 32
    );

    let over = message_of_size(limit + 1);
    let error = stanzas(&over).unwrap_err();
    assert_eq!(error.condition, StreamErrorCondition::PolicyViolation);
}

#[test]
fn oversized_stanza_is_refused_before_it_completes() {
    let mut parser = StreamParser::default();
    parser.feed(HEADER.as_bytes()).unwrap();
    parser.next_event().unwrap();
    parser.feed(b"<message><body>").unwrap();
    assert_eq!(parser.next_event().unwrap(), None);
    let chunk = vec![b'y'; 4096];
    let mut refused = None;
    for round in 0..32 {
        match parser.feed(&chunk).and_then(|()| parser.next_event()) {
            Ok(event) => assert_eq!(event, None),
            Err(error) => {
                refused = Some((round, error));
                break;
            }
        }
        assert!(parser.buffered_len() <= Limits::default().max_stanza_bytes);
    }
    let (round, error) = refused.expect("an endless stanza must be refused");
    assert_eq!(error.condition, StreamErrorCondition::PolicyViolation);
    assert_eq!(round, 15, "64 KiB crossed on the 16th 4 KiB chunk");
    // Errors are sticky.
    assert_eq!(parser.feed(b"</body></message>").unwrap_err(), error);
}

#[test]
fn deep_nesting_is_refused() {
    let limits = Limits::default();
    let ok = format!(
        "{}{}",
        "<a>".repeat(limits.max_depth),
        "</a>".repeat(limits.max_depth)
    );
    assert!(stanzas(&ok).is_ok());
    let deep = "<a>".repeat(limits.max_depth + 1);
    assert_eq!(
        stanzas(&deep).unwrap_err().condition,
        StreamErrorCondition::PolicyViolation
    );
}

#[test]
fn attribute_and_name_limits() {
    let limits = Limits::default();
    let many: String = (0..=limits.max_attrs)
        .map(|i| format!(" a{i}='v'"))
        .collect();
    let error = stanzas(&format!("<message{many}/>")).unwrap_err();
    assert_eq!(error.condition, StreamErrorCondition::PolicyViolation);
    let long_name = "n".repeat(limits.max_name_bytes + 1);
    let error = stanzas(&format!("<{long_name}/>")).unwrap_err();
    assert_eq!(error.condition, StreamErrorCondition::PolicyViolation);
    let long_value = "v".repeat(limits.max_attr_value_bytes + 1);
    let error = stanzas(&format!("<message id='{long_value}'/>")).unwrap_err();
    assert_eq!(error.condition, StreamErrorCondition::PolicyViolation);
}

#[test]
fn feeding_without_draining_is_bounded() {
    let mut parser = StreamParser::default();
    let big = vec![b' '; Limits::default().max_buffer_bytes + 1];
    assert_eq!(
        parser.feed(&big).unwrap_err().condition,
        StreamErrorCondition::PolicyViolation
    );
}

#[test]
fn reset_restarts_the_stream_keeping_pipelined_bytes() {
    let mut parser = StreamParser::default();
    let mut events = Vec::new();
    let auth =
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldABy</auth>";
    parser
        .feed(format!("{HEADER}{auth}{HEADER}").as_bytes())
        .unwrap();
    events.push(parser.next_event().unwrap().unwrap());
    let auth_event = parser.next_event().unwrap().unwrap();
    let StreamEvent::Stanza(auth) = auth_event else {
        panic!()
    };
    assert!(auth.is("auth", "urn:ietf:params:xml:ns:xmpp-sasl"));
    assert_eq!(auth.text(), "AGp1bGlldABy");
    // SASL success: the next header starts a new stream, XML declaration and all.
    parser.reset();
    assert!(matches!(
        parser.next_event().unwrap(),
        Some(StreamEvent::StreamOpen { .. })
    ));
    parser.feed(b"<presence/>").unwrap();
    assert!(matches!(
        parser.next_event().unwrap(),
        Some(StreamEvent::Stanza(_))
    ));
    // STARTTLS: whatever followed <starttls/> is handed back untouched.
    let mut parser = StreamParser::default();
    parser
        .feed(format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>").as_bytes())
        .unwrap();
    parser.feed(&[0x16, 0x03, 0x01, 0x00]).unwrap();
    parser.next_event().unwrap();
    assert!(matches!(
        parser.next_event().unwrap(),
        Some(StreamEvent::Stanza(_))
    ));
    assert_eq!(parser.take_unparsed(), vec![0x16, 0x03, 0x01, 0x00]);
    assert_eq!(parser.buffered_len(), 0);
}

#[test]
fn errors_carry_the_condition_name() {
    let error = stanzas("<message><!-- x --></message>").unwrap_err();
    assert_eq!(error.condition.as_condition(), "restricted-xml");
    assert!(
        error.to_string().starts_with("restricted-xml at byte "),
        "{error}"
    );
    assert_eq!(
        StreamErrorCondition::NotWellFormed.as_condition(),
        "not-well-formed"
    );
    assert_eq!(
        StreamErrorCondition::PolicyViolation.as_condition(),
        "policy-violation"
    );
    assert_eq!(
        StreamErrorCondition::InvalidNamespace.as_condition(),
        "invalid-namespace"
    );
    assert_eq!(StreamErrorCondition::BadFormat.as_condition(), "bad-format");
}

#[test]
fn writer_escapes_and_declares_namespaces_only_where_needed() {
    let message = Element::new("message", CLIENT_NS)
        .with_attr("to", "a&b\"'<>")
        .with_child(Element::new("body", CLIENT_NS).with_text("1 < 2 & \"q\" 'a' >\r"))
        .with_child(Element::new(
            "active",
            "http://jabber.org/protocol/chatstates",
        ));
    assert_eq!(
        write_stanza(&message),
        "<message to=\"a&amp;b&quot;&apos;&lt;&gt;\"><body>1 &lt; 2 &amp; &quot;q&quot; &apos;a&apos; &gt;&#13;</body>\
         <active xmlns=\"http://jabber.org/protocol/chatstates\"/></message>"
    );
    assert_eq!(
        message.to_xml(),
        "<message xmlns=\"jabber:client\" to=\"a&amp;b&quot;&apos;&lt;&gt;\"><body>1 &lt; 2 &amp; &quot;q&quot; &apos;a&apos; &gt;&#13;</body>\
         <active xmlns=\"http://jabber.org/protocol/chatstates\"/></message>"
    );
    let features = Element::new("features", STREAMS_NS)
        .with_child(Element::new("bind", "urn:ietf:params:xml:ns:xmpp-bind"));
    assert_eq!(
        write_stanza(&features),
        "<stream:features><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"/></stream:features>"
    );
    assert_eq!(
        features.to_xml(),
        "<stream:features xmlns:stream=\"http://etherx.jabber.org/streams\"><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"/></stream:features>"
    );
}

#[test]
fn stream_error_and_header_helpers() {
    assert_eq!(
        stream_error(StreamErrorCondition::NotWellFormed, None),
        "<stream:error><not-well-formed xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/></stream:error>"
    );
    assert_eq!(
        stream_error(StreamErrorCondition::PolicyViolation, Some("too <big>")),
        "<stream:error><policy-violation xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>\
         <text xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\">too &lt;big&gt;</text></stream:error>"
    );
    // The server's own header and error parse with our parser.
    let header = stream_open(&[("from", "example.com"), ("id", "s1"), ("version", "1.0")]);
    let events = parse_all(
        format!(
            "{header}{}{}",
            stream_error(StreamErrorCondition::BadFormat, Some("x")),
            stream_close()
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(events.len(), 3);
    let StreamEvent::Stanza(error) = &events[1] else {
        panic!()
    };
    assert_eq!(
        *error,
        stream_error_element(StreamErrorCondition::BadFormat, Some("x"))
    );
    assert!(error.child("bad-format", STREAM_ERRORS_NS).is_some());
}

#[test]
fn framed_open_close_and_stanzas() {
    let parser = FramedParser::default();
    let open = framing_open(&[("to", "example.com"), ("version", "1.0")]);
    assert_eq!(
        open,
        "<open xmlns=\"urn:ietf:params:xml:ns:xmpp-framing\" to=\"example.com\" version=\"1.0\"/>"
    );
    assert_eq!(
        parser.parse(open.as_bytes()).unwrap(),
        Frame::Open {
            attrs: vec![
                ("to".into(), "example.com".into()),
                ("version".into(), "1.0".into())
            ]
        }
    );
    assert_eq!(
        parser.parse(framing_close(&[]).as_bytes()).unwrap(),
        Frame::Close { attrs: vec![] }
    );
    let Frame::Stanza(message) = parser
        .parse(b"<message xmlns='jabber:client' to='a@b'><body>hi</body></message>\n")
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(message.child("body", CLIENT_NS).unwrap().text(), "hi");
    // Round trip through the standalone writer.
    assert_eq!(
        parser.parse(message.to_xml().as_bytes()).unwrap(),
        Frame::Stanza(message)
    );
    let Frame::Stanza(features) = parser
        .parse(b"<stream:features xmlns:stream='http://etherx.jabber.org/streams'/>")
        .unwrap()
    else {
        panic!()
    };
    assert!(features.is("features", STREAMS_NS));
}

#[test]
fn framed_errors() {
    use StreamErrorCondition::*;
    let parser = FramedParser::default();
    let cases: &[(&[u8], StreamErrorCondition)] = &[
        (b"<message to='a@b'/>", InvalidNamespace),
        (b"<message xmlns='jabber:server'/>", InvalidNamespace),
        (b"<message xmlns='jabber:client'>", NotWellFormed),
        (
            b"<message xmlns='jabber:client'/><presence xmlns='jabber:client'/>",
            NotWellFormed,
        ),
        (b"<message xmlns='jabber:client'/><", NotWellFormed),
        (
            b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'><x/></open>",
            BadFormat,
        ),
        (
            b"<reopen xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
            BadFormat,
        ),
        (
            b"<!DOCTYPE x><message xmlns='jabber:client'/>",
            RestrictedXml,
        ),
        (b"", NotWellFormed),
    ];
    for (frame, expected) in cases {
        let error = parser.parse(frame).unwrap_err();
        assert_eq!(
            error.condition,
            *expected,
            "{}: {error}",
            String::from_utf8_lossy(frame)
        );
    }
    let big = format!(
        "<message xmlns='jabber:client'><body>{}</body></message>",
        "x".repeat(70_000)
    );
    assert_eq!(
        parser.parse(big.as_bytes()).unwrap_err().condition,
        PolicyViolation
    );
}

#[test]
fn self_closing_stream_header_opens_and_closes() {
    let events = parse_all(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='a'/>",
    )
    .unwrap();
    assert_eq!(
        events,
        vec![
            StreamEvent::StreamOpen {
                attrs: vec![("to".to_owned(), "a".to_owned())]
            },
            StreamEvent::StreamClose
        ]
    );
}

#[test]
fn namespaced_attribute_whose_uri_contains_a_brace_round_trips() {
    // Found by mutation fuzzing: Clark notation must split at the last '}'.
    let got = stanzas("<iq xmlns:q='urn:a}b' q:id='x'/>").unwrap();
    assert_eq!(got[0].attr("{urn:a}b}id"), Some("x"));
    let again = stanzas(&write_stanza(&got[0])).unwrap();
    assert_eq!(again, got);
}

#[test]
fn namespaced_attributes_share_one_generated_prefix_per_namespace() {
    let element = Element::new("x", "urn:e")
        .with_attr("{urn:a}k", "1")
        .with_attr("{urn:a}l", "2")
        .with_attr("{urn:b}k", "3")
        .with_attr("{http://www.w3.org/XML/1998/namespace}lang", "en");
    assert_eq!(
        element.to_xml(),
        "<x xmlns=\"urn:e\" xmlns:ns0=\"urn:a\" ns0:k=\"1\" ns0:l=\"2\" xmlns:ns1=\"urn:b\" ns1:k=\"3\" xml:lang=\"en\"/>"
    );
}

#[test]
fn zero_limits_are_sanitised_not_panicking() {
    let zero = Limits {
        max_stanza_bytes: 0,
        max_depth: 0,
        max_attrs: 0,
        max_name_bytes: 0,
        max_attr_value_bytes: 0,
        max_buffer_bytes: 0,
    };
    assert_eq!(zero.sanitized().max_buffer_bytes, 1);
    let mut parser = StreamParser::new(zero.clone());
    parser.feed(b"<").unwrap();
    assert_eq!(parser.next_event().unwrap(), None);
    let error = parser
        .feed(b"s")
        .and_then(|()| parser.next_event())
        .unwrap_err();
    assert_eq!(error.condition, StreamErrorCondition::PolicyViolation);
    let error = FramedParser::new(zero).parse(b"<a/>").unwrap_err();
    assert_eq!(error.condition, StreamErrorCondition::PolicyViolation);
}

#[test]
fn the_input_buffer_is_released_once_everything_fed_is_parsed() {
    let mut parser = StreamParser::default();
    parser.feed(HEADER.as_bytes()).unwrap();
    assert!(matches!(
        parser.next_event().unwrap(),
        Some(StreamEvent::StreamOpen { .. })
    ));
    assert_eq!(parser.next_event().unwrap(), None);
    assert_eq!(parser.buffer_capacity(), 0, "idle after the header");
    // A large stanza in pieces: buffered while incomplete, released once taken.
    let big = message_of_size(60_000);
    let (first, rest) = big.as_bytes().split_at(30_000);
    parser.feed(first).unwrap();
    assert_eq!(parser.next_event().unwrap(), None);
    assert!(parser.buffer_capacity() >= 30_000);
    parser.feed(rest).unwrap();
    assert!(matches!(
        parser.next_event().unwrap(),
        Some(StreamEvent::Stanza(_))
    ));
    assert_eq!(parser.next_event().unwrap(), None);
    assert_eq!(parser.buffer_capacity(), 0, "idle after a large stanza");
    // A partial stanza stays buffered and completes across the release.
    parser.feed(b"<presence/><message><bo").unwrap();
    assert!(matches!(
        parser.next_event().unwrap(),
        Some(StreamEvent::Stanza(p)) if p.name() == "presence"
    ));
    assert_eq!(parser.next_event().unwrap(), None);
    assert!(parser.buffer_capacity() > 0);
    parser.feed(b"dy>hi</body></message>").unwrap();
    assert!(matches!(
        parser.next_event().unwrap(),
        Some(StreamEvent::Stanza(m)) if m.name() == "message"
    ));
    assert_eq!(parser.next_event().unwrap(), None);
    assert_eq!(parser.buffer_capacity(), 0);
}
