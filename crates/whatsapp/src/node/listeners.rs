//! The node's secondary listeners: direct TLS (XEP-0368) and RFC 7395 WebSocket,
//! published as `xmpp-tls` and `xmpp-websocket`, plus the validation of the
//! transport and hygiene settings.
//!
//! Guarantees: one connection cap for every transport (the same counter as the
//! client port, taken on accept); a TLS handshake is bounded by
//! `handshake_timeout` and a failed one harms nobody else. Ports follow the main
//! listener: when it asks for a free port (0) so do they, and a node listening on
//! the configured client port plus an offset (regional nodes in one process) moves
//! its extra ports by the same offset.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use casebook_kit::runtime::{InstanceContext, StartError, serve_tcp};

use super::conn::transport::Transport;
use super::conn::{self};
use super::{Shared, Slot, WhatsappConfig, websocket};

/// Most stanzas per second a connection may be configured for.
pub const MAX_STANZA_RATE: u32 = 1_000_000;

impl WhatsappConfig {
    /// The transport and hygiene bounds; the error names the field.
    pub(super) fn validate_transport(&self) -> Result<(), String> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("whatsapp.tls_cert: tls_cert and tls_key go together".into());
        }
        let ports = [
            ("port", self.port),
            ("tls_port", self.tls_port),
            ("ws_port", self.ws_port),
        ];
        for (i, (name, port)) in ports.iter().enumerate() {
            if let Some((other, _)) = ports[..i].iter().find(|(_, p)| *p != 0 && p == port) {
                return Err(format!(
                    "whatsapp.{name}: the same port as whatsapp.{other}"
                ));
            }
        }
        let durations = [
            ("handshake_timeout", self.handshake_timeout, 3600, "1h"),
            ("idle_timeout", self.idle_timeout, 7 * 86_400, "7days"),
        ];
        for (name, value, max_secs, max) in durations {
            if !(Duration::from_millis(10)..=Duration::from_secs(max_secs)).contains(&value) {
                return Err(format!("whatsapp.{name}: must be between 10ms and {max}"));
            }
        }
        if !(1..=MAX_STANZA_RATE).contains(&self.max_stanzas_per_second) {
            return Err(format!(
                "whatsapp.max_stanzas_per_second: must be in 1..={MAX_STANZA_RATE}"
            ));
        }
        if !(1..=MAX_STANZA_RATE).contains(&self.stanza_burst) {
            return Err(format!(
                "whatsapp.stanza_burst: must be in 1..={MAX_STANZA_RATE}"
            ));
        }
        if self.max_bytes_per_second < 1024 {
            return Err("whatsapp.max_bytes_per_second: must be at least 1024".into());
        }
        Ok(())
    }
}

/// Where an extra listener binds: see the module doc.
fn extra_addr(ctx: &InstanceContext, configured_main: u16, configured: u16) -> SocketAddr {
    let main = ctx.listen_addr();
    let port = if configured == 0 || main.port() == 0 {
        0
    } else {
        let offset = i32::from(main.port()) - i32::from(configured_main);
        u16::try_from(i32::from(configured) + offset).unwrap_or(0)
    };
    SocketAddr::new(main.ip(), port)
}

/// Takes a connection slot; `None` when the node is full.
pub(super) fn admit(live: &Arc<AtomicUsize>, cap: usize) -> (Slot, bool) {
    let slot = Slot(live.clone());
    let admitted = live.fetch_add(1, Ordering::AcqRel) < cap;
    (slot, admitted)
}

/// Binds, serves and publishes the direct-TLS and WebSocket listeners.
pub(super) async fn start(
    ctx: &InstanceContext,
    shared: &Arc<Shared>,
    live: &Arc<AtomicUsize>,
) -> Result<(), StartError> {
    let config = &shared.config;
    let tls_listener = ctx
        .bind(extra_addr(ctx, config.port, config.tls_port))
        .await?;
    let tls_addr = tls_listener.local_addr().map_err(anyhow::Error::from)?;
    let ws_listener = ctx
        .bind(extra_addr(ctx, config.port, config.ws_port))
        .await?;
    let ws_addr = ws_listener.local_addr().map_err(anyhow::Error::from)?;

    let acceptor = tokio_rustls::TlsAcceptor::from(shared.domain.tls.clone());
    let shutdown = ctx.shutdown_token();
    let (tls_shared, tls_live) = (shared.clone(), live.clone());
    serve_tcp(ctx, tls_listener, move |stream, peer| {
        let accepted = tokio::time::Instant::now();
        let shared = tls_shared.clone();
        let (slot, admitted) = admit(&tls_live, shared.config.max_connections);
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        async move {
            let _slot = slot;
            let handshake =
                tokio::time::timeout(shared.config.handshake_timeout, acceptor.accept(stream))
                    .await;
            let Ok(Ok(tls)) = handshake else {
                metrics::counter!("whatsapp_tls_handshake_failures_total").increment(1);
                return;
            };
            let transport = Transport::tls(tls, conn::limits(&shared));
            if admitted {
                conn::serve_transport(shared, transport, peer, shutdown, accepted).await;
            } else {
                metrics::counter!("whatsapp_connections_refused_total").increment(1);
                conn::refuse_transport(transport, &shared.config.domain, &super::busy_refusal())
                    .await;
            }
        }
    });
    websocket::serve(ctx, ws_listener, shared.clone(), live.clone());

    ctx.publish_listener("xmpp-tls", tls_addr);
    ctx.publish_listener("xmpp-websocket", ws_addr);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_settings_are_validated_with_the_field_named() {
        let ok = WhatsappConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        let cases = [
            (
                WhatsappConfig {
                    tls_cert: Some("c.pem".into()),
                    ..WhatsappConfig::default()
                },
                "whatsapp.tls_cert",
            ),
            (
                WhatsappConfig {
                    ws_port: 5222,
                    ..WhatsappConfig::default()
                },
                "whatsapp.ws_port",
            ),
            (
                WhatsappConfig {
                    handshake_timeout: Duration::ZERO,
                    ..WhatsappConfig::default()
                },
                "whatsapp.handshake_timeout",
            ),
            (
                WhatsappConfig {
                    idle_timeout: Duration::from_secs(30 * 86_400),
                    ..WhatsappConfig::default()
                },
                "whatsapp.idle_timeout",
            ),
            (
                WhatsappConfig {
                    max_stanzas_per_second: 0,
                    ..WhatsappConfig::default()
                },
                "whatsapp.max_stanzas_per_second",
            ),
            (
                WhatsappConfig {
                    stanza_burst: 0,
                    ..WhatsappConfig::default()
                },
                "whatsapp.stanza_burst",
            ),
            (
                WhatsappConfig {
                    max_bytes_per_second: 10,
                    ..WhatsappConfig::default()
                },
                "whatsapp.max_bytes_per_second",
            ),
        ];
        for (config, field) in cases {
            let error = config.validate().unwrap_err();
            assert!(error.starts_with(&format!("{field}:")), "{error}");
        }
        let free = WhatsappConfig {
            port: 0,
            tls_port: 0,
            ws_port: 0,
            ..WhatsappConfig::default()
        };
        assert_eq!(free.validate(), Ok(()), "free ports never collide");
    }
}
