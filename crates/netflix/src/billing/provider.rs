//! The simulated payment provider: Stripe-like charges keyed by an idempotency
//! key, failing and timing out at configured rates.
//!
//! Guaranteed:
//! - **One charge per key.** The provider dedups by key itself: a charge retried
//!   with a key it has seen answers the first result (charged or declined) and
//!   never charges again, whoever retries and however often. The same key with
//!   another account or amount is refused ([`ProviderError::KeyReused`]).
//! - **Deterministic** for a seed: the fate of each new key (charged, declined,
//!   unavailable, timed out) is drawn from one [`Rng`] in call order.
//! - **The ledger** ([`SimulatedProvider::ledger`]) lists every charge made, in
//!   order: it is what tests hold the billing service to.
//!
//! The timeout is the classic ambiguity: a timed-out charge never answers (the
//! caller's own timeout ends the wait) and, on a coin flip, the charge happened
//! anyway. [`SimulatedProvider::find_charge`] is how a caller reconciles.
//!
//! Bounded: at most `max_charges` keys are remembered; beyond that new keys are
//! answered [`ProviderError::Unavailable`] (a simulation's memory, not a
//! provider's policy). Not simulated: refunds, currencies, card details,
//! webhooks, key expiry (the real ones forget keys after a day).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use casebook_kit::resilience::{Sleeper, TokioSleeper};
use casebook_kit::sampling::Rng;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::Serialize;

/// The keys the simulation remembers by default.
pub const DEFAULT_MAX_CHARGES: usize = 1_000_000;

/// Sleeps, injected: the kit's [`Sleeper`] made object-safe, so the provider
/// (latency) and the billing service (the caller's timeout) share one kind.
#[derive(Clone)]
pub struct Pause(Arc<dyn Fn(Duration) -> BoxFuture<'static, ()> + Send + Sync>);

impl Pause {
    /// Real sleeps on the tokio timer.
    pub fn tokio() -> Self {
        Self::from_sleeper(TokioSleeper)
    }

    /// Sleeps from any kit sleeper (`ManualSleeper` in tests: every sleep is
    /// over at once and moves the manual clock).
    pub fn from_sleeper<S: Sleeper>(sleeper: S) -> Self {
        Self(Arc::new(move |duration| Box::pin(sleeper.sleep(duration))))
    }

    pub fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        (self.0)(duration)
    }
}

impl std::fmt::Debug for Pause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pause")
    }
}

/// The rates and pace of the simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulation {
    /// Share of new charges declined (the card's fault: final).
    pub decline_rate: f64,
    /// Share of calls answered "unavailable" (nothing charged: retry).
    pub failure_rate: f64,
    /// Share of new charges that never answer (charged or not, half and half).
    pub timeout_rate: f64,
    /// How long each answer takes.
    pub latency: Duration,
    pub seed: u64,
    pub max_charges: usize,
}

impl Default for Simulation {
    fn default() -> Self {
        Self {
            decline_rate: 0.0,
            failure_rate: 0.0,
            timeout_rate: 0.0,
            latency: Duration::ZERO,
            seed: 1,
            max_charges: DEFAULT_MAX_CHARGES,
        }
    }
}

/// One charge request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    /// The provider's idempotency key.
    pub key: String,
    pub account: String,
    pub amount_cents: i64,
}

/// A charge's result, as the provider remembers it under its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    Charged { charge_id: String },
    Declined { reason: String },
}

/// Why the provider gave no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("the payment provider is unavailable")]
    Unavailable,
    #[error("the provider key {0:?} was used for another charge")]
    KeyReused(String),
}

/// A charge made: one line of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Charge {
    pub charge_id: String,
    pub key: String,
    pub account: String,
    pub amount_cents: i64,
}

#[derive(Debug)]
struct Remembered {
    account: String,
    amount_cents: i64,
    outcome: ChargeOutcome,
}

#[derive(Debug, Default)]
struct Ledger {
    by_key: HashMap<String, Remembered>,
    charges: Vec<Charge>,
}

/// What happens to a call, decided under the lock.
enum Fate {
    Answer(Result<ChargeOutcome, ProviderError>),
    /// Never answers (the charge may have been made).
    Hang,
}

/// The simulated provider. Shared (`Arc`) by every billing instance of a
/// process, as a real provider outlives its clients' restarts.
#[derive(Debug)]
pub struct SimulatedProvider {
    simulation: Mutex<Simulation>,
    pause: Pause,
    rng: Mutex<Rng>,
    ledger: Mutex<Ledger>,
    hang_after_charge: AtomicBool,
    charges_made: tokio::sync::watch::Sender<usize>,
}

impl SimulatedProvider {
    pub fn new(simulation: Simulation, pause: Pause) -> Self {
        Self {
            rng: Mutex::new(Rng::new(simulation.seed)),
            simulation: Mutex::new(simulation),
            pause,
            ledger: Mutex::default(),
            hang_after_charge: AtomicBool::new(false),
            charges_made: tokio::sync::watch::channel(0).0,
        }
    }

    /// Charges `request.amount_cents` once per `request.key`.
    pub async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderError> {
        let simulation = self.simulation.lock().clone();
        if !simulation.latency.is_zero() {
            self.pause.sleep(simulation.latency).await;
        }
        match self.decide(request, &simulation) {
            Fate::Answer(answer) => answer,
            Fate::Hang => std::future::pending().await,
        }
    }

    /// The result remembered under `key`, if a charge with it was made or
    /// declined: how a caller whose charge timed out learns what happened.
    pub async fn find_charge(&self, key: &str) -> Result<Option<ChargeOutcome>, ProviderError> {
        let simulation = self.simulation.lock().clone();
        if !simulation.latency.is_zero() {
            self.pause.sleep(simulation.latency).await;
        }
        if self.rng.lock().chance(simulation.failure_rate) {
            return Err(ProviderError::Unavailable);
        }
        Ok(self
            .ledger
            .lock()
            .by_key
            .get(key)
            .map(|remembered| remembered.outcome.clone()))
    }

    fn decide(&self, request: &ChargeRequest, sim: &Simulation) -> Fate {
        let mut ledger = self.ledger.lock();
        if let Some(seen) = ledger.by_key.get(&request.key) {
            return Fate::Answer(
                if seen.account == request.account && seen.amount_cents == request.amount_cents {
                    Ok(seen.outcome.clone())
                } else {
                    Err(ProviderError::KeyReused(request.key.clone()))
                },
            );
        }
        let (draw, charged_anyway) = {
            let mut rng = self.rng.lock();
            (rng.unit(), rng.chance(0.5))
        };
        if draw < sim.failure_rate || ledger.by_key.len() >= sim.max_charges {
            return Fate::Answer(Err(ProviderError::Unavailable));
        }
        if draw < sim.failure_rate + sim.decline_rate {
            let outcome = ChargeOutcome::Declined {
                reason: "insufficient_funds".to_owned(),
            };
            remember(&mut ledger, request, outcome.clone());
            return Fate::Answer(Ok(outcome));
        }
        let times_out = draw < sim.failure_rate + sim.decline_rate + sim.timeout_rate;
        if times_out && !charged_anyway {
            return Fate::Hang;
        }
        let charge_id = format!("ch_{:06}", ledger.charges.len() + 1);
        ledger.charges.push(Charge {
            charge_id: charge_id.clone(),
            key: request.key.clone(),
            account: request.account.clone(),
            amount_cents: request.amount_cents,
        });
        let made = ledger.charges.len();
        let outcome = ChargeOutcome::Charged { charge_id };
        remember(&mut ledger, request, outcome.clone());
        drop(ledger);
        self.charges_made.send_replace(made);
        if times_out || self.hang_after_charge.load(Ordering::SeqCst) {
            Fate::Hang
        } else {
            Fate::Answer(Ok(outcome))
        }
    }

    /// Every charge made, in order.
    pub fn ledger(&self) -> Vec<Charge> {
        self.ledger.lock().charges.clone()
    }

    /// Changes the rates from now on (a chaos knob; tests turn declines on and off).
    pub fn set_rates(&self, decline_rate: f64, failure_rate: f64, timeout_rate: f64) {
        let mut simulation = self.simulation.lock();
        simulation.decline_rate = decline_rate;
        simulation.failure_rate = failure_rate;
        simulation.timeout_rate = timeout_rate;
    }

    /// For crash tests: new charges are made but never answered.
    pub fn set_hang_after_charge(&self, hang: bool) {
        self.hang_after_charge.store(hang, Ordering::SeqCst);
    }

    /// Waits until at least `count` charges were made.
    pub async fn wait_for_charges(&self, count: usize) {
        let mut made = self.charges_made.subscribe();
        // The sender lives in `self`, so the wait ends only by reaching the count.
        let _ = made.wait_for(|made| *made >= count).await;
    }
}

fn remember(ledger: &mut Ledger, request: &ChargeRequest, outcome: ChargeOutcome) {
    ledger.by_key.insert(
        request.key.clone(),
        Remembered {
            account: request.account.clone(),
            amount_cents: request.amount_cents,
            outcome,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(key: &str) -> ChargeRequest {
        ChargeRequest {
            key: key.to_owned(),
            account: "a1".to_owned(),
            amount_cents: 999,
        }
    }

    fn provider(simulation: Simulation) -> SimulatedProvider {
        SimulatedProvider::new(simulation, Pause::tokio())
    }

    #[tokio::test]
    async fn a_key_charges_once_and_answers_the_first_result_after() {
        let provider = provider(Simulation::default());
        let first = provider.charge(&request("k1")).await.unwrap();
        for _ in 0..3 {
            assert_eq!(provider.charge(&request("k1")).await.unwrap(), first);
        }
        assert_eq!(provider.ledger().len(), 1);
        provider.charge(&request("k2")).await.unwrap();
        assert_eq!(provider.ledger().len(), 2);
        let mut other = request("k1");
        other.amount_cents = 1;
        assert_eq!(
            provider.charge(&other).await,
            Err(ProviderError::KeyReused("k1".into()))
        );
    }

    #[tokio::test]
    async fn declines_are_remembered_and_unavailability_is_not() {
        let declining = provider(Simulation {
            decline_rate: 1.0,
            ..Simulation::default()
        });
        let declined = declining.charge(&request("k")).await.unwrap();
        assert!(matches!(declined, ChargeOutcome::Declined { .. }));
        assert_eq!(
            declining.find_charge("k").await.unwrap(),
            Some(declined.clone())
        );
        assert!(declining.ledger().is_empty());

        let down = provider(Simulation {
            failure_rate: 1.0,
            ..Simulation::default()
        });
        assert_eq!(
            down.charge(&request("k")).await,
            Err(ProviderError::Unavailable)
        );
        assert!(down.ledger().is_empty());
    }

    #[tokio::test]
    async fn a_timed_out_charge_hangs_and_may_have_happened() {
        let provider = Arc::new(provider(Simulation {
            timeout_rate: 1.0,
            seed: 7,
            ..Simulation::default()
        }));
        let mut charged = 0;
        for i in 0..20 {
            let key = format!("k{i}");
            let charge = request(&key);
            let call = provider.charge(&charge);
            // Never answers: the first poll leaves it pending for good.
            assert!(futures::FutureExt::now_or_never(call).is_none());
            if let Some(ChargeOutcome::Charged { .. }) = provider.find_charge(&key).await.unwrap() {
                charged += 1;
            }
        }
        assert_eq!(provider.ledger().len(), charged);
        assert!(charged > 0 && charged < 20, "{charged} of 20 charged");
    }

    #[tokio::test]
    async fn the_same_seed_decides_the_same_fates() {
        let fates = |seed| async move {
            let provider = provider(Simulation {
                decline_rate: 0.3,
                failure_rate: 0.3,
                seed,
                ..Simulation::default()
            });
            let mut fates = Vec::new();
            for i in 0..30 {
                fates.push(format!(
                    "{:?}",
                    provider.charge(&request(&format!("k{i}"))).await
                ));
            }
            fates
        };
        assert_eq!(fates(3).await, fates(3).await);
        assert_ne!(fates(3).await, fates(4).await);
    }
}
