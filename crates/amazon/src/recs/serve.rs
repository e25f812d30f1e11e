//! The serving layer: merges the batch model and the speed layer for a user,
//! behind a short-lived cache, with the popular-items fallback.
//!
//! Seeds are the user's recent items (speed layer first, then the model's memory
//! of the user); a candidate scores `Σ over seeds of recency(seed) × (α × batch
//! similarity + (1 − α) × speed score)`, seeds themselves excluded. The answer
//! says which layers contributed, and is flagged `fallback: "popular"` with a
//! reason when neither had anything for this user — an unknown user is not an
//! error. The strategy comes from the `recs-strategy` flag: variant `blend` (the
//! merge) or `popular` (the fallback for everyone: the A/B baseline); exposures
//! are counted per variant.
//!
//! Guaranteed: an answer for every user id, within `limit` items, none of them a
//! seed. Not guaranteed: freshness within the cache's TTL (a click shows in the
//! next answer after at most `cache_ttl`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use casebook_kit::cache::{Cache, CacheConfig};
use casebook_kit::clock::SharedClock;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use super::batch::Model;
use super::speed::{SpeedLayer, top};
use crate::flags::{FlagStore, RECS_STRATEGY_FLAG};

/// Most items one answer holds.
pub const MAX_LIMIT: usize = 100;

/// The serving layer's knobs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The batch model's share of a score (the speed layer has the rest).
    pub alpha: f64,
    pub cache_ttl: Duration,
    pub cache_entries: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            alpha: 0.5,
            cache_ttl: Duration::from_secs(5),
            cache_entries: 100_000,
        }
    }
}

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub sku: String,
    pub score: f64,
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendations {
    pub user: String,
    pub items: Vec<Scored>,
    /// `blend` or `popular`.
    pub strategy: String,
    /// The layers that contributed: `batch`, `speed`.
    pub layers: Vec<String>,
    /// `popular` when the answer is the fallback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The batch model's version, when one is loaded.
    pub model_version: Option<u64>,
    pub cached: bool,
}

/// The serving layer.
#[derive(Debug)]
pub struct Recommender {
    config: ServeConfig,
    speed: Arc<SpeedLayer>,
    model: RwLock<Option<Arc<Model>>>,
    flags: Option<Arc<FlagStore>>,
    cache: Cache<(String, usize), Recommendations>,
    /// Set while the speed layer's consumer is failing: its scores are left out.
    speed_down: std::sync::atomic::AtomicBool,
}

impl Recommender {
    pub fn new(
        config: ServeConfig,
        speed: Arc<SpeedLayer>,
        flags: Option<Arc<FlagStore>>,
        clock: SharedClock,
    ) -> Self {
        let cache = Cache::new(
            CacheConfig::new("recs-answers", config.cache_entries.max(1))
                .time_to_live(config.cache_ttl.max(Duration::from_millis(1))),
            clock,
        )
        .expect("a valid cache config");
        Self {
            config,
            speed,
            model: RwLock::new(None),
            flags,
            cache,
            speed_down: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Serves `model` from now on.
    pub fn set_model(&self, model: Arc<Model>) {
        *self.model.write() = Some(model);
    }

    /// The model being served.
    pub fn model(&self) -> Option<Arc<Model>> {
        self.model.read().clone()
    }

    /// Marks the speed layer up or down (its consumer reports this).
    pub fn set_speed_available(&self, up: bool) {
        self.speed_down
            .store(!up, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn speed(&self) -> &Arc<SpeedLayer> {
        &self.speed
    }

    /// The strategy variant of `user`, counted as an exposure.
    fn strategy(&self, user: &str) -> String {
        let variant = self
            .flags
            .as_ref()
            .and_then(|f| f.assign(RECS_STRATEGY_FLAG, user))
            .map_or_else(|| "blend".to_owned(), |v| v.name);
        metrics::counter!("amazon_flag_exposures_total", "flag" => RECS_STRATEGY_FLAG, "variant" => variant.clone())
            .increment(1);
        variant
    }

    /// Up to `limit` items for `user`.
    pub fn recommend(&self, user: &str, limit: usize) -> Recommendations {
        let limit = limit.clamp(1, MAX_LIMIT);
        let strategy = self.strategy(user);
        let key = (user.to_owned(), limit);
        if let Some(mut hit) = self.cache.get(&key)
            && hit.strategy == strategy
        {
            hit.cached = true;
            return hit;
        }
        let answer = self.compute(user, limit, strategy);
        self.cache.insert(key, answer.clone());
        answer
    }

    fn compute(&self, user: &str, limit: usize, strategy: String) -> Recommendations {
        let model = self.model();
        let speed_up = !self.speed_down.load(std::sync::atomic::Ordering::Relaxed);
        let model_version = model.as_ref().map(|m| m.version);
        if strategy == "popular" {
            return self.popular(
                user,
                limit,
                strategy,
                model.as_deref(),
                "the strategy for this user's variant",
                &[],
            );
        }
        let mut seeds: Vec<String> = if speed_up {
            self.speed.recent(user)
        } else {
            Vec::new()
        };
        if let Some(model) = &model
            && let Some(known) = model.seeds.get(user)
        {
            for s in known {
                if !seeds.contains(s) {
                    seeds.push(s.clone());
                }
            }
        }
        if seeds.is_empty() {
            return self.popular(
                user,
                limit,
                strategy,
                model.as_deref(),
                "no history for this user",
                &seeds,
            );
        }
        let alpha = if !speed_up {
            1.0
        } else if model.is_none() {
            0.0
        } else {
            self.config.alpha
        };
        let mut scores: HashMap<String, f64> = HashMap::new();
        let mut layers = Vec::new();
        for (rank, seed) in seeds.iter().enumerate() {
            let recency = 1.0 / (1.0 + rank as f64);
            if let Some(model) = &model
                && let Some(similar) = model.similar.get(seed)
            {
                for (sku, sim) in similar {
                    *scores.entry(sku.clone()).or_default() += recency * alpha * f64::from(*sim);
                }
                if !similar.is_empty() && !layers.contains(&"batch") {
                    layers.push("batch");
                }
            }
            if speed_up {
                let near = self.speed.neighbours(seed);
                for (sku, score) in &near {
                    *scores.entry(sku.clone()).or_default() += recency * (1.0 - alpha) * score;
                }
                if !near.is_empty() && !layers.contains(&"speed") {
                    layers.push("speed");
                }
            }
        }
        let mut ranked: Vec<(String, f64)> = scores
            .into_iter()
            .filter(|(sku, score)| *score > 0.0 && !seeds.contains(sku))
            .collect();
        if ranked.is_empty() {
            return self.popular(
                user,
                limit,
                strategy,
                model.as_deref(),
                "no similar items yet",
                &seeds,
            );
        }
        top(&mut ranked, limit);
        Recommendations {
            user: user.to_owned(),
            items: ranked
                .into_iter()
                .map(|(sku, score)| Scored { sku, score })
                .collect(),
            strategy,
            layers: layers.into_iter().map(str::to_owned).collect(),
            fallback: None,
            reason: None,
            model_version,
            cached: false,
        }
    }

    fn popular(
        &self,
        user: &str,
        limit: usize,
        strategy: String,
        model: Option<&Model>,
        reason: &str,
        exclude: &[String],
    ) -> Recommendations {
        let speed_up = !self.speed_down.load(std::sync::atomic::Ordering::Relaxed);
        let mut items: Vec<Scored> = if speed_up {
            self.speed
                .popular(limit + exclude.len())
                .into_iter()
                .map(|(sku, score)| Scored { sku, score })
                .collect()
        } else {
            Vec::new()
        };
        let mut layers = vec![];
        if !items.is_empty() {
            layers.push("speed".to_owned());
        } else if let Some(model) = model {
            items = model
                .popular
                .iter()
                .enumerate()
                .map(|(rank, sku)| Scored {
                    sku: sku.clone(),
                    score: 1.0 / (1.0 + rank as f64),
                })
                .collect();
            layers.push("batch".to_owned());
        }
        items.retain(|s| !exclude.contains(&s.sku));
        items.truncate(limit);
        Recommendations {
            user: user.to_owned(),
            items,
            strategy,
            layers,
            fallback: Some("popular".to_owned()),
            reason: Some(reason.to_owned()),
            model_version: model.map(|m| m.version),
            cached: false,
        }
    }
}
