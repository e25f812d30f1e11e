//! The sample title, so there is always something to play: made at the origin's
//! or the pipeline's start when the catalog is empty — with ffmpeg a real video
//! from its test sources (testsrc2 at 1280×720, 30 fps, a 440 Hz tone) that a
//! browser plays; without, the synthetic encoder's.
//!
//! Guaranteed: it runs as a task (the service serves meanwhile); once per data
//! dir — whoever holds the lock file `<data_dir>/netflix/sample.lock` makes it, the
//! other skips, and a catalog that is not empty (the sample, or anything else) is
//! left alone, so restarts do nothing. A start interrupted mid-way publishes
//! nothing listed, and the next start makes it again.

use std::path::{Path, PathBuf};

use super::encode::Source;
use super::progress::Progress;
use super::{IngestError, Pipeline};
use crate::origin::catalog::CatalogEntry;
use crate::origin::key::TitleId;

/// The sample's title id.
pub const SAMPLE_ID: &str = "sample";
/// The sample's name.
pub const SAMPLE_NAME: &str = "Sample: test pattern and tone";

/// The lock file that lets one process make the sample.
pub fn lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join("netflix").join("sample.lock")
}

/// Makes the sample if the catalog is empty and nobody else is making it;
/// `Ok(None)` when there was nothing to do.
pub async fn ensure(pipeline: &Pipeline, lock: &Path) -> Result<Option<CatalogEntry>, IngestError> {
    let config = pipeline.config();
    if !config.sample_title || !pipeline.origin().catalog_ids().await?.is_empty() {
        return Ok(None);
    }
    if let Some(dir) = lock.parent() {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)
        .map_err(|e| anyhow::anyhow!("{}: {e}", lock.display()))?;
    if file.try_lock().is_err() {
        // Another instance (the origin, the pipeline) is making it.
        return Ok(None);
    }
    // Under the lock: the other may have finished it just before.
    if !pipeline.origin().catalog_ids().await?.is_empty() {
        return Ok(None);
    }
    let id = TitleId::parse(SAMPLE_ID).expect("a valid id");
    let source = Source::TestPattern {
        duration: config.sample_duration,
    };
    let entry = pipeline
        .ingest(&source, &id, SAMPLE_NAME, &Progress::default())
        .await?;
    drop(file);
    Ok(Some(entry))
}

/// [`ensure`], logging what happened (a service's start task).
pub async fn ensure_in_background(pipeline: &Pipeline, lock: &Path) {
    match ensure(pipeline, lock).await {
        Ok(Some(entry)) => tracing::info!(
            title = %entry.id,
            encoder = %entry.encoder,
            secs = entry.duration_secs,
            "made the sample title"
        ),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "making the sample title failed"),
    }
}
