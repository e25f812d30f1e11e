//! The invariants of the case's fuzz targets (`crates/amazon/fuzz`), shared with
//! the stable corpus replay (`tests/fuzz_corpus.rs`) so both exercise the same
//! property. Each function panics when an invariant breaks; malformed input
//! refused with an error is the expected outcome, not a finding.

use std::time::Duration;

use crate::error::CodedError;
use crate::inventory::embedded::record::Record;
use crate::inventory::embedded::snapshot::Image;
use crate::inventory::http::{CheckedReservation, Limits, parse_stock};

/// A check over one fuzz input.
pub type Check = fn(&[u8]);

/// Every target, by the name of its fuzz target and corpus directory.
pub const TARGETS: &[(&str, Check)] = &[
    ("request_bodies", request_bodies),
    ("inventory_record", inventory_record),
    ("inventory_snapshot", inventory_snapshot),
];

const LIMITS: Limits = Limits {
    max_line_qty: 100,
    default_ttl: Duration::from_secs(900),
    max_ttl: Duration::from_secs(86_400),
};

/// A refusal is a 400 with a code, a message, and a field that names something.
fn refused_well(error: &CodedError, input: &[u8]) {
    assert_eq!(error.status.as_u16(), 400, "{error} for {input:?}");
    assert!(
        matches!(error.code, "invalid_json" | "invalid_field"),
        "{error}"
    );
    assert!(!error.error.is_empty());
    assert!(error.field.as_deref() != Some(""), "an empty field name");
}

/// The first byte picks the body (even: a reservation, odd: a stock level); the
/// rest is the body. Accepted ⇒ within the limits, and its canonical JSON parses
/// to the same request with the same fingerprint; refused ⇒ a coded 400.
pub fn request_bodies(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    if pick % 2 == 0 {
        match CheckedReservation::parse(body, &LIMITS) {
            Ok(request) => {
                assert!((1..=LIMITS.max_line_qty).contains(&request.qty));
                assert!(request.ttl >= Duration::from_secs(1) && request.ttl <= LIMITS.max_ttl);
                let canonical = serde_json::json!({
                    "sku": request.sku.as_str(),
                    "qty": request.qty,
                    "ttl_seconds": request.ttl.as_secs(),
                });
                let again = CheckedReservation::parse(canonical.to_string().as_bytes(), &LIMITS)
                    .expect("a canonical body parses");
                assert_eq!(again, request);
                assert_eq!(again.fingerprint(), request.fingerprint());
            }
            Err(error) => refused_well(&error, body),
        }
    } else {
        match parse_stock(body) {
            Ok(available) => {
                let canonical = format!(r#"{{"available":{available}}}"#);
                assert_eq!(parse_stock(canonical.as_bytes()).ok(), Some(available));
            }
            Err(error) => refused_well(&error, body),
        }
    }
}

/// A WAL record: what decodes re-encodes to the same bytes (one spelling per
/// record), and never a panic.
pub fn inventory_record(data: &[u8]) {
    if let Ok(record) = Record::decode(data) {
        assert_eq!(record.encode(), data, "{record:?}");
    }
}

/// A snapshot file's body: what decodes re-encodes to bytes that decode equal.
pub fn inventory_snapshot(data: &[u8]) {
    if let Ok(image) = Image::decode(data) {
        let encoded = image.encode();
        assert_eq!(Image::decode(&encoded).as_ref(), Ok(&image));
    }
}
