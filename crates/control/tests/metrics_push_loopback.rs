//! The pusher and the store over a real loopback socket: what an instance pushes,
//! the query API answers.

use std::sync::Arc;
use std::time::Duration;

use casebook_control::metrics_store::{MetricsStore, api};
use casebook_kit::clock::ManualClock;
use casebook_kit::http_client::HttpClient;
use casebook_kit::metrics_push::{MetricsPusher, node_tags};
use casebook_kit::telemetry::MetricsRegistry;
use serde_json::Value;

fn present(answer: &Value, series: usize) -> Vec<f64> {
    answer["series"][series]["values"]
        .as_array()
        .expect("values")
        .iter()
        .filter_map(Value::as_f64)
        .collect()
}

#[tokio::test]
async fn pushed_counters_and_histograms_are_answered_by_the_query_api() {
    let clock = ManualClock::new();
    let store = Arc::new(MetricsStore::new(clock.shared()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, api::router(store)).await.unwrap();
    });

    let registry = MetricsRegistry::default();
    let mut pusher = MetricsPusher::new(&base, node_tags("node-1"))
        .with_registry(registry.clone())
        .with_clock(clock.shared());
    metrics::with_local_recorder(&registry, || {
        metrics::counter!("orders_total", "zone" => "us-east-1a").increment(5);
        for ms in [10.0, 20.0, 30.0, 40.0] {
            metrics::histogram!("order_latency_seconds").record(ms / 1000.0);
        }
    });
    let outcome = pusher.push_once().await.unwrap();
    assert_eq!(outcome.datapoints, 2);

    clock.advance(Duration::from_secs(1));
    metrics::with_local_recorder(&registry, || {
        metrics::counter!("orders_total", "zone" => "us-east-1a").increment(2);
    });
    pusher.push_once().await.unwrap();

    let client = HttpClient::default();
    let counters: Value = client
        .get_json(&format!(
            "{base}/api/metrics/query?name=orders_total&filter=node:node-1&group_by=zone&fn=sum&from=-10s"
        ))
        .await
        .unwrap();
    assert_eq!(counters["series"][0]["tags"]["zone"], "us-east-1a");
    assert_eq!(
        present(&counters, 0),
        vec![5.0, 2.0],
        "deltas, one per push"
    );

    let latency: Value = client
        .get_json(&format!(
            "{base}/api/metrics/query?name=order_latency_seconds&fn=max&from=-10s"
        ))
        .await
        .unwrap();
    assert_eq!(present(&latency, 0), vec![0.04]);
    let median: Value = client
        .get_json(&format!(
            "{base}/api/metrics/query?name=order_latency_seconds&fn=p50&from=-10s"
        ))
        .await
        .unwrap();
    let p50 = present(&median, 0)[0];
    assert!((p50 - 0.02).abs() <= 0.02 / 16.0, "p50 {p50}");

    let stats: Value = client
        .get_json(&format!("{base}/api/metrics/stats"))
        .await
        .unwrap();
    // Four samples and one delta, then one delta (the histogram was drained).
    assert_eq!(stats["datapoints_ingested"], 6);
    server.abort();
}
