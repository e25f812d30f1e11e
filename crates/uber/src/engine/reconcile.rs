//! The index's rebuild at start, completed against the trip store and the region.

use std::collections::HashMap;

use super::Engine;
use crate::index::{DriverId, DriverStatus, LatLng};
use crate::region::DriverState;
use crate::trips::TripStatus;

impl Engine {
    /// Completes the index's rebuild at start ([`open`](Self::open) restored the
    /// location snapshot and replayed the outbox after it): the server-owned
    /// statuses come from the trip store — a driver with an open trip is
    /// dispatched (matched, arrived) or on trip (started), one without is not,
    /// whatever the snapshot said (those moves are not in the location log).
    /// With a region attached, drivers restored at a position in another
    /// region leave the available set (as their ping did when it came), and this
    /// region's drivers are published to the other replicas again (the gossip
    /// registers live in memory only). Returns how many drivers it moved.
    pub async fn reconcile_drivers(&self) -> anyhow::Result<usize> {
        let views = self
            .views()
            .await
            .map_err(|e| anyhow::anyhow!("trip read models: {}", e.error))?;
        let mut busy: HashMap<DriverId, DriverStatus> = HashMap::new();
        for state in views.trips().values() {
            let status = match state.status {
                TripStatus::Matched | TripStatus::DriverArrived => DriverStatus::Dispatched,
                TripStatus::Started => DriverStatus::OnTrip,
                _ => continue,
            };
            if let Some(driver) = state.driver {
                busy.insert(driver, status);
            }
        }
        drop(views);
        let regional = self.regional();
        let mut moved = 0;
        let mut local = Vec::new();
        // One pass over the index: the trips' statuses, then the region's rule.
        for saved in self.index.export() {
            let reconciled = match (saved.status.is_server_owned(), busy.get(&saved.id)) {
                (_, Some(&to)) => to,
                (true, None) if !self.config.index.is_stale(saved.age) => DriverStatus::Available,
                (true, None) => DriverStatus::Offline,
                (false, None) => saved.status,
            };
            let foreign = regional.is_some_and(|r| {
                LatLng::new(saved.lat, saved.lon).is_ok_and(|at| r.map.region_of(at) != r.region())
            });
            let to = if foreign && reconciled == DriverStatus::Available {
                DriverStatus::Offline
            } else {
                reconciled
            };
            let mut status = saved.status;
            if to != status && self.index.transition(saved.id, status, to).is_ok() {
                moved += 1;
                status = to;
            }
            if regional.is_some() && !foreign {
                local.push(DriverState {
                    driver: saved.id.0,
                    lat: saved.lat,
                    lng: saved.lon,
                    ts: saved.ts,
                    // What the driver's app last said: on duty.
                    status: if status.is_server_owned() {
                        DriverStatus::Available
                    } else {
                        status
                    },
                });
            }
        }
        if let Some(regional) = regional {
            regional.replica.publish(local);
        }
        Ok(moved)
    }
}
