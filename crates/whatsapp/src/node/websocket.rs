//! XMPP over WebSocket (RFC 7395) at `/xmpp-websocket` on `ws_port`.
//!
//! The HTTP upgrade is answered by tokio-tungstenite on the platform's one accept
//! loop (`serve_tcp`), which keeps the peer address (the failed-login limiter
//! counts per address) and puts every connection in the instance's task group (a
//! kill cuts them all). After the upgrade the connection is an ordinary
//! [`conn`](super::conn) task over [`Transport::websocket`].
//!
//! Guarantees: the `xmpp` subprotocol is required (an upgrade without it gets
//! `400 Bad Request`, RFC 7395 §3.1), any other path `404`; the upgrade is bounded
//! by `handshake_timeout`; messages larger than the stanza limit (plus slack for
//! the framing) are refused by the WebSocket layer with a close frame of status
//! 1009 (Message Too Big, RFC 6455 §7.4.1) before the connection ends, smaller
//! oversized ones get `<policy-violation/>`. Deliberately absent: `wss://` (terminate TLS in front),
//! permessage-deflate, BOSH.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use casebook_kit::runtime::{InstanceContext, serve_tcp};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::Shared;
use super::conn::transport::Transport;
use super::conn::{self};
use super::listeners::{admit, serve_or_refuse};

/// Where the XMPP WebSocket endpoint lives (the conventional path, XEP-0156).
pub const PATH: &str = "/xmpp-websocket";
/// The RFC 7395 subprotocol.
pub const SUBPROTOCOL: &str = "xmpp";

/// Serves the WebSocket listener in the instance's task group.
pub(super) fn serve(
    ctx: &InstanceContext,
    listener: TcpListener,
    shared: Arc<Shared>,
    live: Arc<AtomicUsize>,
) {
    let shutdown = ctx.shutdown_token();
    serve_tcp(ctx, listener, move |stream, peer| {
        let shared = shared.clone();
        let accepted = shared.clock.now();
        let slot = admit(&shared, &live);
        let shutdown = shutdown.clone();
        async move {
            // Room for the largest stanza plus the framing's own namespace
            // declarations; the frame parser enforces the exact limit.
            let max = shared.config.max_stanza_bytes + 4096;
            let config = WebSocketConfig::default()
                .max_message_size(Some(max))
                .max_frame_size(Some(max));
            let upgrade = tokio::time::timeout(
                shared.config.handshake_timeout,
                tokio_tungstenite::accept_hdr_async_with_config(
                    stream,
                    check_upgrade,
                    Some(config),
                ),
            )
            .await;
            let socket = match upgrade {
                Ok(Ok(socket)) => socket,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "WebSocket upgrade refused");
                    metrics::counter!("whatsapp_ws_upgrades_refused_total").increment(1);
                    return;
                }
                Err(_) => return,
            };
            let transport = Transport::websocket(socket, conn::limits(&shared));
            serve_or_refuse(shared, transport, peer, shutdown, accepted, slot).await;
        }
    });
}

/// Accepts an upgrade to `PATH` offering the `xmpp` subprotocol, and echoes it.
#[allow(clippy::result_large_err)] // the callback's signature is tungstenite's
fn check_upgrade(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    if request.uri().path() != PATH {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            format!("no WebSocket endpoint here; XMPP is at {PATH}"),
        ));
    }
    let offered = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !offered {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "the xmpp WebSocket subprotocol is required (RFC 7395 §3.1)".to_owned(),
        ));
    }
    response.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(response)
}

fn refusal(status: StatusCode, text: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(text));
    *response.status_mut() = status;
    response
}
