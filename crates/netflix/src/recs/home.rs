//! Home rows: what the users service knows of a viewer (history, trending) and
//! the catalog, composed into rows. Pure: no I/O here, so every rule is tested
//! on plain values.
//!
//! Rows, in order (each at most `row_size` titles, none twice in a row):
//! 1. **Continue watching** (`continue_watching`): history items started and not
//!    finished (position under [`FINISHED_SHARE`] of the duration), newest first;
//! 2. **Because you watched X** (`because_you_watched`): for the
//!    [`BECAUSE_ROWS`] titles watched last, titles sharing a genre or a cast
//!    member with X ([`super::search::SearchIndex::more_like`]), nothing the
//!    viewer has watched;
//! 3. **Trending now** (`trending`): the users service's most viewed titles,
//!    topped up from the catalog's popularity prior;
//! 4. **Top picks in G** (`top_genre`): for the viewer's [`GENRE_ROWS`] top
//!    genres (history weighted by recency), the genre's most popular unwatched
//!    titles; with no history, the catalog's top genres ("Popular in G").
//!
//! Degradation: history unavailable → rows 1 and 2 are omitted, genre rows come
//! from the catalog, and `degraded` names `history`; trending unavailable → row
//! 3 is the popularity prior and `degraded` names `trending`. Titles the catalog
//! does not know (yet) are skipped.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Ready;
use crate::catalog::CatalogTitle;

/// A history item at or past this share of its duration is finished.
pub const FINISHED_SHARE: f64 = 0.95;
/// How many "Because you watched" rows at most.
pub const BECAUSE_ROWS: usize = 2;
/// How many genre rows.
pub const GENRE_ROWS: usize = 2;

/// One item of `GET /internal/v1/history/{account}` on `netflix-users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryItem {
    pub title: String,
    #[serde(default)]
    pub position_s: f64,
    #[serde(default)]
    pub duration_s: f64,
    #[serde(default)]
    pub updated_ms: u64,
}

/// `GET /internal/v1/history/{account}`'s answer.
#[derive(Debug, Clone, Deserialize)]
pub struct HistoryAnswer {
    #[serde(default)]
    pub items: Vec<HistoryItem>,
}

/// One item of `GET /internal/v1/trending`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendingItem {
    pub title: String,
    #[serde(default)]
    pub views: u64,
}

/// `GET /internal/v1/trending`'s answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TrendingAnswer {
    pub titles: Vec<TrendingItem>,
}

/// One row of home.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub title: String,
    pub kind: &'static str,
    pub items: Vec<Value>,
}

/// A title as a row lists it.
pub fn item(title: &CatalogTitle) -> Value {
    json!({
        "id": title.id,
        "name": title.name,
        "year": title.year,
        "genres": title.genres,
        "maturity": title.maturity,
        "duration_min": title.duration_min,
        "playable": title.playable,
    })
}

/// The popular rows of a catalog: "Popular on casebook" (the top titles by the
/// popularity prior), then "Popular in G" for the catalog's `genre_rows` most
/// popular genres. `by_popularity` lists positions in `titles`, most popular first.
pub fn popular_rows(
    titles: &[CatalogTitle],
    by_popularity: &[usize],
    row_size: usize,
    genre_rows: usize,
) -> Vec<Row> {
    let mut rows = vec![Row {
        title: "Popular on casebook".to_owned(),
        kind: "popular",
        items: by_popularity
            .iter()
            .take(row_size)
            .map(|&i| item(&titles[i]))
            .collect(),
    }];
    for genre in catalog_top_genres(titles, genre_rows) {
        rows.push(genre_row(
            titles,
            by_popularity,
            &genre,
            &HashSet::new(),
            row_size,
            format!("Popular in {genre}"),
        ));
    }
    rows
}

/// Positions in `titles`, most popular first (ties by id: deterministic).
pub fn popularity_order(titles: &[CatalogTitle]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..titles.len()).collect();
    order.sort_by(|&a, &b| {
        titles[b]
            .popularity
            .total_cmp(&titles[a].popularity)
            .then_with(|| titles[a].id.cmp(&titles[b].id))
    });
    order
}

/// The catalog's `n` genres with the most popularity summed over their titles.
fn catalog_top_genres(titles: &[CatalogTitle], n: usize) -> Vec<String> {
    let mut sums: HashMap<&str, f64> = HashMap::new();
    for title in titles {
        for genre in &title.genres {
            *sums.entry(genre).or_default() += title.popularity;
        }
    }
    let mut genres: Vec<(&str, f64)> = sums.into_iter().collect();
    genres.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    genres
        .into_iter()
        .take(n)
        .map(|(g, _)| g.to_owned())
        .collect()
}

fn genre_row(
    titles: &[CatalogTitle],
    by_popularity: &[usize],
    genre: &str,
    watched: &HashSet<usize>,
    row_size: usize,
    name: String,
) -> Row {
    Row {
        title: name,
        kind: "top_genre",
        items: by_popularity
            .iter()
            .filter(|i| !watched.contains(i) && titles[**i].genres.iter().any(|g| g == genre))
            .take(row_size)
            .map(|&i| item(&titles[i]))
            .collect(),
    }
}

/// Home as composed: the rows and what was unavailable.
#[derive(Debug, Clone, PartialEq)]
pub struct Home {
    pub rows: Vec<Row>,
    pub degraded: Vec<&'static str>,
}

/// Home for a viewer whose history (newest first) and the trending titles are
/// given, `None` when unavailable.
pub fn compose(
    ready: &Ready,
    history: Option<&[HistoryItem]>,
    trending: Option<&[TrendingItem]>,
    row_size: usize,
) -> Home {
    let titles = &ready.titles;
    let mut rows = Vec::new();
    let mut degraded = Vec::new();
    let known: Vec<(usize, &HistoryItem)> = history
        .unwrap_or_default()
        .iter()
        .filter_map(|h| ready.by_id.get(&h.title).map(|&i| (i, h)))
        .collect();
    let watched: HashSet<usize> = known.iter().map(|(i, _)| *i).collect();
    if history.is_none() {
        degraded.push("history");
    }

    let mut resumable = Vec::new();
    let mut seen = HashSet::new();
    for (i, h) in &known {
        let finished = h.duration_s > 0.0 && h.position_s >= FINISHED_SHARE * h.duration_s;
        if h.position_s > 0.0 && !finished && seen.insert(*i) && resumable.len() < row_size {
            let mut entry = item(&titles[*i]);
            entry["position_s"] = json!(h.position_s);
            entry["duration_s"] = json!(h.duration_s);
            resumable.push(entry);
        }
    }
    if !resumable.is_empty() {
        rows.push(Row {
            title: "Continue watching".to_owned(),
            kind: "continue_watching",
            items: resumable,
        });
    }

    let mut recent = Vec::new();
    for (i, _) in &known {
        if !recent.contains(i) {
            recent.push(*i);
        }
        if recent.len() == BECAUSE_ROWS {
            break;
        }
    }
    for watched_ord in recent {
        let title = &titles[watched_ord];
        // Ask for more than a row: watched titles are dropped after the search.
        let hits = ready
            .index
            .more_like(title, row_size + watched.len() + 1)
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "more-like-this failed");
                Vec::new()
            });
        let items: Vec<Value> = hits
            .iter()
            .filter(|h| h.ord < titles.len() && !watched.contains(&h.ord))
            .take(row_size)
            .map(|h| item(&titles[h.ord]))
            .collect();
        if !items.is_empty() {
            rows.push(Row {
                title: format!("Because you watched {}", title.name),
                kind: "because_you_watched",
                items,
            });
        }
    }

    let mut trending_row: Vec<usize> = Vec::new();
    match trending {
        Some(items) => {
            for t in items {
                if let Some(&i) = ready.by_id.get(&t.title)
                    && !trending_row.contains(&i)
                    && trending_row.len() < row_size
                {
                    trending_row.push(i);
                }
            }
        }
        None => degraded.push("trending"),
    }
    // Few views yet (or none known): the prior tops the row up.
    for &i in &ready.by_popularity {
        if trending_row.len() >= row_size {
            break;
        }
        if !trending_row.contains(&i) {
            trending_row.push(i);
        }
    }
    rows.push(Row {
        title: "Trending now".to_owned(),
        kind: "trending",
        items: trending_row.iter().map(|&i| item(&titles[i])).collect(),
    });

    let (genres, prefix) = if known.is_empty() {
        (catalog_top_genres(titles, GENRE_ROWS), "Popular in")
    } else {
        (
            viewer_top_genres(titles, &known, GENRE_ROWS),
            "Top picks in",
        )
    };
    for genre in genres {
        let row = genre_row(
            titles,
            &ready.by_popularity,
            &genre,
            &watched,
            row_size,
            format!("{prefix} {genre}"),
        );
        if !row.items.is_empty() {
            rows.push(row);
        }
    }
    Home { rows, degraded }
}

/// The viewer's `n` top genres: each history item's genres count 1/(1 + age
/// rank), so recent viewing weighs more.
fn viewer_top_genres(
    titles: &[CatalogTitle],
    known: &[(usize, &HistoryItem)],
    n: usize,
) -> Vec<String> {
    let mut weights: HashMap<&str, f64> = HashMap::new();
    for (rank, (i, _)) in known.iter().enumerate() {
        for genre in &titles[*i].genres {
            *weights.entry(genre).or_default() += 1.0 / (1.0 + rank as f64);
        }
    }
    let mut genres: Vec<(&str, f64)> = weights.into_iter().collect();
    genres.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    genres
        .into_iter()
        .take(n)
        .map(|(g, _)| g.to_owned())
        .collect()
}
