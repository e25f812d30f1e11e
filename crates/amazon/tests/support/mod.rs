//! The amazon crate's test helpers: the inventory and order routes over embedded
//! stores in a temporary directory, on a manual clock, with an in-memory cart.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use casebook_amazon::cart::{CartLine, CartLines, CartUnavailable};
use casebook_amazon::inventory::http::{InventoryApi, Limits, router as inventory_router};
use casebook_amazon::inventory::{EmbeddedConfig, InventoryStore, WalInventory};
use casebook_amazon::orders::http::{OrdersApi, router as orders_router};
use casebook_amazon::orders::{Checkout, CheckoutLimits, OrderStore, OutboxOrders};
use casebook_kit::clock::ManualClock;
use casebook_kit::runtime::BoxFuture;
use casebook_kit::wal::{Durability, WalConfig};
use http::{Request, StatusCode};
use parking_lot::Mutex;
use serde_json::Value;
use tower::ServiceExt;

/// A cart double: lines per user; `remove_bought` takes the bought units off.
#[derive(Debug, Default)]
pub struct MemoryCart {
    pub lines: Mutex<HashMap<String, Vec<CartLine>>>,
    pub down: Mutex<bool>,
}

impl MemoryCart {
    pub fn put(&self, user: &str, lines: &[(&str, u32)]) {
        self.lines.lock().insert(
            user.to_owned(),
            lines
                .iter()
                .map(|(sku, qty)| CartLine {
                    sku: (*sku).to_owned(),
                    qty: *qty,
                })
                .collect(),
        );
    }

    pub fn of(&self, user: &str) -> Vec<CartLine> {
        self.lines.lock().get(user).cloned().unwrap_or_default()
    }
}

impl CartLines for MemoryCart {
    fn lines<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Vec<CartLine>, CartUnavailable>> {
        Box::pin(async move {
            if *self.down.lock() {
                return Err(CartUnavailable("no replica answered".into()));
            }
            Ok(self.of(user))
        })
    }

    fn remove_bought<'a>(
        &'a self,
        user: &'a str,
        bought: &'a [CartLine],
    ) -> BoxFuture<'a, Result<(), CartUnavailable>> {
        Box::pin(async move {
            let mut lines = self.lines.lock();
            let cart = lines.entry(user.to_owned()).or_default();
            for sold in bought {
                if let Some(line) = cart.iter_mut().find(|l| l.sku == sold.sku) {
                    line.qty = line.qty.saturating_sub(sold.qty);
                }
            }
            cart.retain(|l| l.qty > 0);
            Ok(())
        })
    }
}

pub fn wal_config() -> WalConfig {
    WalConfig {
        segment_bytes: 64 * 1024,
        max_record_bytes: 16 * 1024,
        // Tests survive process crashes by construction; nobody pulls the plug.
        durability: Durability::NoSync,
        ..WalConfig::default()
    }
}

pub const LIMITS: Limits = Limits {
    max_line_qty: 100,
    default_ttl: Duration::from_secs(900),
    max_ttl: Duration::from_secs(86_400),
};

/// The stores and routes of one "process".
pub struct Stack {
    pub inventory: WalInventory,
    pub orders: OutboxOrders,
    pub checkout: Arc<Checkout>,
    pub router: Router,
}

impl Stack {
    pub fn open(dir: &Path, clock: &ManualClock, cart: Arc<MemoryCart>) -> Self {
        let inventory = WalInventory::open(
            &dir.join("inventory"),
            EmbeddedConfig {
                shards: 16,
                wal: wal_config(),
                ..EmbeddedConfig::default()
            },
            clock.shared(),
        )
        .unwrap();
        let orders = OutboxOrders::open(
            &dir.join("orders"),
            wal_config(),
            clock.shared(),
            Duration::from_secs(86_400),
        )
        .unwrap();
        let store: Arc<dyn InventoryStore> = Arc::new(inventory.clone());
        let order_store: Arc<dyn OrderStore> = Arc::new(orders.clone());
        let checkout = Arc::new(Checkout::new(
            store.clone(),
            order_store.clone(),
            cart,
            CheckoutLimits {
                max_lines: 10,
                max_line_qty: LIMITS.max_line_qty,
                hold: LIMITS.default_ttl,
            },
        ));
        let router = inventory_router(InventoryApi {
            store,
            limits: LIMITS,
        })
        .merge(orders_router(OrdersApi {
            checkout: checkout.clone(),
            orders: order_store,
        }));
        Self {
            inventory,
            orders,
            checkout,
            router,
        }
    }

    /// One request; the status, the `idempotent-replayed` header and the body
    /// (raw bytes and JSON).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(Body::from(body.unwrap_or("").to_owned()))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let replayed = response.headers().contains_key("idempotent-replayed");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            replayed,
            bytes,
            json,
        }
    }
}

#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub replayed: bool,
    pub bytes: Vec<u8>,
    pub json: Value,
}

impl Answer {
    /// Asserts the status and the error code; returns the body.
    pub fn expect(&self, status: u16, code: Option<&str>) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.json);
        if let Some(code) = code {
            assert_eq!(self.json["code"], code, "{}", self.json);
            assert!(
                self.json["error"].as_str().is_some_and(|e| !e.is_empty()),
                "a message beside the code: {}",
                self.json
            );
        }
        &self.json
    }
}
