//! The content pipeline (`netflix-pipeline`, :8083): a title → a bitrate ladder
//! as HLS → published to the origin.
//!
//! | module | what it is |
//! |---|---|
//! | [`ladder`] | the renditions (`[[netflix.ladder]]`), no upscaling, at least three |
//! | [`encode`] | sources, the encoder choice, what an encode yields |
//! | [`ffmpeg`] | one ffmpeg run for every rendition, ffprobe first, `-progress` parsed |
//! | [`synthetic`] | segments of exact sizes as valid-looking MPEG-TS, without ffmpeg |
//! | [`hls`] | writing and strictly parsing master and media playlists |
//! | [`publish`] | atomic-by-order publishing: segments → media playlists → master → catalog entry |
//! | [`jobs`] | the API's jobs, bounded |
//! | [`progress`] | an ingest's progress, for the job status and the CLI's bar |
//! | [`http`] | `POST /v1/titles` (streamed upload), `GET /v1/jobs[/{id}]` |
//! | [`sample`] | the sample title made when the catalog is empty |
//!
//! Guaranteed: one encode runs at a time per process (ffmpeg uses every core); a
//! title whose encode or publish fails leaves no master playlist and no catalog
//! entry (`publish`); an id already in the catalog is refused, never overwritten.
//! Not guaranteed: jobs across a restart (see [`jobs`]).

pub mod encode;
pub mod ffmpeg;
pub mod hls;
pub mod http;
pub mod jobs;
pub mod ladder;
pub mod progress;
pub mod publish;
pub mod sample;
pub mod synthetic;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use casebook_kit::clock::SharedClock;
use casebook_kit::config::ConfigError;
use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_http};

use self::encode::{EncodeError, Encoder, Source};
use self::jobs::Jobs;
use self::progress::Progress;
use self::publish::PublishError;
use crate::config::NetflixConfig;
use crate::origin::catalog::CatalogEntry;
use crate::origin::key::TitleId;
use crate::origin::store::Origin;

/// The pipeline service's name.
pub const PIPELINE_SERVICE: &str = "netflix-pipeline";
/// Unlisted objects younger than this are left alone by the sweep at start (an
/// ingest in another process may be writing them).
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3600);

/// The longest title name.
pub const MAX_NAME_LEN: usize = 200;

/// A title's name (trimmed) and the id it gets: 1..=200 characters, none of them
/// control characters, with a letter or digit to make an id from.
pub fn title_for_name(name: &str) -> Result<(String, TitleId), String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("a title needs a name (`?name=` in the API, `--title` in the CLI)".into());
    }
    if name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(format!(
            "a name is at most {MAX_NAME_LEN} characters, none of them control characters"
        ));
    }
    let id = TitleId::from_name(name).ok_or("a name needs a letter or a digit")?;
    Ok((name.to_owned(), id))
}

/// Why an ingest failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("title `{0}` exists already; ingest it under another name")]
    Exists(TitleId),
    #[error(transparent)]
    Refused(#[from] jobs::RefusedJob),
    /// The source's fault: unreadable, not media, empty.
    #[error("{0}")]
    Source(String),
    /// Ours: the encoder failed or could not run.
    #[error("{0}")]
    Encoder(String),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("the origin store: {0}")]
    Store(#[from] object_store::Error),
    #[error("{0:#}")]
    Io(#[from] anyhow::Error),
}

impl From<EncodeError> for IngestError {
    fn from(e: EncodeError) -> Self {
        match e {
            EncodeError::Source(m) => Self::Source(m),
            EncodeError::Encoder(m) => Self::Encoder(m),
        }
    }
}

/// The pipeline: an encoder, a work directory and the origin it publishes to.
#[derive(Debug)]
pub struct Pipeline {
    origin: Origin,
    config: NetflixConfig,
    encoder: Encoder,
    work_dir: PathBuf,
    clock: SharedClock,
    /// One encode at a time.
    encode_slot: tokio::sync::Semaphore,
    jobs: Jobs,
    next_dir: AtomicU64,
}

impl Pipeline {
    /// A pipeline publishing to `origin`, encoding in `work_dir` (created).
    pub fn new(
        origin: Origin,
        config: NetflixConfig,
        work_dir: &Path,
        clock: SharedClock,
    ) -> Result<Self, ConfigError> {
        let encoder = Encoder::from_config(&config)?;
        std::fs::create_dir_all(work_dir).map_err(|e| {
            ConfigError::new(
                "data_dir",
                format!("cannot create {}: {e}", work_dir.display()),
            )
        })?;
        let jobs = Jobs::new(config.max_queued_jobs, clock.wall_millis());
        Ok(Self {
            origin,
            encoder,
            work_dir: work_dir.to_owned(),
            clock,
            encode_slot: tokio::sync::Semaphore::new(1),
            jobs,
            next_dir: AtomicU64::new(0),
            config,
        })
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn config(&self) -> &NetflixConfig {
        &self.config
    }

    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Where uploads are streamed to.
    pub fn uploads_dir(&self) -> PathBuf {
        self.work_dir.join("uploads")
    }

    /// Refuses an id that is in the catalog (whole or not).
    pub async fn check_new(&self, id: &TitleId) -> Result<(), IngestError> {
        if self.origin.head(&CatalogEntry::key_of(id)).await?.is_some() {
            return Err(IngestError::Exists(id.clone()));
        }
        Ok(())
    }

    /// Encodes `source` and publishes it as title `id` named `name`, reporting to
    /// `progress`. Waits for the encode slot.
    pub async fn ingest(
        &self,
        source: &Source,
        id: &TitleId,
        name: &str,
        progress: &Progress,
    ) -> Result<CatalogEntry, IngestError> {
        self.check_new(id).await?;
        let _slot = self
            .encode_slot
            .acquire()
            .await
            .map_err(|_| IngestError::Encoder("the pipeline is stopping".into()))?;
        // Checked again: another ingest of this id may have finished meanwhile.
        self.check_new(id).await?;
        let dir = self.work_dir.join(format!(
            "{id}-{}-{}",
            std::process::id(),
            self.next_dir.fetch_add(1, Ordering::Relaxed)
        ));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        let result = async {
            let encoded = self
                .encoder
                .encode(source, id.as_str(), &self.config, &dir, progress)
                .await?;
            let segment_secs = u32::try_from(self.config.segment_duration.as_secs()).unwrap_or(4);
            Ok(publish::publish(&self.origin, id, name, &encoded, segment_secs, progress).await?)
        }
        .await;
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
            tracing::warn!(dir = %dir.display(), error = %e, "removing an encode's work directory");
        }
        match &result {
            Ok(entry) => tracing::info!(title = %entry.id, encoder = %entry.encoder, "published"),
            // The caller reports it (the job's status, the CLI's message).
            Err(e) => tracing::info!(title = %id, error = %e, "ingest failed"),
        }
        result
    }

    /// At start: removes the work directories and uploads a killed run left (the
    /// work directory is the instance's own).
    pub async fn clear_work_dir(&self) {
        if let Ok(mut entries) = tokio::fs::read_dir(&self.work_dir).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                let _ = tokio::fs::remove_dir_all(entry.path()).await;
            }
        }
    }

    /// Removes the unlisted objects of interrupted publishes older than
    /// [`ORPHAN_GRACE`].
    pub async fn sweep_orphans(&self) {
        let before = self.clock.wall() - ORPHAN_GRACE;
        match publish::sweep_orphans(&self.origin, before, &|id| self.jobs.busy(id)).await {
            Ok(swept) if !swept.is_empty() => {
                tracing::warn!(
                    ?swept,
                    "removed the unlisted objects of interrupted publishes"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweeping unlisted objects"),
        }
    }
}

/// The pipeline's factory.
#[derive(Debug)]
pub struct PipelineService {
    config: NetflixConfig,
    origin: Origin,
    /// The case-level data dir (the sample's lock lives there).
    data_dir: PathBuf,
}

impl PipelineService {
    pub fn new(config: NetflixConfig, origin: Origin, data_dir: PathBuf) -> Self {
        Self {
            config,
            origin,
            data_dir,
        }
    }
}

impl ServiceFactory for PipelineService {
    fn name(&self) -> &str {
        PIPELINE_SERVICE
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let pipeline = Arc::new(
                Pipeline::new(
                    self.origin.clone(),
                    self.config.clone(),
                    &ctx.data_dir().join("work"),
                    ctx.clock().clone(),
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            );
            // Before serving: an upload must not land in a directory being emptied.
            pipeline.clear_work_dir().await;
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            let spawner = {
                let ctx = ctx.clone();
                Arc::new(move |job: BoxFuture<'static, ()>| ctx.spawn(job)) as http::Spawner
            };
            serve_http(ctx, listener, http::router(pipeline.clone(), spawner));
            let lock = sample::lock_path(&self.data_dir);
            ctx.spawn(async move {
                pipeline.sweep_orphans().await;
                sample::ensure_in_background(&pipeline, &lock).await;
            });
            Ok(address)
        })
    }
}
