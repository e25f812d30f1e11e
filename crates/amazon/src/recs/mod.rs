//! Recommendations in the lambda architecture the case study describes: user
//! events (views, adds to cart, purchases) feed a **speed layer** that updates
//! item-to-item co-occurrence incrementally, and a **batch layer** that recomputes
//! item-to-item similarity from the whole history on a schedule (and on demand)
//! into a versioned model; the **serving layer** merges both behind a cache and
//! falls back to popular items — flagged in the answer — when it has nothing
//! personal to say.
//!
//! | module | what it is |
//! |---|---|
//! | [`interaction`] | the one input every layer takes: who did what to which item, when |
//! | [`speed`] | decayed co-occurrence and popularity, bounded in memory |
//! | [`batch`] | cosine item-to-item similarity over the whole history; versioned models on disk |
//! | [`serve`] | the merge, the strategy, the cache, the fallback |
//! | [`history`] | a deterministic generated shopping history and the offline evaluation (hit rate at 10, lift over popular) |
//! | [`api`] | `GET /v1/recommendations/{user}`, `POST /v1/recommendations/rebuild`, `GET /v1/recommendations/model` |

pub mod api;
pub mod batch;
pub mod history;
pub mod interaction;
pub mod serve;
pub mod speed;

pub use interaction::{Interaction, Kind};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::clock::SharedClock;
use casebook_kit::events::{Event, EventBus};
use tokio_util::sync::CancellationToken;

use crate::flags::FlagStore;
use api::ModelSummary;
use batch::{BatchConfig, ModelStore};
use serve::{Recommender, ServeConfig};
use speed::{SpeedConfig, SpeedLayer};

/// The consumer group of the speed layer on every topic it reads.
pub const SPEED_GROUP: &str = "recs-speed";
/// Events one fetch or read takes.
const BATCH_EVENTS: usize = 512;

/// The recommendations area: the three layers, the bus they learn from, and the
/// model store.
#[derive(Debug)]
pub struct Recs {
    pub recommender: Arc<Recommender>,
    /// Where interactions come from: (bus, topic) pairs, read by the speed layer's
    /// consumer group and, whole, by the batch job.
    sources: Vec<(Arc<dyn EventBus>, String)>,
    models: ModelStore,
    clock: SharedClock,
    batch: BatchConfig,
    /// One batch job at a time.
    building: tokio::sync::Mutex<()>,
}

impl Recs {
    /// Opens the area: loads the newest model from `dir` if there is one.
    pub fn open(
        dir: &Path,
        sources: Vec<(Arc<dyn EventBus>, String)>,
        flags: Option<Arc<FlagStore>>,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let models = ModelStore::new(dir)?;
        let speed = Arc::new(SpeedLayer::new(SpeedConfig::default(), clock.clone()));
        let recommender = Arc::new(Recommender::new(
            ServeConfig::default(),
            speed,
            flags,
            clock.clone(),
        ));
        if let Some(model) = models.latest()? {
            recommender.set_model(Arc::new(model));
        }
        Ok(Self {
            recommender,
            sources,
            models,
            clock,
            batch: BatchConfig::default(),
            building: tokio::sync::Mutex::new(()),
        })
    }

    /// How many (bus, topic) sources the area reads.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Publishes a taste signal on `bus` (fire and forget: a signal lost to a full
    /// or failing bus costs a little taste, never a request). `event_type` is
    /// [`interaction::VIEW_EVENT`] or [`interaction::ADD_EVENT`].
    pub async fn record(
        &self,
        bus: &dyn EventBus,
        topic: &str,
        event_type: &str,
        user: &str,
        sku: &str,
    ) {
        let event = Event::new(
            event_type,
            user,
            serde_json::json!({ "user": user, "sku": sku }),
            self.clock.as_ref(),
        );
        if let Err(e) = bus.publish(topic, event).await {
            tracing::debug!(error = %e, event_type, "a taste signal was not recorded");
        }
    }

    /// The speed layer's consumer of `topic` until `shutdown`: at-least-once (a
    /// redelivered event counts twice, which decay and normalisation absorb).
    pub async fn run_speed(self: Arc<Self>, source: usize, shutdown: CancellationToken) {
        let Some((bus, topic)) = self.sources.get(source).cloned() else {
            return;
        };
        let topic = topic.as_str();
        loop {
            let fetched = tokio::select! {
                _ = shutdown.cancelled() => return,
                fetched = bus.fetch(topic, SPEED_GROUP, BATCH_EVENTS) => fetched,
            };
            match fetched {
                Ok(deliveries) => {
                    self.recommender.set_speed_available(true);
                    let Some(next) = deliveries.last().map(|d| d.offset + 1) else {
                        continue;
                    };
                    for delivery in &deliveries {
                        let bought = interaction::from_event(&delivery.event);
                        if let Some(order) = bought.iter().find(|i| i.kind == Kind::Purchase) {
                            // At least once, like the bus: a redelivered order counts twice.
                            self.recommender.record_conversion(&order.user);
                        }
                        for i in &bought {
                            self.recommender.speed().observe(i);
                        }
                    }
                    if let Err(e) = bus.commit(topic, SPEED_GROUP, next).await {
                        tracing::warn!(topic, error = %e, "the speed layer could not commit");
                    }
                }
                Err(e) => {
                    self.recommender.set_speed_available(false);
                    tracing::warn!(topic, error = %e, "the speed layer's consumer failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// Runs the batch job now over every topic's whole history; serves and saves
    /// the new model.
    pub async fn rebuild(&self) -> anyhow::Result<ModelSummary> {
        let _one_at_a_time = self.building.lock().await;
        let mut history = Vec::new();
        for (bus, topic) in &self.sources {
            let mut offset = 0;
            loop {
                let page = bus.read(topic, offset, BATCH_EVENTS).await?;
                let Some(last) = page.last() else { break };
                offset = last.offset + 1;
                history.extend(page.iter().flat_map(|d| interaction::from_event(&d.event)));
            }
        }
        history.sort_by_key(|i| i.at_ms);
        let models = self.models.clone();
        let config = self.batch.clone();
        let built_at_ms = self.clock.wall_millis();
        let model = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let model = batch::build(history, &config, models.next_version()?, built_at_ms);
            models.save(&model)?;
            Ok(model)
        })
        .await??;
        let summary = ModelSummary::of(&model);
        self.recommender.set_model(Arc::new(model));
        metrics::gauge!("amazon_recs_model_version").set(summary.version as f64);
        tracing::info!(
            version = summary.version,
            interactions = summary.interactions,
            "recommendation model rebuilt"
        );
        Ok(summary)
    }

    /// The batch job every `every` until `shutdown` (the first run right away when
    /// no model exists yet).
    pub async fn run_batch(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut first = self.recommender.model().is_none();
        loop {
            if !first {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
            first = false;
            if let Err(e) = self.rebuild().await {
                tracing::warn!(error = %format!("{e:#}"), "the batch job failed; the last model stays");
            }
        }
    }
}
