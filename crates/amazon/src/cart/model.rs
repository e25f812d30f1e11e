//! What the cart's HTTP faces agree on: the shape of users, SKUs and quantities,
//! the context token a client reads and sends back, the JSON view of a cart, and
//! the machine-readable error codes.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use casebook_kit::api::ApiError;
use serde::{Deserialize, Serialize};

use super::CartLine;
use super::crdt::{self, ActorId, Cart, Limits, MAX_COUNTER, VClock};

/// The longest user id and SKU.
pub const MAX_ID_LEN: usize = 64;
/// Most entries of a context token (one per replica that ever wrote the cart).
pub const MAX_CONTEXT_ENTRIES: usize = 64;

/// Error codes of the cart API (the `code` of every error body).
pub mod code {
    pub const INVALID_USER: &str = "invalid_user";
    pub const INVALID_SKU: &str = "invalid_sku";
    pub const INVALID_QTY: &str = "invalid_qty";
    pub const INVALID_CONTEXT: &str = "invalid_context";
    pub const CART_FULL: &str = "cart_full";
    pub const TOO_MANY_PENDING_REMOVES: &str = "too_many_pending_removes";
    pub const CART_UNAVAILABLE: &str = "cart_unavailable";
    pub const STORAGE_UNAVAILABLE: &str = "storage_unavailable";
    pub const INVALID_STATE: &str = "invalid_state";
    pub const INVALID_ZONE: &str = "invalid_zone";
    pub const NOT_FOUND: &str = "not_found";
}

fn id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A user id: 1 to 64 characters of `[A-Za-z0-9._-]` (400 `invalid_user`).
pub fn check_user(user: &str) -> Result<(), ApiError> {
    if id_ok(user) {
        Ok(())
    } else {
        Err(ApiError::bad_field(
            "user",
            format!("a user id is 1 to {MAX_ID_LEN} characters of A-Z, a-z, 0-9, '.', '_', '-'"),
        )
        .with_code(code::INVALID_USER))
    }
}

/// The user of a route's path, checked.
pub fn user_of(
    path: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<String, ApiError> {
    let axum::extract::Path(user) =
        path.map_err(|e| ApiError::bad_field("user", e.body_text()).with_code(code::INVALID_USER))?;
    check_user(&user)?;
    Ok(user)
}

/// A SKU: 1 to 64 characters of `[A-Za-z0-9._-]` (400 `invalid_sku`).
pub fn check_sku(sku: &str) -> Result<(), ApiError> {
    crdt::check_sku(sku, MAX_ID_LEN)
        .map_err(|reason| ApiError::bad_field("sku", reason).with_code(code::INVALID_SKU))
}

/// A zone name as hints carry it: the same shape as an id.
pub fn check_zone(zone: &str) -> Result<(), ApiError> {
    if id_ok(zone) {
        Ok(())
    } else {
        Err(
            ApiError::bad_field("hints", format!("{zone:?} is not a zone name"))
                .with_code(code::INVALID_ZONE),
        )
    }
}

/// A quantity: 1 to `max` (400 `invalid_qty` naming `qty`).
pub fn check_qty(qty: i64, max: u32) -> Result<u32, ApiError> {
    if qty >= 1 && qty <= i64::from(max) {
        Ok(qty as u32)
    } else {
        Err(
            ApiError::bad_field("qty", format!("qty must be between 1 and {max}, got {qty}"))
                .with_code(code::INVALID_QTY),
        )
    }
}

/// The bounds every state from the wire is checked against (see
/// [`Cart::check`]): generous multiples of the configured limits, since concurrent
/// writers on several replicas can pass a limit each one keeps.
pub fn wire_limits(max_lines: usize) -> Limits {
    Limits {
        max_lines: (max_lines * 4).max(64),
        max_sku_len: MAX_ID_LEN,
        ..Limits::default()
    }
}

/// The context a client reads with a cart and sends back with a remove:
/// `actor:count` pairs joined by `,` (an empty string for a cart never written).
/// Opaque to clients; what a remove observed.
pub fn format_context(clock: &VClock) -> String {
    let mut out = String::with_capacity(clock.len() * 24);
    for (i, (actor, n)) in clock.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{actor}:{n}"));
    }
    out
}

/// Parses [`format_context`]'s form; an error is a 400 naming `context`.
pub fn parse_context(text: &str) -> Result<VClock, ApiError> {
    let bad = |why: String| ApiError::bad_field("context", why).with_code(code::INVALID_CONTEXT);
    if text.is_empty() {
        return Ok(VClock::default());
    }
    // 16 hex digits, a colon, at most 19 digits, a comma.
    if text.len() > MAX_CONTEXT_ENTRIES * 37 {
        return Err(bad(format!(
            "a context is at most {MAX_CONTEXT_ENTRIES} entries"
        )));
    }
    let mut seen = BTreeSet::new();
    let mut entries = Vec::new();
    for part in text.split(',') {
        let (actor, n) = part
            .split_once(':')
            .ok_or_else(|| bad(format!("{part:?} is not actor:count")))?;
        let actor: ActorId = actor.parse().map_err(bad)?;
        let n: u64 = n
            .parse()
            .ok()
            .filter(|n| (1..=MAX_COUNTER).contains(n))
            .ok_or_else(|| bad(format!("{n:?} is not a count in 1..={MAX_COUNTER}")))?;
        if !seen.insert(actor) {
            return Err(bad(format!("actor {actor} is named twice")));
        }
        entries.push((actor, n));
    }
    if entries.len() > MAX_CONTEXT_ENTRIES {
        return Err(bad(format!(
            "a context is at most {MAX_CONTEXT_ENTRIES} entries"
        )));
    }
    Ok(VClock::from_entries(entries))
}

/// A cart as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartView {
    pub user: String,
    /// By SKU; quantities clamped to the per-line limit.
    pub lines: Vec<CartLine>,
    /// What a later remove observed: send it back as `?context=` (see the notes).
    pub context: String,
}

impl CartView {
    /// The view of `cart`, quantities clamped to `max_line_qty`.
    pub fn of(user: &str, cart: &Cart, max_line_qty: u32) -> Self {
        Self {
            user: user.to_owned(),
            lines: lines_of(cart, max_line_qty),
            context: format_context(cart.clock()),
        }
    }
}

/// The lines of `cart`, by SKU, clamped to `max_line_qty`.
pub fn lines_of(cart: &Cart, max_line_qty: u32) -> Vec<CartLine> {
    cart.lines()
        .map(|(sku, qty)| CartLine {
            sku: sku.to_owned(),
            qty: qty.min(max_line_qty),
        })
        .collect()
}

/// 503 with `code` (the cart or its storage cannot answer now).
pub fn unavailable(code: &str, error: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error).with_code(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_round_trip_and_bad_ones_name_the_field() {
        let clock = VClock::from_entries([(ActorId(0xab), 3), (ActorId(u64::MAX), 1)]);
        let text = format_context(&clock);
        assert_eq!(text, "00000000000000ab:3,ffffffffffffffff:1");
        assert_eq!(parse_context(&text).unwrap(), clock);
        assert_eq!(parse_context("").unwrap(), VClock::default());
        for bad in [
            "x",
            "00000000000000ab",
            "00000000000000ab:0",
            "00000000000000ab:-1",
            "0000000000000ab:1",
            "00000000000000ab:1,00000000000000ab:2",
            "00000000000000ab:1,",
        ] {
            let err = parse_context(bad).unwrap_err();
            assert_eq!(err.field.as_deref(), Some("context"), "{bad}");
            assert_eq!(err.code.as_deref(), Some(code::INVALID_CONTEXT));
        }
    }

    #[test]
    fn ids_and_quantities_are_bounded() {
        check_user("alice.b-2_c").unwrap();
        assert_eq!(check_user("").unwrap_err().field.as_deref(), Some("user"));
        assert!(check_user(&"u".repeat(65)).is_err());
        assert!(check_user("a/b").is_err());
        check_sku("B00-X.1").unwrap();
        assert_eq!(
            check_sku("a b").unwrap_err().code.as_deref(),
            Some(code::INVALID_SKU)
        );
        assert_eq!(check_qty(3, 5).unwrap(), 3);
        for qty in [0, -1, 6, i64::MAX] {
            let err = check_qty(qty, 5).unwrap_err();
            assert_eq!(
                (err.field.as_deref(), err.code.as_deref()),
                (Some("qty"), Some(code::INVALID_QTY))
            );
        }
    }
}
