//! Recording clients for the checkers: concurrent clients that drive the
//! inventory API over HTTP and record every operation into a [`Recorder`].
//!
//! Each client is sequential (one operation at a time, as the linearizability
//! tester requires) and deterministic from its seed. A request whose answer never
//! arrived — the connection refused or dropped, a timeout, 503, or 409
//! `idempotency_key_in_use` because the first attempt is still in flight — is sent
//! again, the same request with the same key, until it is answered; it stays one
//! event from its first attempt. A share of reservations is repeated with the same
//! key after it was answered, as a separate event (the duplicate keys of a client
//! that retries too eagerly).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use casebook_kit::http_client::{HttpClient, HttpResponse};
use http::{HeaderMap, HeaderValue, Method};
use serde_json::Value;

use super::conservation::{FinalReservation, FinalState};
use super::history::{Answer, Op, Recorder};
use crate::inventory::model::ReservationState;

/// What the clients do.
#[derive(Debug, Clone)]
pub struct Workload {
    pub clients: u32,
    pub ops_per_client: u32,
    pub skus: Vec<String>,
    /// Zipf exponent of the SKU choice (0: uniform).
    pub zipf: f64,
    /// Per cent of reservations repeated with the same key once answered.
    pub duplicate_percent: u32,
    pub max_qty: u32,
    /// Longer than the run: expiry is not part of these histories.
    pub ttl_seconds: u64,
    pub seed: u64,
    /// How long one request may go unanswered, retries included, before the run fails.
    pub give_up_after: Duration,
}

pub use casebook_kit::sampling::{Rng, Zipf};

/// Sends a request until it is answered (see the module notes); panics after
/// `give_up`.
pub async fn answered(
    http: &HttpClient,
    method: Method,
    url: &str,
    key: Option<&str>,
    body: Option<&Value>,
    give_up: Duration,
) -> HttpResponse {
    let mut headers = HeaderMap::new();
    if let Some(key) = key {
        headers.insert(
            "idempotency-key",
            HeaderValue::from_str(key).expect("test keys are ASCII"),
        );
    }
    let body = match body {
        Some(body) => {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Bytes::from(serde_json::to_vec(body).expect("JSON"))
        }
        None => Bytes::new(),
    };
    let deadline = tokio::time::Instant::now() + give_up;
    loop {
        if let Ok(response) = http
            .send(method.clone(), url, headers.clone(), body.clone())
            .await
        {
            let code = serde_json::from_slice::<Value>(&response.body)
                .ok()
                .and_then(|v| v["code"].as_str().map(str::to_owned));
            let unanswered = response.status.as_u16() == 503
                || code.as_deref() == Some("idempotency_key_in_use");
            if !unanswered {
                return response;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{method} {url} (key {key:?}) unanswered for {give_up:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn json(response: &HttpResponse) -> Value {
    serde_json::from_slice(&response.body).unwrap_or(Value::Null)
}

fn level(response: &HttpResponse, what: &str) -> Answer {
    assert_eq!(response.status.as_u16(), 200, "{what}: {}", json(response));
    let body = json(response);
    let count = |field: &str| {
        body[field]
            .as_i64()
            .unwrap_or_else(|| panic!("{what}: `{field}` in {body}"))
    };
    Answer::Level {
        available: count("available"),
        reserved: count("reserved"),
        confirmed: count("confirmed"),
    }
}

fn state_of(code: &str) -> Option<ReservationState> {
    Some(match code {
        "reservation_expired" => ReservationState::Expired,
        "reservation_released" => ReservationState::Released,
        "reservation_confirmed" => ReservationState::Confirmed,
        _ => return None,
    })
}

fn transition(response: &HttpResponse, what: &str) -> Answer {
    let body = json(response);
    match response.status.as_u16() {
        200 => Answer::State(
            serde_json::from_value(body["state"].clone())
                .unwrap_or_else(|_| panic!("{what}: a state in {body}")),
        ),
        409 => Answer::Conflict(
            body["code"]
                .as_str()
                .and_then(state_of)
                .unwrap_or_else(|| panic!("{what}: a conflict code in {body}")),
        ),
        status => panic!("{what}: {status} {body}"),
    }
}

/// Sets every SKU's stock (client id `workload.clients`, after the others).
pub async fn stock_all(
    http: &HttpClient,
    base: &str,
    workload: &Workload,
    available: u64,
    recorder: &Recorder,
) {
    for sku in &workload.skus {
        let op = Op::SetStock {
            sku: sku.clone(),
            available,
        };
        let invoked = recorder.invoke();
        let response = answered(
            http,
            Method::PUT,
            &format!("{base}/v1/inventory/{sku}"),
            None,
            Some(&serde_json::json!({ "available": available })),
            workload.give_up_after,
        )
        .await;
        recorder.record(workload.clients, op, level(&response, "set stock"), invoked);
    }
}

/// Runs client `client` to the end of its operations against `base`
/// (`http://host:port`; a restarted server must listen there again). Counts
/// answered operations in `answered_ops`.
pub async fn run_client(
    client: u32,
    http: HttpClient,
    base: String,
    workload: Arc<Workload>,
    recorder: Arc<Recorder>,
    answered_ops: Arc<AtomicU64>,
) {
    let mut rng = Rng::new(workload.seed ^ (u64::from(client) << 32) ^ 0xA11CE);
    let zipf = Zipf::new(workload.skus.len().max(1), workload.zipf, 0.0)
        .expect("a workload's Zipf exponent is at least 0");
    let mut active: Vec<(String, String)> = Vec::new();
    let give_up = workload.give_up_after;
    for n in 0..workload.ops_per_client {
        let url = |path: &str| format!("{base}{path}");
        let roll = rng.below(100);
        if roll < 25 && !active.is_empty() {
            let (sku, id) = active.swap_remove(rng.below(active.len() as u64) as usize);
            let confirm = roll < 15;
            let op = if confirm {
                Op::Confirm {
                    sku,
                    id: id.clone(),
                }
            } else {
                Op::Release {
                    sku,
                    id: id.clone(),
                }
            };
            let verb = if confirm { "confirm" } else { "release" };
            let invoked = recorder.invoke();
            let response = answered(
                &http,
                Method::POST,
                &url(&format!("/v1/reservations/{id}/{verb}")),
                None,
                None,
                give_up,
            )
            .await;
            recorder.record(client, op, transition(&response, verb), invoked);
        } else if roll < 40 {
            let sku = workload.skus[zipf.sample(&mut rng)].clone();
            let invoked = recorder.invoke();
            let response = answered(
                &http,
                Method::GET,
                &url(&format!("/v1/inventory/{sku}")),
                None,
                None,
                give_up,
            )
            .await;
            recorder.record(client, Op::Stock { sku }, level(&response, "read"), invoked);
        } else {
            let sku = workload.skus[zipf.sample(&mut rng)].clone();
            let qty = 1 + rng.below(u64::from(workload.max_qty)) as u32;
            let key = format!("c{client}-{n}-{}", workload.seed);
            let body =
                serde_json::json!({"sku": sku, "qty": qty, "ttl_seconds": workload.ttl_seconds});
            let repeats = if rng.below(100) < u64::from(workload.duplicate_percent) {
                2
            } else {
                1
            };
            for _ in 0..repeats {
                let invoked = recorder.invoke();
                let response = answered(
                    &http,
                    Method::POST,
                    &url("/v1/reservations"),
                    Some(&key),
                    Some(&body),
                    give_up,
                )
                .await;
                let got = json(&response);
                let answer = match (response.status.as_u16(), got["code"].as_str()) {
                    (201, _) => {
                        let id = got["id"].as_str().expect("an id").to_owned();
                        Answer::Reserved { id }
                    }
                    (409, Some("insufficient_stock")) => Answer::Insufficient,
                    (status, _) => panic!("reserve: {status} {got}"),
                };
                if let Answer::Reserved { id } = &answer
                    && !active.iter().any(|(_, a)| a == id)
                {
                    active.push((sku.clone(), id.clone()));
                }
                let op = Op::Reserve {
                    key: key.clone(),
                    sku: sku.clone(),
                    qty,
                };
                recorder.record(client, op, answer, invoked);
            }
        }
        answered_ops.fetch_add(1, Ordering::Relaxed);
    }
}

/// Fetches the final state: every SKU's level and every reservation id in
/// `events` (an unknown id is recorded as `None`).
pub async fn final_state(
    http: &HttpClient,
    base: &str,
    workload: &Workload,
    events: &[super::history::Event],
) -> FinalState {
    let mut end = FinalState::default();
    for sku in &workload.skus {
        let response = answered(
            http,
            Method::GET,
            &format!("{base}/v1/inventory/{sku}"),
            None,
            None,
            workload.give_up_after,
        )
        .await;
        let Answer::Level {
            available,
            reserved,
            confirmed,
        } = level(&response, "final level")
        else {
            unreachable!("level answers a level")
        };
        end.levels
            .insert(sku.clone(), (available, reserved, confirmed));
    }
    for event in events {
        let Answer::Reserved { id } = &event.answer else {
            continue;
        };
        if end.reservations.contains_key(id) {
            continue;
        }
        let response = answered(
            http,
            Method::GET,
            &format!("{base}/v1/reservations/{id}"),
            None,
            None,
            workload.give_up_after,
        )
        .await;
        let body = json(&response);
        let found = (response.status.as_u16() == 200).then(|| FinalReservation {
            sku: body["sku"].as_str().unwrap_or_default().to_owned(),
            qty: body["qty"].as_u64().unwrap_or(0) as u32,
            state: serde_json::from_value(body["state"].clone())
                .unwrap_or(ReservationState::Active),
        });
        end.reservations.insert(id.clone(), found);
    }
    end
}
