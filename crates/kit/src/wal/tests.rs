use super::*;
use proptest::prelude::*;

fn small_config() -> WalConfig {
    WalConfig {
        segment_bytes: 1024,
        max_record_bytes: 200,
        max_batch_records: 8,
        max_batch_bytes: 4096,
        queue_capacity: 64,
        // Recovery tests corrupt files by hand; they never need the OS to sync.
        durability: Durability::NoSync,
        repair: Repair::Refuse,
    }
}

fn repair_config() -> WalConfig {
    WalConfig {
        repair: Repair::TruncateAfterCopy,
        ..small_config()
    }
}

/// Every file in `dir` (name → bytes) but the lock file.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != LOCK_FILE)
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

fn payload(i: u64) -> Vec<u8> {
    // Varying lengths so frames straddle every kind of boundary.
    let len = 5 + (i * 37 % 90) as usize;
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

fn read_all(wal: &Wal) -> Vec<Record> {
    wal.read(wal.first_seq(), usize::MAX).unwrap()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

fn copy_dir(from: &Path, to: &Path) {
    for file in segment_files(from) {
        fs::copy(&file, to.join(file.file_name().unwrap())).unwrap();
    }
}

/// Builds a log of `count` records; returns the end offset of each record
/// (segment file, byte offset just past the frame).
fn build_log(dir: &Path, count: u64) -> Vec<(PathBuf, u64)> {
    let wal = Wal::open(dir, small_config()).unwrap();
    for i in 0..count {
        assert_eq!(wal.append_blocking(payload(i)).unwrap(), i);
    }
    drop(wal);
    // Recompute frame ends from the format rather than trusting the writer.
    let mut ends = Vec::new();
    let mut seq = 0;
    for file in segment_files(dir) {
        let bytes = fs::read(&file).unwrap();
        let mut at = SEGMENT_HEADER_BYTES;
        while let Ok((_, size)) = format::decode_record(&bytes[at..], seq, 200) {
            at += size;
            seq += 1;
            ends.push((file.clone(), at as u64));
        }
    }
    assert_eq!(seq, count);
    ends
}

/// Recovers `dir` and checks the outcome is exactly the first `expected` records,
/// then that the log keeps working: a new append gets the next seq and survives
/// another reopen (stale bytes after the cut must not come back).
fn assert_recovers_prefix(dir: &Path, expected: u64) {
    let wal = Wal::open(dir, small_config()).unwrap();
    let records = read_all(&wal);
    assert_eq!(records.len() as u64, expected, "{:?}", wal.recovery());
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.seq, i as u64);
        assert_eq!(record.payload, payload(i as u64));
    }
    let marker = b"after-recovery".to_vec();
    assert_eq!(wal.append_blocking(marker.clone()).unwrap(), expected);
    drop(wal);
    let wal = Wal::open(dir, small_config()).unwrap();
    let records = read_all(&wal);
    assert_eq!(records.len() as u64, expected + 1);
    assert_eq!(records.last().unwrap().payload, marker);
    assert_eq!(wal.recovery().truncated_at, None);
}

#[test]
fn appends_read_back_in_order_across_rotations_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let count = 200;
    let ends = build_log(dir.path(), count);
    let segments = segment_files(dir.path()).len();
    assert!(segments > 5, "small segments must rotate, got {segments}");
    // The spare segment prepared ahead of rotation is removed when the log closes.
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(ends.len() as u64, count);

    let wal = Wal::open(dir.path(), small_config()).unwrap();
    assert_eq!(wal.recovery().records, count);
    assert_eq!(wal.recovery().truncated_at, None);
    assert_eq!(wal.next_seq(), count);
    let records = read_all(&wal);
    assert_eq!(records.len() as u64, count);
    assert!(records.iter().all(|r| r.payload == payload(r.seq)));
    // Reading from the middle positions correctly inside a segment.
    let tail = wal.read(137, 5).unwrap();
    assert_eq!(
        tail.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![137, 138, 139, 140, 141]
    );
    assert_eq!(tail[0].payload, payload(137));
}

#[test]
fn reads_from_any_seq_use_the_sparse_index_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig {
        segment_bytes: 256 * 1024,
        ..small_config()
    };
    let wal = Wal::open(dir.path(), config.clone()).unwrap();
    for i in 0..3000 {
        wal.append_blocking(payload(i)).unwrap();
    }
    let check = |wal: &Wal| {
        for from in [0, 1, 255, 256, 257, 511, 512, 1500, 2047, 2048, 2999] {
            let records = wal.read(from, 3).unwrap();
            assert_eq!(records[0].seq, from);
            assert!(
                records.iter().all(|r| r.payload == payload(r.seq)),
                "from {from}"
            );
        }
    };
    check(&wal);
    drop(wal);
    // After reopen the index comes from recovery, not from the writer.
    let wal = Wal::open(dir.path(), config).unwrap();
    check(&wal);
}

#[test]
fn a_reader_tails_new_records() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small_config()).unwrap();
    let mut reader = wal.reader(0).unwrap();
    assert_eq!(reader.next_record().unwrap(), None);
    for i in 0..30 {
        wal.append_blocking(payload(i)).unwrap();
    }
    for i in 0..30 {
        assert_eq!(reader.next_record().unwrap().unwrap().payload, payload(i));
    }
    assert_eq!(reader.next_record().unwrap(), None);
    wal.append_blocking(b"late".to_vec()).unwrap();
    assert_eq!(reader.next_record().unwrap().unwrap().payload, b"late");
    assert_eq!(reader.position(), 31);
}

#[test]
fn a_reader_never_trusts_bytes_read_before_they_were_durable() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small_config()).unwrap();
    wal.append_blocking(payload(0)).unwrap();
    wal.append_blocking(payload(1)).unwrap();
    let mut reader = wal.reader(0).unwrap();
    // Reading record 0 loads a window that also covers where record 2 will go.
    assert_eq!(reader.next_record().unwrap().unwrap().payload, payload(0));
    wal.append_blocking(payload(2)).unwrap();
    assert_eq!(reader.next_record().unwrap().unwrap().payload, payload(1));
    assert_eq!(reader.next_record().unwrap().unwrap().payload, payload(2));
}

#[test]
fn a_reader_tailing_a_busy_writer_sees_every_record_intact() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small_config()).unwrap();
    let writer = std::thread::spawn({
        let wal = wal.clone();
        move || {
            for i in 0..3000 {
                wal.append_blocking(payload(i)).unwrap();
            }
        }
    });
    let mut reader = wal.reader(0).unwrap();
    let mut seen = 0;
    while seen < 3000 {
        match reader.next_record().unwrap() {
            Some(record) => {
                assert_eq!(record.payload, payload(seen));
                seen += 1;
            }
            None => std::thread::yield_now(),
        }
    }
    writer.join().unwrap();
}

#[test]
fn truncate_before_drops_whole_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 100);
    let wal = Wal::open(dir.path(), small_config()).unwrap();
    let before = segment_files(dir.path()).len();
    let starts = wal.segment_starts();
    assert_eq!(starts.len(), before);
    assert_eq!(starts[0], 0);
    assert!(starts.windows(2).all(|w| w[0] < w[1]) && *starts.last().unwrap() < 100);
    let removed = wal.truncate_before(60).unwrap();
    assert!(removed > 0);
    assert_eq!(segment_files(dir.path()).len(), before - removed);
    // Exactly the segments wholly below 60 went.
    let kept: Vec<u64> = starts
        .iter()
        .copied()
        .filter(|&s| s >= starts[removed])
        .collect();
    assert_eq!(wal.segment_starts(), kept);
    assert!(starts[removed] <= 60 && starts.get(removed + 1).is_none_or(|&next| next > 60));
    let first = wal.first_seq();
    assert!(first <= 60 && first > 0, "first = {first}");
    assert!(matches!(
        wal.read(0, 1),
        Err(WalError::Compacted { requested: 0, first_available }) if first_available == first
    ));
    assert_eq!(wal.read(60, 1).unwrap()[0].payload, payload(60));
    // The active segment is never removed, even when asked to drop everything.
    wal.truncate_before(u64::MAX).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 1);
    drop(wal);
    let wal = Wal::open(dir.path(), small_config()).unwrap();
    assert_eq!(wal.next_seq(), 100);
    assert_eq!(wal.append_blocking(b"x".to_vec()).unwrap(), 100);
}

#[test]
fn lowering_max_record_bytes_keeps_records_written_before() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 30);
    let smaller = WalConfig {
        max_record_bytes: 10,
        ..small_config()
    };
    let wal = Wal::open(dir.path(), smaller).unwrap();
    assert_eq!(wal.recovery().truncated_at, None);
    let records = read_all(&wal);
    assert_eq!(records.len(), 30);
    assert!(records.iter().all(|r| r.payload == payload(r.seq)));
}

#[test]
fn bad_input_gets_precise_errors() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small_config()).unwrap();
    assert!(matches!(
        wal.append_blocking(vec![0; 201]),
        Err(WalError::RecordTooLarge { len: 201, max: 200 })
    ));
    let bad = WalConfig {
        segment_bytes: 100,
        ..small_config()
    };
    assert!(matches!(
        Wal::open(dir.path().join("x"), bad),
        Err(WalError::InvalidConfig(_))
    ));
}

#[tokio::test]
async fn reserved_slots_are_written_in_the_order_they_are_filled() {
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig {
        queue_capacity: 2,
        ..small_config()
    };
    let wal = Wal::open(dir.path(), config).unwrap();
    let first = wal.reserve_append().await.unwrap();
    let second = wal.reserve_append().await.unwrap();
    // The queue is full: a third place waits until one is given back.
    assert!(
        futures::FutureExt::now_or_never(wal.reserve_append()).is_none(),
        "a full queue holds the caller back"
    );
    let later = second.append(b"filled first".to_vec()).unwrap();
    let earlier = first.append(b"filled second".to_vec()).unwrap();
    assert_eq!(later.await.unwrap(), 0);
    assert_eq!(earlier.await.unwrap(), 1);

    let unused = wal.reserve_append().await.unwrap();
    drop(unused);
    let too_big = wal.reserve_append().await.unwrap();
    assert!(matches!(
        too_big.append(vec![0; 201]),
        Err(WalError::RecordTooLarge { len: 201, max: 200 })
    ));
    let next = wal.reserve_append().await.unwrap();
    assert_eq!(next.append(b"after".to_vec()).unwrap().await.unwrap(), 2);
    let bodies: Vec<Vec<u8>> = read_all(&wal).into_iter().map(|r| r.payload).collect();
    assert_eq!(
        bodies,
        vec![
            b"filled first".to_vec(),
            b"filled second".to_vec(),
            b"after".to_vec()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_async_appends_get_distinct_dense_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig {
        segment_bytes: 64 * 1024,
        durability: Durability::Sync,
        ..small_config()
    };
    let wal = Wal::open(dir.path(), config.clone()).unwrap();
    let mut tasks = Vec::new();
    for writer in 0..16u64 {
        let wal = wal.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..25u64 {
                let body = format!("{writer}:{i}");
                acked.push((wal.append(body.clone()).await.unwrap(), body));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    acked.sort();
    assert_eq!(
        acked.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (0..400).collect::<Vec<_>>()
    );
    drop(wal);
    let wal = Wal::open(dir.path(), config).unwrap();
    for (seq, body) in acked {
        assert_eq!(wal.read(seq, 1).unwrap()[0].payload, body.as_bytes());
    }
}

#[test]
fn cutting_the_last_segment_at_every_byte_keeps_exactly_the_whole_records() {
    let template = tempfile::tempdir().unwrap();
    let ends = build_log(template.path(), 60);
    let files = segment_files(template.path());
    let last = files.last().unwrap().clone();
    let last_name = last.file_name().unwrap().to_owned();
    let records_before_last = ends.iter().filter(|(f, _)| *f != last).count() as u64;
    let data_end = ends.last().unwrap().1;
    // Every offset in the data, and a few inside the preallocated zeros after it.
    for cut in (0..=data_end).chain([data_end + 1, data_end + 17, 1023]) {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        let file = OpenOptions::new()
            .write(true)
            .open(dir.path().join(&last_name))
            .unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        let whole_in_last = ends
            .iter()
            .filter(|(f, end)| *f == last && *end <= cut)
            .count() as u64;
        assert_recovers_prefix(dir.path(), records_before_last + whole_in_last);
    }
}

#[test]
fn a_crash_during_rotation_leaves_no_half_made_segment() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 40);
    // A temp file from an unfinished creation, and a segment under its real name
    // whose header is garbage and which holds no record.
    fs::write(dir.path().join("00000000000000000999.wal.tmp"), b"junk").unwrap();
    let mut garbage = b"garbage!".to_vec();
    garbage.resize(1024, 0);
    fs::write(segment_path(dir.path(), 40), garbage).unwrap();
    assert_recovers_prefix(dir.path(), 40);
    assert!(!dir.path().join("00000000000000000999.wal.tmp").exists());
}

/// The bytes of a damaged log must survive a refused open: unchanged in place, and the
/// unreadable part copied next to the segment.
fn assert_refused_and_nothing_lost(
    dir: &Path,
    damaged: &Path,
    offset: u64,
    expected_seq: u64,
) -> PathBuf {
    let before = snapshot(dir);
    let error = Wal::open(dir, small_config()).unwrap_err();
    let WalError::CorruptMidLog(refusal) = &error else {
        panic!("expected a refusal, got {error}");
    };
    let MidLogCorruption {
        segment,
        offset: at,
        expected_seq: seq,
        set_aside,
        kept_records,
        intact_seq,
        ..
    } = refusal.as_ref();
    assert_eq!(
        (segment.as_path(), *at, *seq),
        (damaged, offset, expected_seq)
    );
    assert_eq!(*kept_records, expected_seq);
    assert!(*intact_seq >= expected_seq);
    // The message names the file, the offset and the seq.
    let message = error.to_string();
    for needle in [
        damaged.display().to_string(),
        format!("byte {offset}"),
        format!("expected seq {expected_seq}"),
    ] {
        assert!(
            message.contains(&needle),
            "{needle} missing from: {message}"
        );
    }
    let aside = set_aside
        .clone()
        .expect("the damaged bytes are copied aside");
    assert_eq!(
        aside.file_name().unwrap().to_string_lossy(),
        format!(
            "{}.corrupt-{offset}",
            damaged.file_name().unwrap().to_string_lossy()
        )
    );
    let mut after = snapshot(dir);
    let copied = after
        .remove(&aside.file_name().unwrap().to_string_lossy().into_owned())
        .unwrap();
    assert_eq!(after, before, "a refused open changed the log");
    let original = &before[&damaged.file_name().unwrap().to_string_lossy().into_owned()];
    assert!(original[offset as usize..].starts_with(&copied));
    assert!(
        original[offset as usize + copied.len()..]
            .iter()
            .all(|&b| b == 0)
    );
    // Refusing again neither fails differently nor piles up copies.
    assert!(matches!(
        Wal::open(dir, small_config()),
        Err(WalError::CorruptMidLog(_))
    ));
    assert_eq!(snapshot(dir).len(), before.len() + 1);
    aside
}

#[test]
fn a_corrupt_record_before_intact_ones_is_refused_then_repaired_by_the_override() {
    let dir = tempfile::tempdir().unwrap();
    let ends = build_log(dir.path(), 50);
    // A payload byte of record 10, in the middle of its segment.
    let (file, end_of_9) = ends[9].clone();
    assert_eq!(ends[10].0, file, "record 10 shares record 9's segment");
    assert_eq!(
        ends[11].0, file,
        "intact records follow in the same segment"
    );
    flip(&file, end_of_9 + RECORD_HEADER_BYTES as u64 + 2);
    let aside = assert_refused_and_nothing_lost(dir.path(), &file, end_of_9, 10);
    let damaged = fs::read(&file).unwrap();
    let later: Vec<PathBuf> = segment_files(dir.path())
        .into_iter()
        .filter(|f| *f > file)
        .collect();
    assert!(!later.is_empty());
    let later_bytes: Vec<Vec<u8>> = later.iter().map(|f| fs::read(f).unwrap()).collect();

    let wal = Wal::open(dir.path(), repair_config()).unwrap();
    assert_eq!(read_all(&wal).len(), 10);
    let report = wal.recovery().clone();
    assert_eq!(report.records, 10);
    assert_eq!(report.segments_removed, 0);
    // The damaged segment's tail and every later segment are set aside, not deleted.
    assert_eq!(report.set_aside.len(), 1 + later.len());
    assert_eq!(report.set_aside[0].file, aside);
    assert_eq!(report.set_aside[0].offset, end_of_9);
    assert!(damaged[end_of_9 as usize..].starts_with(&fs::read(&aside).unwrap()));
    for (entry, (path, bytes)) in report.set_aside[1..]
        .iter()
        .zip(later.iter().zip(&later_bytes))
    {
        assert_eq!(&entry.segment, path);
        assert!(!path.exists());
        assert_eq!(&fs::read(&entry.file).unwrap(), bytes);
    }
    drop(wal);
    assert_recovers_prefix(dir.path(), 10);
}

#[test]
fn a_corrupt_frame_header_before_intact_records_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ends = build_log(dir.path(), 50);
    let (file, end_of_19) = ends[19].clone();
    assert_eq!(ends[21].0, file);
    // The length field of record 20.
    flip(&file, end_of_19 + 5);
    assert_refused_and_nothing_lost(dir.path(), &file, end_of_19, 20);
    let wal = Wal::open(dir.path(), repair_config()).unwrap();
    assert_eq!(wal.next_seq(), 20);
    drop(wal);
    assert_recovers_prefix(dir.path(), 20);
}

#[test]
fn a_corrupt_last_record_of_a_segment_is_refused_when_later_segments_hold_records() {
    let dir = tempfile::tempdir().unwrap();
    let ends = build_log(dir.path(), 50);
    // The last record of the first segment: the intact records are in the next one.
    let first_file = segment_files(dir.path())[0].clone();
    let last_in_first = ends.iter().rposition(|(f, _)| *f == first_file).unwrap();
    let start = ends[last_in_first - 1].1;
    flip(&first_file, start + RECORD_HEADER_BYTES as u64);
    assert_refused_and_nothing_lost(dir.path(), &first_file, start, last_in_first as u64);
}

#[test]
fn a_bad_segment_header_before_intact_records_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 50);
    let second = segment_files(dir.path())[1].clone();
    let first_of_second =
        parse_segment_name(second.file_name().unwrap().to_str().unwrap()).unwrap();
    flip(&second, 3);
    assert_refused_and_nothing_lost(dir.path(), &second, 0, first_of_second);
    let wal = Wal::open(dir.path(), repair_config()).unwrap();
    assert_eq!(wal.next_seq(), first_of_second);
    drop(wal);
    assert_recovers_prefix(dir.path(), first_of_second);
}

#[test]
fn a_missing_segment_before_intact_ones_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 80);
    let files = segment_files(dir.path());
    assert!(files.len() >= 4);
    fs::remove_file(&files[1]).unwrap();
    let before = snapshot(dir.path());
    let error = Wal::open(dir.path(), small_config()).unwrap_err();
    let WalError::CorruptMidLog(refusal) = &error else {
        panic!("expected a refusal, got {error}");
    };
    assert_eq!(refusal.segment, files[2]);
    assert_eq!(refusal.set_aside, None);
    assert_eq!(snapshot(dir.path()), before);
    let first_of_second =
        parse_segment_name(files[1].file_name().unwrap().to_str().unwrap()).unwrap();
    let wal = Wal::open(dir.path(), repair_config()).unwrap();
    assert_eq!(wal.next_seq(), first_of_second);
    assert_eq!(wal.recovery().set_aside.len(), files.len() - 2);
}

#[test]
fn a_torn_last_record_is_truncated_without_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let ends = build_log(dir.path(), 50);
    let (file, end_of_48) = ends[48].clone();
    assert_eq!(ends[49].0, file);
    flip(&file, end_of_48 + RECORD_HEADER_BYTES as u64 + 1);
    let wal = Wal::open(dir.path(), small_config()).unwrap();
    let (at_file, at, _) = wal.recovery().truncated_at.clone().unwrap();
    assert_eq!((at_file, at), (file, end_of_48));
    assert!(wal.recovery().set_aside.is_empty());
    drop(wal);
    assert_recovers_prefix(dir.path(), 49);
}

#[test]
fn set_aside_copies_never_overwrite_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("x.wal");
    let first = aside_path(&base, 7, Some(b"one"));
    fs::write(&first, b"one").unwrap();
    assert_eq!(aside_path(&base, 7, Some(b"one")), first);
    let second = aside_path(&base, 7, Some(b"two"));
    assert_ne!(second, first);
    assert!(second.to_string_lossy().ends_with("x.wal.corrupt-7.1"));
    assert_ne!(aside_path(&base, 7, None), first);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Flipping bytes anywhere in the data either cuts a torn tail (no intact record
    /// after the first damaged one) or is refused with the log unchanged; the override
    /// then yields exactly the records before the first damaged one: a prefix, never
    /// garbage, never a hole.
    #[test]
    fn flipped_bytes_are_refused_or_cut_to_the_prefix_before_the_damage(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let template = tempfile::tempdir().unwrap();
        let ends = build_log(template.path(), 40);
        let files = segment_files(template.path());
        // Every (file, offset) that holds a header or record byte.
        let mut data: Vec<(PathBuf, u64)> = Vec::new();
        for file in &files {
            let end = ends.iter().filter(|(f, _)| f == file).map(|(_, e)| *e).max().unwrap_or(16);
            data.extend((0..end).map(|o| (file.clone(), o)));
        }
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        // Records whose frame bytes were hit, and the first record cut off (a hit
        // segment header cuts its first record without damaging it).
        let mut damaged = std::collections::BTreeSet::new();
        let mut first_damaged = ends.len() as u64;
        for (index, mask) in flips {
            let (file, offset) = &data[index.index(data.len())];
            let path = dir.path().join(file.file_name().unwrap());
            let mut bytes = fs::read(&path).unwrap();
            bytes[*offset as usize] ^= mask;
            fs::write(&path, bytes).unwrap();
            // The record this byte belongs to: the first whose end lies past it in
            // this file, or (segment header) the first record of this file.
            let hit = ends
                .iter()
                .position(|(f, end)| f == file && *end > *offset)
                .unwrap_or(ends.len()) as u64;
            first_damaged = first_damaged.min(hit);
            if *offset >= SEGMENT_HEADER_BYTES as u64 {
                damaged.insert(hit);
            }
        }
        let intact_after = (first_damaged..ends.len() as u64).any(|r| !damaged.contains(&r));
        let before = snapshot(dir.path());
        match Wal::open(dir.path(), small_config()) {
            Ok(wal) => {
                prop_assert!(!intact_after, "opened although intact records follow the damage");
                drop(wal);
            }
            Err(WalError::CorruptMidLog(refusal)) => {
                prop_assert!(intact_after, "refused a torn tail");
                prop_assert_eq!(refusal.kept_records, first_damaged);
                let mut after = snapshot(dir.path());
                after.retain(|name, _| !name.contains(".corrupt-"));
                prop_assert_eq!(after, before);
                drop(Wal::open(dir.path(), repair_config()).unwrap());
            }
            Err(other) => panic!("unexpected {other}"),
        }
        assert_recovers_prefix(dir.path(), first_damaged);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append(u8),
    Reopen,
    TruncateBefore(prop::sample::Index),
    ReadFrom(prop::sample::Index),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..=190).prop_map(Op::Append),
        1 => Just(Op::Reopen),
        1 => any::<prop::sample::Index>().prop_map(Op::TruncateBefore),
        2 => any::<prop::sample::Index>().prop_map(Op::ReadFrom),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any mix of appends, reopens, compactions and reads behaves like a plain vector
    /// of records whose prefix may be dropped.
    #[test]
    fn the_log_behaves_like_a_vector(ops in proptest::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), small_config()).unwrap();
        let mut model: Vec<Vec<u8>> = Vec::new();
        for op in ops {
            match op {
                Op::Append(len) => {
                    let body = vec![len; len as usize];
                    prop_assert_eq!(wal.append_blocking(body.clone()).unwrap(), model.len() as u64);
                    model.push(body);
                }
                Op::Reopen => {
                    drop(wal);
                    wal = Wal::open(dir.path(), small_config()).unwrap();
                    prop_assert_eq!(wal.recovery().truncated_at.clone(), None);
                }
                Op::TruncateBefore(at) => {
                    let first = wal.first_seq() as usize;
                    let seq = (first + at.index(model.len() - first + 1)) as u64;
                    wal.truncate_before(seq).unwrap();
                    prop_assert!(wal.first_seq() <= seq);
                    prop_assert!(wal.first_seq() >= first as u64);
                }
                Op::ReadFrom(at) => {
                    let first = wal.first_seq() as usize;
                    let from = first + at.index(model.len() - first + 1);
                    let records = wal.read(from as u64, usize::MAX).unwrap();
                    prop_assert_eq!(records.len(), model.len() - from);
                    for record in records {
                        prop_assert_eq!(&record.payload, &model[record.seq as usize]);
                    }
                }
            }
            prop_assert_eq!(wal.next_seq(), model.len() as u64);
        }
    }
}

#[test]
fn a_directory_is_opened_by_one_log_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = Wal::open(dir.path(), small_config()).unwrap();
    match Wal::open(dir.path(), small_config()) {
        Err(WalError::InUse(path)) => assert_eq!(path, dir.path()),
        other => panic!("a second open must be refused, got {other:?}"),
    }
    drop(first);
    // Closing releases the lock.
    Wal::open(dir.path(), small_config()).unwrap();
}

/// Found by the `wal_recovery` fuzz target: a segment named and headed for seq
/// `u64::MAX` holding a valid frame made recovery overflow `next_seq` (a panic in
/// debug builds, a wrap to seq 0 in release). The frame is now cut, precisely.
#[test]
fn a_frame_at_the_last_seq_is_cut_not_overflowed() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    format::encode_segment_header(&mut bytes, u64::MAX);
    format::encode_record(&mut bytes, u64::MAX, b"last");
    let path = segment_path(dir.path(), u64::MAX);
    fs::write(&path, &bytes).unwrap();
    let wal = Wal::open(dir.path(), small_config()).unwrap();
    assert_eq!(wal.recovery().records, 0);
    let (cut_file, offset, reason) = wal.recovery().truncated_at.clone().unwrap();
    assert_eq!(
        (cut_file, offset, reason.as_str()),
        (
            path,
            SEGMENT_HEADER_BYTES as u64,
            "sequence numbers exhausted"
        )
    );
    assert_eq!(wal.next_seq(), u64::MAX);
    assert!(read_all(&wal).is_empty());
}

#[test]
fn zeroed_records_before_intact_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ends = build_log(dir.path(), 50);
    let (file, end_of_9) = ends[9].clone();
    let (_, end_of_12) = ends[12].clone();
    assert_eq!(ends[13].0, file);
    // Records 10..=12 read back as zeros (a lost page, say): they look like the end of
    // the data, but record 13 follows.
    let mut bytes = fs::read(&file).unwrap();
    bytes[end_of_9 as usize..end_of_12 as usize].fill(0);
    fs::write(&file, bytes).unwrap();
    assert_refused_and_nothing_lost(dir.path(), &file, end_of_9, 10);
}
