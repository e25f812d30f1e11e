//! Location ingest: validation (positions, statuses, timestamps within the
//! clock skew), the outbox commit, the index, gossip and surge signals; and the
//! states learned by gossip.

use casebook_kit::api::ApiError;
use casebook_kit::events::Event;
use casebook_kit::outbox::OutboundEvent;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Engine, LOCATIONS_TOPIC, UPDATES_PER_RECORD};
use crate::api::errors::index_error;
use crate::index::{DriverId, DriverStatus, IndexError, LatLng, LocationUpdate, MAX_BATCH};
use crate::locations::LocationColumns;
use crate::region::DriverState;

impl Engine {
    /// Applies driver states learned by gossip to the index: a state in this
    /// region is ingested like a ping (latest wins by the driver's timestamp);
    /// one elsewhere takes a driver this index holds out of matching (offline at
    /// that timestamp). Returns how many index updates were made.
    pub fn apply_remote(&self, states: &[DriverState]) -> usize {
        let Some(regional) = self.regional() else {
            return 0;
        };
        let mine = regional.region();
        let updates: Vec<LocationUpdate> = states
            .iter()
            .filter_map(|s| {
                let at = s.position()?;
                let status = if regional.map.region_of(at) == mine {
                    s.status
                } else if self.index.get(DriverId(s.driver)).is_some() {
                    DriverStatus::Offline
                } else {
                    return None;
                };
                Some(LocationUpdate {
                    driver: DriverId(s.driver),
                    lat: s.lat,
                    lon: s.lng,
                    ts: s.ts,
                    status,
                })
            })
            .collect();
        let mut applied = 0;
        for chunk in updates.chunks(MAX_BATCH) {
            match self.index.ingest(chunk) {
                Ok(report) => applied += report.accepted,
                Err(error) => tracing::debug!(%error, "learned driver states not applied"),
            }
        }
        applied
    }

    /// Validates and ingests location updates: durable in the outbox first, then
    /// the index. Each refused update is reported with its index and field.
    pub async fn ingest(&self, updates: &[LocationUpdate]) -> Result<IngestReport, ApiError> {
        if updates.len() > self.config.max_batch {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "batch of {} updates is above the maximum of {}",
                    updates.len(),
                    self.config.max_batch
                ),
            ));
        }
        let mut invalid = Vec::new();
        let mut valid: Vec<usize> = Vec::with_capacity(updates.len());
        let latest_ts = self.latest_ts();
        for (i, u) in updates.iter().enumerate() {
            match check_update(u, latest_ts) {
                Ok(()) => valid.push(i),
                Err((field, error)) => invalid.push(Invalid {
                    index: i,
                    field: field.to_owned(),
                    error,
                }),
            }
        }
        // Latest wins, decided against the index as it is now, in batch order
        // per driver: only what the index will accept is logged.
        let mut by_driver = valid.clone();
        by_driver.sort_unstable_by_key(|&i| (updates[i].driver, i));
        let same_driver = |a: &usize, b: &usize| updates[*a].driver == updates[*b].driver;
        let drivers: Vec<DriverId> = by_driver
            .chunk_by(same_driver)
            .map(|run| updates[run[0]].driver)
            .collect();
        let mut keep = vec![false; updates.len()];
        for (run, current) in by_driver
            .chunk_by(same_driver)
            .zip(self.index.timestamps(&drivers))
        {
            let mut latest = current;
            for &i in run {
                if latest.is_none_or(|ts| updates[i].ts > ts) {
                    latest = Some(updates[i].ts);
                    keep[i] = true;
                }
            }
        }
        let logged: Vec<&LocationUpdate> = valid
            .iter()
            .filter(|&&i| keep[i])
            .map(|&i| &updates[i])
            .collect();
        // Registered before the commit, released after the index applied it: a
        // snapshot meanwhile replays from below this request's entries.
        let _in_flight = self.locations.begin();
        if !logged.is_empty() {
            let mut commits = tokio::task::JoinSet::new();
            for chunk in logged.chunks(UPDATES_PER_RECORD) {
                let change = json!({ "driver_locations": chunk.len() });
                // The updates are stored once, in the event: the outbox record
                // holds change and events together, so it is still the durable
                // copy of every update.
                let event = Event::new(
                    "driver.locations",
                    chunk[0].driver.0.to_string(),
                    LocationColumns::to_value(chunk.iter().copied()),
                    self.clock.as_ref(),
                );
                let outbox = self.outbox().clone();
                commits.spawn(async move {
                    outbox
                        .commit(
                            change,
                            vec![OutboundEvent {
                                topic: LOCATIONS_TOPIC.to_owned(),
                                event,
                            }],
                        )
                        .await
                });
            }
            while let Some(done) = commits.join_next().await {
                match done {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(ApiError::internal(format!("primary store: {e}"))),
                    Err(e) => return Err(ApiError::internal(format!("primary store: {e}"))),
                }
            }
        }
        let report = match self.regional() {
            None => self.index.ingest(updates),
            Some(regional) => {
                // Matching here uses only drivers whose latest state is in this
                // region: a ping from elsewhere takes the driver out (offline at
                // its timestamp); the ping itself is gossiped to its region.
                let mine = regional.region();
                let local: Vec<LocationUpdate> = updates
                    .iter()
                    .map(|u| match LatLng::new(u.lat, u.lon) {
                        Ok(at) if regional.map.region_of(at) != mine => LocationUpdate {
                            status: DriverStatus::Offline,
                            ..*u
                        },
                        _ => *u,
                    })
                    .collect();
                let report = self.index.ingest(&local);
                regional.replica.publish(logged.iter().map(|u| DriverState {
                    driver: u.driver.0,
                    lat: u.lat,
                    lng: u.lon,
                    ts: u.ts,
                    status: u.status,
                }));
                report
            }
        }
        .map_err(index_error)?;
        // Surge signals, queued (never sent from here): an offline ping is supply
        // gone; an available one is supply if the index still says available (a
        // dispatched driver's ping keeps its server-owned status).
        for u in logged.iter().filter(|u| u.status == DriverStatus::Offline) {
            self.pricing.gone(u.driver);
        }
        self.pricing.pings(
            logged
                .iter()
                .filter(|u| u.status == DriverStatus::Available)
                .filter_map(|u| Some((u.driver, LatLng::new(u.lat, u.lon).ok()?))),
            |driver| {
                self.index
                    .get(driver)
                    .is_some_and(|v| v.status == DriverStatus::Available)
            },
        );
        // Validation is the same rule on both sides; a refusal only the index
        // knows (capacity) is reported too.
        for (i, e) in report.invalid {
            if !invalid.iter().any(|v| v.index == i) {
                invalid.push(Invalid {
                    index: i,
                    field: "driver".to_owned(),
                    error: e.to_string(),
                });
            }
        }
        invalid.sort_by_key(|v| v.index);
        Ok(IngestReport {
            accepted: report.accepted,
            stale: report.stale,
            duplicate: report.duplicate,
            invalid,
        })
    }

    /// The latest driver timestamp (ms) accepted now: the injected wall clock
    /// plus the index's `max_clock_skew`.
    pub fn latest_ts(&self) -> u64 {
        self.config.index.latest_ts(self.clock.wall_millis())
    }
}

/// The field at fault and why; `latest_ts` is [`Engine::latest_ts`].
pub(crate) fn check_update(
    u: &LocationUpdate,
    latest_ts: u64,
) -> Result<(), (&'static str, String)> {
    match LatLng::new(u.lat, u.lon) {
        Err(e @ IndexError::InvalidLatitude { .. }) => return Err(("lat", e.to_string())),
        Err(e) => return Err(("lon", e.to_string())),
        Ok(_) => {}
    }
    if u.ts > latest_ts {
        let e = IndexError::FutureTimestamp {
            ts: u.ts,
            latest: latest_ts,
        };
        return Err(("ts", e.to_string()));
    }
    if u.status.is_server_owned() {
        return Err((
            "status",
            IndexError::ServerOwnedStatus { status: u.status }.to_string(),
        ));
    }
    Ok(())
}

/// One refused update of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invalid {
    /// Its index in the batch.
    pub index: usize,
    /// The field at fault.
    pub field: String,
    pub error: String,
}

/// What a location request did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestReport {
    pub accepted: usize,
    pub stale: usize,
    pub duplicate: usize,
    pub invalid: Vec<Invalid>,
}
