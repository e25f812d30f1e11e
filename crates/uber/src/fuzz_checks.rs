//! The invariants of the case's fuzz targets outside the RESP port (those are in
//! [`crate::resp::fuzzing`]), shared with the stable corpus replay
//! (`tests/fuzz_corpus.rs`) so both exercise the same property.
//!
//! Each function panics when an invariant breaks; malformed input refused with
//! an error is the expected outcome, not a finding.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::clock::{Clock, ManualClock};

use crate::index::{DriverIndex, IndexConfig};
use crate::locations::{LocationColumns, Snapshot};
use crate::region::gossip::STATE_BYTES;
use crate::region::{DriverState, GossipConfig, MemNetwork, Replica};

/// The gossip address of the replica that fuzzed datagrams are delivered to
/// (the corpus's real packets are addressed to it).
pub const FUZZ_REPLICA_ADDR: &str = "127.0.0.1:7001";
/// Its region.
pub const FUZZ_REPLICA_REGION: &str = "us-east";

/// The replica fuzzed datagrams are delivered to: a fixed identity on a manual
/// clock (2026-01-01), on an in-memory network.
pub fn fuzz_replica(clock: &ManualClock) -> Arc<Replica> {
    let addr: SocketAddr = FUZZ_REPLICA_ADDR.parse().expect("a socket address");
    Replica::new(
        FUZZ_REPLICA_REGION,
        addr,
        1,
        GossipConfig {
            cluster_size: 2,
            ..GossipConfig::default()
        },
        clock.shared(),
        MemNetwork::new().endpoint(addr),
    )
    .expect("the default gossip config is valid")
}

/// One UDP datagram as the gossip socket hands it over: the driver-state codec
/// reads it back byte for byte or refuses it; the replica takes it (foca's
/// decoding, then each broadcast item through the state codec and the clock-skew
/// rule) without a panic, counts it, and every register it holds afterwards has
/// a valid position and a timestamp within the skew. Returns how many driver
/// states the replica learned from it.
pub fn check_gossip_datagram(data: &[u8]) -> usize {
    if let Ok(state) = DriverState::decode(data) {
        assert_eq!(data.len(), STATE_BYTES);
        assert_eq!(state.encode().as_slice(), data, "decode/encode differ");
        assert!(state.position().is_some(), "decoded an invalid position");
    }
    let clock = ManualClock::new();
    let replica = fuzz_replica(&clock);
    replica.handle_packet(data);
    let stats = replica.stats();
    assert_eq!(stats.packets_received, 1);
    let skew = GossipConfig::default().max_clock_skew;
    let latest = clock
        .wall_millis()
        .saturating_add(u64::try_from(skew.as_millis()).unwrap_or(u64::MAX));
    let registers = replica.registers();
    for register in &registers {
        assert!(register.state.position().is_some(), "{register:?}");
        assert!(register.state.ts <= latest, "{register:?}");
    }
    // Stepping after it (timers, broadcasts) stays panic-free as well.
    clock.advance(Duration::from_millis(500));
    replica.step();
    registers.len()
}

/// Bytes read as a location snapshot file, and (when they are JSON) as a
/// `driver.locations` payload of the outbox:
/// - a snapshot decodes only if it re-encodes to exactly the same bytes, and
///   restoring it into an index accounts for every driver (restored, older,
///   refused) and leaves the index's invariants intact;
/// - a payload's updates, written back as columns, read back the same.
///
/// Returns how many drivers and updates were decoded.
pub fn check_location_input(data: &[u8]) -> usize {
    let mut decoded = 0;
    if let Ok(snapshot) = Snapshot::decode(data) {
        assert_eq!(snapshot.encode(), data, "decode/encode differ");
        let index = small_index();
        let report = index.restore(&snapshot.drivers);
        assert_eq!(
            report.restored + report.older + report.refused,
            snapshot.drivers.len(),
            "{report:?}"
        );
        index.audit().expect("index invariants after a restore");
        decoded += snapshot.drivers.len();
    }
    if let Ok(payload) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok(updates) = LocationColumns::updates(&payload)
    {
        let again = LocationColumns::updates(&LocationColumns::to_value(updates.iter()))
            .expect("written columns read back");
        assert_eq!(again, updates);
        decoded += updates.len();
    }
    decoded
}

/// An index with only the six face shards: cheap to build for every input.
fn small_index() -> DriverIndex {
    let config = IndexConfig {
        base_level: 0,
        max_level: 0,
        max_shards: 64,
        ..IndexConfig::default()
    };
    DriverIndex::new(config, ManualClock::new().shared()).expect("a valid index config")
}

/// A target's check: panics on a broken invariant, returns how much it decoded.
pub type Check = fn(&[u8]) -> usize;

/// Every target of this module, by the name of its fuzz target and corpus
/// directory.
pub const TARGETS: &[(&str, Check)] = &[
    ("gossip_datagram", check_gossip_datagram),
    ("location_snapshot", check_location_input),
];
