//! The service-plane workload behind `casebook load netflix --api`: signed-in users
//! going through the gateway — home pages, searches, plays with a heartbeat, and
//! billing — open loop, one [`LoadReport`] per run. (The streaming workload, players
//! through the CDN, is [`crate::player`].)
//!
//! **Set-up**, before the clock starts: `users` accounts are signed up (or found
//! already there), logged in (one Argon2 verification each, a few at a time) and
//! subscribed with an idempotency key, so their plays are entitled; the catalog's
//! first page gives the playable titles and the search terms (each term also sent
//! with one letter dropped, to exercise typo tolerance).
//!
//! **The mix** (percent): home 40, search 30, play 15 (a grant, then one heartbeat
//! that lands in the viewing history), billing 10 (the subscription, and one in
//! five a replayed subscribe: the same key, so no second charge), titles 5.
//!
//! An answer is `ok` when 2xx, `shed` when 429 or 503 (the gateway's rate limit,
//! bulkhead or a shedding service: an answer, not a failure), else an error.
//! Answers the gateway made from a route's fallback (`x-gateway-fallback`) are
//! `ok` for the client and counted apart, by class.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use casebook_edge::gateway::proxy::FALLBACK_HEADER;
use casebook_kit::http_client::{HttpClient, HttpResponse, bearer};
use casebook_kit::loadgen::{self, LoadPlan, LoadReport, Progress, Verdict};
use casebook_kit::sampling::{Rng, Zipf};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Accounts signed in at once during set-up (each login is an Argon2 hash).
pub const SETUP_CONCURRENCY: usize = 4;
/// The most users one run signs in.
pub const MAX_USERS: usize = 10_000;
/// The password every load account gets.
const LOAD_PASSWORD: &str = "casebook-load-password";

/// What to run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiWorkload {
    /// The gateway, `http://host:port`.
    pub gateway: String,
    /// Requests per second, open loop.
    pub rate_per_sec: f64,
    pub duration: Duration,
    /// Signed-in users the requests are spread over (Zipf, s = 1).
    pub users: usize,
    /// Requests outstanding at most.
    pub max_in_flight: usize,
    /// One request's timeout.
    pub timeout: Duration,
    /// A success slower than this is not goodput.
    pub slo: Duration,
    pub seed: u64,
}

impl Default for ApiWorkload {
    fn default() -> Self {
        Self {
            gateway: "http://127.0.0.1:8080".to_owned(),
            rate_per_sec: 50.0,
            duration: Duration::from_secs(10),
            users: 20,
            max_in_flight: 2_000,
            timeout: Duration::from_secs(5),
            slo: Duration::from_millis(500),
            seed: 1,
        }
    }
}

impl ApiWorkload {
    /// Checks the options; the error names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_USERS).contains(&self.users) {
            return Err(format!("--users must be 1..={MAX_USERS}"));
        }
        if !(self.rate_per_sec.is_finite() && self.rate_per_sec > 0.0) {
            return Err("--rate must be a positive number".to_owned());
        }
        if !self.gateway.starts_with("http://") {
            return Err("--target must be host:port or http://host:port".to_owned());
        }
        Ok(())
    }
}

/// Why the workload could not run.
#[derive(Debug, thiserror::Error)]
pub enum ApiLoadError {
    #[error("{0}")]
    Invalid(String),
    #[error("set-up failed: {0}")]
    Setup(String),
    #[error(transparent)]
    Load(#[from] loadgen::LoadError),
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ApiReport {
    pub gateway: String,
    pub users: usize,
    /// Playable titles the plays chose from.
    pub playable_titles: usize,
    pub load: LoadReport,
    /// Answers made from a route's fallback, by class.
    pub fallbacks: BTreeMap<String, u64>,
}

impl ApiReport {
    /// The human report: the load table, then the fallbacks.
    pub fn table(&self) -> String {
        let mut out = format!(
            "netflix API through the gateway {} — {} users, {} playable titles\n\n{}",
            self.gateway,
            self.users,
            self.playable_titles,
            self.load.table()
        );
        let fallbacks: Vec<String> = self
            .fallbacks
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(class, n)| format!("{class} {n}"))
            .collect();
        out.push_str(&format!(
            "\nanswered from a fallback: {}\n",
            if fallbacks.is_empty() {
                "none".to_owned()
            } else {
                fallbacks.join(", ")
            }
        ));
        out
    }
}

const CLASSES: [&str; 5] = ["home", "search", "play", "billing", "titles"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Home,
    Search,
    Play,
    Billing,
    Titles,
}

impl Op {
    fn pick(roll: u64) -> Self {
        match roll {
            0..40 => Self::Home,
            40..70 => Self::Search,
            70..85 => Self::Play,
            85..95 => Self::Billing,
            _ => Self::Titles,
        }
    }

    fn class(self) -> &'static str {
        match self {
            Self::Home => CLASSES[0],
            Self::Search => CLASSES[1],
            Self::Play => CLASSES[2],
            Self::Billing => CLASSES[3],
            Self::Titles => CLASSES[4],
        }
    }
}

#[derive(Debug)]
struct User {
    authorization: HeaderValue,
    subscribe_key: String,
}

#[derive(Debug)]
struct Shared {
    config: ApiWorkload,
    client: HttpClient,
    users: Vec<User>,
    pick_user: Zipf,
    playable: Vec<String>,
    terms: Vec<String>,
    fallbacks: [AtomicU64; CLASSES.len()],
}

/// Runs the workload against the gateway; `progress` counts the requests.
pub async fn run(config: ApiWorkload, progress: Arc<Progress>) -> Result<ApiReport, ApiLoadError> {
    config.validate().map_err(ApiLoadError::Invalid)?;
    let client = HttpClient::new(config.timeout);
    let users = sign_in(&config, &client).await?;
    let (playable, terms) = catalog_sample(&config, &client, &users[0]).await?;
    let shared = Arc::new(Shared {
        pick_user: Zipf::new(users.len(), 1.0, 0.0)
            .map_err(|e| ApiLoadError::Invalid(e.to_string()))?,
        users,
        playable,
        terms,
        client,
        fallbacks: Default::default(),
        config,
    });
    let plan = LoadPlan {
        rate_per_sec: shared.config.rate_per_sec,
        duration: shared.config.duration,
        max_in_flight: shared.config.max_in_flight,
        slo: Some(shared.config.slo),
    };
    let run_shared = shared.clone();
    let load = loadgen::run_with_progress(&plan, &progress, move |i| {
        let mut rng = Rng::new(run_shared.config.seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let op = Op::pick(rng.below(100));
        let shared = run_shared.clone();
        (
            op.class(),
            async move { request(&shared, op, &mut rng).await },
        )
    })
    .await?;
    let fallbacks = CLASSES
        .iter()
        .zip(&shared.fallbacks)
        .map(|(class, n)| ((*class).to_owned(), n.load(Ordering::Relaxed)))
        .collect();
    Ok(ApiReport {
        gateway: shared.config.gateway.clone(),
        users: shared.users.len(),
        playable_titles: shared.playable.len(),
        load,
        fallbacks,
    })
}

fn json_headers(authorization: Option<&HeaderValue>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(value) = authorization {
        headers.insert(header::AUTHORIZATION, value.clone());
    }
    headers
}

fn body(value: &Value) -> Bytes {
    Bytes::from(value.to_string())
}

/// Signs up, logs in and subscribes every load user.
async fn sign_in(config: &ApiWorkload, client: &HttpClient) -> Result<Vec<User>, ApiLoadError> {
    let permits = Arc::new(tokio::sync::Semaphore::new(SETUP_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..config.users {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiLoadError::Setup(e.to_string()))?;
        let client = client.clone();
        let gateway = config.gateway.clone();
        let seed = config.seed;
        tasks.spawn(async move {
            let _permit = permit;
            sign_in_one(&client, &gateway, seed, index)
                .await
                .map(|user| (index, user))
        });
    }
    let mut users = Vec::with_capacity(config.users);
    while let Some(done) = tasks.join_next().await {
        users.push(
            done.map_err(|e| ApiLoadError::Setup(e.to_string()))?
                .map_err(ApiLoadError::Setup)?,
        );
    }
    users.sort_by_key(|(index, _)| *index);
    Ok(users.into_iter().map(|(_, user)| user).collect())
}

async fn sign_in_one(
    client: &HttpClient,
    gateway: &str,
    seed: u64,
    index: usize,
) -> Result<User, String> {
    let email = format!("load-{seed}-{index}@casebook.test");
    let credentials = json!({ "email": email, "password": LOAD_PASSWORD });
    let signup = send_retrying(
        client,
        Method::POST,
        &format!("{gateway}/api/v1/signup"),
        json_headers(None),
        body(&credentials),
    )
    .await?;
    // 409: the account is there from an earlier run.
    if !(signup.status.is_success() || signup.status == StatusCode::CONFLICT) {
        return Err(describe("signup", &signup));
    }
    let login = send_retrying(
        client,
        Method::POST,
        &format!("{gateway}/api/v1/login"),
        json_headers(None),
        body(&credentials),
    )
    .await?;
    if !login.status.is_success() {
        return Err(describe("login", &login));
    }
    let token = serde_json::from_slice::<Value>(&login.body)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_owned))
        .ok_or_else(|| "login answered without a token".to_owned())?;
    let authorization = bearer(&token).ok_or_else(|| "the token is not a header".to_owned())?;
    let subscribe_key = format!("load-{seed}-{index}-subscribe");
    let mut headers = json_headers(Some(&authorization));
    headers.insert(
        "idempotency-key",
        HeaderValue::from_str(&subscribe_key).map_err(|e| e.to_string())?,
    );
    let subscribed = send_retrying(
        client,
        Method::POST,
        &format!("{gateway}/api/v1/billing/subscribe"),
        headers,
        body(&json!({ "plan": "standard" })),
    )
    .await?;
    // 409: subscribed by an earlier run (under another key).
    if !(subscribed.status.is_success() || subscribed.status == StatusCode::CONFLICT) {
        return Err(describe("subscribe", &subscribed));
    }
    Ok(User {
        authorization,
        subscribe_key,
    })
}

/// Set-up calls retry what a busy platform refuses (429, 502-504) a few times.
async fn send_retrying(
    client: &HttpClient,
    method: Method,
    url: &str,
    headers: HeaderMap,
    body: Bytes,
) -> Result<HttpResponse, String> {
    let mut tries = 0;
    loop {
        let outcome = client
            .send(method.clone(), url, headers.clone(), body.clone())
            .await;
        match outcome {
            Ok(response)
                if tries < 20 && matches!(response.status.as_u16(), 429 | 502 | 503 | 504) =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(response) => return Ok(response),
            Err(error) if tries < 20 => {
                tracing::debug!(%error, "set-up call failed; retrying");
                tries += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => return Err(error.to_string()),
        }
    }
}

fn describe(what: &str, response: &HttpResponse) -> String {
    format!(
        "{what} answered {}: {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    )
}

/// The playable titles and search terms from the catalog's first pages.
async fn catalog_sample(
    config: &ApiWorkload,
    client: &HttpClient,
    user: &User,
) -> Result<(Vec<String>, Vec<String>), ApiLoadError> {
    let url = format!("{}/api/v1/titles?per_page=100", config.gateway);
    let response = send_retrying(
        client,
        Method::GET,
        &url,
        json_headers(Some(&user.authorization)),
        Bytes::new(),
    )
    .await
    .map_err(ApiLoadError::Setup)?;
    let page: Value = serde_json::from_slice(&response.body)
        .map_err(|e| ApiLoadError::Setup(format!("the catalog page is not JSON: {e}")))?;
    let titles = page["titles"].as_array().cloned().unwrap_or_default();
    let mut playable: Vec<String> = titles
        .iter()
        .filter(|t| t["playable"].as_bool() == Some(true))
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .collect();
    if playable.is_empty() {
        // The pipeline's sample title, made at first start.
        playable.push("sample".to_owned());
    }
    let mut terms = Vec::new();
    for name in titles.iter().filter_map(|t| t["name"].as_str()) {
        if let Some(word) = name.split_whitespace().find(|w| w.len() >= 5) {
            let word = word.to_lowercase();
            // The same word with its second letter dropped: a typo to forgive.
            let mut typo = word.clone();
            typo.remove(1);
            terms.push(word);
            terms.push(typo);
        }
    }
    if terms.is_empty() {
        terms.extend(["stranger", "crown", "drama"].map(str::to_owned));
    }
    Ok((playable, terms))
}

async fn request(shared: &Shared, op: Op, rng: &mut Rng) -> Verdict {
    let user = &shared.users[shared.pick_user.sample(rng)];
    let gateway = &shared.config.gateway;
    let auth = Some(&user.authorization);
    let answer = match op {
        Op::Home => get(shared, &format!("{gateway}/api/v1/home"), auth).await,
        Op::Search => {
            let term = &shared.terms[rng.below(shared.terms.len() as u64) as usize];
            get(
                shared,
                &format!("{gateway}/api/v1/search?q={term}&limit=10"),
                auth,
            )
            .await
        }
        Op::Titles => {
            let page = rng.below(20) + 1;
            get(
                shared,
                &format!("{gateway}/api/v1/titles?page={page}"),
                auth,
            )
            .await
        }
        Op::Billing => {
            if rng.below(5) == 0 {
                // A client retrying its subscribe: replayed, never charged again.
                let mut headers = json_headers(auth);
                if let Ok(key) = HeaderValue::from_str(&user.subscribe_key) {
                    headers.insert("idempotency-key", key);
                }
                shared
                    .client
                    .send(
                        Method::POST,
                        &format!("{gateway}/api/v1/billing/subscribe"),
                        headers,
                        body(&json!({ "plan": "standard" })),
                    )
                    .await
            } else {
                get(
                    shared,
                    &format!("{gateway}/api/v1/billing/subscription"),
                    auth,
                )
                .await
            }
        }
        Op::Play => {
            let title = &shared.playable[rng.below(shared.playable.len() as u64) as usize];
            play(shared, title, auth, rng.below(600_000)).await
        }
    };
    match answer {
        Ok(response) => {
            if response.headers.contains_key(FALLBACK_HEADER) {
                let index = CLASSES.iter().position(|c| *c == op.class()).unwrap_or(0);
                shared.fallbacks[index].fetch_add(1, Ordering::Relaxed);
            }
            judge(op, response.status)
        }
        Err(_) => Verdict::Error,
    }
}

fn judge(op: Op, status: StatusCode) -> Verdict {
    match status.as_u16() {
        200..=299 => Verdict::Ok,
        // A replayed subscribe of an account subscribed by an earlier run.
        409 if op == Op::Billing => Verdict::Ok,
        429 | 503 => Verdict::Shed,
        _ => Verdict::Error,
    }
}

async fn get(
    shared: &Shared,
    url: &str,
    auth: Option<&HeaderValue>,
) -> Result<HttpResponse, casebook_kit::http_client::HttpError> {
    shared
        .client
        .send(Method::GET, url, json_headers(auth), Bytes::new())
        .await
}

/// A grant, then one heartbeat at `position_ms` (it becomes viewing history).
async fn play(
    shared: &Shared,
    title: &str,
    auth: Option<&HeaderValue>,
    position_ms: u64,
) -> Result<HttpResponse, casebook_kit::http_client::HttpError> {
    let gateway = &shared.config.gateway;
    let grant = shared
        .client
        .send(
            Method::POST,
            &format!("{gateway}/api/v1/playback"),
            json_headers(auth),
            body(&json!({ "title": title })),
        )
        .await?;
    if !grant.status.is_success() {
        return Ok(grant);
    }
    let Some(session) = serde_json::from_slice::<Grant>(&grant.body)
        .ok()
        .map(|g| g.session)
    else {
        return Ok(HttpResponse {
            status: StatusCode::BAD_GATEWAY,
            ..grant
        });
    };
    let events = json!({ "events": [{
        "type": "heartbeat", "position_ms": position_ms, "buffer_ms": 20_000, "bitrate_bps": 3_000_000
    }] });
    shared
        .client
        .send(
            Method::POST,
            &format!("{gateway}/api/v1/playback/{session}/events"),
            json_headers(auth),
            body(&events),
        )
        .await
}

#[derive(Debug, Deserialize)]
struct Grant {
    session: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_covers_every_class_in_its_share() {
        let mut counts = BTreeMap::new();
        for roll in 0..100 {
            *counts.entry(Op::pick(roll).class()).or_insert(0) += 1;
        }
        assert_eq!(counts["home"], 40);
        assert_eq!(counts["search"], 30);
        assert_eq!(counts["play"], 15);
        assert_eq!(counts["billing"], 10);
        assert_eq!(counts["titles"], 5);
    }

    #[test]
    fn options_are_checked() {
        let ok = ApiWorkload::default();
        assert!(ok.validate().is_ok());
        let none = ApiWorkload {
            users: 0,
            ..ok.clone()
        };
        assert!(none.validate().unwrap_err().contains("--users"));
        let bad = ApiWorkload {
            gateway: "127.0.0.1:8080".into(),
            ..ok
        };
        assert!(bad.validate().unwrap_err().contains("--target"));
    }
}
