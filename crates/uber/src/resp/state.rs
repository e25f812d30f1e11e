//! The state commands work on: the shared [`Server`] (keyspace, limits,
//! counters, clock) and each connection's [`Session`]. The connection loop
//! (`server`) and the commands (`cmd`) both use this module and not each other.
//!
//! Guarantees: the keyspace is behind one `parking_lot` lock, which does not
//! poison, so a command that panics while holding it leaves every other
//! connection served (the keys it was changing may be left half-changed; the
//! memory estimate of that key may drift). The keyspace keeps an estimate of
//! its stored bytes, exact with respect to its own formula (see
//! [`Keyspace::used_bytes`]).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use casebook_kit::clock::{SharedClock, SystemClock};
use parking_lot::RwLock;

use super::frame::Proto;
use super::limits::{BufferBudget, Limits};
use super::live::{LiveKey, LiveStore};
use crate::geo::store::{GeoStore, SortedGeoSet, StoreError};

/// Makes the store for a new key.
pub type StoreFactory = fn() -> Box<dyn GeoStore>;

/// The default store: a sorted set.
pub fn sorted_set() -> Box<dyn GeoStore> {
    Box::new(SortedGeoSet::default())
}

/// What a key costs beyond its name and its store's own estimate.
const KEY_OVERHEAD: usize = 96;

/// The keys of database 0, each a geo set, and an estimate of the bytes they
/// take.
#[derive(Debug, Default)]
pub struct Keyspace {
    keys: HashMap<Bytes, Box<dyn GeoStore>>,
    used_bytes: usize,
    /// `used_bytes`, readable without the keyspace's lock (the `maxmemory`
    /// check before every write).
    published: Arc<AtomicUsize>,
}

fn cost(key: &[u8], store: &dyn GeoStore) -> usize {
    key.len() + KEY_OVERHEAD + store.memory_bytes()
}

impl Keyspace {
    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Estimated bytes of stored data: per key its name plus a fixed overhead
    /// plus its store's [`GeoStore::memory_bytes`].
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// A handle on [`used_bytes`](Self::used_bytes) that reads without the lock.
    pub fn used_bytes_handle(&self) -> Arc<AtomicUsize> {
        self.published.clone()
    }

    fn set_used(&mut self, used: usize) {
        self.used_bytes = used;
        self.published.store(used, Ordering::Relaxed);
    }

    pub fn get(&self, key: &[u8]) -> Option<&(dyn GeoStore + 'static)> {
        self.keys.get(key).map(|store| &**store)
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.keys.contains_key(key)
    }

    /// Runs `change` on `key`'s store, creating it with `create` when missing
    /// (`None`: a missing key is left missing and `None` returned); a store left
    /// empty is deleted, as Redis deletes an emptied key.
    pub fn update<R>(
        &mut self,
        key: &Bytes,
        create: Option<StoreFactory>,
        change: impl FnOnce(&mut dyn GeoStore) -> R,
    ) -> Option<R> {
        let mut used = self.used_bytes;
        let store = match self.keys.entry(key.clone()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let store = create?();
                used += cost(key, &*store);
                entry.insert(store)
            }
        };
        // Changed in place: a change that panics leaves the key where it was.
        let before = cost(key, &**store);
        let result = change(&mut **store);
        used = used - before + cost(key, &**store);
        let emptied = store.is_empty();
        self.set_used(used);
        if emptied {
            self.remove(key);
        }
        Some(result)
    }

    /// Sets `key` to `store` (replacing what was there).
    pub fn insert(&mut self, key: Bytes, store: Box<dyn GeoStore>) {
        self.remove(&key);
        self.set_used(self.used_bytes + cost(&key, &*store));
        self.keys.insert(key, store);
    }

    /// Deletes `key`; whether it existed.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        match self.keys.remove(key) {
            Some(store) => {
                self.set_used(self.used_bytes - cost(key, &*store));
                true
            }
            None => false,
        }
    }

    /// Empties the keyspace, returning what it held (to be dropped outside the lock).
    pub fn take(&mut self) -> Keyspace {
        let old = Keyspace {
            keys: std::mem::take(&mut self.keys),
            used_bytes: self.used_bytes,
            published: Arc::default(),
        };
        self.set_used(0);
        old
    }
}

/// State shared by every connection.
#[derive(Debug)]
pub struct Server {
    pub keys: RwLock<Keyspace>,
    /// The keyspace's stored-bytes estimate, read without its lock.
    used_bytes: Arc<AtomicUsize>,
    pub new_store: StoreFactory,
    pub limits: Limits,
    pub started: Instant,
    pub port: AtomicU64,
    pub clients: AtomicUsize,
    next_client_id: AtomicU64,
    /// Request bytes buffered by all connections.
    pub buffered: BufferBudget,
    /// The key served from the driver index, if any.
    pub live: Option<LiveKey>,
    /// The instance's clock (idle timeouts); the system clock until
    /// [`set_clock`](Self::set_clock).
    clock: RwLock<SharedClock>,
}

impl Default for Server {
    fn default() -> Self {
        Self::new(Limits::default(), sorted_set)
    }
}

impl Server {
    pub fn new(limits: Limits, new_store: StoreFactory) -> Self {
        let keys = Keyspace::default();
        Self {
            used_bytes: keys.used_bytes_handle(),
            keys: RwLock::new(keys),
            new_store,
            limits,
            started: Instant::now(),
            port: AtomicU64::new(0),
            clients: AtomicUsize::new(0),
            next_client_id: AtomicU64::new(1),
            buffered: BufferBudget::new(limits.buffer_budget_bytes),
            live: None,
            clock: RwLock::new(SystemClock::shared()),
        }
    }

    /// Serves `live` from the driver index instead of a sorted set.
    pub fn with_live(mut self, live: LiveKey) -> Self {
        self.live = Some(live);
        self
    }

    /// Uses `clock` for idle timeouts.
    pub fn with_clock(self, clock: SharedClock) -> Self {
        self.set_clock(clock);
        self
    }

    /// Uses `clock` for idle timeouts of connections accepted from now on.
    pub fn set_clock(&self, clock: SharedClock) {
        *self.clock.write() = clock;
    }

    pub fn clock(&self) -> SharedClock {
        self.clock.read().clone()
    }

    /// The live key, if `key` is it.
    pub fn live_key(&self, key: &[u8]) -> Option<&LiveKey> {
        self.live.as_ref().filter(|live| live.name == key)
    }

    // The one place that tells the live key from the keyspace's keys: every
    // command reaches a key's store through these.

    /// `key`'s store for reading under `keys`, a guard the caller holds (the
    /// live key's is the driver index); `None`: no such key.
    pub fn lookup<'a>(
        &self,
        keys: &'a Keyspace,
        key: &[u8],
    ) -> Result<Option<StoreRef<'a>>, StoreError> {
        if let Some(live) = self.live_key(key) {
            return Ok(Some(StoreRef::Live(live.store()?)));
        }
        Ok(keys.get(key).map(StoreRef::Set))
    }

    /// Runs `read` on `key`'s store (`None`: no such key), taking the
    /// keyspace's read lock for a key of its own.
    pub fn read<R>(
        &self,
        key: &[u8],
        read: impl FnOnce(Option<&dyn GeoStore>) -> R,
    ) -> Result<R, StoreError> {
        if let Some(live) = self.live_key(key) {
            return Ok(read(Some(&live.store()?)));
        }
        Ok(read(self.keys.read().get(key)))
    }

    /// Runs `change` on `key`'s store, created when missing if `create`
    /// (`None`: missing and not created); a key left empty is deleted.
    pub fn write<R>(
        &self,
        key: &Bytes,
        create: bool,
        change: impl FnOnce(&mut dyn GeoStore) -> R,
    ) -> Result<Option<R>, StoreError> {
        if let Some(live) = self.live_key(key) {
            return Ok(Some(change(&mut live.store()?)));
        }
        Ok(self
            .keys
            .write()
            .update(key, create.then_some(self.new_store), change))
    }

    /// Sets `key` to a new store holding `entries` (none: deletes the key),
    /// under `keys`, a guard the caller holds.
    pub fn replace(
        &self,
        keys: &mut Keyspace,
        key: Bytes,
        entries: Vec<(Bytes, f64)>,
    ) -> Result<(), StoreError> {
        if let Some(live) = self.live_key(&key) {
            return Err(live.refused("storing a search result"));
        }
        if entries.is_empty() {
            keys.remove(&key);
        } else {
            let mut store = (self.new_store)();
            for (member, score) in entries {
                store.add(member, score, crate::geo::store::AddMode::Upsert);
            }
            keys.insert(key, store);
        }
        Ok(())
    }

    /// Deletes `keys`; how many existed. Nothing is deleted when one of them
    /// cannot be (the live key).
    pub fn delete(&self, keys: &[Bytes]) -> Result<usize, StoreError> {
        if let Some(live) = keys.iter().find_map(|key| self.live_key(key)) {
            return Err(live.refused("DEL"));
        }
        let mut keyspace = self.keys.write();
        Ok(keys.iter().filter(|key| keyspace.remove(key)).count())
    }

    /// Whether writes to `key` grow this port's data (the live key's go to the
    /// driver index).
    pub fn stores_here(&self, key: &[u8]) -> bool {
        self.live_key(key).is_none()
    }

    /// Whether stored data is over `maxmemory` (writes are then refused).
    pub fn over_maxmemory(&self) -> bool {
        self.limits
            .over_maxmemory(self.used_bytes.load(Ordering::Relaxed))
    }

    /// A new connection's session.
    pub fn new_session(&self) -> Session {
        Session {
            proto: Proto::Resp2,
            id: self.next_client_id.fetch_add(1, Ordering::Relaxed),
            name: None,
        }
    }
}

/// A key's store found by [`Server::lookup`].
#[derive(Debug)]
pub enum StoreRef<'a> {
    /// One of the keyspace's.
    Set(&'a (dyn GeoStore + 'static)),
    /// The live key.
    Live(LiveStore),
}

impl std::ops::Deref for StoreRef<'_> {
    type Target = dyn GeoStore;

    fn deref(&self) -> &Self::Target {
        match self {
            StoreRef::Set(store) => *store,
            StoreRef::Live(store) => store,
        }
    }
}

/// Per-connection state.
#[derive(Debug)]
pub struct Session {
    pub proto: Proto,
    pub id: u64,
    pub name: Option<Bytes>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::store::AddMode;

    #[test]
    fn the_estimate_follows_adds_removes_and_deletes() {
        let mut keys = Keyspace::default();
        let published = keys.used_bytes_handle();
        let key = Bytes::from("k");
        keys.update(&key, Some(sorted_set), |set| {
            set.add(Bytes::from("a"), 1.0, AddMode::Upsert);
            set.add(Bytes::from("bb"), 2.0, AddMode::Upsert);
        });
        let two = keys.used_bytes();
        assert!(two > 0);
        assert_eq!(published.load(Ordering::Relaxed), two);
        keys.update(&key, None, |set| set.remove(b"bb"));
        assert!(keys.used_bytes() < two);
        keys.update(&key, None, |set| set.remove(b"a"));
        assert_eq!(
            (keys.len(), keys.used_bytes()),
            (0, 0),
            "an emptied key is gone"
        );
        assert_eq!(keys.update(&key, None, |set| set.len()), None);
        let mut set = sorted_set();
        set.add(Bytes::from("a"), 1.0, AddMode::Upsert);
        keys.insert(key.clone(), set);
        assert!(keys.used_bytes() > 0);
        assert!(keys.remove(&key));
        assert_eq!(keys.used_bytes(), 0);
        keys.update(&key, Some(sorted_set), |set| {
            set.add(Bytes::from("a"), 1.0, AddMode::Upsert)
        });
        let old = keys.take();
        assert_eq!(old.len(), 1);
        assert_eq!(
            (keys.used_bytes(), published.load(Ordering::Relaxed)),
            (0, 0),
            "FLUSH empties the estimate the maxmemory check reads"
        );
    }
}
