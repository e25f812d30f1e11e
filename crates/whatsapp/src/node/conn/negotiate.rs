//! Stream negotiation: the stream header and its features, SASL, resource binding.

use super::*;

impl Conn {
    pub(super) async fn stream_open(&mut self, attrs: &[(String, String)]) -> Result<(), Gone> {
        let domain = self.shared.config.domain.clone();
        let stream_id = format!("{:032x}", rand::random::<u128>());
        let mut out = stream_open(&[
            ("from", &domain),
            ("id", &stream_id),
            ("version", "1.0"),
            ("xml:lang", "en"),
        ]);
        let to = attrs
            .iter()
            .find(|(k, _)| k == "to")
            .map(|(_, v)| v.as_str());
        if to.is_some_and(|to| !to.eq_ignore_ascii_case(&domain)) {
            out.push_str(&stream_error_text("host-unknown"));
            return self.close_with(&out).await;
        }
        let mut features = Element::new("features", STREAMS_NS);
        if self.authenticated.is_none() {
            let sasl = self.new_sasl();
            let mut mechanisms = Element::new("mechanisms", SASL_NS);
            for mechanism in sasl.mechanisms() {
                mechanisms
                    .push_child(Element::new("mechanism", SASL_NS).with_text(mechanism.name()));
            }
            features.push_child(mechanisms);
            self.stage = Stage::Sasl;
        } else {
            features.push_child(Element::new("bind", BIND_NS));
            features.push_child(
                Element::new("session", SESSION_NS)
                    .with_child(Element::new("optional", SESSION_NS)),
            );
            // XEP-0198: enable after bind, or resume instead of binding.
            features.push_child(Element::new("sm", sm::SM_NS));
            self.stage = Stage::Bind;
        }
        out.push_str(&write_stanza(&features));
        self.write(&out).await
    }

    pub(super) fn new_sasl(&self) -> SaslServer {
        SaslServer::new(
            self.shared.domain.accounts.clone(),
            self.shared.domain.limiter.clone(),
            SaslPolicy {
                encrypted: false,
                allow_insecure_plain: self.shared.config.allow_insecure_plain,
            },
            self.peer.ip(),
        )
    }

    pub(super) async fn sasl(&mut self, element: Element) -> Result<(), Gone> {
        if element.ns() != SASL_NS {
            return self.stream_fail("not-authorized").await;
        }
        let step = match element.name() {
            "auth" => {
                let mut server = self.new_sasl();
                let mechanism = element.attr("mechanism").unwrap_or_default().to_owned();
                let text = element.text();
                let step = if text.trim().is_empty() {
                    server.start(&mechanism, None)
                } else {
                    match decode_payload(&text) {
                        Ok(initial) => server.start(&mechanism, Some(&initial)),
                        Err(failure) => SaslStep::Failure(failure),
                    }
                };
                self.sasl = Some(server);
                step
            }
            "response" => match (self.sasl.as_mut(), decode_payload(&element.text())) {
                (Some(server), Ok(response)) => server.step(&response),
                (None, _) => {
                    SaslStep::Failure(crate::auth::SaslFailure::Malformed("response before auth"))
                }
                (Some(_), Err(failure)) => SaslStep::Failure(failure),
            },
            "abort" => match self.sasl.as_mut() {
                Some(server) => server.abort(),
                None => SaslStep::Failure(crate::auth::SaslFailure::Aborted),
            },
            _ => return self.stream_fail("unsupported-stanza-type").await,
        };
        match step {
            SaslStep::Challenge(payload) => {
                let challenge =
                    Element::new("challenge", SASL_NS).with_text(encode_payload(&payload));
                self.write(&write_stanza(&challenge)).await
            }
            SaslStep::Success {
                additional_data,
                localpart,
            } => {
                let mut success = Element::new("success", SASL_NS);
                if let Some(data) = additional_data {
                    success.push_text(encode_payload(&data));
                }
                self.sasl = None;
                self.authenticated = Some(localpart);
                // RFC 6120 §6.4.6: the client restarts the stream; bytes it
                // pipelined after <success/> belong to the new stream.
                self.parser.reset();
                self.stage = Stage::Header;
                self.write(&write_stanza(&success)).await
            }
            SaslStep::Failure(failure) => {
                self.sasl = None;
                self.sasl_failures += 1;
                let mut element = Element::new("failure", SASL_NS)
                    .with_child(Element::new(failure.as_condition(), SASL_NS));
                if let Some(text) = failure.text() {
                    element.push_child(Element::new("text", SASL_NS).with_text(text));
                }
                self.write(&write_stanza(&element)).await?;
                if self.sasl_failures >= MAX_SASL_FAILURES {
                    return self.stream_fail("policy-violation").await;
                }
                Ok(())
            }
        }
    }

    pub(super) async fn bind(&mut self, element: Element) -> Result<(), Gone> {
        let Some(request) = element
            .is("iq", CLIENT_NS)
            .then(|| element.child("bind", BIND_NS))
            .flatten()
            .filter(|_| element.attr("type") == Some("set"))
        else {
            return self.stream_fail("not-authorized").await;
        };
        let local = self
            .authenticated
            .clone()
            .expect("bind stage is authenticated");
        let bare = format!("{local}@{}", self.shared.config.domain);
        let wanted = request
            .child("resource", BIND_NS)
            .map(|r| r.text().trim().to_owned())
            .filter(|r| !r.is_empty() && r.len() <= 1023 && !r.contains('/'));
        let bound = self.shared.router.bind(
            &bare,
            wanted.as_deref(),
            self.conn_id,
            self.tx.clone(),
            self.kick.clone(),
        );
        let resource = match bound {
            Ok(resource) => resource,
            Err(_) => {
                let reply = error_reply(&element, "wait", "resource-constraint");
                return self.write(&write_stanza(&reply)).await;
            }
        };
        let bound = Bound {
            shared: self.shared.clone(),
            bare,
            resource,
            conn_id: self.conn_id,
        };
        let mut result = Element::new("iq", CLIENT_NS).with_attr("type", "result");
        if let Some(id) = element.attr("id") {
            result.set_attr("id", id);
        }
        result.push_child(
            Element::new("bind", BIND_NS)
                .with_child(Element::new("jid", BIND_NS).with_text(bound.full())),
        );
        self.bound = Some(bound);
        self.stage = Stage::Session;
        self.write(&write_stanza(&result)).await
    }
}
