use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::clock::{Clock, ManualClock};
use proptest::prelude::*;

use super::query::{Aggregate, Query, QueryError, TagFilter, TimeSpec};
use super::*;

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn setup() -> (ManualClock, MetricsStore) {
    let clock = ManualClock::new();
    let store = MetricsStore::new(clock.shared());
    (clock, store)
}

fn gauge(name: &str, t: &[(&str, &str)], ts: u64, v: f64) -> Datapoint {
    Datapoint::scalar(name, tags(t), ts, MetricKind::Gauge, v)
}

fn counter(name: &str, t: &[(&str, &str)], ts: u64, v: f64) -> Datapoint {
    Datapoint::scalar(name, tags(t), ts, MetricKind::Counter, v)
}

fn batch(metrics: Vec<Datapoint>) -> PublishBatch {
    PublishBatch {
        tags: BTreeMap::new(),
        metrics,
    }
}

/// A query of `name` over the seconds `[from, to]` (epoch seconds).
fn over(name: &str, from: u64, to: u64, step: u64) -> Query {
    Query {
        from: TimeSpec::At(from * 1000),
        to: TimeSpec::At(to * 1000),
        step_secs: step,
        ..Query::new(name)
    }
}

fn values(store: &MetricsStore, q: &Query) -> Vec<Option<f64>> {
    let result = store.query(q).unwrap();
    assert_eq!(result.series.len(), 1, "{result:?}");
    result.series[0].values.clone()
}

fn now_sec(clock: &ManualClock) -> u64 {
    clock.wall_millis() / 1000
}

#[test]
fn a_gauge_keeps_the_largest_value_of_each_second() {
    let (clock, store) = setup();
    let t = now_sec(&clock);
    let report = store
        .ingest(&batch(vec![
            gauge("depth", &[], t * 1000, 3.0),
            gauge("depth", &[], t * 1000 + 999, 1.0),
            gauge("depth", &[], (t + 1) * 1000, 2.0),
        ]))
        .unwrap();
    assert_eq!(report.accepted, 3);
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        values(&store, &over("depth", t, t + 1, 1)),
        vec![Some(3.0), Some(2.0)]
    );
    // Consolidated over two seconds a gauge keeps the largest value too.
    assert_eq!(values(&store, &over("depth", t, t + 1, 2)), vec![Some(3.0)]);
}

#[test]
fn a_counter_sums_its_deltas_into_a_rate_per_second() {
    let (clock, store) = setup();
    let t = now_sec(&clock); // a multiple of 60, so of 10 too
    store
        .ingest(&batch(vec![
            counter("reqs", &[], t * 1000 + 10, 3.0),
            counter("reqs", &[], t * 1000 + 20, 4.0),
            counter("reqs", &[], (t + 5) * 1000, 13.0),
        ]))
        .unwrap();
    clock.advance(Duration::from_secs(9));
    let per_second = values(&store, &over("reqs", t, t + 9, 1));
    assert_eq!(per_second[0], Some(7.0));
    assert_eq!(per_second[1], None, "no data is a gap, not zero");
    assert_eq!(per_second[5], Some(13.0));
    // Ten-second steps: (7 + 13) / 10 per second.
    assert_eq!(values(&store, &over("reqs", t, t + 9, 10)), vec![Some(2.0)]);
}

#[test]
fn a_distribution_keeps_count_sum_extremes_per_second() {
    let (clock, store) = setup();
    let t = now_sec(&clock);
    store
        .ingest(&batch(vec![
            Datapoint::distribution("lat", tags(&[("z", "a")]), t * 1000, vec![1.0, 3.0]),
            Datapoint::distribution("lat", tags(&[("z", "b")]), t * 1000, vec![8.0]),
            Datapoint::distribution("lat", tags(&[("z", "a")]), (t + 1) * 1000, vec![4.0]),
        ]))
        .unwrap();
    clock.advance(Duration::from_secs(1));
    let q = |f: Aggregate, step| Query {
        aggregate: f,
        ..over("lat", t, t + 1, step)
    };
    assert_eq!(
        values(&store, &q(Aggregate::Count, 1)),
        vec![Some(3.0), Some(1.0)]
    );
    assert_eq!(
        values(&store, &q(Aggregate::Sum, 1)),
        vec![Some(12.0), Some(4.0)]
    );
    assert_eq!(
        values(&store, &q(Aggregate::Avg, 1)),
        vec![Some(4.0), Some(4.0)]
    );
    assert_eq!(
        values(&store, &q(Aggregate::Max, 1)),
        vec![Some(8.0), Some(4.0)]
    );
    assert_eq!(
        values(&store, &q(Aggregate::Min, 1)),
        vec![Some(1.0), Some(4.0)]
    );
    // Two-second steps: 4 samples over 2 s, mean 4, extremes 1 and 8.
    assert_eq!(values(&store, &q(Aggregate::Count, 2)), vec![Some(2.0)]);
    assert_eq!(values(&store, &q(Aggregate::Avg, 2)), vec![Some(4.0)]);
    assert_eq!(
        values(&store, &q(Aggregate::Percentile(100.0), 2)),
        vec![Some(8.0)]
    );
    assert_eq!(
        values(&store, &q(Aggregate::Percentile(0.0), 2)),
        vec![Some(1.0)]
    );
}

#[test]
fn percentiles_match_exact_values_within_the_bucket_error() {
    let (clock, store) = setup();
    let t = now_sec(&clock);
    // Latencies from 1 ms to 2 s over two series, skewed like real ones.
    let samples: Vec<f64> = (1..=2000)
        .map(|i| 0.001 * (i as f64).powf(1.5) / 45.0 + 0.001)
        .collect();
    let (a, b) = samples.split_at(700);
    store
        .ingest(&batch(vec![
            Datapoint::distribution("lat", tags(&[("node", "a")]), t * 1000, a.to_vec()),
            Datapoint::distribution("lat", tags(&[("node", "b")]), t * 1000, b.to_vec()),
        ]))
        .unwrap();
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    for (name, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)] {
        let q = Query {
            aggregate: Aggregate::parse(name).unwrap(),
            ..over("lat", t, t, 1)
        };
        let got = values(&store, &q)[0].unwrap();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        let exact = sorted[rank - 1];
        assert!(
            (got - exact).abs() <= exact / 16.0,
            "{name}: got {got}, exact {exact}"
        );
    }
}

#[test]
fn filters_select_series_and_group_by_splits_them() {
    let (clock, store) = setup();
    let ts = clock.wall_millis();
    let t = ts / 1000;
    store
        .ingest(&batch(vec![
            gauge("cpu", &[("zone", "a"), ("app", "web")], ts, 1.0),
            gauge("cpu", &[("zone", "a"), ("app", "db")], ts, 2.0),
            gauge("cpu", &[("zone", "b"), ("app", "web")], ts, 4.0),
            gauge("cpu", &[("zone", "c"), ("app", "web")], ts, 8.0),
            gauge("cpu", &[("app", "web")], ts, 16.0),
            gauge("mem", &[("zone", "a")], ts, 100.0),
        ]))
        .unwrap();
    let filtered = |filter: &str| {
        let mut params = HashMap::from([
            ("name".to_owned(), "cpu".to_owned()),
            ("filter".to_owned(), filter.to_owned()),
        ]);
        params.insert("from".into(), (t * 1000).to_string());
        values(&store, &Query::parse(&params).unwrap())[0]
    };
    assert_eq!(filtered("zone:a"), Some(3.0));
    assert_eq!(filtered("zone:a,app:web"), Some(1.0));
    assert_eq!(filtered("zone:a|b"), Some(7.0));
    assert_eq!(
        filtered("zone!:a"),
        Some(28.0),
        "a series without the tag is not a"
    );
    assert_eq!(filtered("zone!:a|b,app:web"), Some(24.0));

    let grouped = store
        .query(&Query {
            group_by: vec!["zone".into()],
            ..over("cpu", t, t, 1)
        })
        .unwrap();
    let groups: Vec<(String, Option<f64>)> = grouped
        .series
        .iter()
        .map(|s| (s.tags["zone"].clone(), s.values[0]))
        .collect();
    assert_eq!(
        groups,
        vec![
            ("a".into(), Some(3.0)),
            ("b".into(), Some(4.0)),
            ("c".into(), Some(8.0))
        ],
        "the series without a zone is left out"
    );
    let none = store
        .query(&Query {
            filters: vec![TagFilter {
                key: "zone".into(),
                values: vec!["z".into()],
                negate: false,
            }],
            ..over("cpu", t, t, 1)
        })
        .unwrap();
    assert!(none.series.is_empty());
}

#[test]
fn every_scalar_aggregate_over_a_group() {
    let (clock, store) = setup();
    let ts = clock.wall_millis();
    let t = ts / 1000;
    store
        .ingest(&batch(vec![
            gauge("g", &[("n", "1")], ts, 2.0),
            gauge("g", &[("n", "2")], ts, 4.0),
            gauge("g", &[("n", "3")], ts, 9.0),
        ]))
        .unwrap();
    for (f, want) in [
        ("sum", 15.0),
        ("avg", 5.0),
        ("max", 9.0),
        ("min", 2.0),
        ("count", 3.0),
    ] {
        let q = Query {
            aggregate: Aggregate::parse(f).unwrap(),
            ..over("g", t, t, 1)
        };
        assert_eq!(values(&store, &q), vec![Some(want)], "{f}");
    }
}

#[test]
fn unknown_functions_and_misused_percentiles_are_errors_naming_them() {
    let err = Aggregate::parse("median").unwrap_err();
    assert_eq!(err, QueryError::UnknownFunction("median".into()));
    assert!(err.to_string().contains("`median`"));
    assert_eq!(err.field(), "fn");
    assert_eq!(
        Aggregate::parse("percentile(99.5)").unwrap(),
        Aggregate::Percentile(99.5)
    );
    assert!(Aggregate::parse("percentile(101)").is_err());
    let params = HashMap::from([
        ("name".to_owned(), "g".to_owned()),
        ("fn".to_owned(), "nope".to_owned()),
    ]);
    assert_eq!(
        Query::parse(&params).unwrap_err(),
        QueryError::UnknownFunction("nope".into())
    );

    let (clock, store) = setup();
    let ts = clock.wall_millis();
    store
        .ingest(&batch(vec![gauge("g", &[], ts, 1.0)]))
        .unwrap();
    let err = store
        .query(&Query {
            aggregate: Aggregate::Percentile(99.0),
            ..over("g", ts / 1000, ts / 1000, 1)
        })
        .unwrap_err();
    assert_eq!(err.field(), "fn");
    assert!(err.to_string().contains("gauge"), "{err}");
}

#[test]
fn a_query_too_large_to_compute_is_refused() {
    let (clock, store) = setup();
    let ts = clock.wall_millis();
    let metrics = (0..200)
        .map(|i| gauge("g", &[("node", &i.to_string())], ts, 1.0))
        .collect();
    store.ingest(&batch(metrics)).unwrap();
    let t = ts / 1000;
    let by_node = |step| Query {
        group_by: vec!["node".into()],
        ..over("g", t - (WINDOW_SECS - 1), t, step)
    };
    // 200 groups × 3,600 one-second steps is over the limit; one-minute steps are not.
    let err = store.query(&by_node(1)).unwrap_err();
    assert_eq!(err.field(), "step");
    let result = store.query(&by_node(60)).unwrap();
    assert_eq!(result.series.len(), 200);
}

#[test]
fn query_parameters_are_parsed_strictly() {
    let parse = |pairs: &[(&str, &str)]| {
        let params: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Query::parse(&params)
    };
    let q = parse(&[
        ("name", "m"),
        ("filter", "zone:a|b,app!:x"),
        ("group_by", "zone,app"),
        ("fn", "p99"),
        ("from", "-5m"),
        ("step", "10s"),
    ])
    .unwrap();
    assert_eq!(q.from, TimeSpec::Ago(300));
    assert_eq!(q.to, TimeSpec::Now);
    assert_eq!(q.step_secs, 10);
    assert_eq!(q.group_by, vec!["zone", "app"]);
    assert_eq!(q.filters[1].key, "app");
    assert!(q.filters[1].negate);
    assert_eq!(q.filters[0].values, vec!["a", "b"]);
    for (pairs, field) in [
        (vec![("filter", "zone:a")], "name"),
        (vec![("name", "m"), ("filter", "zone")], "filter"),
        (vec![("name", "m"), ("filter", "name:x")], "filter"),
        (vec![("name", "m"), ("from", "-5y")], "from"),
        (vec![("name", "m"), ("to", "yesterday")], "to"),
        (vec![("name", "m"), ("step", "0s")], "step"),
        (vec![("name", "m"), ("step", "2h")], "step"),
        (vec![("name", "m"), ("colour", "red")], "colour"),
    ] {
        assert_eq!(parse(&pairs).unwrap_err().field(), field, "{pairs:?}");
    }
}

#[test]
fn datapoints_outside_the_window_are_dropped_and_counted() {
    let (clock, store) = setup();
    let now = clock.wall_millis();
    let report = store
        .ingest(&batch(vec![
            gauge("g", &[], now - WINDOW_SECS * 1000, 1.0),
            gauge("g", &[], now - (WINDOW_SECS - 1) * 1000, 1.0),
            gauge("g", &[], now + 60_000, 1.0),
            gauge("g", &[], now + 61_000, 1.0),
            Datapoint::distribution("d", BTreeMap::new(), 0, vec![1.0, 2.0]),
        ]))
        .unwrap();
    assert_eq!(report.accepted, 2);
    assert_eq!(
        report.dropped.too_old, 3,
        "a distribution counts its samples"
    );
    assert_eq!(report.dropped.too_far_in_future, 1);
    let stats = store.stats();
    assert_eq!(stats.datapoints_ingested, 2);
    assert_eq!(stats.dropped, report.dropped);
}

#[test]
fn data_expires_after_an_hour_and_the_ring_overwrites_its_slot() {
    let (clock, store) = setup();
    let t0 = now_sec(&clock);
    store
        .ingest(&batch(vec![counter("c", &[], t0 * 1000, 5.0)]))
        .unwrap();
    clock.advance(Duration::from_secs(WINDOW_SECS - 1));
    assert_eq!(values(&store, &over("c", t0, t0, 1)), vec![Some(5.0)]);
    clock.advance(Duration::from_secs(1));
    let gone = store.query(&over("c", t0, t0 + WINDOW_SECS, 1)).unwrap();
    assert!(
        gone.series[0].values.iter().all(Option::is_none),
        "an hour later the value is out of the window"
    );
    // 64 minutes on, the same ring slot is written again: the old minute is reset.
    let later = t0 + RING_BLOCKS * BLOCK_STEPS;
    clock.advance(Duration::from_secs(later - now_sec(&clock)));
    store
        .ingest(&batch(vec![counter("c", &[], later * 1000, 1.0)]))
        .unwrap();
    {
        let shard = store
            .shards
            .iter()
            .find(|s| !s.lock().series.is_empty())
            .unwrap();
        let shard = shard.lock();
        let series = shard.series.iter().flatten().next().unwrap();
        let SeriesData::Scalar(ring) = &series.data else {
            panic!("a counter is scalar")
        };
        assert_eq!(ring.step(t0), None, "the old minute is gone");
        assert_eq!(ring.step(later), Some(&1.0));
        assert_eq!(ring.blocks.iter().flatten().count(), 1);
    }
    assert_eq!(values(&store, &over("c", later, later, 1)), vec![Some(1.0)]);
}

#[test]
fn a_wall_clock_stepping_back_drops_datapoints_its_ring_cannot_hold() {
    let (clock, store) = setup();
    let t_new = now_sec(&clock);
    store
        .ingest(&batch(vec![gauge("g", &[], t_new * 1000, 1.0)]))
        .unwrap();
    // After the wall clock steps back an hour or more, an older minute maps to the
    // slot of a newer one: the newer data stays, the older datapoint is refused.
    let t_old = t_new - RING_BLOCKS * BLOCK_STEPS;
    let shard = store
        .shards
        .iter()
        .find(|s| !s.lock().series.is_empty())
        .unwrap();
    let mut shard = shard.lock();
    let series = shard.series.iter_mut().flatten().next().unwrap();
    let SeriesData::Scalar(ring) = &mut series.data else {
        panic!("a gauge is scalar")
    };
    assert!(ring.step_mut(t_old).is_none());
    assert_eq!(ring.step(t_new), Some(&1.0));
}

#[test]
fn a_sweep_removes_series_with_no_data_left_and_frees_the_cap() {
    let clock = ManualClock::new();
    let store = MetricsStore::with_config(
        clock.shared(),
        MetricsStoreConfig {
            max_series: 2,
            max_distribution_series: 1,
            shards: 4,
            future_tolerance: std::time::Duration::from_secs(10),
        },
    );
    let ts = clock.wall_millis();
    let report = store
        .ingest(&batch(vec![
            gauge("g", &[("n", "1")], ts, 1.0),
            gauge("g", &[("n", "2")], ts, 1.0),
            gauge("g", &[("n", "3")], ts, 1.0),
            gauge("g", &[("n", "1")], ts, 1.0),
        ]))
        .unwrap();
    // Which series misses the cap depends on shard order (the hash is seeded per
    // store): one of the three does, with its one or two datapoints.
    assert_eq!(report.accepted + report.dropped.series_limit, 4);
    assert!((1..=2).contains(&report.dropped.series_limit), "{report:?}");
    assert_eq!(store.stats().series, 2);
    assert_eq!(store.series_of("g", 10).total, 2);

    clock.advance(Duration::from_secs(30 * 60));
    store.sweep();
    assert_eq!(store.stats().series, 2, "still inside the hour");
    clock.advance(Duration::from_secs(31 * 60));
    store.sweep();
    let stats = store.stats();
    assert_eq!((stats.series, stats.series_expired), (0, 2));
    assert!(store.names().is_empty());
    let now = clock.wall_millis();
    let report = store
        .ingest(&batch(vec![
            gauge("g", &[("n", "3")], now, 1.0),
            gauge("g", &[("n", "4")], now, 1.0),
        ]))
        .unwrap();
    assert_eq!(report.accepted, 2, "the cap has room again");
}

#[test]
fn distributions_have_a_cap_of_their_own() {
    let clock = ManualClock::new();
    let store = MetricsStore::with_config(
        clock.shared(),
        MetricsStoreConfig {
            max_series: 10,
            max_distribution_series: 1,
            ..MetricsStoreConfig::default()
        },
    );
    let ts = clock.wall_millis();
    let report = store
        .ingest(&batch(vec![
            Datapoint::distribution("d", tags(&[("n", "1")]), ts, vec![1.0]),
            Datapoint::distribution("d", tags(&[("n", "2")]), ts, vec![1.0, 2.0]),
            gauge("g", &[], ts, 1.0),
        ]))
        .unwrap();
    // Which distribution wins the one place depends on shard order; the gauge's
    // value and one distribution's samples are stored, the other's are dropped.
    assert_eq!(report.accepted + report.dropped.series_limit, 4);
    assert!(report.accepted == 2 || report.accepted == 3, "{report:?}");
    let stats = store.stats();
    assert_eq!((stats.series, stats.distribution_series), (2, 1));
    clock.advance(Duration::from_secs(WINDOW_SECS + 60));
    store.sweep();
    let stats = store.stats();
    assert_eq!((stats.series, stats.distribution_series), (0, 0));
}

#[test]
fn a_datapoint_of_another_kind_than_its_series_is_dropped() {
    let (clock, store) = setup();
    let ts = clock.wall_millis();
    let report = store
        .ingest(&batch(vec![
            gauge("m", &[], ts, 1.0),
            counter("m", &[], ts, 1.0),
        ]))
        .unwrap();
    assert_eq!(report.accepted, 1);
    assert_eq!(report.dropped.kind_mismatch, 1);
}

#[test]
fn a_malformed_batch_is_refused_whole() {
    let (clock, store) = setup();
    let ts = clock.wall_millis();
    let err = store
        .ingest(&batch(vec![
            gauge("ok", &[], ts, 1.0),
            counter("bad", &[], ts, -1.0),
        ]))
        .unwrap_err();
    assert!(matches!(err, BatchError::Invalid { ref field, .. } if field == "metrics[1].value"));
    let stats = store.stats();
    assert_eq!((stats.series, stats.datapoints_ingested), (0, 0));
    assert_eq!(stats.batches_rejected, 1);
}

#[test]
fn common_tags_join_each_datapoint_and_its_own_tags_win() {
    let (clock, store) = setup();
    let ts = clock.wall_millis();
    let mut b = batch(vec![
        gauge("g", &[("zone", "b")], ts, 1.0),
        gauge("g", &[("app", "x")], ts, 2.0),
    ]);
    b.tags = tags(&[("node", "n1"), ("zone", "a")]);
    store.ingest(&b).unwrap();
    let listing = store.series_of("g", 10);
    assert_eq!(
        listing.series,
        vec![
            tags(&[("app", "x"), ("node", "n1"), ("zone", "a")]),
            tags(&[("node", "n1"), ("zone", "b")]),
        ]
    );
    assert_eq!(listing.kind, Some(MetricKind::Gauge));
    assert_eq!(listing.tag_values["zone"].len(), 2);
    // The same series published without common tags but with the same tags is one series.
    store
        .ingest(&batch(vec![gauge(
            "g",
            &[("node", "n1"), ("zone", "b")],
            ts,
            5.0,
        )]))
        .unwrap();
    assert_eq!(store.stats().series, 2);
}

#[test]
fn series_sharing_a_hash_stay_apart() {
    let mut shard = Shard::default();
    let make = |v: &str| Series::new("m", [("k", v)].into_iter(), 42, MetricKind::Gauge);
    let a = shard.insert(make("a"));
    let b = shard.insert(make("b"));
    assert_ne!(a, b);
    let own_a = tags(&[("k", "a")]);
    let own_b = tags(&[("k", "b")]);
    let empty = BTreeMap::new();
    assert_eq!(shard.find(42, "m", merged_tags(&empty, &own_a)), Some(a));
    assert_eq!(shard.find(42, "m", merged_tags(&empty, &own_b)), Some(b));
    shard.remove(a);
    assert_eq!(shard.find(42, "m", merged_tags(&empty, &own_a)), None);
    assert_eq!(shard.find(42, "m", merged_tags(&empty, &own_b)), Some(b));
    assert_eq!(shard.named("m").count(), 1);
}

#[test]
fn encoded_keys_match_only_their_own_name_and_tags() {
    let key = encode_key("m", [("a", "1"), ("b", "2")].into_iter());
    assert!(key_matches(&key, "m", [("a", "1"), ("b", "2")].into_iter()));
    for (name, tags) in [
        ("m", vec![("a", "1")]),
        ("m", vec![("a", "1"), ("b", "2"), ("c", "3")]),
        ("m", vec![("a", "1"), ("b", "22")]),
        ("m", vec![("a", "12"), ("b", "")]),
        ("mm", vec![("a", "1"), ("b", "2")]),
        ("", vec![("a", "1"), ("b", "2")]),
    ] {
        assert!(!key_matches(&key, name, tags.into_iter()), "{name}");
    }
    let series = Series::new(
        "m",
        [("a", "1"), ("b", "2")].into_iter(),
        0,
        MetricKind::Gauge,
    );
    assert_eq!(series.name(), "m");
    assert_eq!(
        series.tags().collect::<Vec<_>>(),
        vec![("a", "1"), ("b", "2")]
    );
    assert_eq!(series.tag("b"), Some("2"));
    assert_eq!(series.tag("c"), None);
    // The hash covers piece boundaries, not just the bytes.
    assert_ne!(
        series_hash(7, "m", [("ab", "c")].into_iter()),
        series_hash(7, "m", [("a", "bc")].into_iter())
    );
}

#[test]
fn concurrent_ingest_loses_nothing() {
    let clock = ManualClock::new();
    let store = Arc::new(MetricsStore::new(clock.shared()));
    let ts = clock.wall_millis();
    const THREADS: u64 = 4;
    const BATCHES: u64 = 50;
    const PER_BATCH: u64 = 200;
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let store = store.clone();
            scope.spawn(move || {
                for b in 0..BATCHES {
                    let metrics = (0..PER_BATCH)
                        .map(|i| {
                            let node = ((b * PER_BATCH + i) % 97).to_string();
                            let t = thread.to_string();
                            counter("c", &[("node", &node), ("thread", &t)], ts, 1.0)
                        })
                        .collect();
                    let report = store.ingest(&batch(metrics)).unwrap();
                    assert_eq!(report.accepted, PER_BATCH);
                }
            });
        }
    });
    let total = THREADS * BATCHES * PER_BATCH;
    let stats = store.stats();
    assert_eq!(stats.datapoints_ingested, total);
    assert_eq!(stats.dropped.total(), 0);
    assert_eq!(stats.series, (THREADS * 97) as usize);
    let t = ts / 1000;
    assert_eq!(
        values(&store, &over("c", t, t, 1)),
        vec![Some(total as f64)]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn the_sum_over_groups_is_the_ungrouped_sum(
        points in prop::collection::vec((0u8..3, 0u8..4, 0u64..6, 0u32..1000), 1..120),
        step in 1u64..4,
    ) {
        let (clock, store) = setup();
        let t0 = now_sec(&clock);
        let metrics = points
            .iter()
            .map(|&(zone, node, sec, value)| {
                let (zone, node) = (zone.to_string(), node.to_string());
                counter("c", &[("zone", &zone), ("node", &node)], (t0 + sec) * 1000, f64::from(value))
            })
            .collect();
        store.ingest(&batch(metrics)).unwrap();
        clock.advance(Duration::from_secs(6));
        let ungrouped = values(&store, &over("c", t0, t0 + 5, step));
        let grouped = store
            .query(&Query { group_by: vec!["zone".into()], ..over("c", t0, t0 + 5, step) })
            .unwrap();
        for (i, total) in ungrouped.iter().enumerate() {
            let parts: Vec<f64> = grouped.series.iter().filter_map(|s| s.values[i]).collect();
            match total {
                None => prop_assert!(parts.is_empty()),
                Some(total) => {
                    let sum: f64 = parts.iter().sum();
                    prop_assert!((sum - total).abs() <= 1e-9 * total.abs().max(1.0), "step {i}: {sum} != {total}");
                }
            }
        }
    }
}
