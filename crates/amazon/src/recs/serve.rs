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
//! The popular list behind the fallback is computed once and shared (ranking the
//! speed layer's items is a sort of up to `max_items` under its lock — too much per
//! answer under load): it is recomputed when the speed layer has observed new
//! interactions *and* `popular_refresh` has passed on the injected clock, or at
//! once when its source changes (the model's version, the speed layer going down
//! or up). It holds [`POPULAR_LIST_LEN`] items; an answer that needs more (a long
//! `limit` with many seeds excluded) ranks afresh.
//!
//! Guaranteed: an answer for every user id, within `limit` items, none of them a
//! seed. Not guaranteed: freshness within the cache's TTL (a click shows in the
//! next answer after at most `cache_ttl`; in the popular fallback after at most
//! `popular_refresh` more).

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

/// Items the shared popular list holds: a full answer plus as many excluded seeds.
pub const POPULAR_LIST_LEN: usize = 2 * MAX_LIMIT;

/// The serving layer's knobs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The batch model's share of a score (the speed layer has the rest).
    pub alpha: f64,
    pub cache_ttl: Duration,
    pub cache_entries: u64,
    /// The shortest time between recomputations of the popular list.
    pub popular_refresh: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            alpha: 0.5,
            cache_ttl: Duration::from_secs(5),
            cache_entries: 100_000,
            popular_refresh: Duration::from_secs(1),
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
    clock: SharedClock,
    /// The fallback's ranking, shared by every fallback answer (see the module docs).
    popular_list: parking_lot::Mutex<Option<Arc<PopularList>>>,
}

/// The popular ranking at one moment, and what it was computed from.
#[derive(Debug)]
struct PopularList {
    /// `(speed layer up, model version)`: a change recomputes at once.
    source: (bool, Option<u64>),
    /// The speed layer's `observed()` when computed.
    observed: u64,
    at: std::time::Instant,
    /// `speed` or `batch` (empty when neither had anything).
    layer: Option<&'static str>,
    items: Vec<Scored>,
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
            clock.clone(),
        )
        .expect("a valid cache config");
        Self {
            config,
            speed,
            model: RwLock::new(None),
            flags,
            cache,
            speed_down: std::sync::atomic::AtomicBool::new(false),
            clock,
            popular_list: parking_lot::Mutex::new(None),
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

    /// The strategy variant of `user`.
    fn variant(&self, user: &str) -> String {
        self.flags
            .as_ref()
            .and_then(|f| f.assign(RECS_STRATEGY_FLAG, user))
            .map_or_else(|| "blend".to_owned(), |v| v.name)
    }

    /// The strategy variant of `user`, counted as an exposure.
    fn strategy(&self, user: &str) -> String {
        let variant = self.variant(user);
        metrics::counter!("amazon_flag_exposures_total", "flag" => RECS_STRATEGY_FLAG, "variant" => variant.clone())
            .increment(1);
        variant
    }

    /// `user` placed an order: a conversion of their strategy variant, so the A/B
    /// comparison (conversions over exposures per variant) shows in the metrics.
    pub fn record_conversion(&self, user: &str) {
        let variant = self.variant(user);
        metrics::counter!("amazon_flag_conversions_total", "flag" => RECS_STRATEGY_FLAG, "variant" => variant)
            .increment(1);
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

    /// The shared popular list, recomputed when due (see the module docs).
    fn popular_list(&self, model: Option<&Model>) -> Arc<PopularList> {
        let speed_up = !self.speed_down.load(std::sync::atomic::Ordering::Relaxed);
        let source = (speed_up, model.map(|m| m.version));
        let observed = self.speed.observed();
        let now = self.clock.now();
        // Held while recomputing, so a burst of fallbacks ranks once, not once each.
        let mut cached = self.popular_list.lock();
        if let Some(list) = cached.as_ref()
            && list.source == source
            && (list.observed == observed
                || now.saturating_duration_since(list.at) < self.config.popular_refresh)
        {
            return list.clone();
        }
        let fresh =
            Arc::new(self.rank_popular(speed_up, model, POPULAR_LIST_LEN, source, observed, now));
        metrics::counter!("amazon_recs_popular_recomputed_total").increment(1);
        *cached = Some(fresh.clone());
        fresh
    }

    fn rank_popular(
        &self,
        speed_up: bool,
        model: Option<&Model>,
        len: usize,
        source: (bool, Option<u64>),
        observed: u64,
        at: std::time::Instant,
    ) -> PopularList {
        let mut items: Vec<Scored> = if speed_up {
            self.speed
                .popular(len)
                .into_iter()
                .map(|(sku, score)| Scored { sku, score })
                .collect()
        } else {
            Vec::new()
        };
        let mut layer = None;
        if !items.is_empty() {
            layer = Some("speed");
        } else if let Some(model) = model {
            items = model
                .popular
                .iter()
                .take(len)
                .enumerate()
                .map(|(rank, sku)| Scored {
                    sku: sku.clone(),
                    score: 1.0 / (1.0 + rank as f64),
                })
                .collect();
            layer = Some("batch");
        }
        PopularList {
            source,
            observed,
            at,
            layer,
            items,
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
        let mut list = self.popular_list(model);
        if limit + exclude.len() > list.items.len() && list.items.len() == POPULAR_LIST_LEN {
            // The shared list may be too short once the seeds are taken out.
            let (source, observed, at) = (list.source, list.observed, list.at);
            list = Arc::new(self.rank_popular(
                source.0,
                model,
                limit + exclude.len(),
                source,
                observed,
                at,
            ));
        }
        let items: Vec<Scored> = list
            .items
            .iter()
            .filter(|s| !exclude.contains(&s.sku))
            .take(limit)
            .cloned()
            .collect();
        Recommendations {
            user: user.to_owned(),
            items,
            strategy,
            layers: list.layer.iter().map(|l| (*l).to_owned()).collect(),
            fallback: Some("popular".to_owned()),
            reason: Some(reason.to_owned()),
            model_version: model.map(|m| m.version),
            cached: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recs::batch::{BatchConfig, build};
    use crate::recs::speed::SpeedConfig;
    use crate::recs::{Interaction, Kind};
    use casebook_kit::clock::ManualClock;

    fn i(user: &str, sku: &str, kind: Kind) -> Interaction {
        Interaction {
            user: user.into(),
            sku: sku.into(),
            kind,
            at_ms: 0,
        }
    }

    fn recommender(clock: &ManualClock) -> Recommender {
        let speed = Arc::new(SpeedLayer::new(SpeedConfig::default(), clock.shared()));
        Recommender::new(ServeConfig::default(), speed, None, clock.shared())
    }

    #[test]
    fn an_unknown_user_gets_the_popular_fallback_flagged_not_an_error() {
        let clock = ManualClock::new();
        let recs = recommender(&clock);
        for (user, sku) in [("a", "tent"), ("b", "tent"), ("c", "stove")] {
            recs.speed().observe(&i(user, sku, Kind::Purchase));
        }
        let answer = recs.recommend("nobody", 5);
        assert_eq!(answer.fallback.as_deref(), Some("popular"));
        assert_eq!(answer.reason.as_deref(), Some("no history for this user"));
        assert_eq!(answer.items[0].sku, "tent");
        // No model and no speed layer either: still an answer, empty and flagged.
        let empty = recommender(&clock).recommend("nobody", 5);
        assert_eq!(empty.fallback.as_deref(), Some("popular"));
        assert!(empty.items.is_empty());
    }

    #[test]
    fn the_batch_model_and_the_speed_layer_are_merged_and_each_alone_still_answers() {
        let clock = ManualClock::new();
        let recs = recommender(&clock);
        // History (batch): tent goes with stove. Live (speed): tent goes with lamp.
        let history = [
            i("h1", "tent", Kind::Purchase),
            i("h1", "stove", Kind::Purchase),
            i("h2", "tent", Kind::Purchase),
            i("h2", "stove", Kind::Purchase),
            i("h3", "tent", Kind::Purchase),
        ];
        recs.set_model(Arc::new(build(history, &BatchConfig::default(), 7, 0)));
        for user in ["l1", "l2"] {
            recs.speed().observe(&i(user, "tent", Kind::View));
            recs.speed().observe(&i(user, "lamp", Kind::View));
        }
        recs.speed().observe(&i("me", "tent", Kind::View));
        let both = recs.recommend("me", 5);
        let skus: Vec<&str> = both.items.iter().map(|s| s.sku.as_str()).collect();
        assert!(
            skus.contains(&"stove") && skus.contains(&"lamp"),
            "{both:?}"
        );
        assert!(!skus.contains(&"tent"), "a seed is never recommended");
        assert_eq!(both.layers, ["batch", "speed"]);
        assert_eq!(
            (both.model_version, both.fallback.as_ref()),
            (Some(7), None)
        );
        // The speed layer's consumer is down: the model alone answers.
        recs.set_speed_available(false);
        clock.advance(Duration::from_secs(10)); // past the answer cache
        let batch_only = recs.recommend("h3", 5);
        assert_eq!(batch_only.layers, ["batch"], "{batch_only:?}");
        assert_eq!(batch_only.items[0].sku, "stove");
        assert!(
            batch_only.items.iter().all(|s| s.sku != "lamp"),
            "{batch_only:?}"
        );
        // A cached answer says so.
        assert!(recs.recommend("h3", 5).cached);
    }

    #[test]
    fn the_popular_list_is_shared_until_the_counts_move_and_the_refresh_passes() {
        let clock = ManualClock::new();
        let recs = recommender(&clock);
        for (user, sku) in [("a", "tent"), ("b", "tent"), ("c", "stove")] {
            recs.speed().observe(&i(user, sku, Kind::Purchase));
        }
        let first = recs.popular_list(None);
        // New interactions, but within the refresh interval: the same list, and an
        // answer from it is still flagged as the fallback.
        for user in ["d", "e", "f"] {
            recs.speed().observe(&i(user, "stove", Kind::Purchase));
        }
        assert!(Arc::ptr_eq(&first, &recs.popular_list(None)));
        let stale = recs.recommend("nobody", 1);
        assert_eq!(stale.fallback.as_deref(), Some("popular"));
        assert_eq!(stale.items[0].sku, "tent");
        // The interval passes: recomputed, and the new leader shows.
        clock.advance(ServeConfig::default().popular_refresh);
        let fresh = recs.recommend("someone-else", 1);
        assert_eq!(fresh.fallback.as_deref(), Some("popular"));
        assert_eq!(fresh.reason.as_deref(), Some("no history for this user"));
        assert_eq!(fresh.items[0].sku, "stove");
        // No new interaction: the same list, however much time passes.
        let second = recs.popular_list(None);
        assert!(!Arc::ptr_eq(&first, &second));
        clock.advance(Duration::from_secs(60));
        assert!(Arc::ptr_eq(&second, &recs.popular_list(None)));
        // The speed layer goes down: its source changed, so the list is recomputed
        // at once (from the model, absent here: empty, still flagged).
        recs.set_speed_available(false);
        let down = recs.recommend("a-third", 1);
        assert_eq!(down.fallback.as_deref(), Some("popular"));
        assert!(down.items.is_empty() && down.layers.is_empty(), "{down:?}");
    }
}
