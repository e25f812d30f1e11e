//! The node's secondary listeners: direct TLS (XEP-0368) and RFC 7395 WebSocket,
//! published as `xmpp-tls` and `xmpp-websocket`, plus the validation of the
//! transport and hygiene settings.
//!
//! Guarantees: one connection cap for every transport (the same counter as the
//! client port, taken on accept); a TLS handshake is bounded by
//! `handshake_timeout` and a failed one harms nobody else. Ports come from the
//! node's [`NodePorts`] (each listener's `PortPlan`, checked against 65535 before
//! the node starts, never silently replaced); when the main listener asks for a
//! free port (0, as tests do) so do the others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use casebook_kit::config::ConfigError;
use casebook_kit::runtime::{InstanceContext, StartError, serve_tcp};
use tokio_util::sync::CancellationToken;

use super::conn::transport::Transport;
use super::conn::{self};
use super::{NodePorts, Shared, Slot, WhatsappConfig, websocket};

/// Most stanzas per second a connection may be configured for.
pub const MAX_STANZA_RATE: u32 = 1_000_000;
/// Shortest handshake or idle timeout.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Longest handshake timeout.
pub const MAX_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest idle timeout.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);

impl WhatsappConfig {
    /// The transport and hygiene bounds; the error names the dotted key.
    pub(super) fn validate_transport(&self) -> Result<(), ConfigError> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::new(
                "whatsapp.tls_cert",
                "tls_cert and tls_key go together",
            ));
        }
        let plans = self.port_plans();
        for (i, (key, plan)) in plans.iter().enumerate() {
            if let Some((other, _)) = plans[..i]
                .iter()
                .find(|(_, p)| p.base != 0 && p.base == plan.base)
            {
                return Err(ConfigError::new(*key, format!("the same port as {other}")));
            }
        }
        let durations = [
            (
                "whatsapp.handshake_timeout",
                self.handshake_timeout,
                MAX_HANDSHAKE_TIMEOUT,
            ),
            ("whatsapp.idle_timeout", self.idle_timeout, MAX_IDLE_TIMEOUT),
        ];
        for (key, value, max) in durations {
            if !(MIN_TIMEOUT..=max).contains(&value) {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "must be between {} and {}",
                        humantime::format_duration(MIN_TIMEOUT),
                        humantime::format_duration(max)
                    ),
                ));
            }
        }
        if !(1..=MAX_STANZA_RATE).contains(&self.max_stanzas_per_second) {
            return Err(ConfigError::new(
                "whatsapp.max_stanzas_per_second",
                format!("must be in 1..={MAX_STANZA_RATE}"),
            ));
        }
        if !(1..=MAX_STANZA_RATE).contains(&self.stanza_burst) {
            return Err(ConfigError::new(
                "whatsapp.stanza_burst",
                format!("must be in 1..={MAX_STANZA_RATE}"),
            ));
        }
        if self.max_bytes_per_second < 1024 {
            return Err(ConfigError::new(
                "whatsapp.max_bytes_per_second",
                "must be at least 1024",
            ));
        }
        Ok(())
    }
}

/// Where a listener of node `ports` binds: see the module doc.
pub(super) fn listen_addr(ctx: &InstanceContext, port: u16) -> SocketAddr {
    let main = ctx.listen_addr();
    SocketAddr::new(main.ip(), if main.port() == 0 { 0 } else { port })
}

/// Takes a connection slot, on the accept loop so the cap holds for a burst too;
/// `None` when the node is full (nothing is taken then). One cap for every
/// transport: TCP, TLS and WebSocket connections all count here. None either
/// while the node's region is evacuated ([`super::evacuate`]).
pub(super) fn admit(shared: &Shared, live: &Arc<AtomicUsize>) -> Option<Slot> {
    if shared.is_evacuated() {
        return None;
    }
    let slot = Slot(live.clone());
    (live.fetch_add(1, Ordering::AcqRel) < shared.config.max_connections).then_some(slot)
}

/// Serves an admitted TLS or WebSocket connection, or refuses it with a busy
/// stream error (not `<see-other-host/>`, which names a client port).
pub(super) async fn serve_or_refuse(
    shared: Arc<Shared>,
    transport: Transport,
    peer: SocketAddr,
    shutdown: CancellationToken,
    accepted: std::time::Instant,
    slot: Option<Slot>,
) {
    match slot {
        Some(_slot) => conn::serve_transport(shared, transport, peer, shutdown, accepted).await,
        None => {
            metrics::counter!("whatsapp_connections_refused_total").increment(1);
            conn::refuse_transport(transport, &shared.config.domain, &super::busy_refusal()).await;
        }
    }
}

/// Binds, serves and publishes the direct-TLS and WebSocket listeners.
pub(super) async fn start(
    ctx: &InstanceContext,
    ports: NodePorts,
    shared: &Arc<Shared>,
    live: &Arc<AtomicUsize>,
) -> Result<(), StartError> {
    let tls_listener = ctx.bind(listen_addr(ctx, ports.tls)).await?;
    let tls_addr = tls_listener.local_addr().map_err(anyhow::Error::from)?;
    let ws_listener = ctx.bind(listen_addr(ctx, ports.ws)).await?;
    let ws_addr = ws_listener.local_addr().map_err(anyhow::Error::from)?;

    let acceptor = tokio_rustls::TlsAcceptor::from(shared.domain.tls.clone());
    let shutdown = ctx.shutdown_token();
    let (tls_shared, tls_live) = (shared.clone(), live.clone());
    serve_tcp(ctx, tls_listener, move |stream, peer| {
        let shared = tls_shared.clone();
        let accepted = shared.clock.now();
        let slot = admit(&shared, &tls_live);
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        async move {
            // A refused connection is refused over TLS too (after the handshake,
            // which is bounded), so its client can read why.
            let handshake =
                tokio::time::timeout(shared.config.handshake_timeout, acceptor.accept(stream))
                    .await;
            let Ok(Ok(tls)) = handshake else {
                metrics::counter!("whatsapp_tls_handshake_failures_total").increment(1);
                return;
            };
            let transport = Transport::tls(tls, conn::limits(&shared));
            serve_or_refuse(shared, transport, peer, shutdown, accepted, slot).await;
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
            assert_eq!(config.validate().unwrap_err().key(), field);
        }
        let free = WhatsappConfig {
            port: 0,
            tls_port: 0,
            ws_port: 0,
            ..WhatsappConfig::default()
        };
        assert_eq!(free.validate(), Ok(()), "free ports never collide");
    }

    #[test]
    fn durations_are_humantime_strings() {
        let config: WhatsappConfig = serde_json::from_str(
            r#"{"handshake_timeout": "15s", "idle_timeout": "10m", "sm_resume_timeout": "1h"}"#,
        )
        .unwrap();
        assert_eq!(config.handshake_timeout, Duration::from_secs(15));
        assert_eq!(config.idle_timeout, Duration::from_secs(600));
        assert_eq!(config.sm_resume_timeout, Duration::from_secs(3600));
        // A bare number of seconds is not a duration.
        assert!(serde_json::from_str::<WhatsappConfig>(r#"{"idle_timeout": 600}"#).is_err());
        let error = WhatsappConfig {
            idle_timeout: Duration::from_secs(30 * 86_400),
            ..WhatsappConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "whatsapp.idle_timeout: must be between 10ms and 7days"
        );
    }
}
