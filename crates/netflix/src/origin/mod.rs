//! The origin (`netflix-origin`, :8082): published titles in an object store,
//! catalog metadata beside them, served over HTTP to the CDN's regional edges.
//!
//! | module | what it is |
//! |---|---|
//! | [`key`] | object keys and title ids, validated (no traversal in any spelling) |
//! | [`store`] | the object store (`object_store`: a local directory by default, S3 with the `s3` feature) |
//! | [`catalog`] | `catalog/{id}.json`, one entry per title |
//! | [`range`] | byte ranges and entity-tag conditions |
//! | [`http`] | `GET`/`HEAD /o/{key}`, `GET /v1/titles[/{id}]`, CORS |
//!
//! Guaranteed: the origin lists a title only when its catalog entry and its master
//! playlist are both there — the last two objects a publish writes — so every title
//! listed is whole. It serves objects straight from the store, streaming (a
//! segment is never read whole into memory). When the catalog is empty at start it
//! makes the sample title (`crate::pipeline::sample`) in the background.
//! Not guaranteed: signature checks (the origin is internal: the edges check).

pub mod catalog;
pub mod http;
pub mod key;
pub mod range;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_http};

use crate::config::NetflixConfig;
use crate::pipeline::{Pipeline, sample};
use store::Origin;

/// The origin service's name.
pub const ORIGIN_SERVICE: &str = "netflix-origin";

/// The origin's factory.
#[derive(Debug)]
pub struct OriginService {
    config: NetflixConfig,
    origin: Origin,
    /// The case-level data dir (the sample's lock lives there).
    data_dir: PathBuf,
}

impl OriginService {
    pub fn new(config: NetflixConfig, origin: Origin, data_dir: PathBuf) -> Self {
        Self {
            config,
            origin,
            data_dir,
        }
    }
}

impl ServiceFactory for OriginService {
    fn name(&self) -> &str {
        ORIGIN_SERVICE
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            serve_http(ctx, listener, http::router(self.origin.clone()));
            if self.config.sample_title {
                // Only the sample needs a pipeline here: its encoder and work dir.
                let pipeline = Arc::new(
                    Pipeline::new(
                        self.origin.clone(),
                        self.config.clone(),
                        &ctx.data_dir().join("work"),
                        ctx.clock().clone(),
                    )
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                );
                pipeline.clear_work_dir().await;
                let lock = sample::lock_path(&self.data_dir);
                ctx.spawn(async move { sample::ensure_in_background(&pipeline, &lock).await });
            }
            Ok(address)
        })
    }
}
