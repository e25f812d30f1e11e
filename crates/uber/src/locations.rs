//! The primary store of driver locations, and how the live index comes back
//! from it after a restart — graceful or `kill -9`.
//!
//! # Role
//! Every accepted update is committed to the location [`Outbox`] (a WAL) before
//! it is acknowledged and before the index applies it: that log *is* the primary
//! store. Every `snapshot_every` the service writes a [`Snapshot`] of the whole
//! index with the outbox position a replay must start from. At start,
//! [`LocationStore::recover`] loads the snapshot and replays the outbox from
//! there, latest-wins, so the index serves the same drivers, exactly as stale as
//! they were, without waiting for their next ping. (Server-owned statuses —
//! dispatched, on trip — are then reconciled with the trip store by the engine,
//! which owns both.)
//!
//! # Invariants
//! - **Nothing acknowledged is skipped.** The replay start is a low-water mark:
//!   the smallest outbox position of any ingest between its commit and its index
//!   update (registered *before* the commit with [`LocationStore::begin`]), or the
//!   outbox's end. Every update below it was in the index when the snapshot read
//!   it. Replaying older entries is harmless: latest wins.
//! - **Compaction keeps the replay.** The outbox drops whole segments only below
//!   both the relay's progress and the last snapshot's replay start.
//! - **Bounded bus.** The bus topic [`LOCATIONS_TOPIC`](crate::api::LOCATIONS_TOPIC)
//!   keeps about `retention` of history; a consumer further behind misses pings
//!   the next ping supersedes anyway.
//! - A snapshot is written whole or not at all (the kit's [`Checkpoint`]: temp
//!   file, checksum, rename); a torn or foreign one is refused, never half-read.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::time::Duration;

use casebook_kit::clock::SharedClock;
use casebook_kit::events::{Checkpoint, WalBus};
use casebook_kit::outbox::Outbox;
use casebook_kit::wal::WalConfig;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::index::{
    DriverId, DriverIndex, DriverStatus, LocationUpdate, RestoreReport, SavedDriver,
};

/// The snapshot file's first bytes (format version 1).
const MAGIC: &[u8; 8] = b"CBLOCS01";
/// Header: magic, saved-at wall ms, replay start, driver count.
const HEADER: usize = 8 + 8 + 8 + 8;
/// One driver: id, lat, lon, ts, status, age ms.
const RECORD: usize = 8 + 8 + 8 + 8 + 1 + 8;
/// Outbox entries read per replay step.
const REPLAY_CHUNK: usize = 256;

/// The index as saved, with where the outbox replay must start.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Wall-clock milliseconds when it was taken (ages grow by the time since).
    pub saved_at_ms: u64,
    /// The outbox position a replay starts from.
    pub replay_from: u64,
    pub drivers: Vec<SavedDriver>,
}

fn status_byte(status: DriverStatus) -> u8 {
    match status {
        DriverStatus::Offline => 0,
        DriverStatus::Available => 1,
        DriverStatus::Dispatched => 2,
        DriverStatus::OnTrip => 3,
    }
}

fn status_from(byte: u8) -> Option<DriverStatus> {
    Some(match byte {
        0 => DriverStatus::Offline,
        1 => DriverStatus::Available,
        2 => DriverStatus::Dispatched,
        3 => DriverStatus::OnTrip,
        _ => return None,
    })
}

impl Snapshot {
    /// The fixed-width little-endian encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + RECORD * self.drivers.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.saved_at_ms.to_le_bytes());
        out.extend_from_slice(&self.replay_from.to_le_bytes());
        out.extend_from_slice(&(self.drivers.len() as u64).to_le_bytes());
        for d in &self.drivers {
            out.extend_from_slice(&d.id.0.to_le_bytes());
            out.extend_from_slice(&d.lat.to_le_bytes());
            out.extend_from_slice(&d.lon.to_le_bytes());
            out.extend_from_slice(&d.ts.to_le_bytes());
            out.push(status_byte(d.status));
            let age_ms = u64::try_from(d.age.as_millis()).unwrap_or(u64::MAX);
            out.extend_from_slice(&age_ms.to_le_bytes());
        }
        out
    }

    /// Reads back what [`encode`](Self::encode) wrote; anything else is an error
    /// naming what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let u64_at =
            |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes in range"));
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err("not a location snapshot (bad magic or too short)".to_owned());
        }
        let count = u64_at(24);
        let expected = usize::try_from(count)
            .ok()
            .and_then(|n| n.checked_mul(RECORD))
            .and_then(|n| n.checked_add(HEADER));
        if expected != Some(bytes.len()) {
            return Err(format!(
                "{} bytes for {count} drivers (expected {HEADER} + {RECORD} each)",
                bytes.len()
            ));
        }
        let mut drivers = Vec::with_capacity(count as usize);
        for i in 0..count as usize {
            let at = HEADER + i * RECORD;
            let status = status_from(bytes[at + 32])
                .ok_or_else(|| format!("driver {i}: unknown status byte {}", bytes[at + 32]))?;
            drivers.push(SavedDriver {
                id: DriverId(u64_at(at)),
                lat: f64::from_bits(u64_at(at + 8)),
                lon: f64::from_bits(u64_at(at + 16)),
                ts: u64_at(at + 24),
                status,
                age: Duration::from_millis(u64_at(at + 33)),
            });
        }
        Ok(Self {
            saved_at_ms: u64_at(8),
            replay_from: u64_at(16),
            drivers,
        })
    }
}

/// What [`LocationStore::recover`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Drivers in the snapshot (0 without one).
    pub snapshot_drivers: usize,
    /// Outbox entries replayed after it.
    pub replayed_entries: usize,
    /// Updates in those entries.
    pub replayed_updates: usize,
    /// What the index made of snapshot and replay together.
    pub index: RestoreReport,
}

/// The outbox, the snapshot and the bookkeeping between them. See the module notes.
#[derive(Debug)]
pub struct LocationStore {
    outbox: Outbox,
    snapshot: Checkpoint,
    clock: SharedClock,
    /// Ingests between commit and index: the outbox position each registered
    /// (a lower bound of its entries' positions) → how many.
    in_flight: Mutex<BTreeMap<u64, usize>>,
    /// The last snapshot's replay start: compaction stays below it.
    replay_from: Mutex<u64>,
    /// (wall ms, bus end offset) samples, oldest first, for the bus's retention.
    bus_marks: Mutex<VecDeque<(u64, u64)>>,
}

/// An ingest between its commit and its index update; dropping it ends that.
#[derive(Debug)]
pub struct InFlight<'a> {
    store: &'a LocationStore,
    from: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.store.in_flight.lock();
        if let Some(n) = in_flight.get_mut(&self.from) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&self.from);
            }
        }
    }
}

/// The payload of a `driver.locations` event (the outbox entry and the bus
/// event): the updates column by column —
/// `{"driver":[…],"lat":[…],"lon":[…],"ts":[…],"status":"aao…"}`, one status
/// letter per update (`a` available, `o` offline, `d` dispatched, `t` on trip).
/// A map per update would be six JSON values and five key strings each to build,
/// write, read back and relay; columns are one number each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationColumns {
    pub driver: Vec<u64>,
    pub lat: Vec<f64>,
    pub lon: Vec<f64>,
    pub ts: Vec<u64>,
    pub status: String,
}

fn status_letter(status: DriverStatus) -> char {
    match status {
        DriverStatus::Available => 'a',
        DriverStatus::Offline => 'o',
        DriverStatus::Dispatched => 'd',
        DriverStatus::OnTrip => 't',
    }
}

impl LocationColumns {
    /// The payload for `updates`, built straight into JSON values.
    pub fn to_value<'a>(updates: impl Iterator<Item = &'a LocationUpdate> + Clone) -> Value {
        let column =
            |f: &dyn Fn(&LocationUpdate) -> Value| Value::Array(updates.clone().map(f).collect());
        let mut map = serde_json::Map::new();
        map.insert("driver".into(), column(&|u| u.driver.0.into()));
        map.insert("lat".into(), column(&|u| u.lat.into()));
        map.insert("lon".into(), column(&|u| u.lon.into()));
        map.insert("ts".into(), column(&|u| u.ts.into()));
        let status: String = updates.map(|u| status_letter(u.status)).collect();
        map.insert("status".into(), Value::String(status));
        Value::Object(map)
    }

    /// The updates in a payload; an error names what is malformed.
    pub fn updates(payload: &Value) -> Result<Vec<LocationUpdate>, String> {
        let c = Self::deserialize(payload).map_err(|e| e.to_string())?;
        let n = c.driver.len();
        if [c.lat.len(), c.lon.len(), c.ts.len(), c.status.len()] != [n; 4] {
            return Err(format!("columns of unequal length ({n} drivers)"));
        }
        c.status
            .chars()
            .enumerate()
            .map(|(i, letter)| {
                let status = match letter {
                    'a' => DriverStatus::Available,
                    'o' => DriverStatus::Offline,
                    'd' => DriverStatus::Dispatched,
                    't' => DriverStatus::OnTrip,
                    other => return Err(format!("update {i}: unknown status letter {other:?}")),
                };
                Ok(LocationUpdate {
                    driver: DriverId(c.driver[i]),
                    lat: c.lat[i],
                    lon: c.lon[i],
                    ts: c.ts[i],
                    status,
                })
            })
            .collect()
    }
}

impl LocationStore {
    /// Opens the store in `dir`: the outbox in `locations/`, the snapshot beside it.
    pub fn open(dir: &Path, wal: WalConfig, clock: SharedClock) -> anyhow::Result<Self> {
        let durability = wal.durability;
        let outbox = Outbox::open(dir.join("locations"), wal)?;
        Ok(Self {
            snapshot: Checkpoint::new(dir.join("locations").join("index.snapshot"), durability),
            replay_from: Mutex::new(outbox.first_seq()),
            outbox,
            clock,
            in_flight: Mutex::new(BTreeMap::new()),
            bus_marks: Mutex::new(VecDeque::new()),
        })
    }

    /// The primary store of locations.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Registers an ingest about to commit; hold the guard until the index has
    /// applied what was committed.
    pub fn begin(&self) -> InFlight<'_> {
        let mut in_flight = self.in_flight.lock();
        // Read under the lock, so a snapshot's low-water mark (also taken under
        // it) is never above a position an ingest is about to be given.
        let from = self.outbox.next_seq();
        *in_flight.entry(from).or_default() += 1;
        InFlight { store: self, from }
    }

    /// The outbox position a replay must start from for a snapshot read now.
    fn low_water(&self) -> u64 {
        let in_flight = self.in_flight.lock();
        let end = self.outbox.next_seq();
        in_flight.keys().next().map_or(end, |&first| first.min(end))
    }

    /// Writes a snapshot of `index` (blocking file I/O: call it off the async
    /// workers) and lets the outbox compact below its replay start.
    pub fn save(&self, index: &DriverIndex) -> anyhow::Result<Snapshot> {
        let replay_from = self.low_water();
        let snapshot = Snapshot {
            saved_at_ms: self.clock.wall_millis(),
            replay_from,
            drivers: index.export(),
        };
        self.snapshot.store_bytes(&snapshot.encode())?;
        *self.replay_from.lock() = replay_from;
        Ok(snapshot)
    }

    /// The snapshot on disk, if any.
    pub fn load(&self) -> anyhow::Result<Option<Snapshot>> {
        let Some(bytes) = self.snapshot.load_bytes()? else {
            return Ok(None);
        };
        Snapshot::decode(&bytes)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("location snapshot: {e}"))
    }

    /// Rebuilds `index` from the snapshot and the outbox after it. Ages grow by
    /// the wall-clock time since each was recorded (never negative).
    pub fn recover(&self, index: &DriverIndex) -> anyhow::Result<Recovery> {
        let now_ms = self.clock.wall_millis();
        let aged = |recorded_ms: u64| Duration::from_millis(now_ms.saturating_sub(recorded_ms));
        let mut recovery = Recovery::default();
        let mut from = self.outbox.first_seq();
        if let Some(snapshot) = self.load()? {
            let since = aged(snapshot.saved_at_ms);
            let drivers: Vec<SavedDriver> = snapshot
                .drivers
                .iter()
                .map(|d| SavedDriver {
                    age: d.age.saturating_add(since),
                    ..*d
                })
                .collect();
            recovery.snapshot_drivers = drivers.len();
            add(&mut recovery.index, index.restore(&drivers));
            from = from.max(snapshot.replay_from);
            *self.replay_from.lock() = from;
        }
        loop {
            let entries = self.outbox.entries(from, REPLAY_CHUNK)?;
            let Some(last) = entries.last() else { break };
            from = last.seq + 1;
            let mut saved = Vec::new();
            for entry in &entries {
                recovery.replayed_entries += 1;
                for outbound in &entry.events {
                    let updates = LocationColumns::updates(&outbound.event.payload)
                        .map_err(|e| anyhow::anyhow!("location outbox entry {}: {e}", entry.seq))?;
                    let age = aged(outbound.event.time_ms);
                    saved.extend(updates.into_iter().map(|u| SavedDriver {
                        id: u.driver,
                        lat: u.lat,
                        lon: u.lon,
                        ts: u.ts,
                        status: u.status,
                        age,
                    }));
                }
            }
            recovery.replayed_updates += saved.len();
            add(&mut recovery.index, index.restore(&saved));
        }
        Ok(recovery)
    }

    /// Drops relayed outbox segments no replay needs any more.
    pub fn compact(&self) -> anyhow::Result<usize> {
        let keep = (*self.replay_from.lock()).min(self.outbox.sent_up_to()?);
        Ok(self.outbox.truncate_before(keep)?)
    }

    /// Keeps about `retention` of `topic` on `bus`: samples its end now, and
    /// drops the segments below the newest sample at least `retention` old.
    pub fn trim_bus(
        &self,
        bus: &WalBus,
        topic: &str,
        retention: Duration,
    ) -> anyhow::Result<usize> {
        let now_ms = self.clock.wall_millis();
        let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        let mut marks = self.bus_marks.lock();
        marks.push_back((now_ms, bus.end_offset(topic)?));
        let mut cut = None;
        while let Some(&(at, offset)) = marks.front() {
            if now_ms.saturating_sub(at) < retention_ms {
                break;
            }
            cut = Some(offset);
            marks.pop_front();
        }
        // Bounded: one sample per call, the old ones popped above; a clock that
        // stood still keeps at most this many.
        while marks.len() > 4_096 {
            marks.pop_front();
        }
        match cut {
            Some(offset) => Ok(bus.truncate_before(topic, offset)?),
            None => Ok(0),
        }
    }
}

fn add(total: &mut RestoreReport, more: RestoreReport) {
    total.restored += more.restored;
    total.older += more.older;
    total.refused += more.refused;
    total.clamped += more.clamped;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driver(id: u64, status: DriverStatus) -> SavedDriver {
        SavedDriver {
            id: DriverId(id),
            lat: 37.77 + id as f64 * 1e-4,
            lon: -122.42,
            ts: id * 10,
            status,
            age: Duration::from_millis(id * 7),
        }
    }

    #[test]
    fn location_columns_round_trip_and_malformed_ones_are_named() {
        let updates: Vec<LocationUpdate> = [DriverStatus::Available, DriverStatus::Offline]
            .into_iter()
            .enumerate()
            .map(|(i, status)| LocationUpdate {
                driver: DriverId(7 + i as u64),
                lat: 37.5 + i as f64,
                lon: -122.25,
                ts: 100 + i as u64,
                status,
            })
            .collect();
        let value = LocationColumns::to_value(updates.iter());
        assert_eq!(
            value,
            serde_json::json!({"driver": [7, 8], "lat": [37.5, 38.5], "lon": [-122.25, -122.25],
                               "ts": [100, 101], "status": "ao"})
        );
        assert_eq!(LocationColumns::updates(&value).unwrap(), updates);
        let mut short = value.clone();
        short["ts"] = serde_json::json!([100]);
        assert!(
            LocationColumns::updates(&short)
                .unwrap_err()
                .contains("unequal")
        );
        let mut letter = value;
        letter["status"] = "ax".into();
        assert!(
            LocationColumns::updates(&letter)
                .unwrap_err()
                .contains("'x'")
        );
    }

    #[test]
    fn a_snapshot_round_trips_and_anything_else_is_refused() {
        let snapshot = Snapshot {
            saved_at_ms: 1_700_000_000_000,
            replay_from: 42,
            drivers: vec![
                driver(1, DriverStatus::Available),
                driver(2, DriverStatus::OnTrip),
                driver(3, DriverStatus::Dispatched),
                driver(4, DriverStatus::Offline),
            ],
        };
        let bytes = snapshot.encode();
        assert_eq!(Snapshot::decode(&bytes).unwrap(), snapshot);
        assert!(
            Snapshot::decode(&bytes[..bytes.len() - 1]).is_err(),
            "short"
        );
        assert!(Snapshot::decode(b"CBLOCS00").is_err(), "foreign");
        let mut bad_status = bytes.clone();
        bad_status[HEADER + 32] = 9;
        assert!(
            Snapshot::decode(&bad_status)
                .unwrap_err()
                .contains("status")
        );
        let mut huge_count = bytes;
        huge_count[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Snapshot::decode(&huge_count).is_err());
    }
}
