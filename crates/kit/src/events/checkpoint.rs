//! A durable position (an offset or seq, or a small blob with one), replaced atomically.
//!
//! Written as `body | crc32c(body) u32 LE` (an offset's body: `u64 LE`) to a temporary file that is synced and
//! renamed over the old one (then the directory is synced), so a crash leaves either
//! the old or the new value, never a torn one. Not for high rates: each store costs
//! two syncs; callers checkpoint per batch, not per event.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::BusError;
use crate::wal::Durability;

/// A checkpoint file.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    path: PathBuf,
    durability: Durability,
}

impl Checkpoint {
    pub fn new(path: impl Into<PathBuf>, durability: Durability) -> Self {
        Self {
            path: path.into(),
            durability,
        }
    }

    fn error(&self, reason: impl ToString) -> BusError {
        BusError::Checkpoint {
            path: self.path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// The stored value, or `None` if never stored.
    pub fn load(&self) -> Result<Option<u64>, BusError> {
        let Some(bytes) = self.load_bytes()? else {
            return Ok(None);
        };
        let value: [u8; 8] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| self.error(format!("{} bytes, expected 8", b.len())))?;
        Ok(Some(u64::from_le_bytes(value)))
    }

    /// Stores `value` atomically and durably.
    pub fn store(&self, value: u64) -> Result<(), BusError> {
        self.store_bytes(&value.to_le_bytes())
    }

    /// The stored bytes (checksum verified), or `None` if never stored.
    pub fn load_bytes(&self) -> Result<Option<Vec<u8>>, BusError> {
        let mut bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(e)),
        };
        let Some((body, crc)) = bytes.split_last_chunk::<4>() else {
            return Err(self.error(format!("{} bytes, too short", bytes.len())));
        };
        if crc32c::crc32c(body).to_le_bytes() != *crc {
            return Err(self.error("checksum mismatch"));
        }
        bytes.truncate(bytes.len() - 4);
        Ok(Some(bytes))
    }

    /// Replaces the stored bytes atomically and durably.
    pub fn store_bytes(&self, body: &[u8]) -> Result<(), BusError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| self.error(e))?;
        let temp = self.path.with_extension("tmp");
        let mut file = fs::File::create(&temp).map_err(|e| self.error(e))?;
        file.write_all(body)
            .and_then(|()| file.write_all(&crc32c::crc32c(body).to_le_bytes()))
            .map_err(|e| self.error(e))?;
        if self.durability == Durability::Sync {
            file.sync_all().map_err(|e| self.error(e))?;
        }
        fs::rename(&temp, &self.path).map_err(|e| self.error(e))?;
        if self.durability == Durability::Sync {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_loads_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::new(dir.path().join("g.offset"), Durability::NoSync);
        assert_eq!(checkpoint.load().unwrap(), None);
        checkpoint.store(42).unwrap();
        checkpoint.store(43).unwrap();
        assert_eq!(checkpoint.load().unwrap(), Some(43));
        let mut bytes = fs::read(dir.path().join("g.offset")).unwrap();
        bytes[0] ^= 1;
        fs::write(dir.path().join("g.offset"), &bytes).unwrap();
        assert!(matches!(
            checkpoint.load(),
            Err(BusError::Checkpoint { .. })
        ));
        fs::write(dir.path().join("g.offset"), b"short").unwrap();
        assert!(matches!(
            checkpoint.load(),
            Err(BusError::Checkpoint { .. })
        ));
    }
}
