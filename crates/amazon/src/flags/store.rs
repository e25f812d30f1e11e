//! The flags of an instance: `flags.json` rewritten atomically (temp file, fsync,
//! rename, fsync of the directory) on every change, and `changes.jsonl`, an
//! append-only log of every change (fsync before the change is answered).
//!
//! Bounds: at most [`MAX_FLAGS`] flags; [`FlagStore::changes`] returns at most the
//! last [`MAX_CHANGES_SHOWN`] entries of one flag (the log file itself grows with
//! each change — changes are rare, operator-driven).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};

use casebook_kit::clock::SharedClock;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::model::{Flag, FlagError, Variant};

/// Most flags an instance holds.
pub const MAX_FLAGS: usize = 1_000;
/// Most change-log entries one read returns.
pub const MAX_CHANGES_SHOWN: usize = 100;

/// One change of a flag, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagChange {
    /// Wall-clock milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub flag: String,
    /// `None` when the flag was created by this change.
    pub before: Option<Flag>,
    pub after: Flag,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Invalid(#[from] FlagError),
    #[error("at most {MAX_FLAGS} flags")]
    Full,
    #[error("flag storage failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("flag storage is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
}

#[derive(Debug)]
struct Inner {
    flags: BTreeMap<String, Flag>,
    log: File,
}

/// The flags of an instance.
#[derive(Debug)]
pub struct FlagStore {
    dir: PathBuf,
    clock: SharedClock,
    inner: Mutex<Inner>,
}

impl FlagStore {
    /// Opens (or creates) the store in `dir`; `defaults` are created when absent.
    pub fn open(dir: &Path, clock: SharedClock, defaults: &[Flag]) -> Result<Self, StoreError> {
        fs::create_dir_all(dir)?;
        let flags: BTreeMap<String, Flag> = match fs::read(dir.join("flags.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e.into()),
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("changes.jsonl"))?;
        let store = Self {
            dir: dir.to_owned(),
            clock,
            inner: Mutex::new(Inner { flags, log }),
        };
        for flag in defaults {
            if store.get(&flag.name).is_none() {
                store.put(flag.clone())?;
            }
        }
        Ok(store)
    }

    /// Every flag, by name.
    pub fn list(&self) -> Vec<Flag> {
        self.inner.lock().flags.values().cloned().collect()
    }

    /// The flag called `name`.
    pub fn get(&self, name: &str) -> Option<Flag> {
        self.inner.lock().flags.get(name).cloned()
    }

    /// The variant `user` gets of flag `name`.
    pub fn assign(&self, name: &str, user: &str) -> Option<Variant> {
        self.inner
            .lock()
            .flags
            .get(name)
            .map(|f| f.assign(user).clone())
    }

    /// Creates or replaces a flag: durable and logged before it returns.
    pub fn put(&self, mut flag: Flag) -> Result<FlagChange, StoreError> {
        if flag.salt.is_empty() {
            flag.salt = flag.name.clone();
        }
        flag.validate()?;
        let mut inner = self.inner.lock();
        if !inner.flags.contains_key(&flag.name) && inner.flags.len() >= MAX_FLAGS {
            return Err(StoreError::Full);
        }
        let change = FlagChange {
            at_ms: self.clock.wall_millis(),
            flag: flag.name.clone(),
            before: inner.flags.get(&flag.name).cloned(),
            after: flag.clone(),
        };
        let mut next = inner.flags.clone();
        next.insert(flag.name.clone(), flag);
        // The log first: a crash between the two leaves a logged change that the
        // flags file does not show yet, never an unlogged one.
        let mut line = serde_json::to_vec(&change)?;
        line.push(b'\n');
        inner.log.write_all(&line)?;
        inner.log.sync_data()?;
        write_atomically(
            &self.dir.join("flags.json"),
            &serde_json::to_vec_pretty(&next)?,
        )?;
        inner.flags = next;
        tracing::info!(flag = %change.flag, before = ?change.before.as_ref().map(|f| &f.variants), after = ?change.after.variants, "flag changed");
        Ok(change)
    }

    /// The last changes of flag `name`, oldest first.
    pub fn changes(&self, name: &str) -> Result<Vec<FlagChange>, StoreError> {
        let _guard = self.inner.lock(); // no half-written line is read
        let file = File::open(self.dir.join("changes.jsonl"))?;
        let mut changes = std::collections::VecDeque::new();
        for line in BufReader::new(file).lines() {
            let line = line?;
            // A torn last line (crash mid-append) is not a change.
            let Ok(change) = serde_json::from_str::<FlagChange>(&line) else {
                continue;
            };
            if change.flag == name {
                if changes.len() == MAX_CHANGES_SHOWN {
                    changes.pop_front();
                }
                changes.push_back(change);
            }
        }
        Ok(changes.into())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use casebook_kit::clock::ManualClock;

    fn flag(name: &str, variants: &[(&str, u8)]) -> Flag {
        Flag {
            name: name.into(),
            description: String::new(),
            variants: variants
                .iter()
                .map(|(n, p)| Variant {
                    name: (*n).into(),
                    percent: *p,
                })
                .collect(),
            salt: String::new(),
        }
    }

    #[test]
    fn changes_are_durable_logged_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new().shared();
        let store =
            FlagStore::open(dir.path(), clock.clone(), &[flag("x", &[("a", 100)])]).unwrap();
        store.put(flag("x", &[("a", 40), ("b", 60)])).unwrap();
        assert!(store.put(flag("x", &[("a", 40), ("b", 50)])).is_err());
        drop(store);
        let store = FlagStore::open(dir.path(), clock, &[flag("x", &[("a", 100)])]).unwrap();
        assert_eq!(
            store.get("x").unwrap().variants.len(),
            2,
            "defaults never overwrite"
        );
        let changes = store.changes("x").unwrap();
        assert_eq!(changes.len(), 2);
        assert!(changes[0].before.is_none());
        assert_eq!(changes[1].before.as_ref().unwrap().variants.len(), 1);
        assert_eq!(changes[1].after.salt, "x");
    }
}
