//! The inventory's snapshot: every SKU, every held reservation and every decided
//! key, with the WAL position a replay continues from.
//!
//! ```text
//! "CBINVS01" replay_from:u64 next_id:u64 saved_at_ms:u64
//! skus:u64  (sku:str available:u64 reserved:u64 confirmed:u64)*
//! held:u64  (id:u64 sku:str qty:u32 created:u64 expires:u64 state:u8 order? ended:u64)*
//! keys:u64  (scope:u8 key:str fingerprint:u128 at_ms:u64 outcome)*
//! outcome = 0:u8 n:u16 (id:u64 sku:str qty:u32 created:u64 expires:u64)*  reserved
//!         | 1:u8 sku:str requested:u64 available:u64                      insufficient
//! ```
//!
//! Written whole through the kit's `Checkpoint` (temporary file, checksum, rename,
//! directory sync): a crash leaves the previous snapshot or this one.

use std::sync::Arc;

use casebook_kit::idempotency::{Fingerprint, IdempotencyKey};

use super::keys::DecidedKey;
use super::record::Reader;
use crate::inventory::model::{
    KeyScope, Reservation, ReservationId, ReservationState, ReserveOutcome, Sku, check_name,
};

const MAGIC: &[u8; 8] = b"CBINVS01";

/// A SKU's counters as saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SavedSku {
    pub sku: Sku,
    pub available: u64,
    pub reserved: u64,
    pub confirmed: u64,
}

/// A held reservation as saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SavedHeld {
    pub id: u64,
    pub sku: Sku,
    pub qty: u32,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub state: ReservationState,
    pub order: Option<String>,
    pub ended_ms: u64,
}

/// The whole state at one WAL position.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Image {
    /// The first record not reflected here.
    pub replay_from: u64,
    pub next_id: u64,
    pub saved_at_ms: u64,
    pub skus: Vec<SavedSku>,
    pub held: Vec<SavedHeld>,
    pub keys: Vec<DecidedKey>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).expect("names and keys are short");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn state_byte(state: ReservationState) -> u8 {
    match state {
        ReservationState::Active => 0,
        ReservationState::Confirmed => 1,
        ReservationState::Released => 2,
        ReservationState::Expired => 3,
    }
}

fn state_from(byte: u8) -> Result<ReservationState, String> {
    Ok(match byte {
        0 => ReservationState::Active,
        1 => ReservationState::Confirmed,
        2 => ReservationState::Released,
        3 => ReservationState::Expired,
        other => return Err(format!("unknown reservation state {other}")),
    })
}

fn count(r: &mut Reader<'_>, each_at_least: usize) -> Result<usize, String> {
    let n = r.u64()?;
    // A count the remaining bytes cannot hold is damage, not a reason to allocate.
    if n > (r.rest.len() / each_at_least) as u64 {
        return Err(format!("{n} entries cannot fit in {} bytes", r.rest.len()));
    }
    Ok(n as usize)
}

impl Image {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 40 * self.skus.len() + 64 * self.held.len());
        out.extend_from_slice(MAGIC);
        for v in [self.replay_from, self.next_id, self.saved_at_ms] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.skus.len() as u64).to_le_bytes());
        for s in &self.skus {
            put_str(&mut out, s.sku.as_str());
            for v in [s.available, s.reserved, s.confirmed] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out.extend_from_slice(&(self.held.len() as u64).to_le_bytes());
        for h in &self.held {
            out.extend_from_slice(&h.id.to_le_bytes());
            put_str(&mut out, h.sku.as_str());
            out.extend_from_slice(&h.qty.to_le_bytes());
            out.extend_from_slice(&h.created_ms.to_le_bytes());
            out.extend_from_slice(&h.expires_ms.to_le_bytes());
            out.push(state_byte(h.state));
            match &h.order {
                None => out.push(0),
                Some(order) => {
                    out.push(1);
                    put_str(&mut out, order);
                }
            }
            out.extend_from_slice(&h.ended_ms.to_le_bytes());
        }
        out.extend_from_slice(&(self.keys.len() as u64).to_le_bytes());
        for k in &self.keys {
            out.push(match k.scope {
                KeyScope::Reservation => 0,
                KeyScope::Checkout => 1,
            });
            put_str(&mut out, k.key.as_str());
            out.extend_from_slice(&k.fingerprint.0.to_le_bytes());
            out.extend_from_slice(&k.at_ms.to_le_bytes());
            match &*k.outcome {
                ReserveOutcome::Reserved(made) => {
                    out.push(0);
                    let n = u16::try_from(made.len()).expect("at most MAX_EFFECTS lines");
                    out.extend_from_slice(&n.to_le_bytes());
                    for r in made {
                        out.extend_from_slice(&r.id.0.to_le_bytes());
                        put_str(&mut out, r.sku.as_str());
                        out.extend_from_slice(&r.qty.to_le_bytes());
                        out.extend_from_slice(&r.created_at_ms.to_le_bytes());
                        out.extend_from_slice(&r.expires_at_ms.to_le_bytes());
                    }
                }
                ReserveOutcome::Insufficient {
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
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader { rest: bytes };
        if r.take(8)? != MAGIC {
            return Err("not an inventory snapshot (bad magic)".to_owned());
        }
        let mut image = Image {
            replay_from: r.u64()?,
            next_id: r.u64()?,
            saved_at_ms: r.u64()?,
            ..Image::default()
        };
        for _ in 0..count(&mut r, 2 + 24)? {
            image.skus.push(SavedSku {
                sku: r.sku()?,
                available: r.u64()?,
                reserved: r.u64()?,
                confirmed: r.u64()?,
            });
        }
        for _ in 0..count(&mut r, 8 + 2 + 4 + 16 + 1 + 1 + 8)? {
            image.held.push(SavedHeld {
                id: r.u64()?,
                sku: r.sku()?,
                qty: r.u32()?,
                created_ms: r.u64()?,
                expires_ms: r.u64()?,
                state: state_from(r.u8()?)?,
                order: match r.u8()? {
                    0 => None,
                    1 => {
                        let order = r.str()?;
                        check_name("order", order)?;
                        Some(order.to_owned())
                    }
                    other => return Err(format!("bad order marker {other}")),
                },
                ended_ms: r.u64()?,
            });
        }
        for _ in 0..count(&mut r, 1 + 2 + 16 + 8 + 1)? {
            let scope = match r.u8()? {
                0 => KeyScope::Reservation,
                1 => KeyScope::Checkout,
                other => return Err(format!("unknown key scope {other}")),
            };
            let key = IdempotencyKey::parse(r.str()?).map_err(|e| e.to_string())?;
            let fingerprint = Fingerprint(r.u128()?);
            let at_ms = r.u64()?;
            let outcome = match r.u8()? {
                0 => {
                    let n = r.u16()?;
                    let mut made = Vec::with_capacity(usize::from(n).min(r.rest.len() / 30));
                    for _ in 0..n {
                        made.push(Reservation {
                            id: ReservationId(r.u64()?),
                            sku: r.sku()?,
                            qty: r.u32()?,
                            state: ReservationState::Active,
                            created_at_ms: r.u64()?,
                            expires_at_ms: r.u64()?,
                            order_id: None,
                        });
                    }
                    ReserveOutcome::Reserved(made)
                }
                1 => ReserveOutcome::Insufficient {
                    sku: r.sku()?,
                    requested: r.u64()?,
                    available: r.u64()?,
                },
                other => return Err(format!("unknown key outcome {other}")),
            };
            image.keys.push(DecidedKey {
                scope,
                key,
                fingerprint,
                at_ms,
                outcome: Arc::new(outcome),
            });
        }
        if !r.rest.is_empty() {
            return Err(format!("{} trailing bytes", r.rest.len()));
        }
        Ok(image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let tea = Sku::parse("tea").unwrap();
        let image = Image {
            replay_from: 42,
            next_id: 9,
            saved_at_ms: 1_000,
            skus: vec![SavedSku {
                sku: tea.clone(),
                available: 5,
                reserved: 2,
                confirmed: 1,
            }],
            held: vec![SavedHeld {
                id: 7,
                sku: tea.clone(),
                qty: 1,
                created_ms: 10,
                expires_ms: 20,
                state: ReservationState::Confirmed,
                order: Some("ord_7".into()),
                ended_ms: 15,
            }],
            keys: vec![
                DecidedKey {
                    scope: KeyScope::Reservation,
                    key: IdempotencyKey::parse("a").unwrap(),
                    fingerprint: Fingerprint(3),
                    at_ms: 10,
                    outcome: Arc::new(ReserveOutcome::Reserved(vec![Reservation {
                        id: ReservationId(7),
                        sku: tea.clone(),
                        qty: 1,
                        state: ReservationState::Active,
                        created_at_ms: 10,
                        expires_at_ms: 20,
                        order_id: None,
                    }])),
                },
                DecidedKey {
                    scope: KeyScope::Checkout,
                    key: IdempotencyKey::parse("b").unwrap(),
                    fingerprint: Fingerprint(4),
                    at_ms: 11,
                    outcome: Arc::new(ReserveOutcome::Insufficient {
                        sku: tea,
                        requested: 9,
                        available: 5,
                    }),
                },
            ],
        };
        let bytes = image.encode();
        assert_eq!(Image::decode(&bytes).unwrap(), image);
        for cut in 0..bytes.len() {
            assert!(Image::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
