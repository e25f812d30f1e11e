//! A chat node while its region is evacuated (Chaos Kong, or an operator's region
//! override in discovery): it sends its clients to a node in another region.
//!
//! The node learns it from the platform's flag for its region
//! ([`casebook_kit::runtime::InstanceContext::region_evacuated`]), the one the
//! control plane's discovery keeps equal to the region override.
//!
//! **Guaranteed**, while the flag is set:
//! - every new connection, on any transport, is refused before it is served; on
//!   the client port with `<see-other-host/>` (RFC 6120 §4.9.3.19) naming the
//!   least-loaded node with room in a region that is not evacuated, else (and
//!   on the TLS and WebSocket ports, whose clients a client-port address would
//!   misdirect) `<resource-constraint/>` with `<retry-after/>`;
//! - bound sessions are moved off at most [`EVACUATION_BATCH`] per
//!   [`EVACUATION_TICK`] (so a node of 10,000 sessions empties in under a minute
//!   without its clients reconnecting in one instant): each gets the same
//!   `<see-other-host/>`, then the stream is closed. With XEP-0198 the session is
//!   not kept for resumption (resumption happens on the node that held it); what
//!   it was sent and had not acknowledged goes to the offline store, which every
//!   node of the domain shares, so the client finds it on the node it moves to.
//!
//! Once the flag is cleared the node accepts again; sessions not yet moved stay.
//!
//! **Not guaranteed**: a session is moved only when a node elsewhere has room (with
//! nowhere to go, sessions stay and new clients are told to retry later); a
//! session whose output queue is full is skipped for that tick (it is moved at a
//! later one, or dropped as a slow reader by routing); connections still
//! negotiating are moved once they bind; the named address is the other node's
//! listen address (a node bound to the unspecified address is named as such here,
//! unlike a refusal at accept, which names the address the client reached).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Shared, busy_refusal, see_other_host};

/// Most sessions one node moves off per [`EVACUATION_TICK`].
pub const EVACUATION_BATCH: usize = 200;
/// How often an evacuated node moves a batch of sessions.
pub const EVACUATION_TICK: Duration = Duration::from_secs(1);

/// The stream error for a client of an evacuated node: `<see-other-host/>`
/// naming the least-loaded node with room in a region that is not evacuated,
/// named through `reached` as [`super::capacity_refusal`] does; `None` when there
/// is none.
pub(crate) fn elsewhere(shared: &Shared, reached: Option<std::net::IpAddr>) -> Option<String> {
    let me = super::sessions_node(shared);
    let evacuations = &shared.evacuations;
    shared
        .domain
        .cluster
        .directory
        .least_loaded_where(&me, |node| {
            node.region != shared.region && !evacuations.is_evacuated(&node.region)
        })
        .map(|other| see_other_host(other.client_addr, reached))
}

/// The refusal of a new connection while evacuated, on the client port.
pub(crate) fn refusal(shared: &Shared, reached: Option<std::net::IpAddr>) -> String {
    metrics::counter!("whatsapp_evacuation_refusals_total").increment(1);
    elsewhere(shared, reached).unwrap_or_else(busy_refusal)
}

/// Moves the node's sessions off while its region is evacuated, a bounded batch
/// per tick, until `shutdown`. Only the cadence is here; who goes is the router's
/// choice ([`super::router::Router::move_off`]).
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut evacuated: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    loop {
        // Wait until the region is out (a closed channel never changes again).
        while !*evacuated.borrow_and_update() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = evacuated.changed() => if changed.is_err() { return },
            }
        }
        tracing::warn!(region = %shared.region, sessions = shared.router.session_count(),
            "region evacuated: moving this node's sessions to another region");
        let mut tick = tokio::time::interval(EVACUATION_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while *evacuated.borrow() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = evacuated.changed() => {
                    if changed.is_err() { return }
                    continue;
                }
                _ = tick.tick() => {}
            }
            let moved = move_batch(&shared);
            if moved > 0 {
                metrics::counter!("whatsapp_sessions_moved_total").increment(moved as u64);
                tracing::info!(region = %shared.region, moved, "sessions sent to another region");
            }
        }
        tracing::info!(region = %shared.region, "region back in service: accepting again");
    }
}

/// One tick's batch: `<see-other-host/>` to at most [`EVACUATION_BATCH`]
/// sessions; none when no other region has room.
fn move_batch(shared: &Shared) -> usize {
    match elsewhere(shared, None) {
        Some(error) => shared.router.move_off(EVACUATION_BATCH, &error),
        None => 0,
    }
}
