//! The invariants of the cart's fuzz target (`fuzz/fuzz_targets/cart_inputs.rs`),
//! shared with the stable corpus replay (`tests/cart_fuzz_corpus.rs`) so both
//! exercise the same property. The first byte picks the parser, the rest is its
//! input:
//!
//! | byte % 5 | parser | property beyond "no panic" |
//! |---|---|---|
//! | 0 | the context token ([`model::parse_context`]) | a parsed context formats back to a token that parses to it |
//! | 1 | a cart state (the wire form, then [`Cart::check`]) | a state that passes the check round-trips, and merging it with itself or an empty cart changes nothing |
//! | 2 | a write ([`OpRequest`]) | each op applied to a fresh cart keeps the checked invariants |
//! | 3 | the public bodies (`{sku, qty}`, `{qty}`) through the kit's parser | a refusal names a field or none, never an empty one |
//! | 4 | the peers' bodies (merge, digest, bucket) | each cart of a merge that passes the check merges into another without breaking it |
//!
//! Each function panics when an invariant breaks; malformed input refused with an
//! error is the expected outcome, not a finding.

use casebook_kit::api::parse_json;

use super::api::{AddBody, SetBody};
use super::crdt::{ActorId, Cart, Limits, MAX_COUNTER};
use super::model::{self, wire_limits};
use super::wire::{BucketRequest, DigestRequest, MergeRequest, Op, OpRequest};

const CAP: u32 = 100;
/// Most operations a fuzzed write applies.
const MAX_FUZZ_OPS: usize = 256;

/// The wire limits, widened by what one write (at most [`MAX_FUZZ_OPS`]
/// operations, one new actor) may add to a checked state.
fn after_writes() -> Limits {
    let wire = wire_limits(50);
    Limits {
        max_actors: wire.max_actors + 1,
        max_lines: wire.max_lines + MAX_FUZZ_OPS,
        max_dots_per_line: wire.max_dots_per_line + MAX_FUZZ_OPS,
        max_dots: wire.max_dots + MAX_FUZZ_OPS,
        max_deferred: wire.max_deferred + MAX_FUZZ_OPS,
        ..wire
    }
}

/// Runs one fuzz input; returns how many inputs were accepted (so a replay can
/// tell that its seeds reached the interesting paths).
pub fn check_cart_input(data: &[u8]) -> usize {
    let Some((&selector, input)) = data.split_first() else {
        return 0;
    };
    match selector % 5 {
        0 => check_context(input),
        1 => check_state(input),
        2 => check_write(input),
        3 => check_public_bodies(input),
        _ => check_peer_bodies(input),
    }
}

fn check_context(input: &[u8]) -> usize {
    let Ok(text) = std::str::from_utf8(input) else {
        return 0;
    };
    match model::parse_context(text) {
        Ok(clock) => {
            let again = model::parse_context(&model::format_context(&clock))
                .expect("a formatted context parses");
            assert_eq!(again, clock);
            1
        }
        Err(error) => {
            assert_eq!(error.field.as_deref(), Some("context"));
            0
        }
    }
}

fn checked_state(input: &[u8]) -> Option<Cart> {
    let cart: Cart = serde_json::from_slice(input).ok()?;
    cart.check(&wire_limits(50)).ok()?;
    Some(cart)
}

fn check_state(input: &[u8]) -> usize {
    let Some(cart) = checked_state(input) else {
        return 0;
    };
    let json = serde_json::to_vec(&cart).expect("a state serialises");
    let back: Cart = serde_json::from_slice(&json).expect("its own wire form parses");
    assert_eq!(back, cart);
    let mut same = cart.clone();
    same.merge(&cart);
    assert_eq!(same, cart, "merge is idempotent");
    let mut from_empty = Cart::default();
    from_empty.merge(&cart);
    assert_eq!(from_empty, cart, "the empty cart is the identity");
    // A write on top keeps the invariants (an actor at the counter bound has
    // made 2^62 writes: not a state a replica reaches).
    let writer = ActorId(u64::MAX);
    if cart.clock().get(writer) < MAX_COUNTER {
        let mut written = cart.clone();
        written.add(writer, "fuzz", 1, CAP);
        written
            .check(&after_writes())
            .expect("a write keeps the invariants");
    }
    1
}

fn apply(cart: &mut Cart, op: &Op) {
    if model::check_sku(op.sku()).is_err() {
        return;
    }
    match op {
        Op::Add { sku, qty } => {
            cart.add(ActorId(1), sku, (*qty).clamp(1, CAP), CAP);
        }
        Op::Set { sku, qty } => cart.set(ActorId(1), sku, (*qty).clamp(1, CAP)),
        Op::Remove { sku, context } => {
            if context.check(&wire_limits(50)).is_ok() {
                cart.remove(sku, context);
            }
        }
    }
}

fn check_write(input: &[u8]) -> usize {
    let Ok(request) = parse_json::<OpRequest>(input) else {
        return 0;
    };
    let mut cart = Cart::default();
    if let Some(observed) = &request.observed
        && observed.check(&wire_limits(50)).is_ok()
    {
        cart.merge(observed);
    }
    for op in request.ops.iter().take(MAX_FUZZ_OPS) {
        apply(&mut cart, op);
        cart.check(&after_writes())
            .expect("every operation keeps the invariants");
    }
    1
}

fn check_public_bodies(input: &[u8]) -> usize {
    let mut accepted = 0;
    match parse_json::<AddBody>(input) {
        Ok(body) => {
            accepted += 1;
            let _ = model::check_sku(&body.sku);
            let _ = model::check_qty(body.qty, CAP);
        }
        Err(error) => assert_ne!(error.field.as_deref(), Some("")),
    }
    match parse_json::<SetBody>(input) {
        Ok(body) => {
            accepted += 1;
            if let Ok(qty) = model::check_qty(body.qty, CAP) {
                assert!((1..=CAP).contains(&qty));
            }
        }
        Err(error) => assert_ne!(error.field.as_deref(), Some("")),
    }
    accepted
}

fn check_peer_bodies(input: &[u8]) -> usize {
    let mut accepted = 0;
    if let Ok(request) = parse_json::<MergeRequest>(input) {
        accepted += 1;
        let mut base = Cart::default();
        base.add(ActorId(2), "base", 1, CAP);
        for user_cart in request.carts.iter().take(64) {
            let _ = model::check_user(&user_cart.user);
            if user_cart.cart.check(&wire_limits(50)).is_ok() {
                let mut merged = base.clone();
                merged.merge(&user_cart.cart);
                merged
                    .check(&after_writes())
                    .expect("a merge of checked states is checked");
            }
        }
    }
    if parse_json::<DigestRequest>(input).is_ok() {
        accepted += 1;
    }
    if parse_json::<BucketRequest>(input).is_ok() {
        accepted += 1;
    }
    accepted
}
