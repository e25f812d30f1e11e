//! A generated shopping history and the offline evaluation of the recommender.
//!
//! The history: items belong to genres and are Zipf-popular within their genre;
//! each user has a favourite genre that most of their sessions browse; a session
//! views a few items of one genre, adds some to the cart, and sometimes buys one.
//! It is deterministic for a seed, so the quality numbers are reproducible.
//!
//! The evaluation holds out each user's last purchase (every interaction of that
//! user with that item is removed from training), trains both layers on the rest,
//! and asks for 10 items: the hit rate at 10 is the share of users whose held-out
//! item is among them. The baseline answers the most popular items the user has
//! not touched; the lift is the ratio of the two hit rates.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;

use super::batch::{BatchConfig, build};
use super::interaction::{Interaction, Kind};
use super::serve::{Recommender, ServeConfig};
use super::speed::{SpeedConfig, SpeedLayer};
use crate::catalog::sku;

/// The shape of a generated history.
#[derive(Debug, Clone)]
pub struct HistoryShape {
    pub users: usize,
    pub items: usize,
    pub genres: usize,
    pub sessions_per_user: std::ops::RangeInclusive<usize>,
    /// Share of sessions in the user's favourite genre.
    pub loyalty: f64,
    /// Zipf exponent of popularity within a genre.
    pub zipf: f64,
}

impl Default for HistoryShape {
    fn default() -> Self {
        Self {
            users: 2_000,
            items: 2_000,
            genres: 20,
            sessions_per_user: 3..=8,
            loyalty: 0.8,
            zipf: 1.0,
        }
    }
}

/// A history in time order (one millisecond per interaction).
pub fn generate(shape: &HistoryShape, seed: u64) -> Vec<Interaction> {
    let mut rng = StdRng::seed_from_u64(seed);
    let genres = shape.genres.max(1);
    // Items of genre g: g, g + genres, g + 2·genres, … ; rank r has weight 1/(r+1)^s.
    let per_genre: Vec<Vec<usize>> = (0..genres)
        .map(|g| (g..shape.items).step_by(genres).collect())
        .collect();
    let cumulative: Vec<Vec<f64>> = per_genre
        .iter()
        .map(|items| {
            let mut sum = 0.0;
            (0..items.len())
                .map(|r| {
                    sum += 1.0 / ((r + 1) as f64).powf(shape.zipf);
                    sum
                })
                .collect()
        })
        .collect();
    let pick = |rng: &mut StdRng, g: usize| -> usize {
        let cum = &cumulative[g];
        let x = rng.random::<f64>() * cum.last().copied().unwrap_or(0.0);
        per_genre[g][cum.partition_point(|c| *c < x).min(cum.len() - 1)]
    };
    let mut sessions: Vec<(String, usize)> = Vec::new();
    let mut favourite = Vec::with_capacity(shape.users);
    for u in 0..shape.users {
        favourite.push(rng.random_range(0..genres));
        let n = rng.random_range(shape.sessions_per_user.clone());
        sessions.extend((0..n).map(|_| (format!("user-{u}"), u)));
    }
    // Interleave users' sessions, as real traffic does.
    for i in (1..sessions.len()).rev() {
        let j = rng.random_range(0..=i);
        sessions.swap(i, j);
    }
    let mut out = Vec::new();
    for (user, u) in sessions {
        let genre = if rng.random_bool(shape.loyalty) {
            favourite[u]
        } else {
            rng.random_range(0..genres)
        };
        let viewed: Vec<usize> = (0..rng.random_range(3..=6))
            .map(|_| pick(&mut rng, genre))
            .collect();
        let mut push = |sku_index: usize, kind| {
            let at_ms = out.len() as u64;
            out.push(Interaction {
                user: user.clone(),
                sku: sku(sku_index),
                kind,
                at_ms,
            });
        };
        for &v in &viewed {
            push(v, Kind::View);
        }
        let carted: Vec<usize> = viewed
            .iter()
            .copied()
            .filter(|_| rng.random_bool(0.35))
            .collect();
        for &c in &carted {
            push(c, Kind::AddToCart);
        }
        if let Some(&bought) = carted.first()
            && rng.random_bool(0.7)
        {
            push(bought, Kind::Purchase);
        }
    }
    out
}

/// The offline quality of the recommender on a history.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub users_evaluated: usize,
    pub hit_rate_at_10: f64,
    pub popular_hit_rate_at_10: f64,
    /// `hit_rate_at_10 / popular_hit_rate_at_10`.
    pub lift: f64,
}

/// Holds out each user's last purchase and measures hit rate at 10 (see the
/// module docs).
pub fn evaluate(history: &[Interaction]) -> Evaluation {
    let mut last_purchase: HashMap<&str, &str> = HashMap::new();
    let mut purchases: HashMap<&str, usize> = HashMap::new();
    for i in history.iter().filter(|i| i.kind == Kind::Purchase) {
        last_purchase.insert(&i.user, &i.sku);
        *purchases.entry(&i.user).or_default() += 1;
    }
    // Users with an earlier purchase, so there is something to learn from.
    let held_out: HashMap<&str, &str> = last_purchase
        .into_iter()
        .filter(|(u, _)| purchases[u] >= 2)
        .collect();
    let training: Vec<Interaction> = history
        .iter()
        .filter(|i| held_out.get(i.user.as_str()) != Some(&i.sku.as_str()))
        .cloned()
        .collect();
    let clock = casebook_kit::clock::ManualClock::new();
    let speed = Arc::new(SpeedLayer::new(SpeedConfig::default(), clock.shared()));
    for i in &training {
        speed.observe(i);
    }
    let model = build(training.iter().cloned(), &BatchConfig::default(), 1, 0);
    let mut seen: HashMap<&str, HashSet<&str>> = HashMap::new();
    for i in &training {
        seen.entry(&i.user).or_default().insert(&i.sku);
    }
    let popular = model.popular.clone();
    let recommender = Recommender::new(ServeConfig::default(), speed, None, clock.shared());
    recommender.set_model(Arc::new(model));
    let (mut hits, mut popular_hits) = (0usize, 0usize);
    let mut users: Vec<_> = held_out.iter().collect();
    users.sort();
    for (user, item) in &users {
        let answer = recommender.recommend(user, 10);
        if answer.items.iter().any(|s| s.sku == **item) {
            hits += 1;
        }
        let none = HashSet::new();
        let touched = seen.get(*user).unwrap_or(&none);
        if popular
            .iter()
            .filter(|s| !touched.contains(s.as_str()))
            .take(10)
            .any(|s| s == *item)
        {
            popular_hits += 1;
        }
    }
    let n = users.len().max(1) as f64;
    let (hit, pop) = (hits as f64 / n, popular_hits as f64 / n);
    Evaluation {
        users_evaluated: users.len(),
        hit_rate_at_10: hit,
        popular_hit_rate_at_10: pop,
        lift: if pop > 0.0 { hit / pop } else { f64::INFINITY },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_is_deterministic_for_a_seed() {
        let shape = HistoryShape {
            users: 50,
            ..HistoryShape::default()
        };
        assert_eq!(generate(&shape, 7), generate(&shape, 7));
        assert_ne!(generate(&shape, 7), generate(&shape, 8));
    }

    #[test]
    fn co_occurrence_beats_popular_on_the_generated_history() {
        let history = generate(
            &HistoryShape::default(),
            casebook_testkit::seed("recs-history"),
        );
        let eval = evaluate(&history);
        println!("{eval:?}");
        assert!(eval.users_evaluated > 500, "{eval:?}");
        assert!(
            eval.hit_rate_at_10 > eval.popular_hit_rate_at_10 * 1.5,
            "{eval:?}"
        );
    }
}
