//! Stream negotiation: the stream header and its features, STARTTLS, SASL (its
//! computations on the blocking pool), resource binding.

use super::*;

impl Conn {
    pub(super) async fn stream_open(&mut self, attrs: &[(String, String)]) -> Result<(), Gone> {
        let domain = self.shared.config.domain.clone();
        let stream_id = format!("{:032x}", rand::random::<u128>());
        let mut out = self.transport.header(&[
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
            if self.transport.can_starttls() {
                let mut starttls = Element::new("starttls", TLS_NS);
                if self.shared.config.require_encryption {
                    starttls.push_child(Element::new("required", TLS_NS));
                }
                features.push_child(starttls);
            }
            // With TLS mandatory-to-negotiate, SASL is offered only after it
            // (RFC 6120 §5.3.1).
            if !self.encryption_missing() {
                let sasl = self.new_sasl();
                let mut mechanisms = Element::new("mechanisms", SASL_NS);
                for mechanism in sasl.mechanisms() {
                    mechanisms
                        .push_child(Element::new("mechanism", SASL_NS).with_text(mechanism.name()));
                }
                features.push_child(mechanisms);
            }
            if self.registration_offered() {
                features.push_child(Element::new("register", register::REGISTER_FEATURE_NS));
            }
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
                encrypted: self.transport.encrypted(),
                allow_insecure_plain: self.shared.config.allow_insecure_plain,
            },
            self.peer.ip(),
        )
    }

    /// Whether TLS is required but this stream is not encrypted (a WebSocket or a
    /// TCP stream before STARTTLS).
    fn encryption_missing(&self) -> bool {
        self.shared.config.require_encryption && !self.transport.encrypted()
    }

    /// Runs `f` on `server` on the blocking pool, at most a core's worth at once:
    /// PLAIN verification is PBKDF2 and SCRAM looks up and hashes secrets, which
    /// must not stall the live sessions sharing this runtime thread.
    async fn sasl_off_thread(
        slots: Arc<tokio::sync::Semaphore>,
        mut server: SaslServer,
        f: impl FnOnce(&mut SaslServer) -> SaslStep + Send + 'static,
    ) -> (Option<SaslServer>, SaslStep) {
        // No borrow of the connection (not `Sync`) lives across the await.
        let _permit = slots.acquire_owned().await;
        match tokio::task::spawn_blocking(move || {
            let step = f(&mut server);
            (server, step)
        })
        .await
        {
            Ok((server, step)) => (Some(server), step),
            Err(error) => {
                tracing::error!(%error, "SASL computation failed");
                (
                    None,
                    SaslStep::Failure(crate::auth::SaslFailure::Malformed("internal error")),
                )
            }
        }
    }

    pub(super) async fn sasl(&mut self, element: Element) -> Result<(), Gone> {
        if element.ns() != SASL_NS {
            if self.registration_offered() && register::is_register_iq(&element) {
                return self.register_unauthenticated(element).await;
            }
            return self.stream_fail("not-authorized").await;
        }
        if self.encryption_missing() && element.name() == "auth" {
            let failure = Element::new("failure", SASL_NS)
                .with_child(Element::new("encryption-required", SASL_NS))
                .with_child(Element::new("text", SASL_NS).with_text("negotiate STARTTLS first"));
            return self.write(&write_stanza(&failure)).await;
        }
        let step = match element.name() {
            "auth" => {
                let server = self.new_sasl();
                let mechanism = element.attr("mechanism").unwrap_or_default().to_owned();
                let text = element.text();
                let (server, step) = if text.trim().is_empty() {
                    Self::sasl_off_thread(self.shared.domain.sasl_slots.clone(), server, move |s| {
                        s.start(&mechanism, None)
                    })
                    .await
                } else {
                    match decode_payload(&text) {
                        Ok(initial) => {
                            Self::sasl_off_thread(
                                self.shared.domain.sasl_slots.clone(),
                                server,
                                move |s| s.start(&mechanism, Some(&initial)),
                            )
                            .await
                        }
                        Err(failure) => (Some(server), SaslStep::Failure(failure)),
                    }
                };
                self.sasl = server;
                step
            }
            "response" => match (self.sasl.take(), decode_payload(&element.text())) {
                (Some(server), Ok(response)) => {
                    let (server, step) = Self::sasl_off_thread(
                        self.shared.domain.sasl_slots.clone(),
                        server,
                        move |s| s.step(&response),
                    )
                    .await;
                    self.sasl = server;
                    step
                }
                (None, _) => {
                    SaslStep::Failure(crate::auth::SaslFailure::Malformed("response before auth"))
                }
                (Some(server), Err(failure)) => {
                    self.sasl = Some(server);
                    SaslStep::Failure(failure)
                }
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
                self.transport.restart();
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
            presence: Default::default(),
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

impl Conn {
    /// `<starttls/>` (RFC 6120 §5.4): `<proceed/>`, the handshake, then the client
    /// restarts the stream over TLS. Refused with `<failure/>` and a close when the
    /// stream is already encrypted, authenticated, a WebSocket, or the client did
    /// not wait for `<proceed/>`; a failed handshake just drops the connection.
    pub(super) async fn starttls(&mut self) -> Result<(), Gone> {
        let allowed = self.stage == Stage::Sasl
            && self.authenticated.is_none()
            && self.sasl.is_none()
            && self.transport.check_starttls().is_ok();
        if !allowed {
            metrics::counter!("whatsapp_starttls_refused_total").increment(1);
            return self
                .close_with(&write_stanza(&Element::new("failure", TLS_NS)))
                .await;
        }
        self.write(&write_stanza(&Element::new("proceed", TLS_NS)))
            .await?;
        let acceptor = tokio_rustls::TlsAcceptor::from(self.shared.domain.tls.clone());
        // What is left of the handshake deadline, not a fresh one.
        let within = self.until_deadline();
        match self.transport.starttls(acceptor, within).await {
            Ok(()) => {
                self.stage = Stage::Header;
                Ok(())
            }
            Err(_) => {
                metrics::counter!("whatsapp_tls_handshake_failures_total").increment(1);
                Err(Gone(End::Dropped))
            }
        }
    }
}
