//! How the replicas converge when one is gone or cut off, in process.
//!
//! - **Hinted handoff.** The replica of the API's zone is killed (its listing
//!   stays, as a crashed instance's lease would): every add is still acknowledged,
//!   by another zone's replica, with a hint naming the killed one; the killed
//!   replica restarts on its slot's data (nothing it acknowledged is lost) and the
//!   hints bring it every add it missed. Anti-entropy is off in this test, so the
//!   hints are what delivers.
//! - **Anti-entropy after a partition.** Discovery is split (`r1-a` | `r1-b`,
//!   `r1-c`) from the start, so no replica knows the other side: no push, no hint.
//!   Both sides take writes, to separate carts and to the same lines. Healed, the
//!   digests are compared and the differing buckets reconciled until all three
//!   replicas hold the same carts — the merge of both sides.
//!
//! Time is a manual clock, advanced to make rounds due; waits are bounded polls.

#[path = "support/cart.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use support::{Cluster, DEADLINE, ZONES, eventually, lines_of, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_gets_every_add_it_missed_through_hints() {
    let cluster = Cluster::start(test_config(), None).await;
    let [a, b, c] = ZONES;
    let mut expected: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    let mut acked = |user: &str, sku: &str| {
        expected
            .entry(user.to_owned())
            .or_default()
            .insert(sku.to_owned(), 1);
    };

    for u in 0..10 {
        let view = cluster.add(&format!("u{u}"), "before", 1).await;
        assert_eq!(view["stored_at"], a);
        acked(&format!("u{u}"), "before");
    }
    eventually("the first adds reach every replica", DEADLINE, || async {
        cluster.converged()
    })
    .await;

    cluster.kill_replica(a).await;
    // Every add is still taken, by another zone, hinted for the killed one.
    for u in 0..10 {
        for sku in ["during-1", "during-2"] {
            let view = cluster.add(&format!("u{u}"), sku, 1).await;
            assert_ne!(view["stored_at"], a, "{view}");
            assert_eq!(view["hinted_for"], json!([a]), "{view}");
            acked(&format!("u{u}"), sku);
        }
    }
    // Reads still answer, from the replicas that are up.
    let (status, read) = cluster.call(Method::GET, "/v1/carts/u3", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["replicas"]["answered"], 2, "{read}");
    assert_eq!(lines_of(&read).len(), 3);
    let hinted: std::collections::BTreeSet<String> = [b, c]
        .iter()
        .flat_map(|z| cluster.replica(z).store().hints().pending(a, 100))
        .collect();
    assert_eq!(
        hinted,
        expected.keys().cloned().collect(),
        "a hint for every cart written"
    );

    // It returns on its slot: what it acknowledged before the kill is there.
    cluster.start_replica(a).await;
    for u in 0..10 {
        assert_eq!(
            cluster.lines_at(a, &format!("u{u}")).get("before"),
            Some(&1),
            "u{u}'s acknowledged add survived the kill"
        );
    }
    // Handoff is due; the new address is listed.
    // Time moves on while we wait: a handoff tried before the returned replica
    // was listed is tried again at its next due time, which only this clock brings.
    eventually("the hints are handed off", DEADLINE, || async {
        cluster.advance(Duration::from_secs(2));
        [b, c]
            .iter()
            .all(|z| cluster.replica(z).status().hints.is_empty())
    })
    .await;
    for (user, lines) in &expected {
        assert_eq!(
            &cluster.lines_at(a, user),
            lines,
            "{user} at the returned replica"
        );
    }
    eventually("the peers push to it again", DEADLINE, || async {
        cluster.advance(Duration::from_secs(1));
        [b, c]
            .iter()
            .all(|z| cluster.replica(z).down_zones().is_empty())
    })
    .await;
    assert!(cluster.converged());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_converges_both_sides_of_a_partition() {
    let mut config = test_config();
    config.cart.anti_entropy_every = Duration::from_secs(5);
    config.cart.anti_entropy_buckets = 4;
    let [a, b, c] = ZONES;
    let cluster = Cluster::start(config, Some(vec![vec![a], vec![b, c]])).await;
    assert!(cluster.replica(a).peer_zones().is_empty());

    // Side a: through the API (its replica is the only one it sees).
    for u in 0..12 {
        let view = cluster.add(&format!("left{u}"), "x", 1).await;
        assert_eq!(view["stored_at"], a);
    }
    cluster.add("both", "shared", 2).await;
    cluster.add("both", "only-left", 1).await;
    // Side b: straight to its replica's internal API, as a coordinator there would.
    for u in 0..12 {
        let (status, body) = cluster
            .call_replica(
                b,
                Method::POST,
                &format!("/internal/v1/carts/right{u}/ops"),
                Some(json!({ "ops": [{ "op": "add", "sku": "y", "qty": 1 }] })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = cluster
        .call_replica(
            b,
            Method::POST,
            "/internal/v1/carts/both/ops",
            Some(json!({ "ops": [{ "op": "add", "sku": "shared", "qty": 3 }] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // b pushed to c (same side); a knew nobody: no hint anywhere.
    eventually("b's writes reach c", DEADLINE, || async {
        cluster.lines_at(c, "right11").get("y") == Some(&1)
    })
    .await;
    for zone in ZONES {
        assert!(cluster.replica(zone).status().hints.is_empty(), "{zone}");
    }
    assert!(cluster.lines_at(a, "right0").is_empty());
    assert!(cluster.lines_at(b, "left0").is_empty());
    assert!(!cluster.converged());

    // Healed: rounds come due and reconcile a few buckets each.
    cluster.heal();
    eventually("anti-entropy converges every replica", DEADLINE, || async {
        cluster.advance(Duration::from_secs(5));
        cluster.converged()
    })
    .await;
    for zone in ZONES {
        assert_eq!(cluster.lines_at(zone, "left3").get("x"), Some(&1), "{zone}");
        assert_eq!(
            cluster.lines_at(zone, "right7").get("y"),
            Some(&1),
            "{zone}"
        );
        assert_eq!(
            cluster.lines_at(zone, "both"),
            [("only-left".to_owned(), 1), ("shared".to_owned(), 5)].into(),
            "{zone}: concurrent adds both count"
        );
    }
    // The merge is what a read answers too.
    let (_, read) = cluster.call(Method::GET, "/v1/carts/both", None).await;
    assert_eq!(read["replicas"]["answered"], 3, "{read}");
    assert_eq!(lines_of(&read)["shared"], 5);
}
