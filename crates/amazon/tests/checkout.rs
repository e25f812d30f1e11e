//! Checkout over the embedded stores and an in-memory cart: all or none, one
//! order per key (also across a crash between its steps), `OrderPlaced` on the
//! bus, the bought lines out of the cart.

mod support;

use std::sync::Arc;

use casebook_amazon::inventory::InventoryStore;
use casebook_amazon::inventory::model::{
    KeyScope, Keyed, Line, ReserveOutcome, ReserveRequest, Sku,
};
use casebook_amazon::orders::embedded::ORDERS_TOPIC;
use casebook_kit::clock::ManualClock;
use casebook_kit::events::EventBus;
use casebook_kit::idempotency::{Fingerprint, IdempotencyKey};
use support::{LIMITS, MemoryCart, Stack};

async fn stock(api: &Stack, sku: &str) -> serde_json::Value {
    api.call("GET", &format!("/v1/inventory/{sku}"), None, None)
        .await
        .json
}

#[tokio::test]
async fn a_cart_becomes_one_order_and_a_retry_gets_the_same_one() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let cart = Arc::new(MemoryCart::default());
    let api = Stack::open(dir.path(), &clock, cart.clone());
    for (sku, n) in [("tea", 5), ("cup", 2)] {
        api.call(
            "PUT",
            &format!("/v1/inventory/{sku}"),
            None,
            Some(&format!(r#"{{"available":{n}}}"#)),
        )
        .await
        .expect(200, None);
    }
    cart.put("ann", &[("tea", 3), ("cup", 2)]);
    let placed = api.call("POST", "/v1/checkout/ann", Some("c1"), None).await;
    let order = placed.expect(201, None).clone();
    assert_eq!(order["user"], "ann");
    assert_eq!(order["state"], "placed");
    assert_eq!(order["lines"].as_array().unwrap().len(), 2);
    assert_eq!(stock(&api, "tea").await["confirmed"], 3);
    assert_eq!(stock(&api, "cup").await["confirmed"], 2);
    assert!(cart.of("ann").is_empty(), "bought lines left the cart");
    for line in order["lines"].as_array().unwrap() {
        let id = line["reservation_id"].as_str().unwrap();
        let r = api
            .call("GET", &format!("/v1/reservations/{id}"), None, None)
            .await;
        assert_eq!(r.json["state"], "confirmed");
        assert_eq!(r.json["order_id"], order["id"]);
    }

    // A retry: the same order, byte for byte, nothing reserved again.
    cart.put("ann", &[("tea", 1)]);
    let again = api.call("POST", "/v1/checkout/ann", Some("c1"), None).await;
    assert!(again.replayed);
    assert_eq!(again.bytes, placed.bytes);
    assert_eq!(stock(&api, "tea").await["available"], 2);

    let fetched = api
        .call(
            "GET",
            &format!("/v1/orders/{}", order["id"].as_str().unwrap()),
            None,
            None,
        )
        .await;
    assert_eq!(fetched.expect(200, None), &order);
    let listed = api.call("GET", "/v1/users/ann/orders", None, None).await;
    assert_eq!(
        listed.expect(200, None)["orders"],
        serde_json::json!([order])
    );
    api.call("GET", "/v1/orders/ord_404", None, None)
        .await
        .expect(404, Some("unknown_order"));
    api.call("GET", "/v1/users/ann/orders?limit=0", None, None)
        .await
        .expect(400, Some("invalid_field"));

    // OrderPlaced goes out through the outbox to the bus.
    let relay = api
        .orders
        .outbox()
        .relay(Arc::new(api.orders.bus().clone()), 10);
    assert_eq!(relay.relay_once().await.unwrap(), 1);
    let events = api.orders.bus().read(ORDERS_TOPIC, 0, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.event_type, "OrderPlaced");
    assert_eq!(events[0].event.key, order["id"].as_str().unwrap());
    assert_eq!(events[0].event.payload["lines"][0]["sku"], "tea");
}

#[tokio::test]
async fn a_short_line_reserves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let cart = Arc::new(MemoryCart::default());
    let api = Stack::open(dir.path(), &clock, cart.clone());
    for (sku, n) in [("tea", 5), ("cup", 1)] {
        api.call(
            "PUT",
            &format!("/v1/inventory/{sku}"),
            None,
            Some(&format!(r#"{{"available":{n}}}"#)),
        )
        .await;
    }
    cart.put("bob", &[("tea", 2), ("cup", 2)]);
    api.call("POST", "/v1/checkout/bob", Some("k"), None)
        .await
        .expect(409, Some("insufficient_stock"));
    assert_eq!(
        stock(&api, "tea").await["available"],
        5,
        "the good line was not held"
    );
    assert_eq!(stock(&api, "tea").await["reserved"], 0);
    assert_eq!(cart.of("bob").len(), 2, "the cart is untouched");
    assert!(casebook_amazon::orders::OrderStore::unconfirmed(&api.orders).is_empty());

    api.call("POST", "/v1/checkout/bob", None, None)
        .await
        .expect(400, Some("idempotency_key_required"));
    api.call("POST", "/v1/checkout/nobody", Some("k"), None)
        .await
        .expect(409, Some("cart_empty"));
    cart.put("cat", &[("tea", LIMITS.max_line_qty + 1)]);
    api.call("POST", "/v1/checkout/cat", Some("k"), None)
        .await
        .expect(409, Some("invalid_cart_line"));
    *cart.down.lock() = true;
    api.call("POST", "/v1/checkout/bob", Some("k2"), None)
        .await
        .expect(503, Some("cart_unavailable"));
}

/// The process dies after the reservations were recorded and before the order:
/// the retry after the restart uses those reservations, places one order, and the
/// cart's later contents do not matter. Then the process dies after the order
/// and before the confirm: the restart confirms it.
#[tokio::test]
async fn a_crash_between_the_steps_still_yields_one_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let cart = Arc::new(MemoryCart::default());
    let first_id = {
        let api = Stack::open(dir.path(), &clock, cart.clone());
        api.call(
            "PUT",
            "/v1/inventory/tea",
            None,
            Some(r#"{"available":10}"#),
        )
        .await;
        // Step 1 as checkout takes it, and no more.
        let outcome = api
            .inventory
            .reserve(ReserveRequest {
                key: Keyed {
                    scope: KeyScope::Checkout,
                    key: IdempotencyKey::parse("dan:k").unwrap(),
                    fingerprint: Fingerprint::of(&[b"checkout", b"dan"]),
                },
                lines: vec![Line {
                    sku: Sku::parse("tea").unwrap(),
                    qty: 4,
                }],
                ttl: LIMITS.default_ttl,
            })
            .await
            .unwrap();
        let ReserveOutcome::Reserved(made) = outcome.value else {
            panic!("reserved")
        };
        made[0].id.to_string()
    };
    cart.put("dan", &[("tea", 1)]);
    let order = {
        let api = Stack::open(dir.path(), &clock, cart.clone());
        let placed = api.call("POST", "/v1/checkout/dan", Some("k"), None).await;
        let order = placed.expect(201, None).clone();
        assert_eq!(order["lines"][0]["reservation_id"], first_id.as_str());
        assert_eq!(
            order["lines"][0]["qty"], 4,
            "the recorded lines, not today's cart"
        );
        assert_eq!(stock(&api, "tea").await["confirmed"], 4);
        order
    };

    // Now an order committed without its confirm (step 2 without step 3).
    let api = Stack::open(dir.path(), &clock, cart.clone());
    api.call("PUT", "/v1/inventory/cup", None, Some(r#"{"available":3}"#))
        .await;
    let outcome = api
        .inventory
        .reserve(ReserveRequest {
            key: Keyed {
                scope: KeyScope::Checkout,
                key: IdempotencyKey::parse("eve:k").unwrap(),
                fingerprint: Fingerprint::of(&[b"checkout", b"eve"]),
            },
            lines: vec![Line {
                sku: Sku::parse("cup").unwrap(),
                qty: 2,
            }],
            ttl: LIMITS.default_ttl,
        })
        .await
        .unwrap();
    let ReserveOutcome::Reserved(made) = outcome.value else {
        panic!("reserved")
    };
    use casebook_amazon::orders::{Order, OrderLine, OrderStore};
    let eve = Order {
        id: format!("ord_{}", made[0].id.0),
        user: "eve".into(),
        lines: vec![OrderLine {
            sku: "cup".into(),
            qty: 2,
            reservation_id: made[0].id.to_string(),
        }],
        created_at_ms: made[0].created_at_ms,
    };
    api.orders.place(eve.clone(), "k").await.unwrap();
    assert_eq!(stock(&api, "cup").await["reserved"], 2);
    drop(api);
    let api = Stack::open(dir.path(), &clock, cart.clone());
    assert!(api.checkout.reconcile().await >= 1);
    assert_eq!(stock(&api, "cup").await["confirmed"], 2);
    let listed = api.call("GET", "/v1/users/dan/orders", None, None).await;
    assert_eq!(listed.json["orders"], serde_json::json!([order]));
    let replay = api.call("POST", "/v1/checkout/eve", Some("k"), None).await;
    assert!(replay.replayed);
    assert_eq!(replay.json["id"], eve.id.as_str());
}
