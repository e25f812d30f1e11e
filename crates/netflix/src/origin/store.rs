//! The origin's object store: where published titles live, through the
//! `object_store` crate.
//!
//! Where: `[netflix] origin_store` — unset, a directory (`<data_dir>/netflix/origin`,
//! case-level: the pipeline, the origin and `casebook netflix ingest` share it), a
//! path or `file://` URL, or, in a build with the `s3` feature, `s3://bucket[/prefix]`
//! (credentials, region and endpoint from the usual `AWS_*` environment variables:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`,
//! `AWS_ALLOW_HTTP=true` for a plain-HTTP MinIO).
//!
//! Guaranteed: a put is atomic per object (the local store writes a temporary file
//! and renames it; S3 puts are atomic), so a reader sees an object whole or not at
//! all. Keys are [`ObjectKey`]s, which cannot leave the store's root.
//! Not guaranteed: atomicity across objects — the publish order
//! (`crate::pipeline::publish`) gives a title's atomicity.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use casebook_kit::config::ConfigError;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::local::LocalFileSystem;
use object_store::{GetOptions, GetResult, ObjectMeta, ObjectStore, ObjectStoreExt as _};

use super::catalog::{CATALOG_PREFIX, CatalogEntry};
use super::key::{ObjectKey, TitleId};
use crate::config::NetflixConfig;

/// Where the origin's objects live by default, under the case-level data dir.
pub fn default_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("netflix").join("origin")
}

/// A handle on the origin's store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Origin {
    store: Arc<dyn ObjectStore>,
    /// For messages: the directory or URL.
    location: String,
}

impl Origin {
    /// The store `[netflix] origin_store` names (see the module docs); a local
    /// directory is created if missing.
    pub fn open(config: &NetflixConfig, data_dir: &Path) -> Result<Self, ConfigError> {
        const KEY: &str = "netflix.origin_store";
        match config.origin_store.as_deref().map(str::trim) {
            None | Some("") => Self::local(&default_dir(data_dir))
                .map_err(|e| ConfigError::new(KEY, format!("{e:#}"))),
            Some(url) if url.starts_with("s3://") => open_s3(url),
            Some(other) => {
                let path = other.strip_prefix("file://").unwrap_or(other);
                if path.contains("://") {
                    return Err(ConfigError::new(
                        KEY,
                        format!(
                            "`{other}`: expected a directory, a file:// URL or s3://bucket[/prefix]"
                        ),
                    ));
                }
                Self::local(Path::new(path)).map_err(|e| ConfigError::new(KEY, format!("{e:#}")))
            }
        }
    }

    /// A store in a local directory (created if missing).
    pub fn local(dir: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the origin store {}", dir.display()))?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .with_context(|| format!("opening the origin store {}", dir.display()))?
            // A deleted title leaves no empty directories behind.
            .with_automatic_cleanup(true);
        Ok(Self {
            store: Arc::new(store),
            location: dir.display().to_string(),
        })
    }

    /// Any store (tests wrap one to count or fail calls).
    pub fn from_store(store: Arc<dyn ObjectStore>, location: impl Into<String>) -> Self {
        Self {
            store,
            location: location.into(),
        }
    }

    /// The directory or URL, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    pub async fn put(&self, key: &ObjectKey, bytes: Bytes) -> object_store::Result<()> {
        self.store
            .put(&key.to_store_path(), bytes.into())
            .await
            .map(drop)
    }

    /// Puts a local file's bytes (segments are a few MB: one is read at a time).
    pub async fn put_file(&self, key: &ObjectKey, path: &Path) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let bytes = tokio::fs::read(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        self.put(key, bytes.into())
            .await
            .with_context(|| format!("writing {key} to the origin store {}", self.location))
    }

    /// The object's metadata, `None` when there is none.
    pub async fn head(&self, key: &ObjectKey) -> object_store::Result<Option<ObjectMeta>> {
        match self.store.head(&key.to_store_path()).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads an object (a byte range of it when `options.range` says so).
    pub async fn get(
        &self,
        key: &ObjectKey,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.store.get_opts(&key.to_store_path(), options).await
    }

    /// Reads a whole (small) object; `None` when there is none.
    pub async fn read(&self, key: &ObjectKey) -> object_store::Result<Option<Bytes>> {
        match self.store.get(&key.to_store_path()).await {
            Ok(result) => result.bytes().await.map(Some),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn delete(&self, key: &ObjectKey) -> object_store::Result<()> {
        match self.store.delete(&key.to_store_path()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every key under `prefix` (a directory-like prefix, no trailing `/`), sorted.
    pub async fn list(&self, prefix: &str) -> object_store::Result<Vec<ObjectMeta>> {
        let prefix = object_store::path::Path::from(prefix);
        let mut metas: Vec<ObjectMeta> = self.store.list(Some(&prefix)).try_collect().await?;
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(metas)
    }

    /// Deletes every object under `prefix`; returns how many there were.
    pub async fn delete_prefix(&self, prefix: &str) -> object_store::Result<usize> {
        let metas = self.list(prefix).await?;
        let count = metas.len();
        let locations = futures::stream::iter(metas.into_iter().map(|m| Ok(m.location))).boxed();
        self.store
            .delete_stream(locations)
            .try_for_each(|_| async { Ok(()) })
            .await?;
        Ok(count)
    }

    /// Writes a title's catalog entry: the last step of a publish.
    pub async fn put_entry(&self, entry: &CatalogEntry) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(entry)?;
        self.put(&CatalogEntry::key_of(&entry.id), json.into())
            .await?;
        Ok(())
    }

    /// A title's entry if it is published whole (entry and master playlist there).
    pub async fn title(&self, id: &TitleId) -> object_store::Result<Option<CatalogEntry>> {
        let Some(bytes) = self.read(&CatalogEntry::key_of(id)).await? else {
            return Ok(None);
        };
        let entry = match serde_json::from_slice::<CatalogEntry>(&bytes) {
            Ok(entry) if &entry.id == id => entry,
            Ok(_) | Err(_) => {
                tracing::warn!(title = %id, "catalog entry unreadable or for another id; not listed");
                return Ok(None);
            }
        };
        let Ok(master) = entry.master() else {
            return Ok(None);
        };
        Ok(self.head(&master).await?.map(|_| entry))
    }

    /// Every title published whole, by id.
    pub async fn catalog(&self) -> object_store::Result<Vec<CatalogEntry>> {
        let mut entries = Vec::new();
        for id in self.catalog_ids().await? {
            if let Some(entry) = self.title(&id).await? {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// The ids that have a catalog entry (whole or not), sorted.
    pub async fn catalog_ids(&self) -> object_store::Result<Vec<TitleId>> {
        let metas = self.list(CATALOG_PREFIX).await?;
        Ok(metas
            .iter()
            .filter_map(|m| {
                let name = m.location.filename()?;
                TitleId::parse(name.strip_suffix(".json")?).ok()
            })
            .collect())
    }
}

#[cfg(feature = "s3")]
fn open_s3(url: &str) -> Result<Origin, ConfigError> {
    use object_store::aws::AmazonS3Builder;
    use object_store::prefix::PrefixStore;
    const KEY: &str = "netflix.origin_store";
    let rest = &url["s3://".len()..];
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(ConfigError::new(KEY, format!("`{url}` names no bucket")));
    }
    let store = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .build()
        .map_err(|e| ConfigError::new(KEY, format!("`{url}`: {e}")))?;
    let prefix = prefix.trim_matches('/');
    let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    };
    Ok(Origin::from_store(store, url))
}

#[cfg(not(feature = "s3"))]
fn open_s3(url: &str) -> Result<Origin, ConfigError> {
    Err(ConfigError::new(
        "netflix.origin_store",
        format!(
            "`{url}`: this casebook was built without S3 support; rebuild with `cargo build --features s3`"
        ),
    ))
}
