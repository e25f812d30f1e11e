//! The disk tier: immutable objects as files under the instance's data dir,
//! bounded in bytes, least recently used out first, found again after a restart.
//!
//! Layout: `<dir>/<sha256(key) 16 hex>-<generation 16 hex>.obj`, each file
//! `MAGIC | u32 LE header length | header JSON {key, etag, content_type,
//! body_len, crc32c} | body`. A file is written as `<name>.tmp` and renamed into
//! place, so a reader (or a restart) never sees a half-written object under its
//! final name; a new generation per write means a replaced object's file is never
//! the one a concurrent reader is reading.
//!
//! Guaranteed:
//! - **Bounded by bytes**: the bytes of object files, counting a write in progress
//!   (`.tmp`), never exceed the capacity. Writes run one at a time; each first
//!   evicts least-recently-used objects until it fits and deletes their files, then
//!   writes. An object larger than the capacity is skipped (it stays in memory and
//!   upstream). The tier feeds the writer through a queue of [`WRITE_QUEUE`]
//!   objects; when it is full the object is not written (counted).
//! - **Survives a restart**: [`DiskTier::open`] rebuilds the index from the files'
//!   headers (recency from their modification times), deletes leftover `.tmp`
//!   files, files whose header or length is wrong, and an older generation of a key
//!   stored twice, then evicts down to the capacity if it shrank.
//! - **Never serves corrupt bytes**: every read checks the length and the CRC32C of
//!   the body against the header; a mismatch deletes the file and reads as a miss.
//!
//! Not guaranteed: that an object written just before a crash or power loss is
//! still there (files are not fsynced: this is a cache, the upstream has the
//! object); exact LRU order across a restart (modification times have the
//! filesystem's resolution and do not track reads). Playlists are not stored here:
//! they go stale in seconds and are small enough for memory.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::key::ObjectKey;
use super::object::Object;

/// First bytes of every object file.
const MAGIC: &[u8; 8] = b"CBCDNOB1";
/// Longest header accepted when reading a file back.
const MAX_HEADER: usize = 8 * 1024;
/// Objects waiting for the writer; more are not written.
pub const WRITE_QUEUE: usize = 64;

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    key: String,
    etag: String,
    content_type: String,
    body_len: u64,
    crc32c: u32,
}

#[derive(Debug, Clone)]
struct Entry {
    file: String,
    /// The whole file's size.
    bytes: u64,
    etag: String,
    /// Position in the recency order (higher: more recent).
    tick: u64,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<ObjectKey, Entry>,
    /// tick → key, oldest first.
    recency: BTreeMap<u64, ObjectKey>,
    next_tick: u64,
    /// Bytes of indexed files plus reservations of writes in progress.
    used: u64,
    next_generation: u64,
}

impl Index {
    fn touch(&mut self, key: &ObjectKey) {
        let tick = self.next_tick;
        if let Some(entry) = self.entries.get_mut(key) {
            self.recency.remove(&entry.tick);
            entry.tick = tick;
            self.recency.insert(tick, key.clone());
            self.next_tick += 1;
        }
    }

    fn insert(&mut self, key: ObjectKey, file: String, bytes: u64, etag: String) -> Option<Entry> {
        let tick = self.next_tick;
        self.next_tick += 1;
        self.recency.insert(tick, key.clone());
        let old = self.entries.insert(
            key,
            Entry {
                file,
                bytes,
                etag,
                tick,
            },
        );
        if let Some(old) = &old {
            self.recency.remove(&old.tick);
            self.used -= old.bytes;
        }
        self.used += bytes;
        old
    }

    fn remove(&mut self, key: &ObjectKey) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.recency.remove(&entry.tick);
        self.used -= entry.bytes;
        Some(entry)
    }

    /// Removes least-recently-used entries until `needed` more bytes fit in
    /// `capacity`; their files, to delete. `None` (nothing removed) if they cannot fit.
    fn make_room(&mut self, needed: u64, capacity: u64) -> Option<Vec<String>> {
        if needed > capacity {
            return None;
        }
        let mut evictable = 0;
        let mut victims = Vec::new();
        for key in self.recency.values() {
            if self.used - evictable + needed <= capacity {
                break;
            }
            let entry = &self.entries[key];
            evictable += entry.bytes;
            victims.push(key.clone());
        }
        if self.used - evictable + needed > capacity {
            return None; // cannot happen with one writer; kept for safety
        }
        Some(
            victims
                .iter()
                .filter_map(|key| self.remove(key).map(|e| e.file))
                .collect(),
        )
    }
}

/// What [`DiskTier::open`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Rebuilt {
    /// Objects indexed again.
    pub loaded: u64,
    /// Files deleted as unreadable, half-written or superseded.
    pub discarded: u64,
    /// Objects evicted because they no longer fit the capacity.
    pub evicted: u64,
}

/// What a [`DiskTier::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Written,
    /// The same object (key and ETag) is already stored.
    AlreadyStored,
    /// Skipped: larger than the capacity, or the write failed.
    Skipped,
}

/// The disk tier. Share it behind an `Arc`.
#[derive(Debug)]
pub struct DiskTier {
    dir: PathBuf,
    capacity: u64,
    index: Mutex<Index>,
}

/// The tier's one writer: writes one at a time (it is not `Clone`, and `put` takes
/// `&mut self`), which is what keeps the files within the capacity.
#[derive(Debug)]
pub struct DiskWriter {
    tier: Arc<DiskTier>,
}

impl DiskWriter {
    /// Stores an immutable object (module docs: bounded, atomic, maybe skipped).
    pub async fn put(&mut self, key: &ObjectKey, object: &Object) -> Put {
        let tier = &self.tier;
        {
            let mut index = tier.index.lock();
            if index
                .entries
                .get(key)
                .is_some_and(|e| e.etag == object.etag)
            {
                index.touch(key);
                return Put::AlreadyStored;
            }
        }
        let header = Header {
            key: key.as_str().to_owned(),
            etag: object.etag.clone(),
            content_type: object.content_type.clone(),
            body_len: object.body.len() as u64,
            crc32c: crc32c::crc32c(&object.body),
        };
        let bytes = file_len(&header);
        let (victims, file) = {
            let mut index = tier.index.lock();
            // With one writer, nothing else is reserved: the room is there unless too big.
            let Some(victims) = index.make_room(bytes, tier.capacity) else {
                return Put::Skipped;
            };
            index.used += bytes; // the reservation, released below either way
            let generation = index.next_generation;
            index.next_generation += 1;
            (victims, format!("{}-{generation:016x}.obj", key_hash(key)))
        };
        let dir = tier.dir.clone();
        let body = object.body.clone();
        let name = file.clone();
        let written = tokio::task::spawn_blocking(move || {
            for victim in victims {
                let _ = fs::remove_file(dir.join(victim));
            }
            write_object(&dir, &name, &header, &body)
        })
        .await;
        let mut index = tier.index.lock();
        index.used -= bytes;
        match written {
            Ok(Ok(())) => {
                let old = index.insert(key.clone(), file, bytes, object.etag.clone());
                drop(index);
                if let Some(old) = old {
                    let _ = fs::remove_file(tier.dir.join(old.file));
                }
                Put::Written
            }
            Ok(Err(error)) => {
                tracing::warn!(key = %key, %error, "cannot write an object to the disk tier");
                Put::Skipped
            }
            Err(_) => Put::Skipped,
        }
    }
}

impl DiskTier {
    /// Opens (creating) the tier in `dir`, rebuilding its index from the files
    /// there: the tier (share it) and its one writer. Blocking: call it from a
    /// blocking context.
    pub fn open(dir: &Path, capacity: u64) -> std::io::Result<(Arc<Self>, DiskWriter, Rebuilt)> {
        fs::create_dir_all(dir)?;
        let mut rebuilt = Rebuilt::default();
        // (key, generation, mtime, file, bytes, etag)
        let mut found: HashMap<ObjectKey, (u64, SystemTime, String, u64, String)> = HashMap::new();
        let mut max_generation = 0;
        for dirent in fs::read_dir(dir)? {
            let dirent = dirent?;
            let name = dirent.file_name().to_string_lossy().into_owned();
            let path = dirent.path();
            if !dirent.file_type()?.is_file() {
                continue;
            }
            let parsed = name
                .strip_suffix(".obj")
                .and_then(|stem| stem.rsplit_once('-'))
                .and_then(|(_, generation)| u64::from_str_radix(generation, 16).ok());
            let (Some(generation), Ok(header), Ok(meta)) =
                (parsed, read_header(&path), dirent.metadata())
            else {
                discard(&path, &mut rebuilt);
                continue;
            };
            let key = match ObjectKey::parse(&header.key) {
                Ok(key) if meta.len() == file_len(&header) => key,
                _ => {
                    discard(&path, &mut rebuilt);
                    continue;
                }
            };
            max_generation = max_generation.max(generation);
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let candidate = (generation, mtime, name, meta.len(), header.etag);
            match found.get(&key) {
                Some(existing) if existing.0 > generation => {
                    discard(&path, &mut rebuilt);
                }
                Some(existing) => {
                    discard(&dir.join(&existing.2), &mut rebuilt);
                    found.insert(key, candidate);
                }
                None => {
                    found.insert(key, candidate);
                }
            }
        }
        let mut by_age: Vec<_> = found.into_iter().collect();
        by_age.sort_by_key(|(_, (generation, mtime, ..))| (*mtime, *generation));
        let mut index = Index {
            next_generation: max_generation + 1,
            ..Index::default()
        };
        for (key, (_, _, file, bytes, etag)) in by_age {
            index.insert(key, file, bytes, etag);
            rebuilt.loaded += 1;
        }
        while index.used > capacity {
            let Some(oldest) = index.recency.values().next().cloned() else {
                break;
            };
            if let Some(entry) = index.remove(&oldest) {
                let _ = fs::remove_file(dir.join(entry.file));
                rebuilt.evicted += 1;
                rebuilt.loaded -= 1;
            }
        }
        let tier = Arc::new(Self {
            dir: dir.to_owned(),
            capacity,
            index: Mutex::new(index),
        });
        let writer = DiskWriter {
            tier: Arc::clone(&tier),
        };
        Ok((tier, writer, rebuilt))
    }

    /// The configured bound in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes of stored objects plus writes in progress.
    pub fn bytes(&self) -> u64 {
        self.index.lock().used
    }

    /// Objects stored.
    pub fn entries(&self) -> u64 {
        self.index.lock().entries.len() as u64
    }

    /// Whether `key` is stored (no recency change).
    pub fn contains(&self, key: &ObjectKey) -> bool {
        self.index.lock().entries.contains_key(key)
    }

    /// Reads `key` back, as of `now` (the object's `stored_at`); `None` on a miss,
    /// or when the file turned out unreadable or corrupt (then it is dropped).
    pub async fn get(self: &Arc<Self>, key: &ObjectKey, now: Instant) -> Option<Object> {
        let file = {
            let mut index = self.index.lock();
            let file = index.entries.get(key)?.file.clone();
            index.touch(key);
            file
        };
        let tier = Arc::clone(self);
        let owned = key.clone();
        let read = tokio::task::spawn_blocking(move || {
            read_object(&tier.dir.join(&file), &owned, now).map_err(|e| (file, e))
        })
        .await
        .ok()?;
        match read {
            Ok(object) => Some(object),
            Err((file, error)) => {
                tracing::warn!(key = %key, %error, "dropping an unreadable object from the disk tier");
                self.drop_file(key, &file);
                None
            }
        }
    }

    fn drop_file(&self, key: &ObjectKey, file: &str) {
        let mut index = self.index.lock();
        if index.entries.get(key).is_some_and(|e| e.file == file) {
            index.remove(key);
        }
        let _ = fs::remove_file(self.dir.join(file));
    }
}

fn discard(path: &Path, rebuilt: &mut Rebuilt) {
    let _ = fs::remove_file(path);
    rebuilt.discarded += 1;
}

fn key_hash(key: &ObjectKey) -> String {
    Sha256::digest(key.as_str().as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn header_bytes(header: &Header) -> Vec<u8> {
    serde_json::to_vec(header).expect("a header serialises")
}

fn file_len(header: &Header) -> u64 {
    (MAGIC.len() + 4 + header_bytes(header).len()) as u64 + header.body_len
}

fn write_object(dir: &Path, name: &str, header: &Header, body: &[u8]) -> std::io::Result<()> {
    let header = header_bytes(header);
    let tmp = dir.join(format!("{name}.tmp"));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.write_all(MAGIC)?;
        file.write_all(&(header.len() as u32).to_le_bytes())?;
        file.write_all(&header)?;
        file.write_all(body)?;
        drop(file);
        fs::rename(&tmp, dir.join(name))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn read_header_from(file: &mut fs::File) -> std::io::Result<Header> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut prefix = [0u8; 12];
    file.read_exact(&mut prefix)?;
    if &prefix[..8] != MAGIC {
        return Err(bad("not an object file"));
    }
    let len = u32::from_le_bytes(prefix[8..].try_into().expect("4 bytes")) as usize;
    if len > MAX_HEADER {
        return Err(bad("header too long"));
    }
    let mut header = vec![0u8; len];
    file.read_exact(&mut header)?;
    serde_json::from_slice(&header).map_err(|_| bad("header is not JSON"))
}

fn read_header(path: &Path) -> std::io::Result<Header> {
    read_header_from(&mut fs::File::open(path)?)
}

fn read_object(path: &Path, key: &ObjectKey, now: Instant) -> std::io::Result<Object> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut file = fs::File::open(path)?;
    let header = read_header_from(&mut file)?;
    if header.key != key.as_str() {
        return Err(bad("the file holds another key"));
    }
    let len = usize::try_from(header.body_len).map_err(|_| bad("body too long"))?;
    let mut body = Vec::with_capacity(len);
    file.take(header.body_len + 1).read_to_end(&mut body)?;
    if body.len() != len {
        return Err(bad("body length differs from the header"));
    }
    if crc32c::crc32c(&body) != header.crc32c {
        return Err(bad("body checksum differs from the header"));
    }
    Ok(Object::new(
        key,
        Bytes::from(body),
        Some(&header.etag),
        Some(&header.content_type),
        now,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> ObjectKey {
        ObjectKey::parse(&format!("titles/t/720p/seg{i:05}.ts")).unwrap()
    }

    fn object(k: &ObjectKey, len: usize, fill: u8) -> Object {
        Object::new(k, Bytes::from(vec![fill; len]), None, None, Instant::now())
    }

    fn files_bytes(dir: &Path) -> u64 {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }

    #[tokio::test]
    async fn files_never_exceed_the_capacity_and_lru_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let capacity = 50_000;
        let (tier, mut writer, _) = DiskTier::open(dir.path(), capacity).unwrap();
        for i in 0..40 {
            let k = key(i);
            assert_eq!(
                writer.put(&k, &object(&k, 4_000 + i * 100, i as u8)).await,
                Put::Written
            );
            assert!(
                files_bytes(dir.path()) <= capacity,
                "files over the capacity after {i}"
            );
            assert_eq!(tier.bytes(), files_bytes(dir.path()));
            // Keep object 0 recent: it must survive every eviction.
            assert!(
                tier.get(&key(0), Instant::now()).await.is_some(),
                "recent object 0 evicted at {i}"
            );
        }
        assert!(
            tier.get(&key(1), Instant::now()).await.is_none(),
            "least recent evicted"
        );
        let k = key(39);
        assert_eq!(
            writer.put(&k, &object(&k, 4_000 + 3_900, 39)).await,
            Put::AlreadyStored
        );
        let big = key(99);
        assert_eq!(
            writer.put(&big, &object(&big, capacity as usize, 1)).await,
            Put::Skipped
        );
    }

    #[tokio::test]
    async fn the_index_is_rebuilt_at_open_and_debris_deleted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_, mut writer, _) = DiskTier::open(dir.path(), 1 << 20).unwrap();
            for i in 0..5 {
                let k = key(i);
                writer.put(&k, &object(&k, 1000, i as u8)).await;
            }
            // A newer generation of key 0 replaces the older one.
            let k = key(0);
            writer.put(&k, &object(&k, 1000, 42)).await;
        }
        // Debris of a crash: a half-written temporary, a torn object file, junk.
        fs::write(
            dir.path().join("0000000000000000-00000000000000ff.obj.tmp"),
            b"half",
        )
        .unwrap();
        fs::write(
            dir.path().join("0000000000000000-0000000000000100.obj"),
            b"CBCDNOB1\x05\x00",
        )
        .unwrap();
        fs::write(dir.path().join("junk"), b"?").unwrap();
        let (tier, _, rebuilt) = DiskTier::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            rebuilt,
            Rebuilt {
                loaded: 5,
                discarded: 3,
                evicted: 0
            }
        );
        let got = tier.get(&key(0), Instant::now()).await.unwrap();
        assert!(
            got.body.iter().all(|b| *b == 42),
            "the newer generation is kept"
        );
        assert_eq!(
            tier.get(&key(3), Instant::now()).await.unwrap().body.len(),
            1000
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 5);
        // A smaller capacity at open evicts the oldest down to it.
        drop(tier);
        let (tier, _, rebuilt) = DiskTier::open(dir.path(), 2_800).unwrap();
        assert_eq!(rebuilt.loaded + rebuilt.evicted, 5);
        assert!(tier.bytes() <= 2_800 && rebuilt.evicted >= 3);
        assert_eq!(files_bytes(dir.path()), tier.bytes());
    }

    #[tokio::test]
    async fn a_corrupt_body_is_detected_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (tier, mut writer, _) = DiskTier::open(dir.path(), 1 << 20).unwrap();
        let k = key(1);
        writer.put(&k, &object(&k, 1000, 7)).await;
        let path = fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        assert!(tier.get(&k, Instant::now()).await.is_none());
        assert!(!tier.contains(&k));
        assert!(!path.exists());
    }
}
