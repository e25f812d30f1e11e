//! The roster store (RFC 6121 §2–§3): per user, the contact list with each
//! contact's subscription state, plus the inbound subscription requests not yet
//! answered (re-delivered at login, §3.1.3).
//!
//! Durability: one file per user, rewritten atomically (temp file, fsync, rename,
//! fsync of the directory) before the change is published in memory, so a reply or
//! roster push never describes a state a crash could lose. A roster is small and
//! changes rarely (subscriptions, renames), while it is read on every login and
//! presence broadcast: a whole-file rewrite bounded by [`RosterConfig::max_items`]
//! costs little, needs no compaction, and a login is one read. The kit's WAL would
//! add replay and cleaning for no gain at this write rate.
//!
//! Guarantees: every roster holds at most `max_items` items and `max_pending`
//! pending requests (beyond: [`RosterError::Full`]) and grows to at most
//! `max_bytes` of JIDs, names, groups and requests (beyond:
//! [`RosterError::TooLarge`]); changes to one user's roster
//! are serialised (one writer at a time) and readers see only persisted states;
//! a file that does not parse or validate is refused with the path named (it is
//! never silently emptied). Deliberately absent: roster versioning (XEP-0237 /
//! RFC 6121 §2.6, so `ver` is not advertised), shared groups, per-item size quotas
//! beyond name/group lengths.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// The on-disk format version.
const FILE_VERSION: u32 = 1;
/// Longest item name and group name, in bytes (RFC 6121 leaves it to the server).
pub const MAX_NAME_BYTES: usize = 1023;
/// Most groups one item may be in.
pub const MAX_GROUPS: usize = 64;
/// Longest contact JID, in bytes.
pub const MAX_JID_BYTES: usize = 3071;

/// The subscription between the user and one contact (RFC 6121 §2.1.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subscription {
    #[default]
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::To => "to",
            Self::From => "from",
            Self::Both => "both",
        }
    }

    /// Whether the user receives the contact's presence.
    pub fn has_to(self) -> bool {
        matches!(self, Self::To | Self::Both)
    }

    /// Whether the contact receives the user's presence.
    pub fn has_from(self) -> bool {
        matches!(self, Self::From | Self::Both)
    }

    fn of(to: bool, from: bool) -> Self {
        match (to, from) {
            (false, false) => Self::None,
            (true, false) => Self::To,
            (false, true) => Self::From,
            (true, true) => Self::Both,
        }
    }

    pub fn with_to(self, to: bool) -> Self {
        Self::of(to, self.has_from())
    }

    pub fn with_from(self, from: bool) -> Self {
        Self::of(self.has_to(), from)
    }
}

/// One roster item.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Item {
    pub name: Option<String>,
    pub groups: BTreeSet<String>,
    pub subscription: Subscription,
    /// Pending-out: the user asked to subscribe and has no answer yet (`ask`).
    pub ask: bool,
}

/// A user's roster.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Roster {
    /// Contact bare JID → item.
    pub items: BTreeMap<String, Item>,
    /// Pending-in: contact bare JID → the subscribe stanza as received (for
    /// re-delivery at login).
    pub pending_in: BTreeMap<String, String>,
}

impl Roster {
    /// The bytes of what the user's stanzas put here: contact JIDs, names, groups
    /// and stored requests (what [`RosterConfig::max_bytes`] bounds).
    pub fn stored_bytes(&self) -> usize {
        let items: usize = self
            .items
            .iter()
            .map(|(jid, item)| {
                jid.len()
                    + item.name.as_ref().map_or(0, String::len)
                    + item.groups.iter().map(String::len).sum::<usize>()
            })
            .sum();
        let requests: usize = self
            .pending_in
            .iter()
            .map(|(jid, request)| jid.len() + request.len())
            .sum();
        items + requests
    }
}

/// Bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RosterConfig {
    /// Most items in one roster.
    pub max_items: usize,
    /// Most unanswered inbound subscription requests kept for one user.
    pub max_pending: usize,
    /// Largest stored subscription request, in bytes.
    pub max_request_bytes: usize,
    /// Most bytes of items (JIDs, names, groups) and stored requests in one
    /// roster: each change rewrites the whole file and each login sends it whole,
    /// so the client must not size that work by filling names and groups.
    pub max_bytes: usize,
}

impl Default for RosterConfig {
    fn default() -> Self {
        Self {
            max_items: 1_000,
            max_pending: 256,
            max_request_bytes: 4 * 1024,
            max_bytes: 512 * 1024,
        }
    }
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    #[error("roster full: at most {0} entries")]
    Full(usize),
    #[error("roster too large: at most {0} bytes of items and requests")]
    TooLarge(usize),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("roster file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("roster file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RosterFile {
    version: u32,
    user: String,
    roster: Roster,
}

/// One user's roster in memory, with the lock that serialises its writers.
#[derive(Debug, Default)]
struct Entry {
    current: Mutex<Arc<Roster>>,
    writer: tokio::sync::Mutex<()>,
}

/// The roster store of one domain. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct RosterStore {
    dir: PathBuf,
    config: RosterConfig,
    users: Mutex<HashMap<String, Arc<Entry>>>,
}

impl RosterStore {
    /// Opens (creating) the store in `dir`. Rosters are read lazily, per user.
    pub fn open(dir: impl AsRef<Path>, config: RosterConfig) -> Result<Self, RosterError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| RosterError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            config,
            users: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> RosterConfig {
        self.config
    }

    /// The file of `user` (a bare JID): hex-encoded, so no JID can name a path.
    pub fn path_of(&self, user: &str) -> PathBuf {
        let hex: String = user.bytes().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}.json"))
    }

    async fn entry(&self, user: &str) -> Result<Arc<Entry>, RosterError> {
        if let Some(entry) = self.users.lock().get(user) {
            return Ok(entry.clone());
        }
        let path = self.path_of(user);
        let (owner, config) = (user.to_owned(), self.config);
        let roster = tokio::task::spawn_blocking(move || load(&path, &owner, config))
            .await
            .map_err(|e| RosterError::Io {
                path: self.path_of(user),
                source: std::io::Error::other(e),
            })??;
        let mut users = self.users.lock();
        // Another task may have loaded it meanwhile: the first one wins.
        Ok(users
            .entry(user.to_owned())
            .or_insert_with(|| {
                Arc::new(Entry {
                    current: Mutex::new(Arc::new(roster)),
                    writer: tokio::sync::Mutex::new(()),
                })
            })
            .clone())
    }

    /// The roster of `user`, read from disk on first use.
    pub async fn get(&self, user: &str) -> Result<Arc<Roster>, RosterError> {
        Ok(self.entry(user).await?.current.lock().clone())
    }

    /// The roster if it is already in memory (for synchronous paths such as a
    /// session's teardown; a logged-in user's roster always is).
    pub fn cached(&self, user: &str) -> Option<Arc<Roster>> {
        self.users
            .lock()
            .get(user)
            .map(|entry| entry.current.lock().clone())
    }

    /// Applies `change` to a copy of the roster; when it returns `Ok` and the copy
    /// differs, persists it, then publishes it. Returns what `change` returned.
    pub async fn update<R>(
        &self,
        user: &str,
        change: impl FnOnce(&mut Roster) -> Result<R, RosterError>,
    ) -> Result<R, RosterError> {
        let entry = self.entry(user).await?;
        let _writer = entry.writer.lock().await;
        let current = entry.current.lock().clone();
        let mut next = Roster::clone(&current);
        let out = change(&mut next)?;
        if next == *current {
            return Ok(out);
        }
        if next.items.len() > self.config.max_items {
            return Err(RosterError::Full(self.config.max_items));
        }
        if next.pending_in.len() > self.config.max_pending {
            return Err(RosterError::Full(self.config.max_pending));
        }
        // Only a growing roster is refused: one already over (a lowered bound)
        // can still shrink.
        let bytes = next.stored_bytes();
        if bytes > self.config.max_bytes && bytes > current.stored_bytes() {
            return Err(RosterError::TooLarge(self.config.max_bytes));
        }
        let next = Arc::new(next);
        let (path, owner, snapshot) = (self.path_of(user), user.to_owned(), next.clone());
        tokio::task::spawn_blocking(move || persist(&path, &owner, &snapshot))
            .await
            .map_err(|e| RosterError::Io {
                path: self.path_of(user),
                source: std::io::Error::other(e),
            })??;
        *entry.current.lock() = next;
        Ok(out)
    }

    /// Deletes `user`'s roster (account removal).
    pub async fn delete(&self, user: &str) -> Result<(), RosterError> {
        let entry = self.entry(user).await?;
        let _writer = entry.writer.lock().await;
        let path = self.path_of(user);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(RosterError::Io { path, source }),
        }
        self.users.lock().remove(user);
        *entry.current.lock() = Arc::new(Roster::default());
        Ok(())
    }
}

/// Checks a contact JID as stored: a bare JID, bounded, no control characters.
pub fn validate_contact(jid: &str) -> Result<(), RosterError> {
    let invalid = |reason: &str| {
        Err(RosterError::Invalid {
            field: "jid",
            reason: reason.to_owned(),
        })
    };
    if jid.is_empty() || jid.len() > MAX_JID_BYTES {
        return invalid("empty or too long");
    }
    if jid.contains('/') || jid.chars().any(char::is_control) {
        return invalid("must be a bare JID");
    }
    match crate::xmpp::Jid::parse(jid) {
        Some(parsed) if parsed.bare() == jid => Ok(()),
        _ => invalid("not a canonical bare JID"),
    }
}

/// Checks an item's name and groups.
pub fn validate_item(item: &Item) -> Result<(), RosterError> {
    let invalid = |field, reason: &str| {
        Err(RosterError::Invalid {
            field,
            reason: reason.to_owned(),
        })
    };
    if item
        .name
        .as_ref()
        .is_some_and(|n| n.len() > MAX_NAME_BYTES || n.chars().any(char::is_control))
    {
        return invalid("name", "too long or has control characters");
    }
    if item.groups.len() > MAX_GROUPS {
        return invalid("group", "too many groups");
    }
    if item
        .groups
        .iter()
        .any(|g| g.is_empty() || g.len() > MAX_NAME_BYTES || g.chars().any(char::is_control))
    {
        return invalid("group", "empty, too long or has control characters");
    }
    Ok(())
}

/// Reads and validates one roster file; a missing file is an empty roster.
pub fn load(path: &Path, user: &str, config: RosterConfig) -> Result<Roster, RosterError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Roster::default()),
        Err(source) => {
            return Err(RosterError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    parse(&bytes, user, config).map_err(|reason| RosterError::Corrupt {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses and validates a roster file's bytes.
pub fn parse(bytes: &[u8], user: &str, config: RosterConfig) -> Result<Roster, String> {
    let file: RosterFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != FILE_VERSION {
        return Err(format!("unsupported version {}", file.version));
    }
    if file.user != user {
        return Err(format!("belongs to {:?}, not {user:?}", file.user));
    }
    let roster = file.roster;
    if roster.items.len() > config.max_items || roster.pending_in.len() > config.max_pending {
        return Err("more entries than the configured bounds".into());
    }
    for (jid, item) in &roster.items {
        validate_contact(jid).map_err(|e| e.to_string())?;
        validate_item(item).map_err(|e| e.to_string())?;
    }
    for (jid, request) in &roster.pending_in {
        validate_contact(jid).map_err(|e| e.to_string())?;
        if request.len() > config.max_request_bytes {
            return Err("stored request too large".into());
        }
    }
    Ok(roster)
}

fn persist(path: &Path, user: &str, roster: &Roster) -> Result<(), RosterError> {
    let io = |source| RosterError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = RosterFile {
        version: FILE_VERSION,
        user: user.to_owned(),
        roster: roster.clone(),
    };
    let body = serde_json::to_vec(&file).map_err(|e| io(std::io::Error::other(e)))?;
    let dir = path
        .parent()
        .ok_or_else(|| io(std::io::Error::other("no parent dir")))?;
    let temp = path.with_extension("json.tmp");
    let mut out = std::fs::File::create(&temp).map_err(io)?;
    out.write_all(&body).map_err(io)?;
    out.sync_all().map_err(io)?;
    drop(out);
    std::fs::rename(&temp, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}
