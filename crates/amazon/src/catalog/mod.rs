//! The product catalog behind browsing: a deterministic catalog of `skus`
//! products (`sku-00000` …), each with a name, a category and a price, generated
//! from its number — the same in every process and run, so workloads, the
//! recommender's history and the inventory agree on SKUs without a data file.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/products?category=C&page=P&per_page=N` | a page of products (N ≤ 100) |
//! | `GET /v1/products/{sku}?user=U` | one product; with `user`, the view is published for the recommender |

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use casebook_kit::api::ApiError;
use casebook_kit::partition::stable_hash_bytes;
use serde::{Deserialize, Serialize};

use casebook_kit::events::EventBus;

use crate::recs::Recs;
use crate::recs::interaction::VIEW_EVENT;

/// Categories, in the order SKUs cycle through them.
pub const CATEGORIES: [&str; 20] = [
    "books",
    "music",
    "video",
    "toys",
    "garden",
    "kitchen",
    "tools",
    "sports",
    "outdoors",
    "beauty",
    "health",
    "grocery",
    "baby",
    "pets",
    "office",
    "computers",
    "phones",
    "audio",
    "camera",
    "auto",
];
const ADJECTIVES: [&str; 12] = [
    "classic",
    "compact",
    "deluxe",
    "everyday",
    "heavy-duty",
    "lightweight",
    "organic",
    "portable",
    "premium",
    "smart",
    "vintage",
    "wireless",
];
const NOUNS: [&str; 12] = [
    "kit",
    "set",
    "bundle",
    "edition",
    "pack",
    "model",
    "series",
    "collection",
    "essentials",
    "starter",
    "pro",
    "mini",
];
/// Most products one page holds.
pub const MAX_PER_PAGE: usize = 100;

/// One product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub category: String,
    pub price_cents: u64,
}

/// The SKU of product `i`.
pub fn sku(i: usize) -> String {
    format!("sku-{i:05}")
}

/// The catalog of `skus` products.
#[derive(Debug, Clone)]
pub struct Catalog {
    skus: usize,
}

impl Catalog {
    pub fn new(skus: usize) -> Self {
        Self { skus }
    }

    /// How many products there are.
    pub fn len(&self) -> usize {
        self.skus
    }

    pub fn is_empty(&self) -> bool {
        self.skus == 0
    }

    /// The number of `sku`, when it is one of ours.
    pub fn index(&self, sku: &str) -> Option<usize> {
        let digits = sku.strip_prefix("sku-")?;
        if digits.len() != 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().filter(|i| *i < self.skus)
    }

    /// Product `i`.
    pub fn product(&self, i: usize) -> Product {
        let h = stable_hash_bytes(sku(i).as_bytes());
        let category = CATEGORIES[i % CATEGORIES.len()];
        Product {
            sku: sku(i),
            name: format!(
                "{} {category} {}",
                ADJECTIVES[(h % 12) as usize],
                NOUNS[((h >> 8) % 12) as usize]
            ),
            category: category.to_owned(),
            price_cents: 199 + (h >> 16) % 50_000,
        }
    }
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    category: Option<String>,
    page: Option<usize>,
    per_page: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct ViewQuery {
    user: Option<String>,
}

/// A page of products.
#[derive(Debug, Serialize)]
pub struct Page {
    pub page: usize,
    pub per_page: usize,
    pub total: usize,
    pub products: Vec<Product>,
}

#[derive(Debug)]
struct CatalogState {
    catalog: Catalog,
    recs: Option<Views>,
}

/// Where views go: the recommender, the bus and topic they are published on.
#[derive(Debug, Clone)]
pub struct Views {
    pub recs: Arc<Recs>,
    pub bus: Arc<dyn EventBus>,
    pub topic: String,
}

/// The catalog's routes; `views` (the recommender and the topic) receives a view
/// for every product shown to a named user.
pub fn router(catalog: Catalog, views: Option<Views>) -> Router {
    Router::new()
        .route("/v1/products", get(page))
        .route("/v1/products/{sku}", get(product))
        .with_state(Arc::new(CatalogState {
            catalog,
            recs: views,
        }))
}

async fn page(
    State(state): State<Arc<CatalogState>>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Page>, ApiError> {
    let per_page = query.per_page.unwrap_or(20);
    if !(1..=MAX_PER_PAGE).contains(&per_page) {
        return Err(ApiError::bad_field("per_page", "1 to 100").with_code("invalid_page"));
    }
    let category = match query.category.as_deref() {
        None => None,
        Some(c) => Some(CATEGORIES.iter().position(|k| *k == c).ok_or_else(|| {
            ApiError::bad_field("category", format!("unknown category `{c}`"))
                .with_code("invalid_category")
        })?),
    };
    let page = query.page.unwrap_or(0);
    let stride = category.map_or(1, |_| CATEGORIES.len());
    let first = category.unwrap_or(0);
    let total = (state.catalog.len().saturating_sub(first)).div_ceil(stride);
    let products = (0..per_page)
        .map_while(|k| {
            let n = page.checked_mul(per_page)?.checked_add(k)?;
            let i = first.checked_add(n.checked_mul(stride)?)?;
            (i < state.catalog.len()).then(|| state.catalog.product(i))
        })
        .collect();
    Ok(Json(Page {
        page,
        per_page,
        total,
        products,
    }))
}

async fn product(
    State(state): State<Arc<CatalogState>>,
    Path(sku): Path<String>,
    Query(query): Query<ViewQuery>,
) -> Result<Json<Product>, ApiError> {
    let i = state.catalog.index(&sku).ok_or_else(|| {
        ApiError::not_found(format!("no product `{sku}`")).with_code("unknown_sku")
    })?;
    if let (Some(user), Some(views)) = (query.user.as_deref(), &state.recs)
        && !user.is_empty()
        && user.len() <= 128
    {
        // Off the request path: a browse never waits for the bus's fsync.
        let (views, user, sku) = (views.clone(), user.to_owned(), sku.clone());
        tokio::spawn(async move {
            views
                .recs
                .record(views.bus.as_ref(), &views.topic, VIEW_EVENT, &user, &sku)
                .await;
        });
    }
    Ok(Json(state.catalog.product(i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_are_deterministic_and_skus_parse_back() {
        let catalog = Catalog::new(10_000);
        assert_eq!(catalog.product(42), catalog.product(42));
        assert_eq!(catalog.index(&sku(9_999)), Some(9_999));
        assert_eq!(catalog.index("sku-10000"), None);
        assert_eq!(catalog.index("sku-0001"), None);
        assert_eq!(catalog.index("sku-+0001"), None);
        assert_eq!(catalog.product(21).category, CATEGORIES[1]);
    }
}
