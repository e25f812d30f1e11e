//! The playback API's two calls into the service plane, made only for plays that
//! arrive through the gateway with a caller (`x-user-id`, an account id):
//!
//! - **Entitlement**: billing's `GET /internal/v1/entitlement/{account}`, cached
//!   [`crate::config::NetflixConfig::entitlement_ttl`] per account on the injected clock. An
//!   account without an active subscription is refused 402 `subscription_required`.
//!   When billing cannot answer, the play is **allowed** and counted
//!   (`casebook_netflix_entitlement_unchecked_total`): streaming stays up through a
//!   billing outage, as the case study's availability-first services do.
//! - **Viewing history**: each heartbeat of such a session becomes a progress record
//!   for users' `POST /internal/v1/history`, through a queue of at most
//!   [`crate::config::NetflixConfig::history_queue`] records drained by one task. Playback never
//!   waits on it: a full queue drops the record (counted in
//!   `casebook_netflix_history_dropped_total`), and a failed write is counted, not
//!   retried — the next heartbeat carries a newer position anyway.
//!
//! Plays without a caller (the player fleet calling playback directly) are neither
//! checked nor recorded.

use std::sync::Arc;
use std::time::Duration;

use casebook_kit::cache::{AsyncCache, CacheConfig};
use casebook_kit::clock::SharedClock;
use casebook_kit::resilience::breaker::BreakerRegistry;
use casebook_kit::resilience::stack::{ResilienceConfig, ResilientClient, StackBuilder};
use casebook_kit::resolve::Resolver;
use casebook_kit::topology::Placement;
use http::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::billing::BILLING_SERVICE;
use crate::users::USERS_SERVICE;

/// Accounts whose entitlement is cached at once.
pub const MAX_CACHED_ENTITLEMENTS: u64 = 100_000;

/// Billing's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    pub account: String,
    pub active: bool,
    #[serde(default)]
    pub plan: Option<String>,
}

/// What entitlement decided for one play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Entitled,
    NotEntitled,
    /// Billing could not answer; the play goes ahead.
    Unchecked,
}

/// One progress record, as users' internal history route takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub account: String,
    pub title: String,
    pub position_s: f64,
    pub duration_s: f64,
}

/// The entitlement check and the history writer of one playback instance.
#[derive(Debug)]
pub struct AccountLink {
    billing: ResilientClient,
    resolver: Arc<Resolver>,
    near: Placement,
    entitlements: AsyncCache<String, bool>,
    history: mpsc::Sender<Progress>,
}

/// The receiving end, drained by [`write_history`].
#[derive(Debug)]
pub struct HistoryQueue(mpsc::Receiver<Progress>);

impl AccountLink {
    /// A link for an instance at `near`; `queue` bounds the history records waiting.
    pub fn new(
        resolver: Arc<Resolver>,
        near: Placement,
        clock: SharedClock,
        registry: BreakerRegistry,
        entitlement_ttl: Duration,
        queue: usize,
    ) -> anyhow::Result<(Self, HistoryQueue)> {
        let mut resilience = ResilienceConfig::default();
        // A play waits on this answer: a slow billing is treated as a down one.
        resilience.timeout.default = Duration::from_millis(300);
        resilience.retry.max_attempts = 2;
        let billing = ResilientClient::with_builder(
            StackBuilder::new(BILLING_SERVICE, resilience).registry(registry),
            None,
        )
        .map_err(|e| anyhow::anyhow!("{BILLING_SERVICE} stack: {}: {}", e.field, e.reason))?;
        let entitlements = AsyncCache::new(
            CacheConfig::new("netflix_playback_entitlement", MAX_CACHED_ENTITLEMENTS)
                .time_to_live(entitlement_ttl),
            clock,
        )?;
        let (history, receiver) = mpsc::channel(queue.max(1));
        Ok((
            Self {
                billing,
                resolver,
                near,
                entitlements,
                history,
            },
            HistoryQueue(receiver),
        ))
    }

    /// Whether `account` may play.
    pub async fn entitlement(&self, account: &str) -> Verdict {
        let fetched = self
            .entitlements
            .try_get_or_insert_with(account.to_owned(), self.fetch(account))
            .await;
        let verdict = match fetched {
            Ok(true) => Verdict::Entitled,
            Ok(false) => Verdict::NotEntitled,
            Err(error) => {
                tracing::debug!(%error, "entitlement unchecked");
                Verdict::Unchecked
            }
        };
        let outcome = match verdict {
            Verdict::Entitled => "entitled",
            Verdict::NotEntitled => "refused",
            Verdict::Unchecked => "unchecked",
        };
        metrics::counter!("casebook_netflix_entitlement_checks_total", "outcome" => outcome)
            .increment(1);
        if verdict == Verdict::Unchecked {
            metrics::counter!("casebook_netflix_entitlement_unchecked_total").increment(1);
        }
        verdict
    }

    async fn fetch(&self, account: &str) -> Result<bool, String> {
        let address = self
            .resolver
            .resolve(BILLING_SERVICE, &self.near)
            .await
            .map_err(|e| e.to_string())?;
        // Account ids are the users service's own (checked by the caller), safe in a path.
        let url = format!("http://{address}/internal/v1/entitlement/{account}");
        match self.billing.get_json::<Entitlement>(&url).await {
            Ok(answer) => Ok(answer.active),
            Err(error) => {
                self.resolver.forget(BILLING_SERVICE);
                Err(error.to_string())
            }
        }
    }

    /// Queues a progress record; never waits.
    pub fn record(&self, progress: Progress) {
        if self.history.try_send(progress).is_err() {
            metrics::counter!("casebook_netflix_history_dropped_total").increment(1);
        }
    }
}

/// Drains `queue` into the users service until `shutdown`.
pub async fn write_history(
    queue: HistoryQueue,
    resolver: Arc<Resolver>,
    near: Placement,
    registry: BreakerRegistry,
    shutdown: CancellationToken,
) {
    let mut resilience = ResilienceConfig::default();
    resilience.timeout.default = Duration::from_millis(500);
    let client = match ResilientClient::with_builder(
        StackBuilder::new(USERS_SERVICE, resilience).registry(registry),
        None,
    ) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(field = %e.field, reason = %e.reason, "history writer not started");
            return;
        }
    };
    let mut queue = queue.0;
    loop {
        let progress = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = queue.recv() => match next {
                Some(progress) => progress,
                None => return,
            },
        };
        let outcome = match resolver.resolve(USERS_SERVICE, &near).await {
            Ok(address) => {
                let url = format!("http://{address}/internal/v1/history");
                // An upsert of the newest position: safe to retry.
                match client
                    .send_json::<_, serde_json::Value>(Method::POST, &url, &progress, true)
                    .await
                {
                    Ok(_) => "written",
                    Err(error) => {
                        tracing::debug!(%error, "history write failed");
                        resolver.forget(USERS_SERVICE);
                        "failed"
                    }
                }
            }
            Err(_) => "failed",
        };
        metrics::counter!("casebook_netflix_history_writes_total", "outcome" => outcome)
            .increment(1);
    }
}
