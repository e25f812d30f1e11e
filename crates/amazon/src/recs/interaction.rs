//! What every layer learns from: a user did something to an item.

use serde::{Deserialize, Serialize};

/// What the user did, strongest last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    View,
    AddToCart,
    Purchase,
}

impl Kind {
    /// How much one interaction of this kind says about taste.
    pub fn weight(self) -> f64 {
        match self {
            Self::View => 1.0,
            Self::AddToCart => 3.0,
            Self::Purchase => 5.0,
        }
    }
}

/// One interaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    pub user: String,
    pub sku: String,
    pub kind: Kind,
    /// Wall-clock milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// The event type a view is published under.
pub const VIEW_EVENT: &str = "product.viewed";
/// The event type an add to a cart is published under, by the API that took it
/// (the cart's own events live on its replicas); orders come from checkout's
/// outbox as `OrderPlaced`. [`from_event`] reads all three.
pub const ADD_EVENT: &str = "cart.item_added";

/// The interactions an event on the bus stands for: a view, an add to a cart, or
/// every line of a placed order. Other events say nothing about taste.
pub fn from_event(event: &casebook_kit::events::Event) -> Vec<Interaction> {
    let str_of =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let payload = &event.payload;
    let user = str_of(payload, "user").unwrap_or_else(|| event.key.clone());
    let one = |kind| {
        str_of(payload, "sku")
            .map(|sku| Interaction {
                user: user.clone(),
                sku,
                kind,
                at_ms: event.time_ms,
            })
            .into_iter()
            .collect()
    };
    match event.event_type.as_str() {
        VIEW_EVENT => one(Kind::View),
        t if t.ends_with("item_added") || t.ends_with("ItemAdded") => one(Kind::AddToCart),
        t if t.ends_with("order_placed") || t.ends_with("OrderPlaced") => payload
            .get("lines")
            .and_then(|l| l.as_array())
            .map(|lines| {
                lines
                    .iter()
                    .filter_map(|line| str_of(line, "sku"))
                    .map(|sku| Interaction {
                        user: user.clone(),
                        sku,
                        kind: Kind::Purchase,
                        at_ms: event.time_ms,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}
