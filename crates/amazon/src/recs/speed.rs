//! The speed layer: item-to-item co-occurrence and item popularity, updated per
//! event, decayed exponentially (a half-life on the injected clock), bounded.
//!
//! Bounds: at most `max_items` items (the least popular are pruned when the map
//! grows a tenth past it), at most `neighbours_per_item` neighbours per item (a full
//! list replaces its weakest entry, space-saving style: the newcomer inherits the
//! evicted weight, so a rising pair is not starved), and the last
//! `recent_per_user` items of at most `max_users` users (least recently active
//! users forgotten first, idle ones after `user_idle`).
//!
//! Not guaranteed: exact counts (decay and the bounds approximate them), or
//! durability — the speed layer is rebuilt from the bus after a restart (its
//! consumer group resumes at the committed offset; the batch layer covers the
//! whole history).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use casebook_kit::cache::{Cache, CacheConfig};
use casebook_kit::clock::SharedClock;
use parking_lot::Mutex;

use super::interaction::Interaction;

/// The speed layer's bounds and decay.
#[derive(Debug, Clone)]
pub struct SpeedConfig {
    pub half_life: Duration,
    pub max_items: usize,
    pub neighbours_per_item: usize,
    pub recent_per_user: usize,
    pub max_users: u64,
    pub user_idle: Duration,
}

impl Default for SpeedConfig {
    fn default() -> Self {
        Self {
            half_life: Duration::from_secs(3_600),
            max_items: 50_000,
            neighbours_per_item: 50,
            recent_per_user: 10,
            max_users: 200_000,
            user_idle: Duration::from_secs(24 * 3_600),
        }
    }
}

/// A value that halves every half-life; stored as of the instant it last changed.
#[derive(Debug, Clone, Copy)]
struct Decayed {
    value: f64,
    at: Instant,
}

impl Decayed {
    fn at(&self, now: Instant, half_life: Duration) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.value * 0.5f64.powf(elapsed / half_life.as_secs_f64())
    }

    fn add(&mut self, weight: f64, now: Instant, half_life: Duration) {
        self.value = self.at(now, half_life) + weight;
        self.at = now;
    }
}

#[derive(Debug)]
struct ItemStats {
    popularity: Decayed,
    neighbours: Vec<(String, Decayed)>,
}

/// Decayed co-occurrence and popularity; see the module docs.
#[derive(Debug)]
pub struct SpeedLayer {
    config: SpeedConfig,
    clock: SharedClock,
    items: Mutex<HashMap<String, ItemStats>>,
    recent: Cache<String, Vec<String>>,
    /// Interactions observed so far: readers that cache a ranking (the serving
    /// layer's popular list) see from it whether the counts have moved.
    observed: std::sync::atomic::AtomicU64,
}

impl SpeedLayer {
    pub fn new(config: SpeedConfig, clock: SharedClock) -> Self {
        let recent = Cache::new(
            CacheConfig::new("recs-recent", config.max_users.max(1)).time_to_idle(config.user_idle),
            clock.clone(),
        )
        .expect("a valid cache config");
        Self {
            config,
            clock,
            items: Mutex::new(HashMap::new()),
            recent,
            observed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Learns from one interaction.
    pub fn observe(&self, interaction: &Interaction) {
        self.observed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = self.clock.now();
        let half_life = self.config.half_life;
        let weight = interaction.kind.weight();
        let recent = self.recent.get(&interaction.user).unwrap_or_default();
        {
            let mut items = self.items.lock();
            let fresh = || ItemStats {
                popularity: Decayed {
                    value: 0.0,
                    at: now,
                },
                neighbours: Vec::new(),
            };
            items
                .entry(interaction.sku.clone())
                .or_insert_with(fresh)
                .popularity
                .add(weight, now, half_life);
            for other in recent.iter().filter(|s| **s != interaction.sku) {
                for (from, to) in [(&interaction.sku, other), (other, &interaction.sku)] {
                    let stats = items.entry(from.clone()).or_insert_with(fresh);
                    bump(
                        &mut stats.neighbours,
                        to,
                        weight,
                        now,
                        half_life,
                        self.config.neighbours_per_item,
                    );
                }
            }
            if items.len() > self.config.max_items + self.config.max_items / 10 {
                prune(&mut items, self.config.max_items, now, half_life);
            }
        }
        let mut recent = recent;
        recent.retain(|s| *s != interaction.sku);
        recent.insert(0, interaction.sku.clone());
        recent.truncate(self.config.recent_per_user);
        self.recent.insert(interaction.user.clone(), recent);
    }

    /// The user's most recent items, newest first.
    pub fn recent(&self, user: &str) -> Vec<String> {
        self.recent.get(&user.to_owned()).unwrap_or_default()
    }

    /// `sku`'s neighbours with a cosine-like score: co-occurrence over the
    /// geometric mean of both items' popularity, so a popular item is not
    /// everyone's neighbour.
    pub fn neighbours(&self, sku: &str) -> Vec<(String, f64)> {
        let now = self.clock.now();
        let half_life = self.config.half_life;
        let items = self.items.lock();
        let Some(stats) = items.get(sku) else {
            return Vec::new();
        };
        let own = stats.popularity.at(now, half_life);
        stats
            .neighbours
            .iter()
            .filter_map(|(other, co)| {
                let theirs = items.get(other)?.popularity.at(now, half_life);
                let norm = (own * theirs).sqrt();
                (norm > 0.0).then(|| (other.clone(), co.at(now, half_life) / norm))
            })
            .collect()
    }

    /// The `limit` most popular items now, most popular first.
    pub fn popular(&self, limit: usize) -> Vec<(String, f64)> {
        let now = self.clock.now();
        let half_life = self.config.half_life;
        let items = self.items.lock();
        let mut all: Vec<(String, f64)> = items
            .iter()
            .map(|(sku, s)| (sku.clone(), s.popularity.at(now, half_life)))
            .collect();
        top(&mut all, limit);
        all
    }

    /// Interactions observed since start; changes whenever the counts do.
    pub fn observed(&self) -> u64 {
        self.observed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Items tracked now.
    pub fn items(&self) -> usize {
        self.items.lock().len()
    }
}

fn bump(
    neighbours: &mut Vec<(String, Decayed)>,
    to: &str,
    weight: f64,
    now: Instant,
    half_life: Duration,
    cap: usize,
) {
    if let Some((_, co)) = neighbours.iter_mut().find(|(s, _)| s == to) {
        co.add(weight, now, half_life);
        return;
    }
    if neighbours.len() < cap {
        neighbours.push((
            to.to_owned(),
            Decayed {
                value: weight,
                at: now,
            },
        ));
        return;
    }
    let weakest = neighbours
        .iter()
        .enumerate()
        .min_by(|a, b| {
            a.1.1
                .at(now, half_life)
                .total_cmp(&b.1.1.at(now, half_life))
        })
        .map(|(i, _)| i);
    if let Some(i) = weakest {
        let inherited = neighbours[i].1.at(now, half_life);
        neighbours[i] = (
            to.to_owned(),
            Decayed {
                value: inherited + weight,
                at: now,
            },
        );
    }
}

fn prune(items: &mut HashMap<String, ItemStats>, keep: usize, now: Instant, half_life: Duration) {
    let mut ranked: Vec<(String, f64)> = items
        .iter()
        .map(|(sku, s)| (sku.clone(), s.popularity.at(now, half_life)))
        .collect();
    top(&mut ranked, keep);
    let kept: std::collections::HashSet<String> = ranked.into_iter().map(|(s, _)| s).collect();
    items.retain(|sku, _| kept.contains(sku));
    for stats in items.values_mut() {
        stats.neighbours.retain(|(s, _)| kept.contains(s));
    }
}

/// Keeps the `limit` highest scores, best first (ties by name, so answers are
/// deterministic).
pub(crate) fn top(all: &mut Vec<(String, f64)>, limit: usize) {
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(limit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recs::Kind;
    use casebook_kit::clock::ManualClock;

    fn saw(layer: &SpeedLayer, user: &str, sku: &str, kind: Kind) {
        layer.observe(&Interaction {
            user: user.into(),
            sku: sku.into(),
            kind,
            at_ms: 0,
        });
    }

    #[test]
    fn items_seen_together_become_neighbours_and_decay_halves_them() {
        let clock = ManualClock::new();
        let layer = SpeedLayer::new(SpeedConfig::default(), clock.shared());
        saw(&layer, "u1", "tent", Kind::View);
        saw(&layer, "u1", "stove", Kind::AddToCart);
        saw(&layer, "u2", "tent", Kind::View);
        saw(&layer, "u2", "stove", Kind::View);
        let n = layer.neighbours("tent");
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].0, "stove");
        let before = layer.popular(1)[0].1;
        clock.advance(Duration::from_secs(3_600));
        let after = layer.popular(1)[0].1;
        assert!((after - before / 2.0).abs() < 1e-9, "{before} → {after}");
        // The cosine-like score is scale-free: decay alone leaves it unchanged.
        let score = layer.neighbours("tent")[0].1;
        assert!((score - n[0].1).abs() < 1e-9);
    }

    #[test]
    fn memory_stays_within_the_bounds() {
        let clock = ManualClock::new();
        let config = SpeedConfig {
            max_items: 100,
            neighbours_per_item: 5,
            recent_per_user: 4,
            ..SpeedConfig::default()
        };
        let layer = SpeedLayer::new(config, clock.shared());
        for i in 0..5_000u32 {
            saw(
                &layer,
                &format!("u{}", i % 37),
                &format!("sku-{}", i % 997),
                Kind::View,
            );
        }
        assert!(layer.items() <= 110, "{} items", layer.items());
        let items = layer.items.lock();
        assert!(items.values().all(|s| s.neighbours.len() <= 5));
        drop(items);
        assert!(layer.recent("u1").len() <= 4);
    }
}
