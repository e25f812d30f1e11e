//! Catalog metadata: one JSON object per title, `catalog/{id}.json`, beside the
//! title's objects in the same store.
//!
//! The entry is the last object a publish writes (after every segment, every media
//! playlist and the master playlist), so an entry names a title that is whole. The
//! origin lists a title only when its entry parses and its master playlist is
//! there.

use serde::{Deserialize, Serialize};

use super::key::{KeyError, ObjectKey, TitleId};

/// The catalog's prefix in the store.
pub const CATALOG_PREFIX: &str = "catalog";

/// One title as `GET /v1/titles` lists it (the wire contract).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub id: TitleId,
    /// The name it was ingested with.
    pub name: String,
    /// The longest rendition's duration.
    pub duration_secs: f64,
    /// The nominal segment duration (every segment but a title's last).
    pub segment_secs: u32,
    /// From the highest bitrate down.
    pub renditions: Vec<RenditionInfo>,
    /// `titles/{id}/master.m3u8`.
    pub master_key: String,
    /// `ffmpeg` or `synthetic`.
    #[serde(default)]
    pub encoder: String,
}

/// One rendition of a title (a variant of its master playlist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenditionInfo {
    /// Its directory under the title, e.g. `720p`.
    pub name: String,
    /// The master playlist's BANDWIDTH: the peak segment bitrate.
    pub bandwidth_bps: u64,
    /// The master playlist's AVERAGE-BANDWIDTH.
    #[serde(default)]
    pub average_bandwidth_bps: u64,
    pub width: u32,
    pub height: u32,
    /// RFC 6381 codecs, e.g. `avc1.640028,mp4a.40.2`.
    pub codecs: String,
}

impl CatalogEntry {
    /// The store key of a title's entry.
    pub fn key_of(id: &TitleId) -> ObjectKey {
        ObjectKey::parse(&format!("{CATALOG_PREFIX}/{id}.json"))
            .expect("a title id makes a valid key")
    }

    /// The master playlist's key, checked.
    pub fn master(&self) -> Result<ObjectKey, KeyError> {
        ObjectKey::parse(&self.master_key)
    }
}

/// The master playlist's key of a title.
pub fn master_key(id: &TitleId) -> ObjectKey {
    ObjectKey::in_title(id, "master.m3u8").expect("a title id makes a valid key")
}
