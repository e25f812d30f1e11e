//! Push on write, hinted handoff and anti-entropy (see the parent module).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use http::Method;

use super::Replica;
use crate::cart::peers::{CallError, ZoneReplicas};
use crate::cart::store::BUCKETS;
use crate::cart::wire::{
    BUCKET_PATH, BucketRequest, BucketResponse, DIGEST_PATH, DigestRequest, DigestResponse,
    MAX_BUCKET_LISTING, MERGE_PATH, MergeRequest, MergeResponse, ReplicaStatus, STATUS_PATH,
    UserCart,
};

/// Handoff batches per zone per round (a long outage drains over several rounds).
const HANDOFF_BATCHES_PER_ROUND: usize = 64;

/// What one anti-entropy round did with one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AntiEntropyReport {
    pub zone: String,
    /// Buckets whose digests differed.
    pub differing: usize,
    /// Buckets reconciled this round.
    pub reconciled: usize,
    /// Carts this replica took from the peer (that changed something here).
    pub received: usize,
    /// Carts sent to the peer.
    pub sent: usize,
    /// The round stopped at an error (the peer went away mid-round).
    pub failed: bool,
}

impl Replica {
    /// The zones a write taken now must hint besides the coordinator's: every
    /// peer considered down.
    pub(super) fn hints_for_write(&self, from_coordinator: &[String]) -> Vec<String> {
        let mut zones: BTreeSet<String> = self.down.lock().iter().cloned().collect();
        zones.extend(
            from_coordinator
                .iter()
                .filter(|z| **z != self.zone)
                .cloned(),
        );
        zones.into_iter().collect()
    }

    /// Queues `user`'s cart for every listed peer. A peer that is down gets it
    /// as a hint from the pusher (the write's own record hinted it already if it
    /// was down then; this covers a peer that went down meanwhile).
    pub(super) fn queue_push(&self, user: &str) {
        let mut queues = self.queues.lock();
        for zone in self.peers.cached_zones() {
            let queue = queues.entry(zone.zone).or_default();
            if queue.queued.contains(user) {
                continue;
            }
            if queue.order.len() >= self.config.push_queue {
                self.overflowed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("casebook_amazon_cart_push_overflow_total").increment(1);
                continue;
            }
            queue.queued.insert(user.to_owned());
            queue.order.push_back(user.to_owned());
        }
        drop(queues);
        self.wake_pusher.notify_one();
    }

    /// The pusher: sends each zone's queued carts in batches, one zone's batch
    /// beside the others'; a failed batch marks the zone down and becomes hints.
    pub(super) async fn run_pusher(&self) {
        // The first listing, so writes have peers to queue for.
        self.peers.refresh().await;
        loop {
            let batches: Vec<(String, Vec<String>)> = {
                let mut queues = self.queues.lock();
                queues
                    .iter_mut()
                    .filter(|(_, q)| !q.order.is_empty())
                    .map(|(zone, q)| {
                        let n = q.order.len().min(self.config.batch);
                        let users: Vec<String> = q.order.drain(..n).collect();
                        for user in &users {
                            q.queued.remove(user);
                        }
                        (zone.clone(), users)
                    })
                    .collect()
            };
            if batches.is_empty() {
                self.wake_pusher.notified().await;
                continue;
            }
            let zones = self.peers.zones().await;
            let pushes = batches
                .into_iter()
                .map(|(zone, users)| self.push_batch(&zones, zone, users));
            futures::future::join_all(pushes).await;
        }
    }

    async fn push_batch(&self, zones: &[ZoneReplicas], zone: String, users: Vec<String>) {
        let down = self.down.lock().contains(&zone);
        let delivered = !down && self.send_carts(zones, &zone, &users).await.is_ok();
        if delivered {
            metrics::counter!("casebook_amazon_cart_pushed_total").increment(users.len() as u64);
            return;
        }
        if self.down.lock().insert(zone.clone()) {
            tracing::warn!(
                zone,
                "cart push failed; hinting writes for this zone until it returns"
            );
        }
        // Whatever was still queued for the zone becomes hints too.
        let mut users = users;
        if let Some(queue) = self.queues.lock().get_mut(&zone) {
            queue.queued.clear();
            users.extend(queue.order.drain(..));
        }
        if let Err(error) = self.store.add_hints(&zone, &users).await {
            tracing::warn!(%error, zone, "cannot record hints; anti-entropy will deliver");
        }
    }

    /// Sends `users`' current carts to `zone`'s replica (any listed address that
    /// answers), in batches. Ok once all went over.
    async fn send_carts(
        &self,
        zones: &[ZoneReplicas],
        zone: &str,
        users: &[String],
    ) -> Result<(), CallError> {
        let addresses = zones
            .iter()
            .find(|z| z.zone == zone)
            .map(|z| z.addresses.clone())
            .ok_or_else(|| CallError::Failed(format!("no replica of {zone} is listed")))?;
        for chunk in users.chunks(self.config.batch) {
            let carts: Vec<UserCart> = chunk
                .iter()
                .filter_map(|user| {
                    self.store.get(user).map(|cart| UserCart {
                        user: user.clone(),
                        cart,
                    })
                })
                .collect();
            if carts.is_empty() {
                continue;
            }
            let body = MergeRequest { carts };
            self.first_answer::<_, MergeResponse>(
                &addresses,
                Method::POST,
                MERGE_PATH,
                Some(&body),
            )
            .await?;
        }
        Ok(())
    }

    /// The answer of the first of `addresses` that gives one.
    async fn first_answer<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        addresses: &[SocketAddr],
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(SocketAddr, T), CallError> {
        let mut last = CallError::Failed("no address".to_owned());
        for &address in addresses {
            match self.peers.call(address, method.clone(), path, body).await {
                Ok(answer) => return Ok((address, answer)),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    /// One handoff round: for each zone with hints (or marked down) whose replica
    /// discovery lists, deliver the hinted carts; a zone left with no hint is up
    /// again. Returns how many hinted carts were delivered.
    pub async fn handoff_round(&self) -> usize {
        let mut zones_to_serve: BTreeSet<String> = self.store.hints().zones().into_keys().collect();
        zones_to_serve.extend(self.down.lock().iter().cloned());
        if zones_to_serve.is_empty() {
            return 0;
        }
        let listed = self.peers.refresh().await;
        let mut delivered = 0;
        for zone in zones_to_serve {
            let Some(replicas) = listed.iter().find(|z| z.zone == zone) else {
                continue;
            };
            let mut ok = true;
            for _ in 0..HANDOFF_BATCHES_PER_ROUND {
                let users = self.store.hints().pending(&zone, self.config.batch);
                if users.is_empty() {
                    break;
                }
                if let Err(error) = self.send_carts(&listed, &zone, &users).await {
                    tracing::debug!(%error, zone, "handoff not possible yet");
                    ok = false;
                    break;
                }
                if let Err(error) = self.store.hints_delivered(&zone, &users).await {
                    tracing::warn!(%error, zone, "cannot record a handoff; it will be repeated");
                    ok = false;
                    break;
                }
                delivered += users.len();
                metrics::counter!("casebook_amazon_cart_handed_off_total")
                    .increment(users.len() as u64);
            }
            let drained = self.store.hints().pending(&zone, 1).is_empty();
            if ok && drained && self.down.lock().contains(&zone) {
                // No hint left: is the replica answering? Then push to it again.
                let alive = self
                    .first_answer::<(), ReplicaStatus>(
                        &replicas.addresses,
                        Method::GET,
                        STATUS_PATH,
                        None,
                    )
                    .await
                    .is_ok();
                if alive {
                    self.down.lock().remove(&zone);
                    tracing::info!(
                        zone,
                        "cart replica is back; hints handed off, pushing again"
                    );
                }
            }
        }
        delivered
    }

    /// One anti-entropy round with every listed peer.
    pub async fn anti_entropy_round(&self) -> Vec<AntiEntropyReport> {
        let listed = self.peers.refresh().await;
        let mut reports = Vec::new();
        for zone in &listed {
            let report = self.anti_entropy_with(zone).await;
            metrics::counter!("casebook_amazon_cart_anti_entropy_rounds_total").increment(1);
            metrics::counter!("casebook_amazon_cart_anti_entropy_repaired_total")
                .increment((report.received + report.sent) as u64);
            reports.push(report);
        }
        reports
    }

    async fn anti_entropy_with(&self, zone: &ZoneReplicas) -> AntiEntropyReport {
        let mut report = AntiEntropyReport {
            zone: zone.zone.clone(),
            ..AntiEntropyReport::default()
        };
        let digest = DigestRequest {
            buckets: self.store.digest(),
        };
        let Ok((address, answer)) = self
            .first_answer::<_, DigestResponse>(
                &zone.addresses,
                Method::POST,
                DIGEST_PATH,
                Some(&digest),
            )
            .await
        else {
            report.failed = true;
            return report;
        };
        let differ: Vec<usize> = answer
            .differ
            .iter()
            .map(|&b| b as usize)
            .filter(|&b| b < BUCKETS)
            .collect();
        report.differing = differ.len();
        if differ.is_empty() {
            return report;
        }
        let start = {
            let mut cursors = self.ae_cursor.lock();
            let cursor = cursors.entry(zone.zone.clone()).or_insert(0);
            let start = *cursor % differ.len();
            *cursor = cursor.wrapping_add(self.config.anti_entropy_buckets);
            start
        };
        for i in 0..differ.len().min(self.config.anti_entropy_buckets) {
            let bucket = differ[(start + i) % differ.len()];
            match self.reconcile_bucket(address, bucket).await {
                Ok((received, sent)) => {
                    report.reconciled += 1;
                    report.received += received;
                    report.sent += sent;
                }
                Err(error) => {
                    tracing::debug!(%error, zone = %zone.zone, bucket, "anti-entropy stopped");
                    report.failed = true;
                    break;
                }
            }
        }
        report
    }

    /// Reconciles one bucket with the replica at `address`: takes its differing
    /// carts, sends ours it wants. Returns (changed here, sent).
    async fn reconcile_bucket(
        &self,
        address: SocketAddr,
        bucket: usize,
    ) -> Result<(usize, usize), CallError> {
        let mut listing = self.store.bucket_listing(bucket);
        listing.truncate(MAX_BUCKET_LISTING);
        let request = BucketRequest {
            bucket: bucket as u32,
            carts: listing,
        };
        let answer: BucketResponse = self
            .peers
            .call(address, Method::POST, BUCKET_PATH, Some(&request))
            .await?;
        let received = self
            .store
            .merge(&answer.carts)
            .await
            .map_err(|e| CallError::Failed(e.to_string()))?;
        let mut sent = 0;
        for chunk in answer.want.chunks(self.config.batch) {
            let carts: Vec<UserCart> = chunk
                .iter()
                .filter(|user| self.store.bucket_of(user) == bucket)
                .filter_map(|user| {
                    self.store.get(user).map(|cart| UserCart {
                        user: user.clone(),
                        cart,
                    })
                })
                .collect();
            if carts.is_empty() {
                continue;
            }
            sent += carts.len();
            let _: MergeResponse = self
                .peers
                .call(
                    address,
                    Method::POST,
                    MERGE_PATH,
                    Some(&MergeRequest { carts }),
                )
                .await?;
        }
        Ok((received, sent))
    }

    /// How this replica sees itself.
    pub fn status(&self) -> ReplicaStatus {
        let hints = self.store.hints();
        ReplicaStatus {
            actor: self.store.actor().to_string(),
            zone: self.zone.clone(),
            carts: self.store.len(),
            hints: hints.zones(),
            hints_dropped: hints.dropped(),
            down: self.down_zones(),
        }
    }
}
