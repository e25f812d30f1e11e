//! Proactive fill, as Netflix's Open Connect appliances are filled off-peak with
//! what will be watched: objects fetched before anyone asks for them.
//!
//! A fill is a list of keys and titles. A title `t` expands by walking its
//! playlists: `titles/t/master.m3u8`, then every playlist it names, then every
//! segment (and init section, key) those name — breadth first, so every
//! rendition's playlist is in before any rendition's segments. Each object goes
//! through the tier's ordinary lookup ([`Tier::get`] as a fill): it shares
//! flights with clients, lands in memory (where TinyLFU may refuse it: a fill
//! never flushes what clients keep asking for) and on disk (LRU: a fill does
//! push out the least recently used). Objects already held are not fetched again.
//!
//! Two ways in:
//! - `POST /fill` (signed for `/fill`), for an operator or a hook of the case —
//!   answered with a [`FillReport`] once done; one fill at a time per tier (409);
//! - a [`FillSchedule`]: every `every` on the injected clock, inside the window of
//!   UTC hours if one is set, the tier reads a fill list from its source (a
//!   service found through discovery, or a URL) and fills its first `max_titles`
//!   titles. A round that finds a fill running is skipped.
//!
//! Bounded: a run fetches at most its byte budget (the request's `max_bytes`, else
//! the tier's `fill_max_bytes`, else half its largest level) and visits at most
//! [`MAX_FILL_OBJECTS`] objects; a request names at most [`MAX_FILL_KEYS`] keys and
//! [`MAX_FILL_TITLES`] titles. Not guaranteed: that filled objects stay (eviction
//! is the tiers' to decide), or ordering by popularity beyond the source's order.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use casebook_kit::api::ApiError;
use serde::{Deserialize, Serialize};

use super::config::{FillSchedule, FillSource};
use super::key::{ObjectKey, is_title_id};
use super::playlist;
use super::stats::Source;
use super::tier::{Asker, Tier};

/// Most keys one fill request names.
pub const MAX_FILL_KEYS: usize = 10_000;
/// Most titles one fill request names.
pub const MAX_FILL_TITLES: usize = 100;
/// Most objects one fill run visits (titles expand).
pub const MAX_FILL_OBJECTS: usize = 100_000;
/// How often the schedule looks at the clock.
const TICK: Duration = Duration::from_millis(250);
/// Most error texts a report carries.
const MAX_REPORTED_ERRORS: usize = 10;

/// A fill request (`POST /fill`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FillRequest {
    #[serde(default)]
    pub keys: Vec<String>,
    /// Title ids (`[a-z0-9-]{1,64}`): each fills its whole ladder.
    #[serde(default)]
    pub titles: Vec<String>,
    /// The run's byte budget, if not the tier's default.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

/// What a fill should fetch: validated keys, then titles' master playlists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FillPlan {
    pub keys: Vec<ObjectKey>,
}

impl FillRequest {
    /// The plan, or a 400 naming the first bad entry (`keys[3]`, `titles[0]`).
    pub fn plan(&self) -> Result<FillPlan, ApiError> {
        if self.keys.len() > MAX_FILL_KEYS {
            return Err(ApiError::bad_field(
                "keys",
                format!("at most {MAX_FILL_KEYS} keys"),
            ));
        }
        if self.titles.len() > MAX_FILL_TITLES {
            return Err(ApiError::bad_field(
                "titles",
                format!("at most {MAX_FILL_TITLES} titles"),
            ));
        }
        if self.keys.is_empty() && self.titles.is_empty() {
            return Err(ApiError::bad_request("name at least one key or title"));
        }
        let mut keys = Vec::with_capacity(self.keys.len() + self.titles.len());
        for (i, key) in self.keys.iter().enumerate() {
            keys.push(
                ObjectKey::parse(key)
                    .map_err(|e| ApiError::bad_field(format!("keys[{i}]"), e.to_string()))?,
            );
        }
        for (i, title) in self.titles.iter().enumerate() {
            keys.push(title_master(title).ok_or_else(|| {
                ApiError::bad_field(format!("titles[{i}]"), "a title id is 1 to 64 of [a-z0-9-]")
            })?);
        }
        Ok(FillPlan { keys })
    }
}

/// The master playlist of title `id`, if `id` is a valid title id.
fn title_master(id: &str) -> Option<ObjectKey> {
    is_title_id(id)
        .then(|| ObjectKey::parse(&format!("titles/{id}/master.m3u8")).ok())
        .flatten()
}

/// What a fill run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FillReport {
    /// Objects fetched from upstream by this run.
    pub fetched: u64,
    /// Bytes fetched from upstream by this run.
    pub bytes: u64,
    /// Objects already held (memory or disk), not fetched again.
    pub already_held: u64,
    /// Keys the upstream does not have.
    pub not_found: u64,
    /// Keys whose fetch failed.
    pub failed: u64,
    /// Whether the run stopped at its byte budget.
    pub budget_reached: bool,
    /// The first errors, for a person.
    pub errors: Vec<String>,
}

/// Runs one fill: the plan's keys, playlists expanded breadth first, within `budget` bytes.
pub async fn run(tier: &Arc<Tier>, plan: FillPlan, budget: u64) -> FillReport {
    let mut report = FillReport::default();
    let mut queue: VecDeque<ObjectKey> = VecDeque::new();
    let mut seen: HashSet<ObjectKey> = HashSet::new();
    for key in plan.keys {
        if seen.insert(key.clone()) {
            queue.push_back(key);
        }
    }
    while let Some(key) = queue.pop_front() {
        if report.bytes >= budget {
            report.budget_reached = true;
            break;
        }
        // A held segment needs nothing; a playlist is read for what it names.
        if !key.is_playlist() && tier.holds(&key) {
            report.already_held += 1;
            continue;
        }
        match tier.get(&key, None, Asker::Fill).await {
            Ok(Some(lookup)) => {
                if matches!(lookup.source, Source::Upstream) && !lookup.coalesced {
                    report.fetched += 1;
                    report.bytes += lookup.object.body.len() as u64;
                } else {
                    report.already_held += 1;
                }
                if key.is_playlist()
                    && let Ok(text) = std::str::from_utf8(&lookup.object.body)
                {
                    for next in playlist::referenced_keys(&key, text) {
                        if seen.len() >= MAX_FILL_OBJECTS {
                            break;
                        }
                        if seen.insert(next.clone()) {
                            queue.push_back(next);
                        }
                    }
                }
            }
            Ok(None) => report.not_found += 1,
            Err(e) => {
                report.failed += 1;
                if report.errors.len() < MAX_REPORTED_ERRORS {
                    report.errors.push(format!("{key}: {e}"));
                }
            }
        }
    }
    {
        let mut view = tier.fill_view.lock();
        view.runs += 1;
        view.objects += report.fetched;
        view.bytes += report.bytes;
    }
    metrics::counter!("casebook_cdn_fill_bytes_total", "service" => tier.config.service.clone())
        .increment(report.bytes);
    report
}

/// A fill list as a source serves it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FillList {
    Explicit {
        #[serde(default)]
        titles: Vec<String>,
        #[serde(default)]
        keys: Vec<String>,
    },
    Catalog(Vec<CatalogEntry>),
}

#[derive(Debug, Deserialize)]
struct CatalogEntry {
    id: String,
}

/// The plan of one scheduled round: the source's keys (valid ones) and its first
/// `max_titles` valid titles.
fn plan_from_list(list: FillList, max_titles: usize) -> FillPlan {
    let (titles, keys) = match list {
        FillList::Explicit { titles, keys } => (titles, keys),
        FillList::Catalog(entries) => (entries.into_iter().map(|e| e.id).collect(), Vec::new()),
    };
    let mut plan = FillPlan::default();
    plan.keys.extend(
        keys.iter()
            .take(MAX_FILL_KEYS)
            .filter_map(|k| ObjectKey::parse(k).ok()),
    );
    plan.keys.extend(
        titles
            .iter()
            .filter_map(|t| title_master(t))
            .take(max_titles),
    );
    plan
}

/// One scheduled round: read the list, fill it.
async fn round(tier: &Arc<Tier>, schedule: &FillSchedule) -> Result<FillReport, String> {
    let url = match &schedule.source {
        FillSource::Url(url) => url.clone(),
        FillSource::Service { service, path } => {
            let base = tier
                .upstream
                .resolve(service)
                .await
                .map_err(|e| e.to_string())?;
            format!("{base}{path}")
        }
    };
    let response = tier
        .upstream
        .get(&url)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let list: FillList = serde_json::from_slice(response.body())
        .map_err(|e| format!("{url} is not a fill list: {e}"))?;
    let plan = plan_from_list(list, schedule.max_titles);
    let Some(_running) = tier.start_fill() else {
        return Err("skipped: a fill is already running".into());
    };
    Ok(run(tier, plan, tier.config.fill_budget()).await)
}

/// The schedule's loop, until the instance stops: a round whenever one is due on
/// the injected clock and the wall clock's UTC hour is in the window.
pub async fn run_schedule(
    tier: Arc<Tier>,
    schedule: FillSchedule,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut last_round: Option<Instant> = None;
    loop {
        let now = tier.clock.now();
        let due = last_round.is_none_or(|at| now.saturating_duration_since(at) >= schedule.every);
        let hour = ((tier.clock.wall_millis() / 1000 / 3600) % 24) as u8;
        if due && schedule.in_window(hour) {
            last_round = Some(now);
            let outcome = round(&tier, &schedule).await;
            match &outcome {
                Ok(report) => {
                    tracing::info!(service = %tier.config.service, fetched = report.fetched, bytes = report.bytes, held = report.already_held, "scheduled fill done")
                }
                Err(error) => {
                    tracing::debug!(service = %tier.config.service, %error, "scheduled fill failed")
                }
            }
            tier.fill_view.lock().last_error = outcome.err();
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_validated_naming_the_entry() {
        let request = FillRequest {
            keys: vec!["titles/a/master.m3u8".into(), "../x".into()],
            ..FillRequest::default()
        };
        assert_eq!(
            request.plan().unwrap_err().field.as_deref(),
            Some("keys[1]")
        );
        let request = FillRequest {
            titles: vec!["ok".into(), "Not OK".into()],
            ..FillRequest::default()
        };
        assert_eq!(
            request.plan().unwrap_err().field.as_deref(),
            Some("titles[1]")
        );
        assert!(FillRequest::default().plan().is_err());
        let request = FillRequest {
            keys: vec!["a/b.ts".into()],
            titles: vec!["t1".into()],
            max_bytes: None,
        };
        let plan = request.plan().unwrap();
        assert_eq!(plan.keys[1].as_str(), "titles/t1/master.m3u8");
    }

    #[test]
    fn lists_are_read_in_either_shape() {
        let catalog: FillList =
            serde_json::from_str(r#"[{"id":"a","name":"A"},{"id":"BAD"},{"id":"b"},{"id":"c"}]"#)
                .unwrap();
        let plan = plan_from_list(catalog, 2);
        let keys: Vec<_> = plan.keys.iter().map(ObjectKey::as_str).collect();
        assert_eq!(keys, ["titles/a/master.m3u8", "titles/b/master.m3u8"]);
        let explicit: FillList =
            serde_json::from_str(r#"{"keys":["x/y.ts","../z"],"titles":["q"]}"#).unwrap();
        let keys: Vec<_> = plan_from_list(explicit, 5)
            .keys
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect();
        assert_eq!(keys, ["x/y.ts", "titles/q/master.m3u8"]);
    }
}
