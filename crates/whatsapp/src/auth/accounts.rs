//! The account store of one XMPP domain.
//!
//! Guarantees: passwords are stored only as SCRAM secrets (SHA-1 and SHA-256,
//! each with its own random salt), computed at creation; the file
//! `<data-dir>/whatsapp/<domain>/accounts.json` is replaced atomically (write a
//! temp file, fsync, rename, fsync the directory), so a crash leaves the old or the
//! new store, never a torn one, and it is created with mode 0600 on Unix. A write
//! reaches the disk before readers see it. Reads are a read lock and an `Arc`
//! clone. Localparts go through [`nodeprep_lite`]; in-band registration (XEP-0077)
//! is refused unless enabled and applies the same validation. A corrupt or
//! inconsistent file is a [`AccountError::Corrupt`] naming the file. No secret is
//! ever logged or printed by `Debug`. [`Accounts::reload`] re-reads the file only
//! when its length, mtime or inode differ from the version last read or written
//! (a node polls it every few seconds; with many accounts the parse is costly).
//!
//! Not guaranteed: concurrent writers in two processes on the same file (one node
//! owns a domain's store); full RFC 7622 nodeprep (see [`nodeprep_lite`]).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::saslprep::saslprep;
use super::scram::{Lookup, MAX_ITERATIONS, MIN_ITERATIONS, ScramHash, ScramSecrets};

pub use crate::xmpp::{MAX_DOMAIN_LEN, MAX_LOCALPART_LEN};
/// The longest password, in bytes.
pub const MAX_PASSWORD_LEN: usize = 1023;
const FILE_VERSION: u32 = 1;

/// Account store settings.
#[derive(Debug, Clone)]
pub struct AccountsConfig {
    /// PBKDF2 iterations for new secrets (at least [`MIN_ITERATIONS`]).
    pub iterations: u32,
    /// Whether XEP-0077 in-band registration is allowed.
    pub registration_enabled: bool,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self {
            iterations: MIN_ITERATIONS,
            registration_enabled: false,
        }
    }
}

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The localpart is not acceptable.
    #[error("invalid localpart: {0}")]
    InvalidLocalpart(String),
    /// The domain is not acceptable.
    #[error("invalid domain: {0}")]
    InvalidDomain(String),
    /// The password is not acceptable.
    #[error("invalid password: {0}")]
    InvalidPassword(String),
    /// The JID is not a bare JID of the form `local@domain`.
    #[error("invalid JID {jid:?}: {reason}")]
    InvalidJid { jid: String, reason: &'static str },
    /// The JID's domain is not this store's.
    #[error("{jid:?} is not in domain {domain:?}")]
    WrongDomain { jid: String, domain: String },
    /// The configured iteration count is out of range.
    #[error("iterations {0} not in {MIN_ITERATIONS}..={MAX_ITERATIONS}")]
    Iterations(u32),
    /// The account exists already.
    #[error("account {0:?} already exists")]
    Exists(String),
    /// No such account.
    #[error("no account {0:?}")]
    NotFound(String),
    /// In-band registration is off.
    #[error("in-band registration is disabled")]
    RegistrationDisabled,
    /// Reading or writing the store failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The store's file does not hold a valid store.
    #[error("{}: corrupt accounts file: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

/// The stored credentials of one account.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// SCRAM-SHA-1 secrets.
    pub scram_sha1: ScramSecrets,
    /// SCRAM-SHA-256 secrets.
    pub scram_sha256: ScramSecrets,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

impl Credentials {
    /// Derives both hashes' secrets for `password`, each with a fresh random salt.
    pub fn derive(password: &str, iterations: u32) -> Result<Self, AccountError> {
        let prepared = prepare_password(password)?;
        let salt = || rand::random::<[u8; 16]>().to_vec();
        Ok(Self {
            scram_sha1: ScramSecrets::derive(ScramHash::Sha1, &prepared, salt(), iterations),
            scram_sha256: ScramSecrets::derive(ScramHash::Sha256, &prepared, salt(), iterations),
        })
    }

    /// The secrets for one hash.
    pub fn secrets(&self, hash: ScramHash) -> &ScramSecrets {
        match hash {
            ScramHash::Sha1 => &self.scram_sha1,
            ScramHash::Sha256 => &self.scram_sha256,
        }
    }
}

fn prepare_password(password: &str) -> Result<String, AccountError> {
    if password.len() > MAX_PASSWORD_LEN {
        return Err(AccountError::InvalidPassword(format!(
            "longer than {MAX_PASSWORD_LEN} bytes"
        )));
    }
    saslprep(password)
        .map(|p| p.into_owned())
        .map_err(|e| AccountError::InvalidPassword(e.to_string()))
}

/// [`crate::xmpp::prep_localpart`] (nodeprep-lite) with the account store's error.
pub fn nodeprep_lite(localpart: &str) -> Result<String, AccountError> {
    crate::xmpp::prep_localpart(localpart).map_err(AccountError::InvalidLocalpart)
}

fn validate_domain(domain: &str) -> Result<String, AccountError> {
    let lower = domain.to_ascii_lowercase();
    let ok = !lower.is_empty()
        && lower.len() <= MAX_DOMAIN_LEN
        && lower.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(lower)
    } else {
        Err(AccountError::InvalidDomain(format!(
            "{domain:?} is not a DNS name of ASCII letters, digits, '-' and '.'"
        )))
    }
}

/// Splits a bare JID `local@domain` into its canonical parts.
pub fn parse_bare_jid(jid: &str) -> Result<(String, String), AccountError> {
    let invalid = |reason| AccountError::InvalidJid {
        jid: jid.to_string(),
        reason,
    };
    if jid.contains('/') {
        return Err(invalid("a bare JID has no resource"));
    }
    let (local, domain) = jid
        .split_once('@')
        .ok_or(invalid("expected local@domain"))?;
    Ok((nodeprep_lite(local)?, validate_domain(domain)?))
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: u32,
    domain: String,
    accounts: BTreeMap<String, Credentials>,
}

type AccountMap = BTreeMap<String, Arc<Credentials>>;

/// The account store of one domain; share it (`Arc`) across connections.
#[derive(Debug)]
pub struct Accounts {
    domain: String,
    path: PathBuf,
    config: AccountsConfig,
    current: RwLock<Arc<AccountMap>>,
    /// Serialises writers so two updates cannot lose each other; holds the stamp
    /// of the file version `current` was read from or written to.
    writer: Mutex<Option<FileStamp>>,
    /// Process-private key for unknown users' decoy secrets (see [`Accounts::lookup`]).
    decoy_key: [u8; 32],
}

impl Accounts {
    /// Where the store of `domain` lives under `data_dir`.
    pub fn path_for(data_dir: &Path, domain: &str) -> Result<PathBuf, AccountError> {
        let domain = validate_domain(domain)?;
        Ok(data_dir.join("whatsapp").join(domain).join("accounts.json"))
    }

    /// Opens (or starts empty) the store of `domain` under `data_dir`.
    pub fn open(
        data_dir: &Path,
        domain: &str,
        config: AccountsConfig,
    ) -> Result<Self, AccountError> {
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&config.iterations) {
            return Err(AccountError::Iterations(config.iterations));
        }
        let domain = validate_domain(domain)?;
        let path = Self::path_for(data_dir, &domain)?;
        let stamp = FileStamp::of(&path);
        let accounts = load(&path, &domain)?;
        Ok(Self {
            domain,
            path,
            current: RwLock::new(Arc::new(accounts)),
            writer: Mutex::new(stamp),
            decoy_key: rand::random(),
            config,
        })
    }

    /// The domain this store serves.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The secrets of `localpart` for `hash`, or decoy secrets if there is no
    /// such account: a salt stable per name for this process and the store's
    /// iteration count, so neither a SCRAM challenge nor PLAIN's PBKDF2 time
    /// tells whether an account exists. (Across a restart an unknown name's salt
    /// changes while a real one's does not: the decoy key is not persisted.)
    pub fn lookup(&self, hash: ScramHash, localpart: &str) -> Lookup {
        match self.get(localpart) {
            Some(stored) => Lookup::Found(stored.secrets(hash).clone()),
            None => Lookup::decoy(hash, &self.decoy_key, localpart, self.config.iterations),
        }
    }

    /// Whether XEP-0077 in-band registration is allowed.
    pub fn registration_enabled(&self) -> bool {
        self.config.registration_enabled
    }

    /// The credentials of an account, by localpart (canonicalised first).
    pub fn get(&self, localpart: &str) -> Option<Arc<Credentials>> {
        let canonical = nodeprep_lite(localpart).ok()?;
        self.current.read().get(&canonical).cloned()
    }

    /// Whether the account exists.
    pub fn contains(&self, localpart: &str) -> bool {
        // Keys are canonical: one found as it is needs no nodeprep (and no
        // allocation) — the common case on the routing path.
        self.current.read().contains_key(localpart) || self.get(localpart).is_some()
    }

    /// All localparts, sorted.
    pub fn list(&self) -> Vec<String> {
        self.current.read().keys().cloned().collect()
    }

    /// Number of accounts.
    pub fn len(&self) -> usize {
        self.current.read().len()
    }

    /// Whether there are no accounts.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Creates an account; returns its canonical localpart.
    pub fn add(&self, localpart: &str, password: &str) -> Result<String, AccountError> {
        let canonical = nodeprep_lite(localpart)?;
        if self.contains(&canonical) {
            return Err(AccountError::Exists(canonical));
        }
        // PBKDF2 runs outside the writer lock.
        let credentials = Arc::new(Credentials::derive(password, self.config.iterations)?);
        self.update(|map| {
            if map.contains_key(&canonical) {
                return Err(AccountError::Exists(canonical.clone()));
            }
            map.insert(canonical.clone(), credentials);
            Ok(())
        })?;
        tracing::info!(domain = %self.domain, localpart = %canonical, "account added");
        Ok(canonical)
    }

    /// XEP-0077 in-band registration: [`Accounts::add`] if enabled.
    pub fn register(&self, localpart: &str, password: &str) -> Result<String, AccountError> {
        if !self.config.registration_enabled {
            return Err(AccountError::RegistrationDisabled);
        }
        self.add(localpart, password)
    }

    /// Deletes an account.
    pub fn remove(&self, localpart: &str) -> Result<(), AccountError> {
        let canonical = nodeprep_lite(localpart)?;
        self.update(|map| {
            map.remove(&canonical)
                .map(|_| ())
                .ok_or_else(|| AccountError::NotFound(canonical.clone()))
        })?;
        tracing::info!(domain = %self.domain, localpart = %canonical, "account removed");
        Ok(())
    }

    /// Replaces an account's password (new salts too).
    pub fn change_password(&self, localpart: &str, password: &str) -> Result<(), AccountError> {
        let canonical = nodeprep_lite(localpart)?;
        if !self.contains(&canonical) {
            return Err(AccountError::NotFound(canonical));
        }
        let credentials = Arc::new(Credentials::derive(password, self.config.iterations)?);
        self.update(|map| match map.get_mut(&canonical) {
            Some(slot) => {
                *slot = credentials;
                Ok(())
            }
            None => Err(AccountError::NotFound(canonical.clone())),
        })?;
        tracing::info!(domain = %self.domain, localpart = %canonical, "password changed");
        Ok(())
    }

    /// Re-reads the file, e.g. after `casebook whatsapp add-user` changed it while
    /// this node runs; returns the number of accounts. On error the current
    /// accounts stay in place. An unchanged file (same length, mtime and inode as
    /// the version last read or written) is not read again.
    pub fn reload(&self) -> Result<usize, AccountError> {
        let mut seen = self.writer.lock();
        // Stat before reading: a change landing between the two is seen next time.
        let stamp = FileStamp::of(&self.path);
        if stamp.is_some() && stamp == *seen {
            return Ok(self.current.read().len());
        }
        let accounts = load(&self.path, &self.domain)?;
        let count = accounts.len();
        *self.current.write() = Arc::new(accounts);
        *seen = stamp;
        Ok(count)
    }

    /// Copy, change, persist, then publish: readers never see an unpersisted state.
    fn update(
        &self,
        change: impl FnOnce(&mut AccountMap) -> Result<(), AccountError>,
    ) -> Result<(), AccountError> {
        let mut seen = self.writer.lock();
        let mut next = AccountMap::clone(&self.current.read());
        change(&mut next)?;
        persist(&self.path, &self.domain, &next)?;
        *self.current.write() = Arc::new(next);
        // The renamed file is what `current` holds: no need to read it back.
        *seen = FileStamp::of(&self.path);
        Ok(())
    }
}

/// What identifies one version of the account file without reading it: `persist`
/// renames a new file into place (a new inode), an editor may rewrite in place
/// (new mtime and usually length).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    inode: u64,
}

impl FileStamp {
    /// `None` when the file cannot be stat'ed (missing): always (re)read then.
    fn of(path: &Path) -> Option<Self> {
        let meta = fs::metadata(path).ok()?;
        Some(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&meta),
        })
    }
}

/// Bulk creation, for load tests that need thousands of accounts: one persist for
/// the whole batch instead of one per account.
impl Accounts {
    /// Creates every account of `batch` that does not exist yet (existing ones are
    /// left as they are); returns how many were created. PBKDF2 runs on
    /// `threads` threads outside the writer lock.
    pub fn add_many(
        &self,
        batch: &[(String, String)],
        threads: usize,
    ) -> Result<usize, AccountError> {
        let mut todo = Vec::with_capacity(batch.len());
        for (localpart, password) in batch {
            let canonical = nodeprep_lite(localpart)?;
            if !self.contains(&canonical) {
                todo.push((canonical, password.as_str()));
            }
        }
        let iterations = self.config.iterations;
        let chunk = todo.len().div_ceil(threads.max(1)).max(1);
        type Derived = Result<Vec<(String, Arc<Credentials>)>, AccountError>;
        let derived: Vec<Derived> = std::thread::scope(|scope| {
            let workers: Vec<_> = todo
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|(name, password)| {
                                Credentials::derive(password, iterations)
                                    .map(|c| (name.clone(), Arc::new(c)))
                            })
                            .collect()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a derivation thread panicked"))
                .collect()
        });
        let mut created = 0;
        self.update(|map| {
            for part in derived {
                for (name, credentials) in part? {
                    if let std::collections::btree_map::Entry::Vacant(slot) = map.entry(name) {
                        slot.insert(credentials);
                        created += 1;
                    }
                }
            }
            Ok(())
        })?;
        tracing::info!(domain = %self.domain, created, "accounts added in bulk");
        Ok(created)
    }
}

fn load(path: &Path, domain: &str) -> Result<AccountMap, AccountError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AccountMap::new()),
        Err(source) => {
            return Err(AccountError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let corrupt = |reason: String| AccountError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let file: StoreFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if file.version != FILE_VERSION {
        return Err(corrupt(format!("unsupported version {}", file.version)));
    }
    if file.domain != domain {
        return Err(corrupt(format!(
            "holds domain {:?}, not {domain:?}",
            file.domain
        )));
    }
    let mut accounts = AccountMap::new();
    for (localpart, credentials) in file.accounts {
        match nodeprep_lite(&localpart) {
            Ok(canonical) if canonical == localpart => {}
            _ => return Err(corrupt(format!("localpart {localpart:?} is not canonical"))),
        }
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            credentials.secrets(hash).validate(hash).map_err(|why| {
                corrupt(format!("{localpart:?} {}: {why}", hash.mechanism_name()))
            })?;
        }
        accounts.insert(localpart, Arc::new(credentials));
    }
    Ok(accounts)
}

fn persist(path: &Path, domain: &str, accounts: &AccountMap) -> Result<(), AccountError> {
    let io = |source| AccountError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = StoreFile {
        version: FILE_VERSION,
        domain: domain.to_string(),
        accounts: accounts
            .iter()
            .map(|(k, v)| (k.clone(), Credentials::clone(v)))
            .collect(),
    };
    let body = serde_json::to_vec_pretty(&file).map_err(|e| io(std::io::Error::other(e)))?;
    let dir = path
        .parent()
        .ok_or_else(|| io(std::io::Error::other("no parent dir")))?;
    fs::create_dir_all(dir).map_err(io)?;
    let temp = path.with_extension("json.tmp");
    // A temp file left by a crash may carry other permissions; start afresh.
    let _ = fs::remove_file(&temp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options.open(&temp).map_err(io)?;
    out.write_all(&body).map_err(io)?;
    out.sync_all().map_err(io)?;
    drop(out);
    fs::rename(&temp, path).map_err(io)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Accounts {
        Accounts::open(dir, "example.com", AccountsConfig::default()).unwrap()
    }

    #[test]
    fn add_list_get_remove_change_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = open(dir.path());
        assert!(accounts.is_empty());
        assert_eq!(accounts.add("Alice", "pencil").unwrap(), "alice");
        accounts.add("bob", "hunter2").unwrap();
        assert!(matches!(accounts.add("ALICE", "x"), Err(AccountError::Exists(n)) if n == "alice"));
        assert_eq!(accounts.list(), ["alice", "bob"]);
        let alice = accounts.get("alice").unwrap();
        assert!(
            alice
                .scram_sha256
                .verify_password(ScramHash::Sha256, "pencil")
        );
        assert!(alice.scram_sha1.verify_password(ScramHash::Sha1, "pencil"));
        assert_ne!(alice.scram_sha1.salt, alice.scram_sha256.salt);

        accounts.change_password("alice", "crayon").unwrap();
        accounts.remove("bob").unwrap();
        assert!(matches!(
            accounts.remove("bob"),
            Err(AccountError::NotFound(_))
        ));
        assert!(matches!(
            accounts.change_password("carol", "x"),
            Err(AccountError::NotFound(_))
        ));

        let reloaded = open(dir.path());
        assert_eq!(reloaded.list(), ["alice"]);
        let alice = reloaded.get("ALICE").unwrap();
        assert!(
            alice
                .scram_sha256
                .verify_password(ScramHash::Sha256, "crayon")
        );
        assert!(
            !alice
                .scram_sha256
                .verify_password(ScramHash::Sha256, "pencil")
        );
    }

    #[test]
    fn reload_sees_another_writer_and_keeps_state_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let node = open(dir.path());
        let admin = open(dir.path());
        admin.add("alice", "pw").unwrap();
        assert!(!node.contains("alice"));
        assert_eq!(node.reload().unwrap(), 1);
        assert!(node.contains("alice"));
        fs::write(node.path(), "garbage").unwrap();
        assert!(matches!(node.reload(), Err(AccountError::Corrupt { .. })));
        assert!(node.contains("alice"));
    }

    #[test]
    fn reload_reads_the_file_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let node = open(dir.path());
        node.add("alice", "pw").unwrap();
        let before = Arc::as_ptr(&node.current.read());
        assert_eq!(node.reload().unwrap(), 1);
        assert_eq!(
            Arc::as_ptr(&node.current.read()),
            before,
            "its own write is not read back"
        );
        // Another writer (a new file renamed into place): read.
        open(dir.path()).add("bob", "pw").unwrap();
        assert_eq!(node.reload().unwrap(), 2);
        let after = Arc::as_ptr(&node.current.read());
        assert_ne!(after, before);
        assert_eq!(node.reload().unwrap(), 2);
        assert_eq!(
            Arc::as_ptr(&node.current.read()),
            after,
            "unchanged: not read"
        );
        // Rewritten in place with another length: read (and refused, state kept).
        let text = fs::read_to_string(node.path()).unwrap();
        fs::write(node.path(), format!("{text}  ")).unwrap();
        assert_eq!(node.reload().unwrap(), 2);
        assert_ne!(Arc::as_ptr(&node.current.read()), after);
        fs::write(node.path(), "garbage").unwrap();
        assert!(node.reload().is_err());
        assert!(node.reload().is_err(), "a bad file stays unread-as-good");
        assert!(node.contains("bob"));
        // Removed: an empty store, as at open.
        fs::remove_file(node.path()).unwrap();
        assert_eq!(node.reload().unwrap(), 0);
    }

    #[test]
    fn the_file_never_holds_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = open(dir.path());
        accounts.add("alice", "correct-horse-battery").unwrap();
        let text = fs::read_to_string(accounts.path()).unwrap();
        assert!(!text.contains("correct-horse-battery"));
        assert!(text.contains("stored_key") && text.contains("\"iterations\": 4096"));
        assert!(!format!("{:?}", accounts.get("alice").unwrap()).contains("key"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(accounts.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn corrupt_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = Accounts::path_for(dir.path(), "example.com").unwrap();
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let check = |body: &str, expect: &str| {
            fs::write(&path, body).unwrap();
            let err =
                Accounts::open(dir.path(), "example.com", AccountsConfig::default()).unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, AccountError::Corrupt { .. }), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(expect), "{message}");
        };
        check("{not json", "corrupt accounts file");
        check(
            r#"{"version":2,"domain":"example.com","accounts":{}}"#,
            "version 2",
        );
        check(
            r#"{"version":1,"domain":"other.org","accounts":{}}"#,
            "other.org",
        );

        let good = open(tempfile::tempdir().unwrap().path());
        good.add("alice", "pw").unwrap();
        let mut body = fs::read_to_string(good.path()).unwrap();
        check(&body.replace("\"alice\"", "\"Alice\""), "not canonical");
        body = body.replacen("\"iterations\": 4096", "\"iterations\": 1", 1);
        check(&body, "iterations 1");
    }

    #[test]
    fn validation_and_registration_flag() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = open(dir.path());
        for bad in [
            "", "a b", "a@b", "a/b", "a:b", "a\"b", "a&b", "a'b", "a<b", "a>b", "a\u{7}",
        ] {
            assert!(
                matches!(
                    accounts.add(bad, "pw"),
                    Err(AccountError::InvalidLocalpart(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            accounts.add(&"x".repeat(1024), "pw"),
            Err(AccountError::InvalidLocalpart(_))
        ));
        assert!(matches!(
            accounts.add("ok", "\u{7}"),
            Err(AccountError::InvalidPassword(_))
        ));
        assert!(matches!(
            accounts.add("ok", ""),
            Err(AccountError::InvalidPassword(_))
        ));
        assert!(matches!(
            accounts.register("newbie", "pw"),
            Err(AccountError::RegistrationDisabled)
        ));
        assert!(accounts.is_empty());

        let open_dir = tempfile::tempdir().unwrap();
        let config = AccountsConfig {
            registration_enabled: true,
            ..AccountsConfig::default()
        };
        let open = Accounts::open(open_dir.path(), "example.com", config).unwrap();
        assert_eq!(open.register("Newbie", "pw").unwrap(), "newbie");
        assert!(matches!(
            open.register("a b", "pw"),
            Err(AccountError::InvalidLocalpart(_))
        ));
        assert!(matches!(
            Accounts::open(dir.path(), "bad domain", AccountsConfig::default()),
            Err(AccountError::InvalidDomain(_))
        ));
        assert!(matches!(
            Accounts::open(
                dir.path(),
                "example.com",
                AccountsConfig {
                    iterations: 10,
                    ..AccountsConfig::default()
                }
            ),
            Err(AccountError::Iterations(10))
        ));
    }

    #[test]
    fn unknown_users_get_stable_decoys_shaped_like_real_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let config = AccountsConfig {
            iterations: 5000,
            ..AccountsConfig::default()
        };
        let accounts = Accounts::open(dir.path(), "example.com", config).unwrap();
        accounts.add("alice", "pw").unwrap();
        assert!(
            matches!(accounts.lookup(ScramHash::Sha1, "alice"), Lookup::Found(s) if s.iterations == 5000)
        );
        let (Lookup::Unknown(a), Lookup::Unknown(b), Lookup::Unknown(other)) = (
            accounts.lookup(ScramHash::Sha256, "ghost"),
            accounts.lookup(ScramHash::Sha256, "ghost"),
            accounts.lookup(ScramHash::Sha256, "phantom"),
        ) else {
            panic!("unknown users must get decoys");
        };
        assert_eq!(a, b);
        assert_ne!(a.salt, other.salt);
        assert_eq!((a.iterations, a.salt.len()), (5000, 16));
        assert!(a.validate(ScramHash::Sha256).is_ok());
        assert!(!a.verify_password(ScramHash::Sha256, "pw"));
    }

    #[test]
    fn bare_jids_split_and_canonicalise() {
        assert_eq!(
            parse_bare_jid("Alice@Example.COM").unwrap(),
            ("alice".to_string(), "example.com".to_string())
        );
        assert!(matches!(
            parse_bare_jid("alice"),
            Err(AccountError::InvalidJid { .. })
        ));
        assert!(matches!(
            parse_bare_jid("a@b/res"),
            Err(AccountError::InvalidJid { .. })
        ));
        assert!(matches!(
            parse_bare_jid("a@@b"),
            Err(AccountError::InvalidDomain(_))
        ));
    }
}
