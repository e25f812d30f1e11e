//! The coordinator: how the `amazon` API reads and writes carts over the replicas.
//!
//! # Writes
//! The preference list is the replicas discovery lists, nearest first: the API's
//! own zone, then the other zones of the region. A write goes to the first replica
//! that takes it, and is durable there (its log, synced) before the answer. Every
//! zone tried before it that could not take the write is named in the request as
//! a **hint**: the replica that takes the write keeps a durable hint for each and
//! hands the cart to that zone's replica when it returns. If no listed replica
//! takes the write, the list is asked of discovery again and the write tried once
//! more; only then is the answer 503 (`cart_unavailable`). So an add is never
//! refused while any replica of the region is up and listed.
//!
//! # Reads
//! A read asks every listed replica at once and merges the answers of those that
//! respond (the CRDT merge: nothing any responder holds is lost). A responder
//! whose copy differs from the merge is sent the merge (read repair, in the
//! background).
//!
//! # Not guaranteed
//! - Read-your-writes across a failover: a write taken by another zone's replica
//!   is visible to a read that reaches that replica (every read asks all), not to
//!   one that reaches only the returning replica before its handoff.
//! - Exactly-once adds: a write whose replica timed out after making it durable is
//!   tried on the next replica too, so that add counts twice (never zero times).

use std::net::SocketAddr;
use std::sync::Arc;

use casebook_kit::api::ApiError;
use casebook_kit::runtime::{BoxFuture, InstanceContext};
use http::Method;

use super::config::CartConfig;
use super::crdt::Cart;
use super::model::{self, code, lines_of, unavailable};
use super::peers::{CallError, ReplicaDirectory};
use super::wire::{
    CartResponse, MAX_OPS, MERGE_PATH, MergeRequest, MergeResponse, Op, OpRequest, OpResponse,
    UserCart,
};
use super::{CartLine, CartLines, CartUnavailable};

/// A merged read.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    pub cart: Cart,
    /// Replicas that answered, of those asked.
    pub answered: usize,
    pub asked: usize,
}

/// A write as the replica that took it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub cart: Cart,
    /// The zone of the replica that took it.
    pub zone: String,
    /// The zones it was meant for first, that could not take it.
    pub hinted: Vec<String>,
}

/// Reads and writes carts over the replicas. See the module docs.
#[derive(Debug)]
pub struct Coordinator {
    replicas: Arc<ReplicaDirectory>,
    config: CartConfig,
    /// Background repairs run in this instance's task group (else on the runtime).
    ctx: Option<InstanceContext>,
    /// Told of every add the replicas took (the recommender's taste signal).
    on_add: std::sync::OnceLock<AddObserver>,
}

/// Told `(user, sku)` after an add is durable on a replica; must not block.
#[derive(Clone)]
pub struct AddObserver(pub Arc<ObserveAdd>);

/// What an [`AddObserver`] calls: `(user, sku)`.
pub type ObserveAdd = dyn Fn(&str, &str) + Send + Sync;

impl std::fmt::Debug for AddObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AddObserver")
    }
}

impl Coordinator {
    /// A coordinator over `replicas`; `ctx` is the instance whose task group runs
    /// its background work (tests may pass none).
    pub fn new(
        replicas: ReplicaDirectory,
        config: CartConfig,
        ctx: Option<InstanceContext>,
    ) -> Self {
        Self {
            replicas: Arc::new(replicas),
            config,
            ctx,
            on_add: std::sync::OnceLock::new(),
        }
    }

    /// Sets who is told of adds (once; a second call is ignored).
    pub fn observe_adds(&self, observer: AddObserver) {
        let _ = self.on_add.set(observer);
    }

    /// An add was taken.
    pub(crate) fn added(&self, user: &str, sku: &str) {
        if let Some(observer) = self.on_add.get() {
            (observer.0)(user, sku);
        }
    }

    /// Asks discovery for the replicas again if the list is old (the API's
    /// background task calls it).
    pub async fn refresh_replicas_if_stale(&self) {
        self.replicas.refresh_if_stale().await;
    }

    /// The cart configuration.
    pub fn config(&self) -> &CartConfig {
        &self.config
    }

    /// `user`'s cart as the replicas that answer hold it, merged.
    pub async fn read(&self, user: &str) -> Result<Read, ApiError> {
        let path = format!("/internal/v1/carts/{user}");
        for attempt in 0..2 {
            let zones = if attempt == 0 {
                self.replicas.zones().await
            } else {
                self.replicas.refresh().await
            };
            let addresses: Vec<SocketAddr> = zones
                .iter()
                .flat_map(|z| z.addresses.iter().copied())
                .collect();
            let answers = futures::future::join_all(addresses.iter().map(|&address| {
                self.replicas
                    .call::<(), CartResponse>(address, Method::GET, &path, None)
            }))
            .await;
            let mut merged = Cart::default();
            let mut copies = Vec::new();
            for (address, answer) in addresses.iter().zip(answers) {
                if let Ok(answer) = answer {
                    merged.merge(&answer.cart);
                    copies.push((*address, answer.cart));
                }
            }
            if !copies.is_empty() {
                self.repair(user, &merged, &copies);
                return Ok(Read {
                    cart: merged,
                    answered: copies.len(),
                    asked: addresses.len(),
                });
            }
        }
        Err(unavailable(
            code::CART_UNAVAILABLE,
            "no cart replica answered; try again",
        ))
    }

    /// Sends the merged cart to every responder whose copy differs (in the
    /// background; a failure only leaves the work to anti-entropy).
    fn repair(&self, user: &str, merged: &Cart, copies: &[(SocketAddr, Cart)]) {
        let stale: Vec<SocketAddr> = copies
            .iter()
            .filter(|(_, copy)| copy != merged)
            .map(|(address, _)| *address)
            .collect();
        if stale.is_empty() || merged.clock().is_empty() {
            return;
        }
        let body = MergeRequest {
            carts: vec![UserCart {
                user: user.to_owned(),
                cart: merged.clone(),
            }],
        };
        let replicas = self.replicas.clone();
        let repair = async move {
            for address in stale {
                let _ = replicas
                    .call::<_, MergeResponse>(address, Method::POST, MERGE_PATH, Some(&body))
                    .await;
            }
        };
        match &self.ctx {
            Some(ctx) => ctx.spawn(repair),
            None => {
                tokio::spawn(repair);
            }
        }
    }

    /// Applies `ops` to `user`'s cart on the first replica that takes them (see
    /// the module docs), `observed` merged in first.
    pub async fn write(
        &self,
        user: &str,
        ops: Vec<Op>,
        observed: Option<Cart>,
    ) -> Result<Written, ApiError> {
        let path = format!("/internal/v1/carts/{user}/ops");
        let mut request = OpRequest {
            ops,
            observed,
            hints: Vec::new(),
        };
        for attempt in 0..2 {
            let zones = if attempt == 0 {
                self.replicas.zones().await
            } else {
                self.replicas.refresh().await
            };
            for zone in &zones {
                for &address in &zone.addresses {
                    match self
                        .replicas
                        .call::<_, OpResponse>(address, Method::POST, &path, Some(&request))
                        .await
                    {
                        Ok(answer) => {
                            return Ok(Written {
                                cart: answer.cart,
                                hinted: request.hints,
                                zone: answer.zone,
                            });
                        }
                        Err(CallError::Refused(error)) => return Err(error),
                        Err(CallError::Failed(why)) => {
                            tracing::debug!(zone = %zone.zone, %address, why, "cart replica could not take a write");
                        }
                    }
                }
                if !request.hints.contains(&zone.zone) {
                    request.hints.push(zone.zone.clone());
                }
            }
        }
        metrics::counter!("casebook_amazon_cart_unavailable_total").increment(1);
        Err(unavailable(
            code::CART_UNAVAILABLE,
            "no cart replica could take the write; try again",
        ))
    }
}

impl CartLines for Coordinator {
    fn lines<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Vec<CartLine>, CartUnavailable>> {
        Box::pin(async move {
            model::check_user(user).map_err(|e| CartUnavailable(e.error))?;
            let read = self
                .read(user)
                .await
                .map_err(|e| CartUnavailable(e.error))?;
            Ok(lines_of(&read.cart, self.config.max_line_qty))
        })
    }

    /// Removes exactly what was bought: a line bought whole is removed with the
    /// context of a fresh read (an add made meanwhile that the read did not see
    /// survives); a line of which less was bought is set to what remains.
    fn remove_bought<'a>(
        &'a self,
        user: &'a str,
        bought: &'a [CartLine],
    ) -> BoxFuture<'a, Result<(), CartUnavailable>> {
        Box::pin(async move {
            model::check_user(user).map_err(|e| CartUnavailable(e.error))?;
            let read = self
                .read(user)
                .await
                .map_err(|e| CartUnavailable(e.error))?;
            let mut ops = Vec::new();
            for line in bought {
                if model::check_sku(&line.sku).is_err() {
                    continue;
                }
                let have = read.cart.quantity(&line.sku).min(self.config.max_line_qty);
                if have == 0 {
                    continue;
                }
                if have <= line.qty {
                    ops.push(Op::Remove {
                        sku: line.sku.clone(),
                        context: read.cart.clock().clone(),
                    });
                } else {
                    ops.push(Op::Set {
                        sku: line.sku.clone(),
                        qty: have - line.qty,
                    });
                }
            }
            for chunk in ops.chunks(MAX_OPS) {
                self.write(user, chunk.to_vec(), Some(read.cart.clone()))
                    .await
                    .map_err(|e| CartUnavailable(e.error))?;
            }
            Ok(())
        })
    }
}
