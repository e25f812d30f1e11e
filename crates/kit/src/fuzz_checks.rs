//! The checks behind the kit's fuzz targets, shared by `crates/kit/fuzz` (cargo fuzz,
//! nightly) and `tests/fuzz_corpus.rs` (the committed corpus replayed on stable), so
//! each check exists once.
//!
//! Each check takes arbitrary bytes, feeds them to one parser and asserts more than
//! "no panic": accepted values round-trip, rejected ones get a precise error, and a
//! WAL recovered from arbitrary bytes is a clean prefix that reopens unchanged. A
//! failed check panics — that is how libFuzzer and the replay test see it.
//!
//! Not a public API: hidden from the docs, and only for fuzzing and its replay.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::api::parse_json;
use crate::discovery::Registration;
use crate::events::Event;
use crate::metrics_push::{BatchError, PublishBatch};
use crate::telemetry::{
    MAX_REQUEST_ID_LEN, REQUEST_ID_HEADER, TRACEPARENT_HEADER, TraceContext, parse_traceparent,
};
use crate::wal::format::{self, FrameError, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::wal::{Durability, MidLogCorruption, Repair, Wal, WalConfig, WalError};

/// A fuzz check: arbitrary bytes in, a panic if an invariant breaks.
pub type Check = fn(&[u8]);

/// Runs every committed corpus file of a crate's fuzz targets through its check,
/// and requires a `fuzz_targets/<name>.rs` and a non-empty corpus per target: the
/// stable half of fuzzing, shared by every crate's `tests/fuzz_corpus.rs`.
pub fn replay_corpus(fuzz_dir: &std::path::Path, targets: &[(&str, Check)]) {
    for (target, check) in targets {
        let target_file = fuzz_dir.join("fuzz_targets").join(format!("{target}.rs"));
        assert!(
            target_file.is_file(),
            "missing fuzz target {}",
            target_file.display()
        );
        let dir = fuzz_dir.join("corpus").join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
            .map(|entry| entry.expect("corpus entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "corpus {target} is empty");
        for file in files {
            let data = std::fs::read(&file).expect("read corpus file");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{target}: {} fails its check",
                file.display()
            );
        }
    }
}

/// Every input of one target, sorted: the corpus `cargo fuzz` grew
/// (`<fuzz_dir>/corpus/<target>`) and the hand-made seeds and crash reproducers
/// (`<fuzz_dir>/seeds/<target>`, which `cmin` must not prune). Each of the two must
/// hold at least `min_each` files, so a replay cannot pass on an emptied corpus.
pub fn corpus_and_seeds(fuzz_dir: &Path, target: &str, min_each: usize) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for kind in ["corpus", "seeds"] {
        let dir = fuzz_dir.join(kind).join(target);
        let before = files.len();
        for entry in std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("corpus {}: {error}", dir.display()))
        {
            let path = entry.expect("corpus entry").path();
            if path.is_file() {
                let data = std::fs::read(&path).expect("corpus file");
                files.push((path, data));
            }
        }
        assert!(
            files.len() - before >= min_each,
            "{} is nearly empty",
            dir.display()
        );
    }
    files.sort();
    files
}

/// Every kit target, by the name of its fuzz target and corpus directory.
pub const TARGETS: &[(&str, Check)] = &[
    ("traceparent", traceparent),
    ("trace_headers", trace_headers),
    ("registration_json", registration_json),
    ("publish_batch_json", publish_batch_json),
    ("wal_frame", wal_frame),
    ("wal_recovery", wal_recovery),
    ("idempotency_key", idempotency_key),
    ("idempotency_record", idempotency_record),
    ("event_json", event_json),
    ("outbox_entry", outbox_entry),
];

/// `parse_traceparent`: an accepted value has non-zero ids and re-renders, through
/// [`TraceContext::traceparent`], to a value that parses to the same ids and flag.
pub fn traceparent(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((trace_id, parent_id, sampled)) = parse_traceparent(text) else {
        return;
    };
    assert!(
        trace_id.iter().any(|&b| b != 0),
        "all-zero trace id accepted"
    );
    assert!(
        parent_id.iter().any(|&b| b != 0),
        "all-zero parent id accepted"
    );
    assert_eq!(
        text.trim().len(),
        55,
        "accepted a traceparent of the wrong length"
    );
    let context = TraceContext {
        request_id: String::new(),
        trace_id,
        span_id: parent_id,
        sampled,
    };
    let rendered = context.traceparent();
    assert_eq!(
        parse_traceparent(&rendered),
        Some((trace_id, parent_id, sampled)),
        "{rendered} does not round-trip"
    );
    // Lowercase hex only: what was accepted is what is rendered, up to the flags.
    assert_eq!(rendered[..52], text.trim()[..52]);
}

/// `TraceContext::from_headers` over arbitrary `name: value` lines: the context always
/// has non-zero ids and a valid request id, keeps the caller's trace when its
/// `traceparent` is valid, and renders a `traceparent` that parses back.
pub fn trace_headers(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    let context = TraceContext::from_headers(&headers);
    assert!(context.trace_id.iter().any(|&b| b != 0));
    assert!(context.span_id.iter().any(|&b| b != 0));
    let id = &context.request_id;
    assert!(
        !id.is_empty()
            && id.len() <= MAX_REQUEST_ID_LEN
            && id.bytes().all(|b| b.is_ascii_graphic()),
        "invalid request id kept: {id:?}"
    );
    let caller = headers
        .get(TRACEPARENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    if let Some((trace_id, _, sampled)) = caller {
        assert_eq!(
            context.trace_id, trace_id,
            "the caller's trace was not kept"
        );
        assert_eq!(context.sampled, sampled);
    }
    if let Some(given) = headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok())
        && context.request_id != given
    {
        // Replaced only when invalid.
        assert!(
            given.is_empty()
                || given.len() > MAX_REQUEST_ID_LEN
                || !given.bytes().all(|b| b.is_ascii_graphic()),
            "valid request id {given:?} replaced"
        );
    }
    let own = context.traceparent();
    assert_eq!(
        parse_traceparent(&own),
        Some((context.trace_id, context.span_id, context.sampled))
    );
    let child = parse_traceparent(&context.child_traceparent()).expect("child traceparent parses");
    assert_eq!(child.0, context.trace_id);
    assert_eq!(child.2, context.sampled);
}

/// An `ApiError` from `parse_json` is a 400 with a message, and a field name only
/// when there is one.
fn assert_precise(error: &crate::api::ApiError) {
    assert_eq!(error.status, http::StatusCode::BAD_REQUEST);
    assert!(!error.error.is_empty());
    if let Some(field) = &error.field {
        assert!(!field.is_empty(), "empty field name in {error:?}");
    }
}

/// `parse_json::<Registration>` (discovery's register body): an accepted body
/// re-serialises and parses to the same value; a refused one gets a precise error.
pub fn registration_json(data: &[u8]) {
    match parse_json::<Registration>(data) {
        Ok(registration) => {
            let again: Registration =
                parse_json(&serde_json::to_vec(&registration).expect("a registration serialises"))
                    .expect("a serialised registration parses");
            assert_eq!(again, registration);
        }
        Err(error) => assert_precise(&error),
    }
}

/// `parse_json::<PublishBatch>` and `PublishBatch::validate` (the metrics publish
/// body): an accepted, valid batch re-serialises, parses and validates again to the
/// same count; a refused one names the field at fault.
pub fn publish_batch_json(data: &[u8]) {
    let batch = match parse_json::<PublishBatch>(data) {
        Ok(batch) => batch,
        Err(error) => return assert_precise(&error),
    };
    match batch.validate() {
        Ok(values) => {
            let counted: usize = batch.metrics.iter().map(|dp| dp.samples().len()).sum();
            assert_eq!(values, counted);
            let again: PublishBatch =
                parse_json(&serde_json::to_vec(&batch).expect("a batch serialises"))
                    .expect("a serialised batch parses");
            assert_eq!(again.validate(), Ok(values));
            assert_eq!(again.tags, batch.tags);
            assert_eq!(again.metrics.len(), batch.metrics.len());
            for (a, b) in again.metrics.iter().zip(&batch.metrics) {
                assert_eq!(
                    (&a.name, &a.tags, a.timestamp, a.kind),
                    (&b.name, &b.tags, b.timestamp, b.kind)
                );
                assert_eq!(a.value.is_some(), b.value.is_some());
                assert_eq!(a.samples().len(), b.samples().len());
                for (x, y) in a.samples().iter().zip(b.samples()) {
                    assert!(floats_close(*x, *y), "{x} became {y}");
                }
            }
        }
        Err(BatchError::Invalid { field, reason }) => {
            assert!(field == "tags" || field.starts_with("tags.") || field.starts_with("metrics["));
            assert!(!reason.is_empty());
        }
        Err(BatchError::TooLarge { got, limit, .. }) => assert!(got > limit),
    }
}

/// serde_json's default float parser may be one ULP off its own output (without the
/// `float_roundtrip` feature), so re-parsed floats are compared to within that.
fn floats_close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= f64::EPSILON * 4.0 * a.abs().max(b.abs())
}

/// JSON values equal up to [`floats_close`].
fn json_close(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(x), Some(y)) if floats_close(x, y))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_close(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && json_close(vx, vy))
        }
        _ => a == b,
    }
}

fn events_close(a: &Event, b: &Event) -> bool {
    (&a.id, &a.event_type, &a.key, a.time_ms, &a.headers)
        == (&b.id, &b.event_type, &b.key, b.time_ms, &b.headers)
        && json_close(&a.payload, &b.payload)
}

/// `format::decode_record`: a frame decoded from arbitrary bytes is exactly the
/// encoding of its payload and seq; any payload and seq round-trip; a cut frame is
/// never accepted.
pub fn wal_frame(data: &[u8]) {
    const MAX: usize = 1 << 16;
    if let Some(head) = data.first_chunk::<RECORD_HEADER_BYTES>() {
        let seq = format::decode_header(head).seq;
        if let Ok((payload, size)) = format::decode_record(data, seq, MAX) {
            assert_eq!(size, RECORD_HEADER_BYTES + payload.len());
            let mut encoded = Vec::new();
            format::encode_record(&mut encoded, seq, payload);
            assert_eq!(
                encoded,
                data[..size],
                "decoded frame differs from its encoding"
            );
            assert_eq!(
                format::decode_record(data, seq.wrapping_add(1), MAX),
                Err(FrameError::OutOfSequence)
            );
        }
    }
    let _ = format::decode_segment_header(data);
    // The input as a payload: it round-trips and no strict prefix of it decodes.
    let seq = data.len() as u64 * 7919;
    let mut encoded = Vec::new();
    format::encode_record(&mut encoded, seq, data);
    assert_eq!(
        format::decode_record(&encoded, seq, MAX),
        Ok((data, encoded.len()))
    );
    for cut in [
        encoded.len() - 1,
        RECORD_HEADER_BYTES,
        RECORD_HEADER_BYTES / 2,
    ] {
        assert!(format::decode_record(&encoded[..cut.min(encoded.len() - 1)], seq, MAX).is_err());
    }
}

/// A scratch directory under the system temp dir, removed on drop (the kit has no
/// `tempfile` dependency outside tests, and this runs inside fuzz targets too).
#[derive(Debug)]
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "casebook-fuzz-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The records a segment holding `bytes` must recover to, computed with the frame
/// decoder alone: the intact prefix starting at the header's first seq, short of
/// seq `u64::MAX` (no seq would follow it).
fn expected_prefix(bytes: &[u8], first: u64) -> Vec<(u64, Vec<u8>)> {
    let mut records = Vec::new();
    if format::decode_segment_header(bytes) != Some(first) {
        return records;
    }
    let mut position = SEGMENT_HEADER_BYTES;
    let mut seq = first;
    while seq < u64::MAX
        && let Ok((payload, size)) = format::decode_record(&bytes[position..], seq, bytes.len())
    {
        records.push((seq, payload.to_vec()));
        position += size;
        seq += 1;
    }
    records
}

fn read_all(wal: &Wal) -> Vec<(u64, Vec<u8>)> {
    wal.read(wal.first_seq(), usize::MAX)
        .expect("a recovered log reads back")
        .into_iter()
        .map(|r| (r.seq, r.payload))
        .collect()
}

/// WAL recovery over arbitrary bytes written as a segment file: `Wal::open` never
/// panics. It either opens to exactly the intact prefix (a torn tail cut), or refuses
/// with [`WalError::CorruptMidLog`] — pointing at an intact frame after the damage,
/// the segment left byte-for-byte unchanged, the bytes from the cut copied aside —
/// and then opens to that same prefix under [`Repair::TruncateAfterCopy`]. Either way
/// the result reopens to the same records with nothing more to repair, and appends
/// after them.
pub fn wal_recovery(data: &[u8]) {
    // Name the segment after the header's first seq when there is one, so the
    // fuzzer reaches the frames; a bad header under seq 0 exercises the repair.
    let first = format::decode_segment_header(data).unwrap_or(0);
    let scratch = ScratchDir::new();
    let dir = scratch.path();
    let segment = dir.join(format!("{first:020}.wal"));
    std::fs::write(&segment, data).expect("write the segment");
    let config = WalConfig {
        segment_bytes: 8192,
        max_record_bytes: 2048,
        max_batch_records: 16,
        max_batch_bytes: 8192,
        queue_capacity: 16,
        durability: Durability::NoSync,
        repair: Repair::Refuse,
    };
    let expected = expected_prefix(data, first);
    let opened = match Wal::open(dir, config.clone()) {
        Ok(wal) => wal,
        Err(WalError::CorruptMidLog(refusal)) => {
            let MidLogCorruption {
                segment: named,
                offset,
                expected_seq,
                intact_segment,
                intact_offset,
                intact_seq,
                set_aside,
                kept_records,
                ..
            } = *refusal;
            assert_eq!(named, segment);
            assert_eq!(intact_segment, segment);
            assert_eq!(kept_records, expected.len() as u64);
            assert_eq!(expected_seq, first + kept_records);
            assert!(
                intact_offset >= offset,
                "the intact frame precedes the damage"
            );
            assert!(intact_seq >= expected_seq, "the intact frame is an old seq");
            let at = intact_offset as usize;
            assert!(
                format::decode_record(&data[at..], intact_seq, data.len()).is_ok(),
                "the reported intact frame does not decode"
            );
            assert_eq!(
                std::fs::read(&segment).expect("read the segment"),
                data,
                "a refused open changed the segment"
            );
            let aside = set_aside.expect("damaged bytes are copied aside");
            let copied = std::fs::read(&aside).expect("read the set-aside file");
            assert!(
                data[offset as usize..].starts_with(&copied),
                "the set-aside file is not the bytes from the cut"
            );
            let repair = WalConfig {
                repair: Repair::TruncateAfterCopy,
                ..config.clone()
            };
            let wal = Wal::open(dir, repair).expect("the override opens a refused log");
            assert_eq!(wal.recovery().set_aside.len(), 1);
            assert_eq!(wal.recovery().set_aside[0].file, aside);
            wal
        }
        Err(other) => panic!("recovery failed on bad bytes: {other}"),
    };
    let recovered = {
        let records = read_all(&opened);
        assert_eq!(
            records, expected,
            "recovery kept something other than the intact prefix"
        );
        assert_eq!(opened.recovery().records, expected.len() as u64);
        drop(opened);
        records
    };
    let wal = Wal::open(dir, config).expect("a repaired log reopens");
    assert_eq!(
        wal.recovery().truncated_at,
        None,
        "the repair did not stick"
    );
    assert_eq!(read_all(&wal), recovered, "reopening changed the records");
    if wal.next_seq() < u64::MAX {
        let seq = wal
            .append_blocking(b"after recovery".to_vec())
            .expect("append after recovery");
        assert_eq!(seq, first + recovered.len() as u64);
        let last = read_all(&wal).pop().expect("the appended record");
        assert_eq!(last, (seq, b"after recovery".to_vec()));
    }
}

/// `IdempotencyKey::parse`: an accepted key is 1..=255 printable ASCII characters,
/// and parses to itself bare (unless it looks quoted) and as a quoted string.
pub fn idempotency_key(data: &[u8]) {
    use crate::idempotency::{IdempotencyError, IdempotencyKey, MAX_KEY_LEN};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match IdempotencyKey::parse(text) {
        Ok(key) => {
            let k = key.as_str();
            assert!((1..=MAX_KEY_LEN).contains(&k.len()));
            assert!(k.bytes().all(|b| (b' '..=b'~').contains(&b)));
            let quoted = IdempotencyKey::parse(&format!("\"{k}\"")).expect("a quoted key parses");
            assert_eq!(quoted, key);
            let looks_quoted = k.len() >= 2 && k.starts_with('"') && k.ends_with('"');
            if !looks_quoted {
                assert_eq!(IdempotencyKey::parse(k).expect("a key parses bare"), key);
            }
        }
        Err(IdempotencyError::InvalidKey(reason)) => assert!(!reason.is_empty()),
        Err(other) => panic!("parse returned {other:?}"),
    }
}

/// The idempotency store's WAL record decoder: a decoded record re-encodes to bytes
/// that decode to the same record.
pub fn idempotency_record(data: &[u8]) {
    use crate::idempotency::{decode_record, encode_record};
    let Some((key, fingerprint, completed, response)) = decode_record(data) else {
        return;
    };
    let encoded = encode_record(&key, fingerprint, completed, &response)
        .expect("decoded fields fit their length prefixes");
    assert_eq!(
        decode_record(&encoded),
        Some((key, fingerprint, completed, response)),
        "a decoded record does not round-trip"
    );
}

/// An event as the WAL bus decodes it from a record: a decoded event re-serialises
/// to one that decodes equal.
pub fn event_json(data: &[u8]) {
    let Ok(event) = serde_json::from_slice::<Event>(data) else {
        return;
    };
    let again: Event = serde_json::from_slice(&serde_json::to_vec(&event).expect("serialises"))
        .expect("a serialised event decodes");
    assert!(events_close(&again, &event), "{event:?} became {again:?}");
}

/// An outbox entry as `Outbox::entries` (and so `EventStore::open`) decodes it, and
/// the event store's change record inside: decoded values re-encode to bytes that
/// decode equal.
pub fn outbox_entry(data: &[u8]) {
    use crate::event_store::Change;
    use crate::outbox::{decode_entry, encode_entry};
    let entry = match decode_entry(7, data) {
        Ok(entry) => entry,
        Err(crate::events::BusError::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, 7);
            return assert!(!reason.is_empty());
        }
        Err(other) => panic!("decode_entry returned {other:?}"),
    };
    let again = decode_entry(7, &encode_entry(entry.change.clone(), entry.events.clone()))
        .expect("an encoded entry decodes");
    assert!(json_close(&again.change, &entry.change));
    assert_eq!(again.events.len(), entry.events.len());
    for (a, b) in again.events.iter().zip(&entry.events) {
        assert_eq!(a.topic, b.topic);
        assert!(events_close(&a.event, &b.event));
    }
    if let Ok(change) = serde_json::from_value::<Change<serde_json::Value>>(entry.change) {
        let value = serde_json::to_value(&change).expect("a change serialises");
        let back: Change<serde_json::Value> =
            serde_json::from_value(value.clone()).expect("a serialised change decodes");
        assert_eq!(serde_json::to_value(&back).expect("serialises"), value);
    }
}
