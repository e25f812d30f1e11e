//! Publishing an encoded title to the origin, atomic by order.
//!
//! Order: whatever an earlier, interrupted publish of the same id left is removed;
//! then every segment; then every media playlist; then the master playlist; then the
//! catalog entry `catalog/{id}.json`. Each object is written whole (the store's
//! puts are atomic), and the origin lists a title only when its entry and its master
//! are there — so a title is either listed with every object it names, or not
//! listed. A player that finds a master finds every playlist and segment it names.
//!
//! On a failure the publish removes what it wrote — the master first, so the title
//! stops being playable before anything it names goes — and returns the error.
//! If that clean-up fails too (the store is gone), the leftovers are unlisted and
//! the next publish of the id, or [`sweep_orphans`], removes them.
//!
//! Not guaranteed: two publishers of one id at once (the pipeline's job registry
//! refuses that within a process; across processes the last one wins).

use futures::{StreamExt as _, TryStreamExt as _};

use super::encode::{EncodedSegment, EncodedTitle};
use super::hls::{self, MasterPlaylist, MediaPlaylist, MediaSegment, Resolution, Variant};
use super::ladder::CODECS;
use super::progress::{Phase, Progress};
use crate::origin::catalog::{self, CatalogEntry, RenditionInfo};
use crate::origin::key::{ObjectKey, TitleId};
use crate::origin::store::Origin;

/// Segments written at once (an S3 store's latency, not the local disk, wants it).
const PUT_CONCURRENCY: usize = 4;

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
#[error("publishing `{title}` to {store}: {source:#}")]
pub struct PublishError {
    pub title: TitleId,
    pub store: String,
    pub source: anyhow::Error,
}

/// The title's prefix in the store.
pub fn title_prefix(id: &TitleId) -> String {
    format!("titles/{id}")
}

/// The playlists of an encoded title: each rendition's, then the master.
pub fn playlists(
    encoded: &EncodedTitle,
    segment_secs: u64,
) -> (Vec<MediaPlaylist>, MasterPlaylist) {
    let media = encoded
        .renditions
        .iter()
        .map(|r| {
            let segments = r
                .segments
                .iter()
                .enumerate()
                .map(|(n, s)| MediaSegment {
                    duration_us: s.duration_us,
                    uri: hls::segment_name(n),
                })
                .collect();
            MediaPlaylist::vod(segments, segment_secs)
        })
        .collect();
    let master = MasterPlaylist {
        version: 3,
        independent_segments: true,
        variants: encoded
            .renditions
            .iter()
            .map(|r| Variant {
                uri: format!("{}/index.m3u8", r.spec.name),
                bandwidth: r.peak_bps(),
                average_bandwidth: Some(r.average_bps()),
                resolution: Some(Resolution {
                    width: r.width,
                    height: r.height,
                }),
                frame_rate_milli: encoded.frame_rate_milli,
                codecs: Some(CODECS.to_owned()),
            })
            .collect(),
    };
    (media, master)
}

/// The catalog entry of an encoded title.
pub fn entry(id: &TitleId, name: &str, encoded: &EncodedTitle, segment_secs: u32) -> CatalogEntry {
    let duration_us = encoded
        .renditions
        .iter()
        .map(|r| r.duration_us())
        .max()
        .unwrap_or(0);
    CatalogEntry {
        id: id.clone(),
        name: name.to_owned(),
        duration_secs: (duration_us as f64 / 1e6 * 1000.0).round() / 1000.0,
        segment_secs,
        renditions: encoded
            .renditions
            .iter()
            .map(|r| RenditionInfo {
                name: r.spec.name.clone(),
                bandwidth_bps: r.peak_bps(),
                average_bandwidth_bps: r.average_bps(),
                width: r.width,
                height: r.height,
                codecs: CODECS.to_owned(),
            })
            .collect(),
        master_key: catalog::master_key(id).to_string(),
        encoder: encoded.encoder.to_owned(),
    }
}

/// Publishes `encoded` as title `id` (see the module docs for the order).
pub async fn publish(
    origin: &Origin,
    id: &TitleId,
    name: &str,
    encoded: &EncodedTitle,
    segment_secs: u32,
    progress: &Progress,
) -> Result<CatalogEntry, PublishError> {
    let fail = |source: anyhow::Error| PublishError {
        title: id.clone(),
        store: origin.location().to_owned(),
        source,
    };
    let prefix = title_prefix(id);
    // Leftovers of an interrupted publish of this id (never a listed title: the
    // caller refuses ids in the catalog).
    origin
        .delete_prefix(&prefix)
        .await
        .map_err(|e| fail(e.into()))?;
    match write_all(origin, id, name, encoded, segment_secs, progress).await {
        Ok(entry) => Ok(entry),
        Err(e) => {
            if let Err(cleanup) = remove_title(origin, id).await {
                tracing::error!(title = %id, error = %cleanup, "cleaning up a failed publish failed; the leftovers are unlisted");
            }
            Err(fail(e))
        }
    }
}

async fn write_all(
    origin: &Origin,
    id: &TitleId,
    name: &str,
    encoded: &EncodedTitle,
    segment_secs: u32,
    progress: &Progress,
) -> anyhow::Result<CatalogEntry> {
    let (media, master) = playlists(encoded, u64::from(segment_secs));
    let segments: usize = encoded.renditions.iter().map(|r| r.segments.len()).sum();
    progress.enter(Phase::Publishing, (segments + media.len() + 2) as u64);
    // 1. Segments. Owned, so no borrow of `encoded` lives in the stream's closures.
    let mut puts = Vec::with_capacity(segments);
    for r in &encoded.renditions {
        for (n, segment) in r.segments.iter().enumerate() {
            let key =
                ObjectKey::in_title(id, &format!("{}/{}", r.spec.name, hls::segment_name(n)))?;
            puts.push((key, segment.clone()));
        }
    }
    futures::stream::iter(puts)
        .map(|(key, segment)| put_segment(origin, key, segment, progress))
        .buffer_unordered(PUT_CONCURRENCY)
        .try_collect::<()>()
        .await?;
    // 2. Media playlists.
    for (rendition, playlist) in encoded.renditions.iter().zip(&media) {
        let key = ObjectKey::in_title(id, &format!("{}/index.m3u8", rendition.spec.name))?;
        origin.put(&key, playlist.to_string().into()).await?;
        progress.step();
    }
    // 3. The master playlist: from here the title is playable.
    origin
        .put(&catalog::master_key(id), master.to_string().into())
        .await?;
    progress.step();
    // 4. The catalog entry: from here it is listed.
    let entry = entry(id, name, encoded, segment_secs);
    origin.put_entry(&entry).await?;
    progress.step();
    Ok(entry)
}

async fn put_segment(
    origin: &Origin,
    key: ObjectKey,
    segment: EncodedSegment,
    progress: &Progress,
) -> anyhow::Result<()> {
    let bytes = segment.data.bytes().await?;
    anyhow::ensure!(
        bytes.len() as u64 == segment.bytes,
        "{key}: {} bytes, {} expected",
        bytes.len(),
        segment.bytes
    );
    origin.put(&key, bytes).await?;
    progress.step();
    Ok(())
}

/// Removes a title: its catalog entry, its master, then everything else of it.
pub async fn remove_title(origin: &Origin, id: &TitleId) -> object_store::Result<()> {
    origin.delete(&CatalogEntry::key_of(id)).await?;
    origin.delete(&catalog::master_key(id)).await?;
    origin.delete_prefix(&title_prefix(id)).await?;
    Ok(())
}

/// Removes the objects of titles that have no catalog entry and were last
/// written before `older_than` (interrupted publishes; a younger one may be in
/// progress in another process). Returns the ids swept.
pub async fn sweep_orphans(
    origin: &Origin,
    older_than: std::time::SystemTime,
    busy: &(dyn Fn(&TitleId) -> bool + Sync),
) -> object_store::Result<Vec<TitleId>> {
    let listed: std::collections::BTreeSet<TitleId> =
        origin.catalog_ids().await?.into_iter().collect();
    let mut newest: std::collections::BTreeMap<TitleId, std::time::SystemTime> = Default::default();
    for meta in origin.list("titles").await? {
        let mut parts = meta.location.parts();
        let (Some(_titles), Some(id)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(id) = TitleId::parse(id.as_ref()) else {
            continue;
        };
        let modified: std::time::SystemTime = meta.last_modified.into();
        let slot = newest.entry(id).or_insert(std::time::UNIX_EPOCH);
        *slot = (*slot).max(modified);
    }
    let mut swept = Vec::new();
    for (id, modified) in newest {
        if listed.contains(&id) || busy(&id) || modified >= older_than {
            continue;
        }
        origin.delete_prefix(&title_prefix(&id)).await?;
        swept.push(id);
    }
    Ok(swept)
}
