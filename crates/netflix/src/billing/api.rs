//! Billing's HTTP API (the routes are listed in [`super`]) and the subscribe
//! flow: the idempotency store in front, the SQL intent, the provider behind.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use casebook_kit::api::{ApiError, JsonBody};
use casebook_kit::idempotency::{
    Begin, Fingerprint, IDEMPOTENCY_KEY_HEADER, IdempotencyError, IdempotencyKey, MAX_KEY_LEN,
    StoredResponse,
};
use http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::provider::{ChargeOutcome, ChargeRequest, ProviderError};
use super::store::{
    ACTIVE, CANCELED, DECLINED, Intent, Invoice, MAX_ACCOUNT_LEN, PAST_DUE, Payment, SUCCEEDED,
    Subscription,
};
use super::{Billing, Plan};

/// The largest request body read.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// The header the gateway names the caller in.
pub const ACCOUNT_HEADER: &str = "x-user-id";
/// Invoices listed when `limit` is absent, and at most.
pub const DEFAULT_INVOICES: i64 = 20;
pub const MAX_INVOICES: i64 = 100;

/// The service's routes.
pub fn router(billing: Arc<Billing>) -> Router {
    Router::new()
        .route("/api/v1/billing/plans", get(plans))
        .route("/api/v1/billing/subscribe", post(subscribe))
        .route("/api/v1/billing/subscription", get(subscription))
        .route("/api/v1/billing/invoices", get(invoices))
        .route("/api/v1/billing/cancel", post(cancel))
        .route("/internal/v1/entitlement/{account}", get(entitlement))
        .fallback(|| async { ApiError::not_found("no such route").with_code("not_found") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
            .with_code("method_not_allowed")
        })
        .with_state(billing)
}

/// `POST /api/v1/billing/subscribe`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    pub plan: String,
}

/// A subscription as answered: the stored status, or `past_due` once its
/// period ended unrenewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionView {
    pub account: String,
    pub plan: String,
    pub status: String,
    pub price_cents: Option<i64>,
    pub period_start_ms: i64,
    pub period_end_ms: i64,
    pub updated_ms: i64,
}

/// A paid subscribe's answer (201).
#[derive(Debug, Clone, Serialize)]
pub struct Receipt {
    pub subscription: Option<SubscriptionView>,
    pub invoice: Option<Invoice>,
    pub payment: Payment,
}

/// A subscribe that reached an outcome: what its key replays from then on.
enum Settled {
    Paid(Box<Receipt>),
    Declined(ApiError),
}

impl Settled {
    fn stored(self) -> StoredResponse {
        let (status, body) = match self {
            Self::Paid(receipt) => (
                StatusCode::CREATED,
                serde_json::to_vec(&receipt).unwrap_or_default(),
            ),
            Self::Declined(error) => (error.status, serde_json::to_vec(&error).unwrap_or_default()),
        };
        StoredResponse {
            status: status.as_u16(),
            content_type: Some("application/json".to_owned()),
            body,
        }
    }
}

fn respond(stored: &StoredResponse) -> Response {
    let mut response = Response::new(Body::from(stored.body.clone()));
    *response.status_mut() =
        StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(content_type) = &stored.content_type
        && let Ok(value) = content_type.parse()
    {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// The caller, as the gateway names it.
fn account(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers.get(ACCOUNT_HEADER).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no account: sign in through the gateway",
        )
        .with_code("unauthenticated")
    })?;
    value
        .to_str()
        .ok()
        .filter(|id| {
            (1..=MAX_ACCOUNT_LEN).contains(&id.len()) && id.chars().all(|c| c.is_ascii_graphic())
        })
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::bad_field(
                ACCOUNT_HEADER,
                format!("must be 1..={MAX_ACCOUNT_LEN} printable ASCII characters"),
            )
        })
}

/// The key in the idempotency store: the account's own namespace. The
/// length prefix keeps `a/b` + `c` and `a` + `b/c` apart; a key too long to
/// fit beside the account is replaced by its 128-bit hash.
fn scoped_key(account: &str, key: &IdempotencyKey) -> IdempotencyKey {
    let plain = format!("{}:{account}/{}", account.len(), key.as_str());
    let scoped = if plain.len() <= MAX_KEY_LEN {
        plain
    } else {
        let hash = Fingerprint::of(&[key.as_str().as_bytes()]).0;
        format!("{}:{account}/#{hash:032x}", account.len())
    };
    IdempotencyKey::parse(&scoped).expect("an account and a valid key make a valid key")
}

fn storage(error: sqlx::Error) -> ApiError {
    tracing::error!(%error, "billing store");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the billing store is unavailable",
    )
    .with_code("storage_unavailable")
}

async fn plans(State(billing): State<Arc<Billing>>) -> Response {
    axum::Json(json!({
        "plans": billing.plans,
        "currency": "usd",
        "period_ms": billing.period.as_millis() as u64,
    }))
    .into_response()
}

async fn subscribe(State(billing): State<Arc<Billing>>, request: Request) -> Response {
    match subscribe_idempotently(&billing, request).await {
        Ok(response) | Err(response) => response,
    }
}

async fn subscribe_idempotently(billing: &Billing, request: Request) -> Result<Response, Response> {
    let fail = |error: ApiError| error.into_response();
    let account = account(request.headers()).map_err(fail)?;
    let key = match request.headers().get(IDEMPOTENCY_KEY_HEADER) {
        None => Err(IdempotencyError::MissingKey),
        Some(value) => value
            .to_str()
            .map_err(|_| IdempotencyError::InvalidKey("the key is not ASCII".into()))
            .and_then(IdempotencyKey::parse),
    }
    .map_err(|error| fail(error.into()))?;
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            fail(
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body is too large")
                    .with_code("body_too_large"),
            )
        })?;
    let target = parts.uri.path_and_query().map_or("", |pq| pq.as_str());
    let fingerprint =
        Fingerprint::of(&[parts.method.as_str().as_bytes(), target.as_bytes(), &body]);
    let claim = match billing
        .idempotency
        .begin(&scoped_key(&account, &key), fingerprint)
    {
        Ok(Begin::Replay(stored)) => return Ok(stored.to_replayed_response()),
        Ok(Begin::Execute(claim)) => claim,
        Err(error) => return Err(fail(error.into())),
    };
    let JsonBody(wanted) =
        JsonBody::<SubscribeRequest>::from_request(Request::from_parts(parts, body.into()), &())
            .await
            .map_err(fail)?;
    // Errors before an outcome drop the claim unrecorded: the key stays usable.
    let settled = billing
        .subscribe(&account, key.as_str(), &wanted.plan)
        .await
        .map_err(fail)?;
    let stored = settled.stored();
    let response = respond(&stored);
    if let Err(error) = claim.complete(stored).await {
        // The outcome is in SQL, so a retry still answers it (rebuilt, not replayed).
        tracing::warn!(%error, "billing answer not recorded for replay");
    }
    Ok(response)
}

impl Billing {
    fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.iter().find(|plan| plan.id == id)
    }

    fn now_ms(&self) -> i64 {
        self.clock.wall_millis() as i64
    }

    fn view(&self, subscription: Subscription) -> SubscriptionView {
        let status = if subscription.status == ACTIVE && self.now_ms() >= subscription.period_end_ms
        {
            PAST_DUE.to_owned()
        } else {
            subscription.status
        };
        SubscriptionView {
            price_cents: self.plan(&subscription.plan).map(|plan| plan.price_cents),
            account: subscription.account,
            plan: subscription.plan,
            status,
            period_start_ms: subscription.period_start_ms,
            period_end_ms: subscription.period_end_ms,
            updated_ms: subscription.updated_ms,
        }
    }

    /// Subscribes `account` to `plan_id`, once per client `key`.
    async fn subscribe(
        &self,
        account: &str,
        key: &str,
        plan_id: &str,
    ) -> Result<Settled, ApiError> {
        let plan = self.plan(plan_id).ok_or_else(|| {
            let known: Vec<&str> = self.plans.iter().map(|plan| plan.id.as_str()).collect();
            ApiError::bad_field(
                "plan",
                format!("unknown plan {plan_id:?}; one of: {}", known.join(", ")),
            )
            .with_code("unknown_plan")
        })?;
        // A key seen before (its replay lost to a restart, or another replica
        // took it): its payment decides the answer.
        if let Some(payment) = self
            .store
            .payment_by_key(account, key)
            .await
            .map_err(storage)?
        {
            return self.resume(payment, plan_id).await;
        }
        if let Some(current) = self.store.subscription(account).await.map_err(storage)?
            && current.plan == plan.id
            && self.view(current).status == ACTIVE
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("already subscribed to {:?}", plan.id),
            )
            .with_code("already_subscribed"));
        }
        let now_ms = self.now_ms();
        let payment = self
            .store
            .record_intent(&Intent {
                account: account.to_owned(),
                idempotency_key: key.to_owned(),
                plan: plan.id.clone(),
                amount_cents: plan.price_cents,
                period_start_ms: now_ms,
                period_end_ms: now_ms.saturating_add(self.period.as_millis() as i64),
                now_ms,
            })
            .await
            .map_err(storage)?;
        self.resume(payment, plan_id).await
    }

    /// Answers a payment's outcome, charging first if it has none yet.
    async fn resume(&self, payment: Payment, plan_id: &str) -> Result<Settled, ApiError> {
        if payment.plan != plan_id {
            return Err(IdempotencyError::FingerprintMismatch.into());
        }
        match payment.status.as_str() {
            SUCCEEDED => self.receipt(&payment).await,
            DECLINED => Ok(Settled::Declined(declined(&payment))),
            _ => self.charge(payment).await,
        }
    }

    async fn receipt(&self, payment: &Payment) -> Result<Settled, ApiError> {
        let payment = self
            .store
            .payment_by_key(&payment.account, &payment.idempotency_key)
            .await
            .map_err(storage)?
            .ok_or_else(|| ApiError::internal("payment vanished"))?;
        let invoice = self
            .store
            .invoice(&payment.invoice_id)
            .await
            .map_err(storage)?;
        let subscription = self
            .store
            .subscription(&payment.account)
            .await
            .map_err(storage)?
            .map(|subscription| self.view(subscription));
        Ok(Settled::Paid(Box::new(Receipt {
            subscription,
            invoice,
            payment,
        })))
    }

    /// Calls the provider under the payment's key until it gives a result or
    /// the attempts run out; a timed-out call is reconciled by looking the key up.
    async fn charge(&self, payment: Payment) -> Result<Settled, ApiError> {
        let request = ChargeRequest {
            key: payment.provider_key.clone(),
            account: payment.account.clone(),
            amount_cents: payment.amount_cents,
        };
        let mut timed_out = false;
        for _ in 0..self.attempts {
            self.store
                .count_attempt(&payment.id, self.now_ms())
                .await
                .map_err(storage)?;
            let started = self.clock.now();
            let answer = tokio::select! {
                biased;
                answer = self.provider.charge(&request) => Some(answer),
                () = self.pause.sleep(self.timeout) => None,
            };
            metrics::histogram!("casebook_netflix_billing_provider_seconds", "call" => "charge")
                .record(self.clock.now().duration_since(started).as_secs_f64());
            let answer = match answer {
                Some(answer) => answer,
                None => {
                    timed_out = true;
                    count_charge("timeout");
                    let asked = self.clock.now();
                    let found = self.provider.find_charge(&request.key).await;
                    metrics::histogram!("casebook_netflix_billing_provider_seconds", "call" => "lookup")
                        .record(self.clock.now().duration_since(asked).as_secs_f64());
                    match found {
                        Ok(Some(found)) => {
                            count_charge("reconciled");
                            Ok(found)
                        }
                        // Not made (or the lookup failed): charge again, same key.
                        Ok(None) | Err(_) => continue,
                    }
                }
            };
            match answer {
                Ok(ChargeOutcome::Charged { charge_id }) => {
                    count_charge("charged");
                    self.store
                        .succeed(&payment, &charge_id, self.now_ms())
                        .await
                        .map_err(storage)?;
                    return self.receipt(&payment).await;
                }
                Ok(ChargeOutcome::Declined { reason }) => {
                    count_charge("declined");
                    self.store
                        .decline(&payment, &reason, self.now_ms())
                        .await
                        .map_err(storage)?;
                    let payment = Payment {
                        decline_reason: Some(reason),
                        ..payment
                    };
                    return Ok(Settled::Declined(declined(&payment)));
                }
                Err(ProviderError::Unavailable) => {
                    count_charge("unavailable");
                    timed_out = false;
                }
                Err(error @ ProviderError::KeyReused(_)) => {
                    tracing::error!(%error, payment = payment.id, "provider refused the key");
                    return Err(
                        ApiError::internal("the payment provider refused the charge")
                            .with_code("payment_provider_error"),
                    );
                }
            }
        }
        let retry = "nothing was charged twice: retry with the same Idempotency-Key";
        Err(if timed_out {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the payment provider did not answer after {} attempts; {retry}",
                    self.attempts
                ),
            )
            .with_code("payment_provider_timeout")
        } else {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "the payment provider was unavailable for {} attempts; {retry}",
                    self.attempts
                ),
            )
            .with_code("payment_provider_unavailable")
        })
    }
}

fn count_charge(outcome: &'static str) {
    metrics::counter!("casebook_netflix_billing_charges_total", "outcome" => outcome).increment(1);
}

fn declined(payment: &Payment) -> ApiError {
    let reason = payment.decline_reason.as_deref().unwrap_or("declined");
    ApiError::new(
        StatusCode::PAYMENT_REQUIRED,
        format!("the payment was declined ({reason}); the subscription is unchanged"),
    )
    .with_code("payment_declined")
}

async fn subscription(State(billing): State<Arc<Billing>>, headers: HeaderMap) -> Response {
    let answer = async {
        let account = account(&headers)?;
        let current = billing
            .store
            .subscription(&account)
            .await
            .map_err(storage)?;
        Ok::<_, ApiError>(json!({ "subscription": current.map(|s| billing.view(s)) }))
    };
    match answer.await {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn invoices(
    State(billing): State<Arc<Billing>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let answer = async {
        let account = account(&headers)?;
        let limit = match query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .find_map(|pair| pair.strip_prefix("limit="))
        {
            None => DEFAULT_INVOICES,
            Some(raw) => raw
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_INVOICES).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_field("limit", format!("must be an integer 1..={MAX_INVOICES}"))
                })?,
        };
        let invoices = billing
            .store
            .invoices(&account, limit)
            .await
            .map_err(storage)?;
        Ok::<_, ApiError>(json!({ "invoices": invoices }))
    };
    match answer.await {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => error.into_response(),
    }
}

/// Idempotent by nature: canceling a canceled subscription answers the same.
async fn cancel(State(billing): State<Arc<Billing>>, headers: HeaderMap) -> Response {
    let answer = async {
        let account = account(&headers)?;
        if !billing
            .store
            .cancel(&account, billing.now_ms())
            .await
            .map_err(storage)?
        {
            return Err(
                ApiError::not_found("no subscription to cancel").with_code("no_subscription")
            );
        }
        let current = billing
            .store
            .subscription(&account)
            .await
            .map_err(storage)?;
        Ok(json!({ "subscription": current.map(|s| billing.view(s)) }))
    };
    match answer.await {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => error.into_response(),
    }
}

/// An account's entitlement to play: paid up for the current period
/// (a canceled subscription runs to its period's end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    pub account: String,
    pub active: bool,
    pub plan: Option<String>,
}

async fn entitlement(State(billing): State<Arc<Billing>>, Path(account): Path<String>) -> Response {
    let current = match billing.store.subscription(&account).await {
        Ok(current) => current,
        Err(error) => return storage(error).into_response(),
    };
    let now_ms = billing.now_ms();
    let plan = current
        .filter(|s| (s.status == ACTIVE || s.status == CANCELED) && now_ms < s.period_end_ms)
        .map(|s| s.plan);
    axum::Json(Entitlement {
        account,
        active: plan.is_some(),
        plan,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_keys_keep_accounts_apart_and_fit() {
        let key = IdempotencyKey::parse("k/1").unwrap();
        let a = scoped_key("a", &key);
        let b = scoped_key("a/k", &IdempotencyKey::parse("1").unwrap());
        assert_ne!(a, b);
        let long = IdempotencyKey::parse(&"x".repeat(MAX_KEY_LEN)).unwrap();
        let account = "y".repeat(MAX_ACCOUNT_LEN);
        let scoped = scoped_key(&account, &long);
        assert!(scoped.as_str().len() <= MAX_KEY_LEN);
        assert_ne!(
            scoped,
            scoped_key(&account, &IdempotencyKey::parse(&"x".repeat(254)).unwrap())
        );
    }
}
