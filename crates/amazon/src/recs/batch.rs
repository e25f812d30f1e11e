//! The batch layer: item-to-item cosine similarity recomputed from the whole
//! history, written as a versioned model.
//!
//! Each user is a vector over items (the strongest interaction's weight); the
//! similarity of two items is the cosine of their user vectors. A user
//! contributes at most `items_per_user` items (the most recent), so one job costs
//! at most users × items_per_user² pair updates; each item keeps its
//! `neighbours` best.
//!
//! Models are files `model-<version>.json` in the layer's directory, written to a
//! temp file, fsynced and renamed, so a reader sees a whole model or none; the
//! newest is loaded at start and the last [`KEEP_MODELS`] are kept.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::interaction::Interaction;
use super::speed::top;

/// Model files kept on disk.
pub const KEEP_MODELS: usize = 3;

/// A batch job's bounds.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    pub items_per_user: usize,
    pub neighbours: usize,
    /// Popular items kept in the model (the fallback's list when the speed layer
    /// has nothing).
    pub popular: usize,
    /// Recent items kept per user: the seeds for users the speed layer has not
    /// seen since a restart.
    pub seeds_per_user: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            items_per_user: 50,
            neighbours: 50,
            popular: 100,
            seeds_per_user: 10,
        }
    }
}

/// A versioned item-to-item model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub version: u64,
    pub built_at_ms: u64,
    /// Interactions the job read.
    pub interactions: u64,
    pub users: u64,
    /// Item → its most similar items, best first.
    pub similar: HashMap<String, Vec<(String, f32)>>,
    /// User → their most recent items, newest first.
    pub seeds: HashMap<String, Vec<String>>,
    /// The most popular items over the whole history, best first.
    pub popular: Vec<String>,
}

/// Builds a model from a history in time order.
pub fn build(
    history: impl IntoIterator<Item = Interaction>,
    config: &BatchConfig,
    version: u64,
    built_at_ms: u64,
) -> Model {
    // user → (sku → (weight, last seen order)).
    let mut users: HashMap<String, HashMap<String, (f64, u64)>> = HashMap::new();
    let mut popularity: HashMap<String, f64> = HashMap::new();
    let mut interactions = 0u64;
    for (order, i) in history.into_iter().enumerate() {
        interactions += 1;
        let weight = i.kind.weight();
        *popularity.entry(i.sku.clone()).or_default() += weight;
        let entry = users
            .entry(i.user)
            .or_default()
            .entry(i.sku)
            .or_insert((0.0, 0));
        entry.0 = entry.0.max(weight);
        entry.1 = order as u64;
    }
    let mut norms: HashMap<&str, f64> = HashMap::new();
    let mut pairs: HashMap<(&str, &str), f64> = HashMap::new();
    let mut seeds = HashMap::new();
    let mut kept: Vec<Vec<(&str, f64)>> = Vec::with_capacity(users.len());
    for (user, items) in &users {
        let mut recent: Vec<(&str, f64, u64)> = items
            .iter()
            .map(|(s, (w, o))| (s.as_str(), *w, *o))
            .collect();
        recent.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(b.0)));
        recent.truncate(config.items_per_user);
        seeds.insert(
            user.clone(),
            recent
                .iter()
                .take(config.seeds_per_user)
                .map(|(s, _, _)| (*s).to_owned())
                .collect(),
        );
        kept.push(recent.into_iter().map(|(s, w, _)| (s, w)).collect());
    }
    for items in &kept {
        for (a, wa) in items {
            *norms.entry(a).or_default() += wa * wa;
            for (b, wb) in items {
                if a < b {
                    *pairs.entry((a, b)).or_default() += wa * wb;
                }
            }
        }
    }
    let mut lists: HashMap<String, Vec<(String, f64)>> = HashMap::new();
    for ((a, b), dot) in pairs {
        let cosine = dot / (norms[a] * norms[b]).sqrt();
        lists
            .entry(a.to_owned())
            .or_default()
            .push((b.to_owned(), cosine));
        lists
            .entry(b.to_owned())
            .or_default()
            .push((a.to_owned(), cosine));
    }
    let similar = lists
        .into_iter()
        .map(|(sku, mut list)| {
            top(&mut list, config.neighbours);
            (sku, list.into_iter().map(|(s, c)| (s, c as f32)).collect())
        })
        .collect();
    let mut popular: Vec<(String, f64)> = popularity.into_iter().collect();
    top(&mut popular, config.popular);
    Model {
        version,
        built_at_ms,
        interactions,
        users: users.len() as u64,
        similar,
        seeds,
        popular: popular.into_iter().map(|(s, _)| s).collect(),
    }
}

/// Where models live.
#[derive(Debug, Clone)]
pub struct ModelStore {
    dir: PathBuf,
}

impl ModelStore {
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    fn versions(&self) -> std::io::Result<Vec<u64>> {
        let mut versions: Vec<u64> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("model-")?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()
            })
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// The version the next model gets.
    pub fn next_version(&self) -> std::io::Result<u64> {
        Ok(self.versions()?.last().map_or(1, |v| v + 1))
    }

    /// The newest model, if any.
    pub fn latest(&self) -> anyhow::Result<Option<Model>> {
        let Some(version) = self.versions()?.last().copied() else {
            return Ok(None);
        };
        let bytes = fs::read(self.path(version))?;
        Ok(Some(serde_json::from_slice(&bytes)?))
    }

    /// Writes `model` whole (temp file, fsync, rename) and drops old versions.
    pub fn save(&self, model: &Model) -> anyhow::Result<()> {
        let path = self.path(model.version);
        let tmp = path.with_extension("tmp");
        {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&serde_json::to_vec(model)?)?;
            file.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        fs::File::open(&self.dir)?.sync_all()?;
        let versions = self.versions()?;
        for old in versions
            .iter()
            .take(versions.len().saturating_sub(KEEP_MODELS))
        {
            let _ = fs::remove_file(self.path(*old));
        }
        Ok(())
    }

    fn path(&self, version: u64) -> PathBuf {
        self.dir.join(format!("model-{version:08}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recs::Kind;

    fn i(user: &str, sku: &str, kind: Kind) -> Interaction {
        Interaction {
            user: user.into(),
            sku: sku.into(),
            kind,
            at_ms: 0,
        }
    }

    #[test]
    fn cosine_similarity_ranks_items_bought_together_first() {
        let history = vec![
            i("a", "tent", Kind::Purchase),
            i("a", "stove", Kind::Purchase),
            i("b", "tent", Kind::Purchase),
            i("b", "stove", Kind::Purchase),
            i("c", "tent", Kind::View),
            i("c", "novel", Kind::View),
        ];
        let model = build(history, &BatchConfig::default(), 1, 0);
        let tent = &model.similar["tent"];
        assert_eq!(tent[0].0, "stove");
        assert!(tent[0].1 > tent[1].1);
        // stove·tent = 50, |stove|² = 50, |tent|² = 51: cosine 50/√(2550).
        assert!((f64::from(tent[0].1) - 50.0 / 2550f64.sqrt()).abs() < 1e-6);
        assert_eq!(model.popular[0], "tent");
        assert_eq!(model.seeds["c"], ["novel", "tent"]);
        assert_eq!((model.users, model.interactions), (3, 6));
    }

    #[test]
    fn models_are_versioned_and_old_ones_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::new(dir.path()).unwrap();
        assert!(store.latest().unwrap().is_none());
        for _ in 0..5 {
            let version = store.next_version().unwrap();
            store
                .save(&Model {
                    version,
                    ..Model::default()
                })
                .unwrap();
        }
        assert_eq!(store.latest().unwrap().unwrap().version, 5);
        assert_eq!(store.versions().unwrap(), [3, 4, 5]);
    }
}
