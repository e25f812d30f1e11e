//! A write-ahead log with group commit.
//!
//! Records are byte strings numbered by a dense sequence number (`seq`, from 0).
//! They live in preallocated segment files named by the seq of their first record,
//! framed with a length and a CRC32C (see [`mod@format`]).
//!
//! # Guarantees
//! - **Acknowledged means durable.** [`Wal::append`] returns `Ok(seq)` only after
//!   the `write` and the `fdatasync` covering that record (and, for a new segment,
//!   the file and directory syncs) succeeded — in [`Durability::Sync`], the default.
//! - **Group commit.** One flusher thread takes every append waiting at that moment
//!   (up to [`WalConfig::max_batch_records`] / [`WalConfig::max_batch_bytes`]),
//!   writes them with one `pwrite` and one `fdatasync`, then acknowledges them all.
//! - **Back-pressure.** At most [`WalConfig::queue_capacity`] appends wait for the
//!   flusher; further callers wait to enqueue.
//! - **Log order = fill order.** [`Wal::reserve_append`] takes a place in the queue
//!   ahead of time; [`AppendSlot::append`] queues a record without waiting, so a
//!   caller can queue a decision's record under a synchronous lock and know the log
//!   holds its decisions in the order it made them.
//! - **Recovery cuts only a torn tail.** [`Wal::open`] scans the segments and keeps
//!   every intact record up to the first torn, corrupt or out-of-sequence frame. If no
//!   intact frame follows that point (a *torn tail*: the last batch, partly written), it
//!   zeroes what follows in that segment and deletes later segments. Acknowledged
//!   records are never behind a torn write, so a crash never loses one.
//! - **Corruption before intact records stops the open.** If an intact frame *does*
//!   follow the bad one (in that segment or a later one), the damage is not a torn
//!   write: [`Wal::open`] logs an ERROR and returns [`WalError::CorruptMidLog`] naming
//!   the segment, the byte offset and the seq expected there. The bytes from that offset
//!   are first copied to `<segment>.corrupt-<offset>` next to the segment; the log
//!   itself is left unchanged. Only [`Repair::TruncateAfterCopy`] (in
//!   [`WalConfig::repair`], or process-wide with [`set_process_repair`]) opens it: the
//!   intact prefix is kept, the damaged segment is cut after the copy, later segments
//!   are renamed to `<segment>.corrupt-0`, and [`RecoveryReport::set_aside`] lists
//!   every file made. No byte is deleted on this path.
//!
//! # Telling a torn tail from mid-log corruption
//! After the first bad frame at byte `cut` (seq `expected` due there), recovery scans
//! every later byte offset `o` of that segment and of every later segment for a frame
//! whose CRC32C matches and whose seq is *plausible*:
//! `expected <= seq <= expected + d / 16 + 1`, where `d` is the number of bytes scanned
//! from `cut` to `o` (no frame is shorter than its 16-byte header, so no real successor
//! can lie further). The scan reads each file once, skips all-zero headers, and checks
//! the seq bound before the checksum.
//! - *False positives* (a torn tail reported as corruption) need a crash that persisted
//!   later pages of one `pwrite` but not earlier ones. A process crash (`kill -9`) cannot
//!   do that — the page cache receives a write in order — only a power loss on a file
//!   system that reorders writeback, and then only within the last batch
//!   ([`WalConfig::max_batch_bytes`]). The operator resolves it with the override.
//!   Random bytes pass as a frame with odds below 2^-32 per offset times the seq window.
//! - *False negatives* (corruption truncated as a torn tail) need every record after
//!   the damage to be damaged too, or the damage to reach the end of the written data.
//!   What is truncated then held no readable record.
//! - **Fail-stop on I/O errors.** After a failed write or sync the log refuses all
//!   further appends (retrying `fsync` after a failure can silently lose data).
//! - Readers ([`Wal::reader`]) see only durable records, in seq order.
//!
//! # Not guaranteed
//! - Media corruption *inside* acknowledged data (a flipped bit on disk) is detected
//!   and stops the open, but the damaged record itself is not recovered, and with the
//!   override the records after it leave the log (they stay in the set-aside files).
//!   Surviving bad disks is replication's job, not this log's.
//! - Cancelling an [`Wal::append`] future does not withdraw the record: once queued
//!   it is written, it just goes unacknowledged.
//! - One log per directory: [`Wal::open`] takes an exclusive advisory lock on
//!   `LOCK` in the directory and refuses a directory another open log holds
//!   ([`WalError::InUse`]), in this process or another. The lock is advisory:
//!   it does not stop a program that ignores it.
//! - [`Durability::NoSync`] acknowledges after the write reaches the page cache: it
//!   survives a process crash but not a power loss. It exists for tests and
//!   benchmarks that say so.
//! - Rotation is cheap only when the next segment is ready: a helper thread
//!   zero-fills it ahead of need; if a segment fills faster than that, the batch
//!   crossing the boundary waits for the fill.

pub mod format;

/// The file whose exclusive lock marks a directory as in use by an open log.
const LOCK_FILE: &str = "LOCK";

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use format::{FrameError, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};

/// Whether an acknowledged record has been forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `fdatasync` before acknowledging. The only mode for real data.
    #[default]
    Sync,
    /// No syncs at all: survives a process crash, not a power loss. Tests and
    /// benchmarks only, and they must say so.
    NoSync,
}

/// What [`Wal::open`] does when it finds corruption followed by intact records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Repair {
    /// Copy the unreadable bytes aside, change nothing else, and fail the open with
    /// [`WalError::CorruptMidLog`]. The default: losing records takes an operator.
    #[default]
    Refuse,
    /// Copy the unreadable bytes aside, then keep the intact prefix and open: the
    /// damaged segment is cut at the bad frame and later segments are renamed aside.
    TruncateAfterCopy,
}

static PROCESS_REPAIR: AtomicBool = AtomicBool::new(false);

/// Sets the repair policy of every [`Wal::open`] in this process whose
/// [`WalConfig::repair`] is [`Repair::Refuse`]: the hook for an operator's
/// "repair the WAL" flag, which reaches every log without each user's config
/// carrying it. Set it before instances start.
pub fn set_process_repair(repair: Repair) {
    PROCESS_REPAIR.store(repair == Repair::TruncateAfterCopy, Ordering::SeqCst);
}

/// The policy in force for `config`: its own, or the process-wide override.
fn effective_repair(config: &WalConfig) -> Repair {
    if PROCESS_REPAIR.load(Ordering::SeqCst) {
        Repair::TruncateAfterCopy
    } else {
        config.repair
    }
}

/// How a log is laid out and batched.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Size every segment file is preallocated to.
    pub segment_bytes: u64,
    /// The largest payload accepted.
    pub max_record_bytes: usize,
    /// The most records written by one `write` + `fdatasync`.
    pub max_batch_records: usize,
    /// The most payload bytes gathered into one batch (a single larger record still
    /// goes alone).
    pub max_batch_bytes: usize,
    /// Appends that may wait for the flusher before callers are held back.
    pub queue_capacity: usize,
    pub durability: Durability,
    /// What recovery does with corruption that intact records follow.
    pub repair: Repair,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 * 1024 * 1024,
            max_record_bytes: 1024 * 1024,
            max_batch_records: 4096,
            max_batch_bytes: 4 * 1024 * 1024,
            queue_capacity: 16 * 1024,
            durability: Durability::Sync,
            repair: Repair::Refuse,
        }
    }
}

impl WalConfig {
    fn validate(&self) -> Result<(), WalError> {
        let overhead = (SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES) as u64;
        if self.max_record_bytes == 0 || self.max_record_bytes > u32::MAX as usize {
            return Err(WalError::InvalidConfig(
                "max_record_bytes must be in 1..=u32::MAX".into(),
            ));
        }
        if self.segment_bytes < overhead + self.max_record_bytes as u64 {
            return Err(WalError::InvalidConfig(format!(
                "segment_bytes ({}) must hold a header and one max_record_bytes ({}) record",
                self.segment_bytes, self.max_record_bytes
            )));
        }
        if self.max_batch_records == 0 || self.max_batch_bytes == 0 || self.queue_capacity == 0 {
            return Err(WalError::InvalidConfig(
                "max_batch_records, max_batch_bytes and queue_capacity must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// What can go wrong with the log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    #[error("invalid WAL config: {0}")]
    InvalidConfig(String),
    #[error("I/O error during {op} on {path}: {message}")]
    Io {
        op: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("record of {len} bytes exceeds the maximum of {max}")]
    RecordTooLarge { len: usize, max: usize },
    #[error("the log failed earlier and accepts no more writes: {0}")]
    Failed(Arc<str>),
    #[error("the log is closed")]
    Closed,
    #[error("the WAL directory {0} is in use by another open log (its LOCK file is held)")]
    InUse(PathBuf),
    #[error("seq {requested} was compacted away; the log starts at {first_available}")]
    Compacted {
        requested: u64,
        first_available: u64,
    },
    #[error("durable record {seq} is unreadable: {reason}")]
    Corrupt { seq: u64, reason: String },
    #[error(transparent)]
    CorruptMidLog(Box<MidLogCorruption>),
}

/// Corruption that intact records follow: why [`Wal::open`] refused (see the
/// module docs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "WAL segment {segment} is corrupt at byte {offset} (expected seq {expected_seq}: \
     {reason}), but an intact record (seq {intact_seq}) follows at byte {intact_offset} \
     of {intact_segment}: not a torn tail, refusing to open. {}The log is unchanged; \
     to keep the {kept_records} records before the damage and set the rest aside, \
     open with the WAL repair override (Repair::TruncateAfterCopy)",
    set_aside_text(.set_aside)
)]
pub struct MidLogCorruption {
    pub segment: PathBuf,
    pub offset: u64,
    pub expected_seq: u64,
    pub reason: String,
    pub intact_segment: PathBuf,
    pub intact_offset: u64,
    pub intact_seq: u64,
    /// Where the unreadable bytes of `segment` were copied (none when the damage is
    /// a missing segment rather than bad bytes).
    pub set_aside: Option<PathBuf>,
    /// Intact records before the damage: what the override keeps.
    pub kept_records: u64,
}

fn set_aside_text(set_aside: &Option<PathBuf>) -> String {
    match set_aside {
        Some(path) => format!(
            "The bytes from that offset were copied to {}. ",
            path.display()
        ),
        None => String::new(),
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |e| WalError::Io {
        op,
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// What [`Wal::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Intact records kept.
    pub records: u64,
    /// Segments kept.
    pub segments: usize,
    /// Where the log was cut, if it was: segment file, byte offset, reason.
    pub truncated_at: Option<(PathBuf, u64, String)>,
    /// Later segment files deleted because they followed a torn tail (they held no
    /// intact record).
    pub segments_removed: usize,
    /// Files holding bytes moved out of the log by [`Repair::TruncateAfterCopy`].
    pub set_aside: Vec<SetAside>,
}

/// Bytes recovery moved out of the log instead of deleting them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// The segment they came from.
    pub segment: PathBuf,
    /// Their byte offset in it.
    pub offset: u64,
    /// The file that holds them now.
    pub file: PathBuf,
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.wal"))
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".wal")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

fn sync_dir(dir: &Path, durability: Durability) -> Result<(), WalError> {
    if durability == Durability::Sync {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync directory", dir))?;
    }
    Ok(())
}

/// State shared by the handle, the flusher and readers.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    /// first seq → segment file, for every retained segment.
    segments: Mutex<BTreeMap<u64, PathBuf>>,
    /// Sparse index: every [`INDEX_EVERY`]th seq → byte offset of its frame in its
    /// segment, so a reader opening at any seq skips at most that many frames.
    index: Mutex<BTreeMap<u64, u64>>,
    /// The seq after the last durable record (the count of records ever made durable).
    durable: watch::Sender<u64>,
}

impl Shared {
    fn first_seq(&self) -> u64 {
        self.segments.lock().keys().next().copied().unwrap_or(0)
    }

    fn segment_for(&self, seq: u64) -> Result<(u64, PathBuf), WalError> {
        let segments = self.segments.lock();
        let first_available = segments.keys().next().copied().unwrap_or(0);
        match segments.range(..=seq).next_back() {
            Some((&first, path)) => Ok((first, path.clone())),
            None => Err(WalError::Compacted {
                requested: seq,
                first_available,
            }),
        }
    }
}

struct Append {
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<u64, WalError>>,
}

/// A write-ahead log. Cheap to clone; the flusher stops when the last clone drops.
#[derive(Debug, Clone)]
pub struct Wal {
    handle: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    sender: Option<mpsc::Sender<Append>>,
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
    recovery: RecoveryReport,
    config: WalConfig,
    /// Held (locked) for as long as the log is open.
    _lock: File,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Closing the queue lets the flusher finish what is queued and exit.
        self.sender.take();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
    }
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`, recovering what is on disk.
    pub fn open(dir: impl AsRef<Path>, config: WalConfig) -> Result<Wal, WalError> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open lock file", &lock_path))?;
        lock.try_lock().map_err(|err| match err {
            fs::TryLockError::WouldBlock => WalError::InUse(dir.clone()),
            fs::TryLockError::Error(e) => io_err("lock", &lock_path)(e),
        })?;
        let recovered = recover(&dir, &config)?;
        let (durable, _) = watch::channel(recovered.next_seq);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            segments: Mutex::new(recovered.segments),
            index: Mutex::new(recovered.index),
            durable,
        });
        let writer = Writer {
            dir,
            file: recovered.active_file,
            active_path: recovered.active_path,
            position: recovered.position,
            next_seq: recovered.next_seq,
            buffer: Vec::with_capacity(config.max_batch_bytes.min(8 * 1024 * 1024)),
            config: config.clone(),
            shared: shared.clone(),
            spare: None,
        };
        let (sender, receiver) = mpsc::channel(config.queue_capacity);
        let flusher = std::thread::Builder::new()
            .name("wal-flusher".into())
            .spawn(move || writer.run(receiver))
            .map_err(io_err("spawn flusher thread", &shared.dir))?;
        Ok(Wal {
            handle: Arc::new(Handle {
                sender: Some(sender),
                shared,
                flusher: Some(flusher),
                recovery: recovered.report,
                config,
                _lock: lock,
            }),
        })
    }

    fn check_len(&self, payload: &[u8]) -> Result<(), WalError> {
        let max = self.handle.config.max_record_bytes;
        if payload.len() > max {
            return Err(WalError::RecordTooLarge {
                len: payload.len(),
                max,
            });
        }
        Ok(())
    }

    fn sender(&self) -> &mpsc::Sender<Append> {
        self.handle
            .sender
            .as_ref()
            .expect("sender lives as long as the handle")
    }

    /// Appends a record; resolves to its seq once it is durable.
    pub async fn append(&self, payload: impl Into<Vec<u8>>) -> Result<u64, WalError> {
        let payload = payload.into();
        self.check_len(&payload)?;
        let (reply, acked) = oneshot::channel();
        self.sender()
            .send(Append { payload, reply })
            .await
            .map_err(|_| WalError::Closed)?;
        acked.await.map_err(|_| WalError::Closed)?
    }

    /// Reserves a place in the flusher's queue (waiting while it is full), to be
    /// filled later with [`AppendSlot::append`], which does not wait.
    ///
    /// Records are written in the order their slots are *filled*, whatever order the
    /// slots were reserved in. That lets a caller decide under a synchronous lock and
    /// queue the decision's record before releasing it, so the log's order is the
    /// decision order, without holding the lock across an `.await`. A slot dropped
    /// unfilled gives its place back.
    pub async fn reserve_append(&self) -> Result<AppendSlot<'_>, WalError> {
        let permit = self
            .sender()
            .reserve()
            .await
            .map_err(|_| WalError::Closed)?;
        Ok(AppendSlot { wal: self, permit })
    }

    /// [`Wal::append`] for threads outside an async runtime (it blocks; calling it
    /// from async code panics).
    pub fn append_blocking(&self, payload: impl Into<Vec<u8>>) -> Result<u64, WalError> {
        let payload = payload.into();
        self.check_len(&payload)?;
        let (reply, acked) = oneshot::channel();
        self.sender()
            .blocking_send(Append { payload, reply })
            .map_err(|_| WalError::Closed)?;
        acked.blocking_recv().map_err(|_| WalError::Closed)?
    }

    /// The seq the next durable record will get: every seq below it is durable.
    pub fn next_seq(&self) -> u64 {
        *self.handle.shared.durable.borrow()
    }

    /// The first seq still on disk (after [`Wal::truncate_before`]).
    pub fn first_seq(&self) -> u64 {
        self.handle.shared.first_seq()
    }

    /// A watch on [`Wal::next_seq`], for tailing readers.
    pub fn watch_durable(&self) -> watch::Receiver<u64> {
        self.handle.shared.durable.subscribe()
    }

    /// Waits until record `seq` is durable.
    pub async fn wait_durable(&self, seq: u64) {
        let mut watch = self.watch_durable();
        // The sender lives in `self`, so the watch cannot close while we wait.
        let _ = watch.wait_for(|&next| next > seq).await;
    }

    /// What recovery found when the log was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.handle.recovery
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.handle.shared.dir
    }

    /// A reader of durable records starting at `from`.
    pub fn reader(&self, from: u64) -> Result<WalReader, WalError> {
        let first = self.first_seq();
        if from < first {
            return Err(WalError::Compacted {
                requested: from,
                first_available: first,
            });
        }
        Ok(WalReader {
            shared: self.handle.shared.clone(),
            next_seq: from,
            current: None,
        })
    }

    /// Reads up to `max` durable records from `from`.
    pub fn read(&self, from: u64, max: usize) -> Result<Vec<Record>, WalError> {
        let mut reader = self.reader(from)?;
        let mut out = Vec::new();
        while out.len() < max {
            match reader.next_record()? {
                Some(record) => out.push(record),
                None => break,
            }
        }
        Ok(out)
    }

    /// The first seq of every retained segment, ascending; the last one is the
    /// active segment. Lets a log-structured cleaner see which records pin which
    /// segment before it calls [`Wal::truncate_before`].
    pub fn segment_starts(&self) -> Vec<u64> {
        self.handle.shared.segments.lock().keys().copied().collect()
    }

    /// Compaction for the log's users: deletes every segment whose records all have
    /// seq < `seq`. Segment granularity, so records below `seq` may remain readable;
    /// the active segment is never deleted. Returns how many segments went.
    pub fn truncate_before(&self, seq: u64) -> Result<usize, WalError> {
        let shared = &self.handle.shared;
        let doomed: Vec<(u64, PathBuf)> = {
            let segments = shared.segments.lock();
            let firsts: Vec<u64> = segments.keys().copied().collect();
            firsts
                .windows(2)
                .filter(|pair| pair[1] <= seq)
                .map(|pair| (pair[0], segments[&pair[0]].clone()))
                .collect()
        };
        for (first, path) in &doomed {
            // Forget it first so no new reader opens it; open readers keep their fd.
            shared.segments.lock().remove(first);
            fs::remove_file(path).map_err(io_err("remove segment", path))?;
        }
        if !doomed.is_empty() {
            let first = self.first_seq();
            shared.index.lock().retain(|&seq, _| seq >= first);
            sync_dir(&shared.dir, self.handle.config.durability)?;
        }
        Ok(doomed.len())
    }
}

/// A place in the flusher's queue, from [`Wal::reserve_append`].
#[derive(Debug)]
pub struct AppendSlot<'a> {
    wal: &'a Wal,
    permit: mpsc::Permit<'a, Append>,
}

impl AppendSlot<'_> {
    /// Queues `payload` at once (no waiting: the place is already held); the
    /// returned [`AppendAck`] resolves to its seq once it is durable. A payload over
    /// [`WalConfig::max_record_bytes`] is refused and the place given back.
    pub fn append(self, payload: impl Into<Vec<u8>>) -> Result<AppendAck, WalError> {
        let payload = payload.into();
        self.wal.check_len(&payload)?;
        let (reply, acked) = oneshot::channel();
        self.permit.send(Append { payload, reply });
        Ok(AppendAck { acked })
    }
}

/// Resolves to a queued record's seq once it is durable, or to the error that
/// stopped the log. Dropping it does not withdraw the record.
#[derive(Debug)]
pub struct AppendAck {
    acked: oneshot::Receiver<Result<u64, WalError>>,
}

impl std::future::Future for AppendAck {
    type Output = Result<u64, WalError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.acked)
            .poll(cx)
            .map(|acked| acked.map_err(|_| WalError::Closed)?)
    }
}

/// Reads durable records in order. Returns `None` at the durable end; call again
/// later to continue tailing.
#[derive(Debug)]
pub struct WalReader {
    shared: Arc<Shared>,
    next_seq: u64,
    current: Option<SegmentCursor>,
}

/// A window of one segment file. Only frames of records below `complete_below` (the
/// durable frontier when the window was read) are trusted: bytes past them may have
/// been read while the flusher was still writing.
#[derive(Debug)]
struct SegmentCursor {
    first_seq: u64,
    path: PathBuf,
    file: File,
    window: Vec<u8>,
    /// File offset of `window[0]`.
    window_offset: u64,
    /// Index in `window` of the next frame.
    at: usize,
    complete_below: u64,
    /// No frame can be longer than the file: bounds what a damaged length can ask for.
    file_len: usize,
}

const READ_WINDOW_BYTES: usize = 64 * 1024;
/// One sparse-index entry per this many records.
const INDEX_EVERY: u64 = 256;

impl SegmentCursor {
    fn open(first_seq: u64, path: PathBuf, offset: u64) -> Result<Self, WalError> {
        let file = File::open(&path).map_err(io_err("open segment", &path))?;
        let file_len = file
            .metadata()
            .map_err(io_err("stat segment", &path))?
            .len();
        Ok(Self {
            first_seq,
            path,
            file,
            file_len: usize::try_from(file_len).unwrap_or(usize::MAX),
            window: Vec::new(),
            window_offset: offset,
            at: 0,
            complete_below: 0,
        })
    }

    /// Re-reads the window from the next frame, at least `need` bytes long.
    fn refill(&mut self, need: usize, durable: u64) -> Result<(), WalError> {
        self.window_offset += self.at as u64;
        self.at = 0;
        // The frontier is read before the bytes: every record below it is complete.
        self.complete_below = durable;
        self.window.resize(need.max(READ_WINDOW_BYTES), 0);
        let mut filled = 0;
        while filled < self.window.len() {
            let n = self
                .file
                .read_at(
                    &mut self.window[filled..],
                    self.window_offset + filled as u64,
                )
                .map_err(io_err("read segment", &self.path))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        self.window.truncate(filled);
        Ok(())
    }

    /// The frame of `seq`, which must be durable (below `durable`).
    fn next_frame(&mut self, seq: u64, durable: u64) -> Result<Vec<u8>, WalError> {
        debug_assert!(seq < durable);
        if seq >= self.complete_below {
            self.refill(RECORD_HEADER_BYTES, durable)?;
        }
        let corrupt = |reason: String| WalError::Corrupt { seq, reason };
        let mut need = RECORD_HEADER_BYTES;
        for attempt in 0..2 {
            let available = &self.window[self.at..];
            if let Some(head) = available.first_chunk::<RECORD_HEADER_BYTES>() {
                let header = format::decode_header(head);
                if header.len as usize > self.file_len {
                    return Err(corrupt(FrameError::TooLong.to_string()));
                }
                need = RECORD_HEADER_BYTES + header.len as usize;
                if let Some(payload) = available.get(RECORD_HEADER_BYTES..need) {
                    format::verify(&header, payload, seq).map_err(|e| corrupt(e.to_string()))?;
                    let payload = payload.to_vec();
                    self.at += need;
                    return Ok(payload);
                }
            }
            if attempt == 0 {
                // The frame runs past the window: slide the window to it.
                self.refill(need, durable)?;
            }
        }
        Err(corrupt(FrameError::Truncated.to_string()))
    }
}

impl WalReader {
    /// The seq the next call would return.
    pub fn position(&self) -> u64 {
        self.next_seq
    }

    /// The next durable record, or `None` if there is none yet.
    pub fn next_record(&mut self) -> Result<Option<Record>, WalError> {
        let durable = *self.shared.durable.borrow();
        if self.next_seq >= durable {
            return Ok(None);
        }
        let (segment_first, path) = self.shared.segment_for(self.next_seq)?;
        if self.current.as_ref().map(|c| c.first_seq) != Some(segment_first) {
            // Start from the nearest indexed frame of this segment at or before `next_seq`.
            let (start_seq, start_offset) = self
                .shared
                .index
                .lock()
                .range(segment_first..=self.next_seq)
                .next_back()
                .map_or((segment_first, SEGMENT_HEADER_BYTES as u64), |(&s, &o)| {
                    (s, o)
                });
            let mut cursor = match SegmentCursor::open(segment_first, path.clone(), start_offset) {
                // Compacted between finding the segment and opening it.
                Err(_) if !path.exists() => {
                    return Err(WalError::Compacted {
                        requested: self.next_seq,
                        first_available: self.shared.first_seq(),
                    });
                }
                other => other?,
            };
            // Skip to `next_seq`, verifying as we go.
            for seq in start_seq..self.next_seq {
                cursor.next_frame(seq, durable)?;
            }
            self.current = Some(cursor);
        }
        let cursor = self.current.as_mut().expect("opened above");
        let seq = self.next_seq;
        let payload = cursor.next_frame(seq, durable)?;
        self.next_seq += 1;
        Ok(Some(Record { seq, payload }))
    }
}

struct Recovered {
    segments: BTreeMap<u64, PathBuf>,
    index: BTreeMap<u64, u64>,
    active_file: File,
    active_path: PathBuf,
    position: u64,
    next_seq: u64,
    report: RecoveryReport,
}

/// Where the intact prefix of the log ends.
#[derive(Debug)]
struct Cut {
    /// Index in the sorted segment list of the segment the cut is in.
    at: usize,
    segment: PathBuf,
    /// First byte not kept. For a bad header, 0 (the whole file is unreadable).
    offset: u64,
    /// `Some(end)`: the segment keeps its records below `end` and stays the active
    /// one. `None`: the segment is not part of the log (it does not start at the
    /// expected seq), so the previous segment stays the active one.
    keep_until: Option<u64>,
    header_ok: bool,
    first: u64,
    reason: String,
    /// The segment's bytes (empty when `keep_until` is `None`).
    bytes: Vec<u8>,
}

/// An intact frame found after a cut: evidence that the damage is not a torn tail.
#[derive(Debug)]
struct IntactAfter {
    segment: PathBuf,
    offset: u64,
    seq: u64,
}

/// The first frame in `bytes` at or after `from` whose checksum matches and whose
/// seq could follow the cut (see the module docs for the bound); `scanned_before` is
/// how many bytes after the cut earlier files contributed.
fn find_intact_frame(
    bytes: &[u8],
    from: usize,
    expected: u64,
    scanned_before: u64,
) -> Option<(u64, u64)> {
    let last_header = bytes.len().checked_sub(RECORD_HEADER_BYTES)?;
    let mut offset = from;
    while offset <= last_header {
        let head = bytes[offset..]
            .first_chunk::<RECORD_HEADER_BYTES>()
            .expect("offset is at most the last header start");
        if head.iter().all(|&b| b == 0) {
            // A header holding the next non-zero byte starts at most 15 bytes before
            // it: jump there, so a zero-filled tail costs one pass, not one per offset.
            let next_nonzero = offset + bytes[offset..].iter().position(|&b| b != 0)?;
            offset = next_nonzero
                .saturating_sub(RECORD_HEADER_BYTES - 1)
                .max(offset + 1);
            continue;
        }
        let header = format::decode_header(head);
        let distance = scanned_before + (offset - from) as u64;
        let highest = expected.saturating_add(distance / RECORD_HEADER_BYTES as u64 + 1);
        // Seq u64::MAX is never kept (no seq follows it), so it is no evidence either.
        let plausible = header.seq >= expected && header.seq <= highest && header.seq != u64::MAX;
        let start = offset + RECORD_HEADER_BYTES;
        if plausible
            && let Some(end) = start.checked_add(header.len as usize)
            && let Some(payload) = bytes.get(start..end)
            && format::verify(&header, payload, header.seq).is_ok()
        {
            return Some((offset as u64, header.seq));
        }
        offset += 1;
    }
    None
}

fn read_file(path: &Path) -> Result<Vec<u8>, WalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_err("read segment", path))?;
    Ok(bytes)
}

/// Searches the rest of the cut segment and every later segment for an intact frame.
fn intact_after_cut(
    cut: &Cut,
    later: &[(u64, PathBuf)],
    expected: u64,
) -> Result<Option<IntactAfter>, WalError> {
    let mut scanned = 0u64;
    if cut.keep_until.is_some() {
        let from = cut.offset as usize;
        if let Some((offset, seq)) = find_intact_frame(&cut.bytes, from, expected, 0) {
            return Ok(Some(IntactAfter {
                segment: cut.segment.clone(),
                offset,
                seq,
            }));
        }
        scanned = (cut.bytes.len() - from.min(cut.bytes.len())) as u64;
    }
    for (_, path) in later {
        let bytes = read_file(path)?;
        if let Some((offset, seq)) = find_intact_frame(&bytes, 0, expected, scanned) {
            return Ok(Some(IntactAfter {
                segment: path.clone(),
                offset,
                seq,
            }));
        }
        scanned += bytes.len() as u64;
    }
    Ok(None)
}

/// A name next to `base` for set-aside bytes: `<base>.corrupt-<offset>`, or with a
/// `.N` suffix if that name holds other bytes already (never overwrite a copy).
fn aside_path(base: &Path, offset: u64, content: Option<&[u8]>) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(format!(".corrupt-{offset}"));
    let plain = PathBuf::from(name);
    for n in 0u32.. {
        let candidate = if n == 0 {
            plain.clone()
        } else {
            let mut name = plain.as_os_str().to_owned();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        match (fs::read(&candidate), content) {
            (Err(e), _) if e.kind() == io::ErrorKind::NotFound => return candidate,
            // The same bytes, copied by an earlier refused open: reuse the copy.
            (Ok(existing), Some(content)) if existing == content => return candidate,
            _ => {}
        }
    }
    unreachable!("some suffix is free")
}

/// Copies the unreadable bytes of the cut segment (up to its last non-zero byte: the
/// zeros after are preallocation) to a file next to it, synced.
fn copy_aside(cut: &Cut, durability: Durability) -> Result<PathBuf, WalError> {
    let end = cut
        .bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    let content = cut.bytes.get(cut.offset as usize..end).unwrap_or_default();
    let path = aside_path(&cut.segment, cut.offset, Some(content));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(io_err("create set-aside file", &path))?;
    file.write_all_at(content, 0)
        .map_err(io_err("write set-aside file", &path))?;
    if durability == Durability::Sync {
        file.sync_all()
            .map_err(io_err("fsync set-aside file", &path))?;
    }
    Ok(path)
}

/// Scans the segments, keeps the intact prefix, and repairs a torn tail; refuses
/// (or, with [`Repair::TruncateAfterCopy`], sets aside) corruption that intact
/// records follow.
fn recover(dir: &Path, config: &WalConfig) -> Result<Recovered, WalError> {
    let mut found = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(io_err("list directory", dir))? {
        let entry = entry.map_err(io_err("list directory", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(first) = parse_segment_name(&name) {
            found.insert(first, entry.path());
        } else if name.ends_with(".wal.tmp") {
            // A segment whose creation never finished: it holds no records.
            let path = entry.path();
            fs::remove_file(&path).map_err(io_err("remove unfinished segment", &path))?;
        }
    }
    let found: Vec<(u64, PathBuf)> = found.into_iter().collect();

    let mut report = RecoveryReport::default();
    let mut kept = BTreeMap::new();
    let mut index = BTreeMap::new();
    let mut expected = found.first().map_or(0, |(first, _)| *first);
    // (path, end of valid data) of the last kept segment.
    let mut tail: Option<(PathBuf, u64)> = None;
    let mut cut: Option<Cut> = None;

    for (at, (first, path)) in found.iter().enumerate() {
        let first = *first;
        if first != expected {
            cut = Some(Cut {
                at,
                segment: path.clone(),
                offset: 0,
                keep_until: None,
                header_ok: true,
                first,
                reason: format!("segment starts at seq {first}, expected {expected}"),
                bytes: Vec::new(),
            });
            break;
        }
        let buffer = read_file(path)?;
        let mut position = SEGMENT_HEADER_BYTES;
        let header_ok = format::decode_segment_header(&buffer) == Some(first);
        let mut stop: Option<FrameError> = None;
        if header_ok {
            loop {
                // Bounded by the file, not by today's max_record_bytes, so lowering that
                // setting never cuts records written under a higher one.
                match format::decode_record(&buffer[position..], expected, buffer.len()) {
                    // A frame whose successor seq would overflow (only a corrupt or
                    // crafted segment name gets here) ends the log before it.
                    Ok(_) if expected == u64::MAX => {
                        stop = Some(FrameError::SeqExhausted);
                        break;
                    }
                    Ok((_, size)) => {
                        if expected.is_multiple_of(INDEX_EVERY) {
                            index.insert(expected, position as u64);
                        }
                        position += size;
                        expected += 1;
                        report.records += 1;
                    }
                    Err(reason) => {
                        stop = Some(reason);
                        break;
                    }
                }
            }
        }
        kept.insert(first, path.clone());
        tail = Some((path.clone(), position as u64));
        // Zeros after the last record end this segment normally; anything else ends the log.
        let rest_is_zero = buffer
            .get(position..)
            .is_none_or(|rest| rest.iter().all(|&b| b == 0));
        if !header_ok || !rest_is_zero {
            let reason = if header_ok {
                match stop {
                    None | Some(FrameError::EndOfData) => {
                        "zeros where a record was due, non-zero bytes after them".to_string()
                    }
                    Some(reason) => reason.to_string(),
                }
            } else {
                "bad segment header".to_string()
            };
            cut = Some(Cut {
                at,
                segment: path.clone(),
                offset: if header_ok { position as u64 } else { 0 },
                keep_until: Some(position as u64),
                header_ok,
                first,
                reason,
                bytes: buffer,
            });
            break;
        }
    }

    if let Some(cut) = cut {
        // Segments after the cut: those after the cut one, or (a segment that does
        // not start where the log continues) the cut one too.
        let later_from = if cut.keep_until.is_some() {
            cut.at + 1
        } else {
            cut.at
        };
        let later = &found[later_from..];
        match intact_after_cut(&cut, later, expected)? {
            None => {
                // A torn tail: nothing readable follows, so nothing is lost by cutting.
                if let Some(keep_until) = cut.keep_until {
                    reset_tail(&cut.segment, cut.first, keep_until, cut.header_ok, config)?;
                }
                for (_, path) in later {
                    fs::remove_file(path).map_err(io_err("remove segment after cut", path))?;
                    report.segments_removed += 1;
                }
                let (at_path, at_offset) = match cut.keep_until {
                    Some(end) => (cut.segment.clone(), end),
                    None => tail.clone().unwrap_or((cut.segment.clone(), 0)),
                };
                tracing::warn!(
                    segment = %at_path.display(),
                    offset = at_offset,
                    reason = %cut.reason,
                    segments_removed = report.segments_removed,
                    "WAL torn tail truncated"
                );
                report.truncated_at = Some((at_path, at_offset, cut.reason.clone()));
            }
            Some(intact) => {
                let set_aside = match cut.keep_until {
                    Some(_) => Some(copy_aside(&cut, config.durability)?),
                    None => None,
                };
                if effective_repair(config) == Repair::Refuse {
                    let error = WalError::CorruptMidLog(Box::new(MidLogCorruption {
                        segment: cut.segment.clone(),
                        offset: cut.offset,
                        expected_seq: expected,
                        reason: cut.reason.clone(),
                        intact_segment: intact.segment,
                        intact_offset: intact.offset,
                        intact_seq: intact.seq,
                        set_aside,
                        kept_records: report.records,
                    }));
                    tracing::error!(%error, "WAL recovery refused");
                    return Err(error);
                }
                if let Some(file) = set_aside {
                    report.set_aside.push(SetAside {
                        segment: cut.segment.clone(),
                        offset: cut.offset,
                        file,
                    });
                }
                if let Some(keep_until) = cut.keep_until {
                    reset_tail(&cut.segment, cut.first, keep_until, cut.header_ok, config)?;
                }
                for (_, path) in later {
                    let aside = aside_path(path, 0, None);
                    fs::rename(path, &aside).map_err(io_err("set aside segment", path))?;
                    report.set_aside.push(SetAside {
                        segment: path.clone(),
                        offset: 0,
                        file: aside,
                    });
                }
                let (at_path, at_offset) = match cut.keep_until {
                    Some(end) => (cut.segment.clone(), end),
                    None => tail.clone().unwrap_or((cut.segment.clone(), 0)),
                };
                tracing::error!(
                    segment = %cut.segment.display(),
                    offset = cut.offset,
                    expected_seq = expected,
                    reason = %cut.reason,
                    kept_records = report.records,
                    set_aside = ?report.set_aside,
                    "WAL corrupt before intact records; repaired by the override: the \
                     intact prefix is kept, the rest is in the set-aside files"
                );
                report.truncated_at = Some((at_path, at_offset, cut.reason.clone()));
            }
        }
        sync_dir(dir, config.durability)?;
    }

    let (active_path, position) = match tail {
        Some(tail) => tail,
        None => {
            let path = create_segment(dir, expected, config)?;
            kept.insert(expected, path.clone());
            (path, SEGMENT_HEADER_BYTES as u64)
        }
    };
    let active_file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&active_path)
        .map_err(io_err("open active segment", &active_path))?;
    let len = active_file
        .metadata()
        .map_err(io_err("stat active segment", &active_path))?
        .len();
    if len < config.segment_bytes {
        active_file
            .set_len(config.segment_bytes)
            .map_err(io_err("extend active segment", &active_path))?;
    }
    report.segments = kept.len();
    Ok(Recovered {
        segments: kept,
        index,
        active_file,
        active_path,
        position,
        next_seq: expected,
        report,
    })
}

/// Makes everything from `valid_end` on zeros, so no stale frame can ever be read as
/// a successor of what is appended there next.
fn reset_tail(
    path: &Path,
    first: u64,
    valid_end: u64,
    header_ok: bool,
    config: &WalConfig,
) -> Result<(), WalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open segment for repair", path))?;
    file.set_len(valid_end)
        .and_then(|()| file.set_len(config.segment_bytes.max(valid_end)))
        .map_err(io_err("zero segment tail", path))?;
    if !header_ok {
        let mut header = Vec::new();
        format::encode_segment_header(&mut header, first);
        file.write_all_at(&header, 0)
            .map_err(io_err("rewrite segment header", path))?;
    }
    if config.durability == Durability::Sync {
        file.sync_all()
            .map_err(io_err("fsync repaired segment", path))?;
    }
    Ok(())
}

/// A zero-filled file under a temporary name, ready to become a segment.
#[derive(Debug)]
struct Spare {
    file: File,
    temp: PathBuf,
}

/// Creates a zero-filled, synced file at `temp` (real zeros, not a sparse file:
/// later fdatasyncs then need no block allocation).
fn preallocate(temp: PathBuf, config: &WalConfig) -> Result<Spare, WalError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(io_err("create segment", &temp))?;
    let zeros = vec![0u8; 1024 * 1024];
    let mut offset = 0;
    while offset < config.segment_bytes {
        let n = zeros.len().min((config.segment_bytes - offset) as usize);
        file.write_all_at(&zeros[..n], offset)
            .map_err(io_err("preallocate segment", &temp))?;
        offset += n as u64;
    }
    if config.durability == Durability::Sync {
        file.sync_all()
            .map_err(io_err("fsync new segment", &temp))?;
    }
    Ok(Spare { file, temp })
}

/// Turns a spare into the segment starting at `first_seq`: header, sync, rename,
/// directory sync. Until the rename the file has a `.wal.tmp` name, which recovery
/// deletes, so a crash never leaves a half-made segment under a real name.
fn install(
    spare: Spare,
    dir: &Path,
    first_seq: u64,
    config: &WalConfig,
) -> Result<(File, PathBuf), WalError> {
    let path = segment_path(dir, first_seq);
    let mut header = Vec::new();
    format::encode_segment_header(&mut header, first_seq);
    spare
        .file
        .write_all_at(&header, 0)
        .map_err(io_err("write segment header", &spare.temp))?;
    if config.durability == Durability::Sync {
        spare
            .file
            .sync_data()
            .map_err(io_err("fsync segment header", &spare.temp))?;
    }
    fs::rename(&spare.temp, &path).map_err(io_err("rename new segment", &path))?;
    sync_dir(dir, config.durability)?;
    Ok((spare.file, path))
}

fn create_segment(dir: &Path, first_seq: u64, config: &WalConfig) -> Result<PathBuf, WalError> {
    let spare = preallocate(
        segment_path(dir, first_seq).with_extension("wal.tmp"),
        config,
    )?;
    Ok(install(spare, dir, first_seq, config)?.1)
}

/// The flusher's state: the only writer of segment files.
struct Writer {
    dir: PathBuf,
    file: File,
    active_path: PathBuf,
    position: u64,
    next_seq: u64,
    buffer: Vec<u8>,
    config: WalConfig,
    shared: Arc<Shared>,
    /// The next segment, being zero-filled ahead of need.
    spare: Option<JoinHandle<Result<Spare, WalError>>>,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("active_path", &self.active_path)
            .field("position", &self.position)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<Append>) {
        self.prepare_spare();
        let mut batch: Vec<Append> = Vec::with_capacity(self.config.max_batch_records);
        let mut failed: Option<Arc<str>> = None;
        while let Some(first) = queue.blocking_recv() {
            let mut bytes = first.payload.len();
            batch.push(first);
            // Everything already waiting joins this batch, up to the bounds.
            while batch.len() < self.config.max_batch_records && bytes < self.config.max_batch_bytes
            {
                match queue.try_recv() {
                    Ok(next) => {
                        bytes += next.payload.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            if failed.is_none()
                && let Err(error) = self.write_batch(&batch)
            {
                tracing::error!(%error, dir = %self.dir.display(), "WAL write failed; the log is now read-only");
                failed = Some(error.to_string().into());
            }
            match &failed {
                None => {
                    let first_seq = self.next_seq - batch.len() as u64;
                    self.shared.durable.send_replace(self.next_seq);
                    for (i, append) in batch.drain(..).enumerate() {
                        let _ = append.reply.send(Ok(first_seq + i as u64));
                    }
                }
                Some(reason) => {
                    for append in batch.drain(..) {
                        let _ = append.reply.send(Err(WalError::Failed(reason.clone())));
                    }
                }
            }
        }
        self.discard_spare();
    }

    fn write_batch(&mut self, batch: &[Append]) -> Result<(), WalError> {
        self.buffer.clear();
        let mut buffer_at = self.position;
        for append in batch {
            let frame = (RECORD_HEADER_BYTES + append.payload.len()) as u64;
            if self.position + frame > self.config.segment_bytes {
                self.flush(buffer_at)?;
                self.rotate()?;
                buffer_at = self.position;
            }
            if self.next_seq.is_multiple_of(INDEX_EVERY) {
                self.shared
                    .index
                    .lock()
                    .insert(self.next_seq, self.position);
            }
            format::encode_record(&mut self.buffer, self.next_seq, &append.payload);
            self.position += frame;
            self.next_seq += 1;
        }
        self.flush(buffer_at)
    }

    fn flush(&mut self, at: u64) -> Result<(), WalError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        debug_assert_eq!(at + self.buffer.len() as u64, self.position);
        self.file
            .write_all_at(&self.buffer, at)
            .map_err(io_err("write", &self.active_path))?;
        if self.config.durability == Durability::Sync {
            self.file
                .sync_data()
                .map_err(io_err("fdatasync", &self.active_path))?;
        }
        self.buffer.clear();
        Ok(())
    }

    /// Starts zero-filling the next segment on a helper thread, so rotation does
    /// not stall the batch that crosses the boundary.
    fn prepare_spare(&mut self) {
        debug_assert!(self.spare.is_none());
        let temp = self.dir.join(format!("spare-{}.wal.tmp", self.next_seq));
        let config = self.config.clone();
        self.spare = std::thread::Builder::new()
            .name("wal-preallocate".into())
            .spawn(move || preallocate(temp, &config))
            .ok();
    }

    fn rotate(&mut self) -> Result<(), WalError> {
        let spare = match self.spare.take().map(JoinHandle::join) {
            Some(Ok(Ok(spare))) => spare,
            // No spare, or it failed: make one here (and report its error, if any).
            _ => preallocate(
                segment_path(&self.dir, self.next_seq).with_extension("wal.tmp"),
                &self.config,
            )?,
        };
        let (file, path) = install(spare, &self.dir, self.next_seq, &self.config)?;
        self.file = file;
        self.shared
            .segments
            .lock()
            .insert(self.next_seq, path.clone());
        self.active_path = path;
        self.position = SEGMENT_HEADER_BYTES as u64;
        self.prepare_spare();
        Ok(())
    }

    /// Removes an unused spare when the log closes.
    fn discard_spare(&mut self) {
        if let Some(Ok(Ok(spare))) = self.spare.take().map(JoinHandle::join) {
            let _ = fs::remove_file(&spare.temp);
        }
    }
}

#[cfg(test)]
mod tests;
