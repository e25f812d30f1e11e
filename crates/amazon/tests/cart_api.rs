//! The cart API end to end, in process: the `amazon` API in zone `r1-a` over three
//! replicas found through (fake) discovery. Adds, sets and removes with the
//! client's context; a concurrent add surviving a remove; the writes reaching
//! every replica by push; the events on the bus; checkout's view through
//! `CartLines`; every bad input a JSON error with a `code` and the field; 503 only
//! when no replica is up.

#[path = "support/cart.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use casebook_amazon::cart::coordinator::Coordinator;
use casebook_amazon::cart::peers::ReplicaDirectory;
use casebook_amazon::cart::store::EVENTS_TOPIC;
use casebook_amazon::cart::{CartLine, CartLines};
use casebook_kit::events::EventBus;
use casebook_kit::topology::Placement;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use support::{Cluster, DEADLINE, ZONES, eventually, lines_of, test_config};

fn cart_path(user: &str) -> String {
    format!("/v1/carts/{user}")
}

fn item_path(user: &str, sku: &str) -> String {
    format!("/v1/carts/{user}/items/{sku}")
}

async fn get(cluster: &Cluster, user: &str) -> Value {
    let (status, body) = cluster.call(Method::GET, &cart_path(user), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_sets_and_removes_converge_on_every_replica_and_publish_events() {
    let cluster = Cluster::start(test_config(), None).await;

    // The first replica in the API's zone takes the writes.
    let view = cluster.add("alice", "B001", 1).await;
    assert_eq!(view["stored_at"], ZONES[0]);
    assert!(view.get("hinted_for").is_none(), "{view}");
    cluster.add("alice", "B001", 2).await;
    let view = cluster.add("alice", "B002", 1).await;
    assert_eq!(
        lines_of(&view),
        [("B001".into(), 3), ("B002".into(), 1)].into()
    );

    let (status, view) = cluster
        .call(
            Method::PUT,
            &item_path("alice", "B002"),
            Some(json!({ "qty": 5 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(lines_of(&view)["B002"], 5);

    // Every replica answers the read and holds the same cart (pushed).
    eventually("the writes reach every replica", DEADLINE, || async {
        ZONES.iter().all(|z| {
            cluster.lines_at(z, "alice") == [("B001".into(), 3), ("B002".into(), 5)].into()
        })
    })
    .await;
    let read = get(&cluster, "alice").await;
    assert_eq!(read["replicas"], json!({ "answered": 3, "asked": 3 }));
    let context = read["context"].as_str().unwrap().to_owned();
    assert!(!context.is_empty());

    // An add the client has not seen, then its remove with the context it read:
    // the add survives (add wins), with the added quantity only.
    cluster.add("alice", "B001", 4).await;
    let (status, view) = cluster
        .call(
            Method::DELETE,
            &format!("{}?context={context}", item_path("alice", "B001")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(lines_of(&view)["B001"], 4, "the unseen add of 4 survives");

    // A remove without a context removes what the coordinator's read saw.
    let (status, view) = cluster
        .call(Method::DELETE, &item_path("alice", "B001"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert!(!lines_of(&view).contains_key("B001"));
    assert_eq!(
        lines_of(&get(&cluster, "alice").await),
        [("B002".into(), 5)].into()
    );

    // An unknown cart is an empty one.
    let empty = get(&cluster, "nobody").await;
    assert_eq!(empty["lines"], json!([]));
    assert_eq!(empty["context"], "");

    // The events, from the log of the replica that took the writes, on its bus.
    let replica = cluster.replica(ZONES[0]);
    eventually("the relay publishes the cart events", DEADLINE, || {
        let replica = replica.clone();
        async move {
            let events = replica
                .store()
                .bus()
                .read(EVENTS_TOPIC, 0, 100)
                .await
                .unwrap();
            let kinds: Vec<&str> = events.iter().map(|d| d.event.event_type.as_str()).collect();
            kinds.iter().filter(|k| **k == "ItemAdded").count() == 4
                && kinds.contains(&"QuantityChanged")
                && kinds.contains(&"ItemRemoved")
        }
    })
    .await;
    let events = replica
        .store()
        .bus()
        .read(EVENTS_TOPIC, 0, 100)
        .await
        .unwrap();
    let removed = events
        .iter()
        .find(|d| d.event.event_type == "ItemRemoved")
        .unwrap();
    assert_eq!(removed.event.key, "alice");
    assert_eq!(removed.event.payload["sku"], "B001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_reads_the_lines_and_removes_exactly_what_was_bought() {
    let cluster = Cluster::start(test_config(), None).await;
    let config = test_config().cart;
    let coordinator = Coordinator::new(
        ReplicaDirectory::new(
            cluster.resolver.clone(),
            Placement {
                region: "r1".into(),
                zone: ZONES[1].into(),
            },
            None,
            cluster.clock.shared(),
            config.discovery_refresh,
            config.replica_timeout,
        ),
        config,
        None,
    );
    cluster.add("bob", "A", 3).await;
    cluster.add("bob", "B", 1).await;
    let lines = coordinator.lines("bob").await.unwrap();
    assert_eq!(
        lines,
        [
            CartLine {
                sku: "A".into(),
                qty: 3
            },
            CartLine {
                sku: "B".into(),
                qty: 1
            }
        ]
    );
    // Bought 2 of A and all of B; meanwhile (after the read) one more B was added.
    cluster.add("bob", "B", 1).await;
    coordinator
        .remove_bought(
            "bob",
            &[
                CartLine {
                    sku: "A".into(),
                    qty: 2,
                },
                CartLine {
                    sku: "B".into(),
                    qty: 1,
                },
            ],
        )
        .await
        .unwrap();
    let left = coordinator.lines("bob").await.unwrap();
    assert_eq!(
        left,
        [
            CartLine {
                sku: "A".into(),
                qty: 1
            },
            CartLine {
                sku: "B".into(),
                qty: 1
            }
        ],
        "what was bought went; the rest stays"
    );
    let as_trait: Arc<dyn CartLines> = Arc::new(coordinator);
    assert!(as_trait.lines("not a user").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_json_error_with_a_code_and_the_field() {
    let mut config = test_config();
    config.cart.max_lines = 2;
    let cluster = Cluster::start(config, None).await;
    let items = "/v1/carts/carol/items";
    let long_sku = format!(r#"{{"sku":"{}","qty":1}}"#, "s".repeat(65));
    let long_user = format!("/v1/carts/{}/items", "u".repeat(65));
    let bad = StatusCode::BAD_REQUEST;
    // (method, path, body, code, field)
    type Case<'a> = (Method, &'a str, Option<&'a str>, &'a str, Option<&'a str>);
    let cases: Vec<Case<'_>> = vec![
        (
            Method::POST,
            items,
            Some(r#"{"sku":"A","qty":0}"#),
            "invalid_qty",
            Some("qty"),
        ),
        (
            Method::POST,
            items,
            Some(r#"{"sku":"A","qty":-3}"#),
            "invalid_qty",
            Some("qty"),
        ),
        (
            Method::POST,
            items,
            Some(r#"{"sku":"A","qty":101}"#),
            "invalid_qty",
            Some("qty"),
        ),
        (
            Method::POST,
            items,
            Some(r#"{"sku":"A","qty":1.5}"#),
            "invalid_json",
            Some("qty"),
        ),
        (
            Method::POST,
            items,
            Some(r#"{"sku":5,"qty":1}"#),
            "invalid_json",
            Some("sku"),
        ),
        (
            Method::POST,
            items,
            Some(r#"{"qty":1}"#),
            "invalid_json",
            Some("sku"),
        ),
        (
            Method::POST,
            items,
            Some(r#"{"sku":"A","qty":1,"x":1}"#),
            "invalid_json",
            None,
        ),
        (
            Method::POST,
            items,
            Some(r#"{"sku":"A","#),
            "invalid_json",
            None,
        ),
        (
            Method::POST,
            items,
            Some(r#"{"sku":"a b","qty":1}"#),
            "invalid_sku",
            Some("sku"),
        ),
        (
            Method::POST,
            items,
            Some(&long_sku),
            "invalid_sku",
            Some("sku"),
        ),
        (
            Method::POST,
            &long_user,
            Some(r#"{"sku":"A","qty":1}"#),
            "invalid_user",
            Some("user"),
        ),
        (
            Method::PUT,
            "/v1/carts/carol/items/A",
            Some(r#"{"qty":0}"#),
            "invalid_qty",
            Some("qty"),
        ),
        (
            Method::PUT,
            "/v1/carts/carol/items/a%20b",
            Some(r#"{"qty":1}"#),
            "invalid_sku",
            Some("sku"),
        ),
        (
            Method::DELETE,
            "/v1/carts/carol/items/A?context=nonsense",
            None,
            "invalid_context",
            Some("context"),
        ),
        (
            Method::DELETE,
            "/v1/carts/carol/items/A?other=1",
            None,
            "invalid_context",
            Some("context"),
        ),
        (
            Method::GET,
            "/v1/carts/car%2Fol",
            None,
            "invalid_user",
            Some("user"),
        ),
    ];
    for (method, path, body, code, field) in cases {
        let url = format!("http://{}{path}", cluster.api);
        let (status, answer) =
            support::call(&cluster.http, method.clone(), &url, body.map(str::to_owned)).await;
        let what = format!("{method} {path} {body:?}: {answer}");
        assert_eq!(status, bad, "{what}");
        assert_eq!(answer["code"], code, "{what}");
        assert!(answer["error"].is_string(), "{what}");
        if let Some(field) = field {
            assert_eq!(answer["field"], field, "{what}");
        }
    }
    assert!(
        lines_of(&get(&cluster, "carol").await).is_empty(),
        "no bad request changed the cart"
    );

    // Not JSON by content type: 415 with a code.
    let response = cluster
        .http
        .send(
            Method::POST,
            &format!("http://{}{items}", cluster.api),
            HeaderMap::new(),
            bytes::Bytes::from_static(b"sku=A"),
        )
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["code"], "unsupported_media_type");

    // A full cart: 409 cart_full naming the sku; the cart is unharmed.
    cluster.add("carol", "A", 1).await;
    cluster.add("carol", "B", 1).await;
    let (status, answer) = cluster
        .call(Method::POST, items, Some(json!({ "sku": "C", "qty": 1 })))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(
        (answer["code"].as_str(), answer["field"].as_str()),
        (Some("cart_full"), Some("sku"))
    );
    cluster.add("carol", "A", 1).await;
    assert_eq!(
        lines_of(&get(&cluster, "carol").await),
        [("A".into(), 2), ("B".into(), 1)].into()
    );

    // No replica up at all: 503 with a code, and only then.
    for zone in ZONES {
        cluster.kill_replica(zone).await;
    }
    cluster.advance(Duration::from_secs(2));
    let (status, answer) = cluster
        .call(Method::POST, items, Some(json!({ "sku": "A", "qty": 1 })))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["code"], "cart_unavailable");
    let (status, answer) = cluster.call(Method::GET, &cart_path("carol"), None).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("cart_unavailable"))
    );
}
