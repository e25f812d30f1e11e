//! A/B conversions counted end to end: a user exposed to a recommendation
//! strategy variant checks out, the order's `OrderPlaced` goes through the outbox
//! to the bus, the speed layer's consumer reads it, and that variant's
//! `amazon_flag_conversions_total` grows by one in the process's metrics recorder
//! (the kit's, which the pusher carries to the metrics store) — the other
//! variant's stays where it was.
//!
//! Its own test binary: the recorder is process-wide, so no other test here moves
//! these counters while this one reads them.

mod support;

use std::sync::Arc;

use casebook_amazon::flags::{Flag, FlagStore, RECS_STRATEGY_FLAG, Variant};
use casebook_amazon::orders::embedded::ORDERS_TOPIC;
use casebook_amazon::recs::Recs;
use casebook_kit::clock::ManualClock;
use casebook_kit::events::EventBus;
use casebook_testkit::{DEADLINE, eventually_sync};
use support::{MemoryCart, Stack};
use tokio_util::sync::CancellationToken;

/// The counter's value for `metric{flag="recs-strategy", variant}` in the
/// recorder's Prometheus rendering; 0 before the first increment.
fn counter(metric: &str, variant: &str) -> u64 {
    let rendered = casebook_kit::telemetry::metrics().render_prometheus();
    rendered
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| {
            l.contains(&format!("flag=\"{RECS_STRATEGY_FLAG}\""))
                && l.contains(&format!("variant=\"{variant}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

const EXPOSURES: &str = "amazon_flag_exposures_total";
const CONVERSIONS: &str = "amazon_flag_conversions_total";

#[tokio::test]
async fn a_checkout_after_an_exposure_counts_one_conversion_for_that_variant() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let cart = Arc::new(MemoryCart::default());
    let api = Stack::open(dir.path(), &clock, cart.clone());
    let strategy = Flag {
        name: RECS_STRATEGY_FLAG.into(),
        description: String::new(),
        variants: vec![
            Variant {
                name: "blend".into(),
                percent: 50,
            },
            Variant {
                name: "popular".into(),
                percent: 50,
            },
        ],
        salt: String::new(),
    };
    let flags =
        Arc::new(FlagStore::open(&dir.path().join("flags"), clock.shared(), &[strategy]).unwrap());
    let bus: Arc<dyn EventBus> = Arc::new(api.orders.bus().clone());
    let recs = Arc::new(
        Recs::open(
            &dir.path().join("recs"),
            vec![(bus.clone(), ORDERS_TOPIC.to_owned())],
            Some(flags.clone()),
            clock.shared(),
        )
        .unwrap(),
    );
    let stop = CancellationToken::new();
    let consumer = tokio::spawn(recs.clone().run_speed(0, stop.clone()));

    // A buyer and a bystander in different variants.
    let buyer = "ann";
    let variant = flags.assign(RECS_STRATEGY_FLAG, buyer).unwrap().name;
    let other = if variant == "blend" {
        "popular"
    } else {
        "blend"
    };
    let bystander = (0..)
        .map(|i| format!("user-{i}"))
        .find(|u| flags.assign(RECS_STRATEGY_FLAG, u).unwrap().name == other)
        .unwrap();
    let before = (
        counter(CONVERSIONS, &variant),
        counter(CONVERSIONS, other),
        counter(EXPOSURES, &variant),
    );

    // Exposed: the answer says which strategy served them, and it is counted.
    let shown = recs.recommender.recommend(buyer, 5);
    assert_eq!(shown.strategy, variant);
    assert_eq!(counter(EXPOSURES, &variant), before.2 + 1);
    recs.recommender.recommend(&bystander, 5);

    // The buyer checks out; the order's event reaches the bus through the outbox.
    api.call("PUT", "/v1/inventory/tea", None, Some(r#"{"available":5}"#))
        .await
        .expect(200, None);
    cart.put(buyer, &[("tea", 2)]);
    api.call("POST", &format!("/v1/checkout/{buyer}"), Some("k1"), None)
        .await
        .expect(201, None);
    let relay = api.orders.outbox().relay(bus.clone(), 10);
    assert_eq!(relay.relay_once().await.unwrap(), 1);

    eventually_sync("the buyer's variant converts", DEADLINE, || {
        counter(CONVERSIONS, &variant) > before.0
    })
    .await;
    assert_eq!(
        counter(CONVERSIONS, &variant),
        before.0 + 1,
        "one order, one conversion"
    );
    assert_eq!(
        counter(CONVERSIONS, other),
        before.1,
        "the bystander bought nothing"
    );
    stop.cancel();
    consumer.await.unwrap();
}
