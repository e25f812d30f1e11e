//! The inventory's WAL record: one decision, with the idempotency key it answers.
//!
//! Little-endian, version 1:
//!
//! ```text
//! record   = version:u8(=1) at_ms:u64 key? effects
//! key?     = 0:u8 | 1:u8 scope:u8 key:str fingerprint:u128 outcome
//! outcome  = 0:u8                                  (reserved: the record's Reserve effects)
//!          | 1:u8 sku:str requested:u64 available:u64   (insufficient)
//! effects  = count:u16 effect*
//! effect   = 1:u8 sku:str available:u64                  SetStock
//!          | 2:u8 id:u64 sku:str qty:u32 expires_ms:u64  Reserve (created at at_ms)
//!          | 3:u8 id:u64 0:u8 | 3:u8 id:u64 1:u8 order:str   Confirm
//!          | 4:u8 id:u64                                 Release
//!          | 5:u8 id:u64                                 Expire
//! str      = len:u16 utf8
//! ```
//!
//! The key and its outcome sit in the same record as the effects they caused, so
//! after any crash either both are in the log or neither is. Decoding is strict:
//! unknown tags, bad UTF-8, names that would not pass the API's checks and
//! trailing bytes are errors, never guesses.

use casebook_kit::idempotency::{Fingerprint, IdempotencyKey};

use crate::inventory::model::{KeyScope, ReservationId, Sku, check_name};

const VERSION: u8 = 1;
/// The most effects one record holds (a checkout's lines, a sweep's batch).
pub const MAX_EFFECTS: usize = 4096;

/// One change of state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    SetStock {
        sku: Sku,
        available: u64,
    },
    Reserve {
        id: ReservationId,
        sku: Sku,
        qty: u32,
        expires_ms: u64,
    },
    Confirm {
        id: ReservationId,
        order: Option<String>,
    },
    Release {
        id: ReservationId,
    },
    Expire {
        id: ReservationId,
    },
}

/// What a keyed request decided, as stored with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOutcome {
    /// The record's `Reserve` effects are the reservations made.
    Reserved,
    Insufficient {
        sku: Sku,
        requested: u64,
        available: u64,
    },
}

/// The idempotency part of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub scope: KeyScope,
    pub key: IdempotencyKey,
    pub fingerprint: Fingerprint,
    pub outcome: KeyOutcome,
}

/// One WAL record: a decision taken at `at_ms` (wall clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub at_ms: u64,
    pub key: Option<KeyRecord>,
    pub effects: Vec<Effect>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names are at most 64 bytes and keys at most 255 (checked on the way in).
    let len = u16::try_from(s.len()).expect("names and keys are short");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn scope_byte(scope: KeyScope) -> u8 {
    match scope {
        KeyScope::Reservation => 0,
        KeyScope::Checkout => 1,
    }
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 48 * self.effects.len());
        out.push(VERSION);
        out.extend_from_slice(&self.at_ms.to_le_bytes());
        match &self.key {
            None => out.push(0),
            Some(key) => {
                out.push(1);
                out.push(scope_byte(key.scope));
                put_str(&mut out, key.key.as_str());
                out.extend_from_slice(&key.fingerprint.0.to_le_bytes());
                match &key.outcome {
                    KeyOutcome::Reserved => out.push(0),
                    KeyOutcome::Insufficient {
                        sku,
                        requested,
                        available,
                    } => {
                        out.push(1);
                        put_str(&mut out, sku.as_str());
                        out.extend_from_slice(&requested.to_le_bytes());
                        out.extend_from_slice(&available.to_le_bytes());
                    }
                }
            }
        }
        let count = u16::try_from(self.effects.len()).expect("at most MAX_EFFECTS effects");
        out.extend_from_slice(&count.to_le_bytes());
        for effect in &self.effects {
            match effect {
                Effect::SetStock { sku, available } => {
                    out.push(1);
                    put_str(&mut out, sku.as_str());
                    out.extend_from_slice(&available.to_le_bytes());
                }
                Effect::Reserve {
                    id,
                    sku,
                    qty,
                    expires_ms,
                } => {
                    out.push(2);
                    out.extend_from_slice(&id.0.to_le_bytes());
                    put_str(&mut out, sku.as_str());
                    out.extend_from_slice(&qty.to_le_bytes());
                    out.extend_from_slice(&expires_ms.to_le_bytes());
                }
                Effect::Confirm { id, order } => {
                    out.push(3);
                    out.extend_from_slice(&id.0.to_le_bytes());
                    match order {
                        None => out.push(0),
                        Some(order) => {
                            out.push(1);
                            put_str(&mut out, order);
                        }
                    }
                }
                Effect::Release { id } => {
                    out.push(4);
                    out.extend_from_slice(&id.0.to_le_bytes());
                }
                Effect::Expire { id } => {
                    out.push(5);
                    out.extend_from_slice(&id.0.to_le_bytes());
                }
            }
        }
        out
    }

    /// Reads back what [`encode`](Self::encode) wrote; anything else is an error
    /// saying what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader { rest: bytes };
        let version = r.u8()?;
        if version != VERSION {
            return Err(format!("unknown record version {version}"));
        }
        let at_ms = r.u64()?;
        let key = match r.u8()? {
            0 => None,
            1 => {
                let scope = match r.u8()? {
                    0 => KeyScope::Reservation,
                    1 => KeyScope::Checkout,
                    other => return Err(format!("unknown key scope {other}")),
                };
                let raw = r.str()?;
                let key = IdempotencyKey::parse(raw).map_err(|e| e.to_string())?;
                if key.as_str() != raw {
                    return Err("a key is stored as parsed, never quoted".to_owned());
                }
                let fingerprint = Fingerprint(r.u128()?);
                let outcome = match r.u8()? {
                    0 => KeyOutcome::Reserved,
                    1 => KeyOutcome::Insufficient {
                        sku: r.sku()?,
                        requested: r.u64()?,
                        available: r.u64()?,
                    },
                    other => return Err(format!("unknown key outcome {other}")),
                };
                Some(KeyRecord {
                    scope,
                    key,
                    fingerprint,
                    outcome,
                })
            }
            other => return Err(format!("bad key marker {other}")),
        };
        let count = usize::from(r.u16()?);
        if count > MAX_EFFECTS {
            return Err(format!("{count} effects, at most {MAX_EFFECTS}"));
        }
        let mut effects = Vec::with_capacity(count);
        for _ in 0..count {
            effects.push(match r.u8()? {
                1 => Effect::SetStock {
                    sku: r.sku()?,
                    available: r.u64()?,
                },
                2 => Effect::Reserve {
                    id: ReservationId(r.u64()?),
                    sku: r.sku()?,
                    qty: r.u32()?,
                    expires_ms: r.u64()?,
                },
                3 => Effect::Confirm {
                    id: ReservationId(r.u64()?),
                    order: match r.u8()? {
                        0 => None,
                        1 => {
                            let order = r.str()?;
                            check_name("order", order)?;
                            Some(order.to_owned())
                        }
                        other => return Err(format!("bad order marker {other}")),
                    },
                },
                4 => Effect::Release {
                    id: ReservationId(r.u64()?),
                },
                5 => Effect::Expire {
                    id: ReservationId(r.u64()?),
                },
                other => return Err(format!("unknown effect tag {other}")),
            });
        }
        if !r.rest.is_empty() {
            return Err(format!("{} trailing bytes", r.rest.len()));
        }
        Ok(Self {
            at_ms,
            key,
            effects,
        })
    }
}

/// A cursor over a byte string whose every read is checked.
pub(crate) struct Reader<'a> {
    pub(crate) rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let (head, rest) = self
            .rest
            .split_at_checked(n)
            .ok_or_else(|| format!("truncated: {n} bytes wanted, {} left", self.rest.len()))?;
        self.rest = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub(crate) fn u128(&mut self) -> Result<u128, String> {
        Ok(u128::from_le_bytes(
            self.take(16)?.try_into().expect("16 bytes"),
        ))
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, String> {
        let len = usize::from(self.u16()?);
        std::str::from_utf8(self.take(len)?).map_err(|e| format!("bad UTF-8: {e}"))
    }

    pub(crate) fn sku(&mut self) -> Result<Sku, String> {
        Sku::parse(self.str()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sku(s: &str) -> Sku {
        Sku::parse(s).unwrap()
    }

    fn sample() -> Record {
        Record {
            at_ms: 1_700_000_000_000,
            key: Some(KeyRecord {
                scope: KeyScope::Checkout,
                key: IdempotencyKey::parse("k-1").unwrap(),
                fingerprint: Fingerprint(u128::MAX - 7),
                outcome: KeyOutcome::Insufficient {
                    sku: sku("tea"),
                    requested: 3,
                    available: 2,
                },
            }),
            effects: vec![
                Effect::SetStock {
                    sku: sku("tea"),
                    available: 9,
                },
                Effect::Reserve {
                    id: ReservationId(7),
                    sku: sku("cup"),
                    qty: 2,
                    expires_ms: 1_700_000_900_000,
                },
                Effect::Confirm {
                    id: ReservationId(7),
                    order: Some("ord_7".into()),
                },
                Effect::Confirm {
                    id: ReservationId(8),
                    order: None,
                },
                Effect::Release {
                    id: ReservationId(9),
                },
                Effect::Expire {
                    id: ReservationId(10),
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let record = sample();
        assert_eq!(Record::decode(&record.encode()).unwrap(), record);
        let plain = Record {
            key: None,
            ..sample()
        };
        assert_eq!(Record::decode(&plain.encode()).unwrap(), plain);
    }

    #[test]
    fn every_truncation_and_any_trailing_byte_is_refused() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(Record::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Record::decode(&longer).unwrap_err().contains("trailing"));
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder; whatever decodes re-encodes to
        /// the same bytes (the format has one spelling per record).
        #[test]
        fn decoding_arbitrary_bytes_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(record) = Record::decode(&bytes) {
                prop_assert_eq!(record.encode(), bytes);
            }
        }
    }
}
