//! Placement slots: where an instance's durable data lives.
//!
//! A **slot** is service + region + zone + ordinal; its directory is
//! `<data>/<service>/<region>/<zone>/<ordinal>`. Data belongs to the slot, not to the
//! instance id, so an instance started in place of a stopped or killed one (a new
//! id, as the admin API's restart gives it) takes over its data.
//!
//! # Guarantees
//! - A starting instance gets the lowest ordinal of its service in its zone that no
//!   instance holds. An instance holds its slot from the start until its stop, kill or
//!   failed start has finished ending its tasks, so at most one live instance uses a
//!   slot directory (and a WAL's `LOCK` is free again when the next one opens it).
//! - Holding is also marked on disk: an exclusive advisory lock on `.slot.lock` in the
//!   slot directory, so processes sharing a data root (fleet mode: one `casebook
//!   serve` per instance) never share a slot either; the lock dies with its process.
//! - The first start of each service audits `<data>/<service>/` once, before any
//!   instance of it uses its directory:
//!   - a directory of the layout before slots, `<service>-<zone>-<n>` (the default
//!     instance id) for a zone of the topology, is **adopted**: renamed to the lowest
//!     free slot of that zone, in ascending `n`, and logged at INFO;
//!   - anything else that is not a slot of the topology (a custom instance id's
//!     directory, a region or zone no longer configured, a stray file) is **reported**:
//!     a WARN line naming it, and listed by [`crate::runtime::Platform::orphaned_data`].
//!     It is never deleted or moved.
//!
//! - The first start of any instance also looks for data of services that are not
//!   registered: a top-level directory holding a configured region's directory (the
//!   slot layout) or a `<name>-<zone>-<n>` directory (the layout before) is reported
//!   the same way, naming the service.
//!
//! # Not guaranteed
//! - Other top-level directories are not judged: the data root also holds state that
//!   is not an instance's (e.g. account stores). A service registered after the first
//!   start is reported as unregistered.
//! - The slot lock is advisory: a program that ignores it is not stopped.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::topology::Topology;

/// A stable placement of a service's instance: what its data belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Slot {
    pub service: String,
    pub region: String,
    pub zone: String,
    pub ordinal: u32,
}

impl Slot {
    /// The slot's data directory under the data root.
    pub fn dir(&self, data_root: &Path) -> PathBuf {
        data_root
            .join(&self.service)
            .join(&self.region)
            .join(&self.zone)
            .join(self.ordinal.to_string())
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.service, self.region, self.zone, self.ordinal
        )
    }
}

/// The file in a slot directory whose exclusive lock marks the slot as held.
const SLOT_LOCK_FILE: &str = ".slot.lock";

/// Claims the slot whose directory is `dir`: creates the directory and takes its
/// lock. `Ok(None)` if another holder (in any process) has it.
pub(crate) fn try_claim(dir: &Path) -> io::Result<Option<File>> {
    std::fs::create_dir_all(dir)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(SLOT_LOCK_FILE))?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// What auditing one service's data directory did.
#[derive(Debug, Default)]
pub(crate) struct Audit {
    /// Old-layout directories renamed to slots: (from, to).
    pub migrated: Vec<(PathBuf, PathBuf)>,
    /// Entries that are not slots, left in place.
    pub orphaned: Vec<PathBuf>,
}

/// The zone and number of an old-layout directory name `<service>-<zone>-<n>`.
fn parse_old_layout<'a>(
    name: &str,
    service: &str,
    topology: &'a Topology,
) -> Option<(&'a str, u64)> {
    let rest = name.strip_prefix(service)?.strip_prefix('-')?;
    topology
        .regions
        .iter()
        .flat_map(|region| &region.zones)
        .find_map(|zone| {
            let n = rest.strip_prefix(zone.as_str())?.strip_prefix('-')?;
            (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .then(|| n.parse().ok())
                .flatten()
                .map(|n| (zone.as_str(), n))
        })
}

fn entries(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    out.sort();
    Ok(out)
}

/// Audits `<data>/<service>/` (see the module docs): adopts old-layout directories,
/// reports everything else that is not a slot. Logs what it does.
pub(crate) fn audit_service_dir(
    data_root: &Path,
    service: &str,
    topology: &Topology,
) -> io::Result<Audit> {
    let mut audit = Audit::default();
    let service_dir = data_root.join(service);
    if !service_dir.is_dir() {
        return Ok(audit);
    }
    let mut old: Vec<(&str, u64, PathBuf)> = Vec::new();
    for (name, path) in entries(&service_dir)? {
        if let Some(region) = topology.regions.iter().find(|r| r.name == name) {
            if !path.is_dir() {
                audit.orphaned.push(path);
                continue;
            }
            for (zone, zone_path) in entries(&path)? {
                if !region.zones.contains(&zone) || !zone_path.is_dir() {
                    audit.orphaned.push(zone_path);
                    continue;
                }
                for (ordinal, slot_path) in entries(&zone_path)? {
                    if ordinal.parse::<u32>().is_err() || !slot_path.is_dir() {
                        audit.orphaned.push(slot_path);
                    }
                }
            }
        } else if let Some((zone, n)) = parse_old_layout(&name, service, topology)
            && path.is_dir()
        {
            old.push((zone, n, path));
        } else {
            audit.orphaned.push(path);
        }
    }
    old.sort_by_key(|(zone, n, _)| (zone.to_string(), *n));
    for (zone, _, from) in old {
        let region = topology
            .region_of(zone)
            .expect("the zone was found in the topology");
        let mut slot = Slot {
            service: service.to_owned(),
            region: region.to_owned(),
            zone: zone.to_owned(),
            ordinal: 0,
        };
        while slot.dir(data_root).exists() {
            slot.ordinal += 1;
        }
        let to = slot.dir(data_root);
        std::fs::create_dir_all(to.parent().expect("a slot dir has a parent"))?;
        std::fs::rename(&from, &to)?;
        tracing::info!(
            from = %from.display(),
            to = %to.display(),
            %slot,
            "adopted an instance-id data directory into its placement slot"
        );
        audit.migrated.push((from, to));
    }
    for path in &audit.orphaned {
        tracing::warn!(
            path = %path.display(),
            service,
            "orphaned data: not a placement slot of the topology; left in place"
        );
    }
    Ok(audit)
}

/// Reports top-level directories of `data_root` that hold instance data (either
/// layout) of a service not in `registered`. Logs each at WARN.
pub(crate) fn audit_unregistered(
    data_root: &Path,
    registered: &[String],
    topology: &Topology,
) -> io::Result<Vec<PathBuf>> {
    let mut orphaned = Vec::new();
    if !data_root.is_dir() {
        return Ok(orphaned);
    }
    for (name, path) in entries(data_root)? {
        if registered.contains(&name) || !path.is_dir() {
            continue;
        }
        let holds_instance_data = entries(&path)?.iter().any(|(child, child_path)| {
            child_path.is_dir()
                && (topology.regions.iter().any(|r| r.name == *child)
                    || parse_old_layout(child, &name, topology).is_some())
        });
        if holds_instance_data {
            tracing::warn!(
                path = %path.display(),
                service = %name,
                "orphaned data: instance data of a service that is not configured; left in place"
            );
            orphaned.push(path);
        }
    }
    Ok(orphaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_layout_names_parse_only_for_known_zones() {
        let topology = Topology::default();
        let zone = topology.regions[0].zones[0].clone();
        assert_eq!(
            parse_old_layout(&format!("uber-{zone}-12"), "uber", &topology),
            Some((zone.as_str(), 12))
        );
        assert_eq!(
            parse_old_layout(&format!("uber-{zone}-"), "uber", &topology),
            None
        );
        assert_eq!(
            parse_old_layout(&format!("uber-{zone}-1x"), "uber", &topology),
            None
        );
        assert_eq!(parse_old_layout("uber-nowhere-1", "uber", &topology), None);
        assert_eq!(
            parse_old_layout(&format!("chat-{zone}-1"), "uber", &topology),
            None
        );
    }
}
