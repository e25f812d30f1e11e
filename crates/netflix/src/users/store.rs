//! The user store: accounts, profiles, viewing history and recent views, in one
//! SQL database opened through [`crate::sql`] (SQLite by default, PostgreSQL or
//! MariaDB by URL; the same queries on each, bound values only).
//!
//! | table | rows | bound |
//! |---|---|---|
//! | `users_accounts` | one per account; `email_key` (the email lowercased) is unique | – |
//! | `users_profiles` | several per account in the order made (`ordinal`), the first one the account's default | `max_profiles` per account (a counter on the account row, raised atomically) |
//! | `users_history` | one per (profile, title): the last position | the newest `history_per_profile` per profile; older rows go in the same transaction |
//! | `users_views` | one per (hour, title, profile) that recorded progress | the trending window: older hours are deleted on the first write of each hour |
//!
//! A *view*, for trending, is a profile recording progress on a title in an hour:
//! a title's views over the window are the number of such (profile, hour) pairs,
//! so heartbeats do not inflate it and one profile counts at most once an hour.
//!
//! Every write that changes more than one row is one transaction, and each
//! starts with a write, so SQLite takes its write lock up front (a read-then-write
//! transaction could fail with `SQLITE_BUSY` instead of waiting).

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::sql::{Db, DbError, Dialect, Migration, sqlite_url};

/// The store's name for [`Db::open`] (its migrations table is `_casebook_users_migrations`).
pub const STORE: &str = "users";
/// The name of the profile made with an account when none is given.
pub const DEFAULT_PROFILE_NAME: &str = "Main";
/// The width of a trending bucket.
pub const VIEW_BUCKET: Duration = Duration::from_secs(3600);

/// The schema, per dialect. Text keys are `VARCHAR` so MySQL can index them.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "accounts profiles history views",
    sqlite: "
        CREATE TABLE users_accounts (
            id TEXT PRIMARY KEY,
            email TEXT NOT NULL,
            email_key TEXT NOT NULL UNIQUE,
            password TEXT NOT NULL,
            default_profile TEXT NOT NULL,
            profile_count INTEGER NOT NULL,
            created_ms INTEGER NOT NULL
        );
        CREATE TABLE users_profiles (
            id TEXT PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES users_accounts (id),
            name TEXT NOT NULL,
            ordinal INTEGER NOT NULL,
            created_ms INTEGER NOT NULL,
            UNIQUE (account_id, ordinal)
        );
        CREATE TABLE users_history (
            profile_id TEXT NOT NULL,
            title TEXT NOT NULL,
            position_s REAL NOT NULL,
            duration_s REAL NOT NULL,
            updated_ms INTEGER NOT NULL,
            PRIMARY KEY (profile_id, title)
        );
        CREATE INDEX users_history_recent ON users_history (profile_id, updated_ms);
        CREATE TABLE users_views (
            bucket INTEGER NOT NULL,
            title TEXT NOT NULL,
            profile_id TEXT NOT NULL,
            PRIMARY KEY (bucket, title, profile_id)
        );
    ",
    postgres: "
        CREATE TABLE users_accounts (
            id TEXT PRIMARY KEY,
            email TEXT NOT NULL,
            email_key TEXT NOT NULL UNIQUE,
            password TEXT NOT NULL,
            default_profile TEXT NOT NULL,
            profile_count BIGINT NOT NULL,
            created_ms BIGINT NOT NULL
        );
        CREATE TABLE users_profiles (
            id TEXT PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES users_accounts (id),
            name TEXT NOT NULL,
            ordinal BIGINT NOT NULL,
            created_ms BIGINT NOT NULL,
            UNIQUE (account_id, ordinal)
        );
        CREATE TABLE users_history (
            profile_id TEXT NOT NULL,
            title TEXT NOT NULL,
            position_s DOUBLE PRECISION NOT NULL,
            duration_s DOUBLE PRECISION NOT NULL,
            updated_ms BIGINT NOT NULL,
            PRIMARY KEY (profile_id, title)
        );
        CREATE INDEX users_history_recent ON users_history (profile_id, updated_ms);
        CREATE TABLE users_views (
            bucket BIGINT NOT NULL,
            title TEXT NOT NULL,
            profile_id TEXT NOT NULL,
            PRIMARY KEY (bucket, title, profile_id)
        );
    ",
    mysql: "
        CREATE TABLE users_accounts (
            id VARCHAR(64) PRIMARY KEY,
            email VARCHAR(254) NOT NULL,
            email_key VARCHAR(254) NOT NULL UNIQUE,
            password VARCHAR(512) NOT NULL,
            default_profile VARCHAR(64) NOT NULL,
            profile_count BIGINT NOT NULL,
            created_ms BIGINT NOT NULL
        );
        CREATE TABLE users_profiles (
            id VARCHAR(64) PRIMARY KEY,
            account_id VARCHAR(64) NOT NULL,
            name VARCHAR(255) NOT NULL,
            ordinal BIGINT NOT NULL,
            created_ms BIGINT NOT NULL,
            UNIQUE (account_id, ordinal),
            FOREIGN KEY (account_id) REFERENCES users_accounts (id)
        );
        CREATE TABLE users_history (
            profile_id VARCHAR(64) NOT NULL,
            title VARCHAR(128) NOT NULL,
            position_s DOUBLE NOT NULL,
            duration_s DOUBLE NOT NULL,
            updated_ms BIGINT NOT NULL,
            PRIMARY KEY (profile_id, title),
            INDEX users_history_recent (profile_id, updated_ms)
        );
        CREATE TABLE users_views (
            bucket BIGINT NOT NULL,
            title VARCHAR(128) NOT NULL,
            profile_id VARCHAR(64) NOT NULL,
            PRIMARY KEY (bucket, title, profile_id)
        );
    ",
}];

/// An account, without its password hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Account {
    pub id: String,
    pub email: String,
    pub default_profile: String,
    pub created_ms: u64,
}

/// A profile of an account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    pub id: String,
    pub name: String,
    pub created_ms: u64,
}

/// A profile's last position in a title.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HistoryItem {
    pub title: String,
    pub position_s: f64,
    pub duration_s: f64,
    pub updated_ms: u64,
}

/// A title's views over the trending window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TitleViews {
    pub title: String,
    pub views: u64,
}

/// Why a store operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("an account with this email already exists")]
    DuplicateEmail,
    #[error("the account has its {0} profiles already")]
    ProfileLimit(u32),
    #[error("no such account")]
    UnknownAccount,
    #[error("no such profile on this account")]
    UnknownProfile,
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// The bounds the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    pub max_profiles: u32,
    pub history_per_profile: u32,
    /// Trending counts views in this many [`VIEW_BUCKET`]s, the current one included.
    pub trending_buckets: u32,
}

/// The user store over one database.
#[derive(Debug)]
pub struct UserStore {
    db: Db,
    limits: StoreLimits,
    /// The newest bucket views were pruned for: pruning runs once per bucket.
    pruned_bucket: AtomicI64,
}

/// The database URL: the configured one, else SQLite at `<data_dir>/netflix/users.db`.
pub fn database_url(configured: Option<&str>, data_dir: &Path) -> String {
    configured.map_or_else(
        || sqlite_url(&data_dir.join("netflix").join("users.db")),
        str::to_owned,
    )
}

/// The lowercased email the unique index is on: `Bob@X.com` and `bob@x.com` are one account.
pub fn email_key(email: &str) -> String {
    email.to_lowercase()
}

fn new_id(prefix: char) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

fn bucket_of(now_ms: u64) -> i64 {
    (now_ms / VIEW_BUCKET.as_millis() as u64) as i64
}

fn ms(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.is_unique_violation()
                // The Any driver may not classify every engine's code.
                || matches!(db.code().as_deref(), Some("23505" | "2067" | "1555" | "1062"))
        }
        _ => false,
    }
}

impl UserStore {
    /// Opens (and migrates) the store at `url`.
    pub async fn open(url: &str, limits: StoreLimits) -> Result<Self, DbError> {
        let db = Db::open(url, STORE, MIGRATIONS).await?;
        Ok(Self {
            db,
            limits,
            pruned_bucket: AtomicI64::new(i64::MIN),
        })
    }

    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    pub fn dialect(&self) -> Dialect {
        self.db.dialect()
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.db.close().await;
    }

    /// Creates an account with `profiles` (the first is the default; none given:
    /// one named [`DEFAULT_PROFILE_NAME`]). `password_phc` is the hash, already made.
    pub async fn create_account(
        &self,
        email: &str,
        password_phc: &str,
        profiles: &[String],
        now_ms: u64,
    ) -> Result<(Account, Vec<Profile>), StoreError> {
        let names: Vec<String> = if profiles.is_empty() {
            vec![DEFAULT_PROFILE_NAME.to_owned()]
        } else {
            profiles.to_vec()
        };
        if names.len() > self.limits.max_profiles as usize {
            return Err(StoreError::ProfileLimit(self.limits.max_profiles));
        }
        let account = Account {
            id: new_id('a'),
            email: email.to_owned(),
            default_profile: new_id('p'),
            created_ms: now_ms,
        };
        let made: Vec<Profile> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Profile {
                id: if i == 0 {
                    account.default_profile.clone()
                } else {
                    new_id('p')
                },
                name: name.clone(),
                created_ms: now_ms,
            })
            .collect();
        let mut tx = self.db.pool().begin().await?;
        let inserted = self
            .db
            .query(
                "INSERT INTO users_accounts
                 (id, email, email_key, password, default_profile, profile_count, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(account.id.clone())
            .bind(email.to_owned())
            .bind(email_key(email))
            .bind(password_phc.to_owned())
            .bind(account.default_profile.clone())
            .bind(made.len() as i64)
            .bind(to_i64(now_ms))
            .execute(&mut *tx)
            .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(StoreError::DuplicateEmail),
            other => other?,
        };
        for (ordinal, profile) in made.iter().enumerate() {
            self.insert_profile(&mut tx, &account.id, ordinal as i64, profile)
                .await?;
        }
        tx.commit().await?;
        Ok((account, made))
    }

    async fn insert_profile(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account: &str,
        ordinal: i64,
        profile: &Profile,
    ) -> Result<(), sqlx::Error> {
        self.db
            .query(
                "INSERT INTO users_profiles (id, account_id, name, ordinal, created_ms)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(profile.id.clone())
            .bind(account.to_owned())
            .bind(profile.name.clone())
            .bind(ordinal)
            .bind(to_i64(profile.created_ms))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The account id and password hash for an email (any case), if it exists.
    pub async fn credentials(&self, email: &str) -> Result<Option<(String, String)>, StoreError> {
        let row = self
            .db
            .query("SELECT id, password FROM users_accounts WHERE email_key = $1")
            .bind(email_key(email))
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| (r.get::<String, _>(0), r.get::<String, _>(1))))
    }

    /// An account by id.
    pub async fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        let row = self
            .db
            .query(
                "SELECT id, email, default_profile, created_ms FROM users_accounts WHERE id = $1",
            )
            .bind(id.to_owned())
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| Account {
            id: r.get(0),
            email: r.get(1),
            default_profile: r.get(2),
            created_ms: ms(r.get(3)),
        }))
    }

    /// An account's profiles, oldest first (the default one first).
    pub async fn profiles(&self, account: &str) -> Result<Vec<Profile>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT id, name, created_ms FROM users_profiles
                 WHERE account_id = $1 ORDER BY ordinal",
            )
            .bind(account.to_owned())
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| Profile {
                id: r.get(0),
                name: r.get(1),
                created_ms: ms(r.get(2)),
            })
            .collect())
    }

    /// Adds a profile unless the account has [`StoreLimits::max_profiles`] already.
    pub async fn add_profile(
        &self,
        account: &str,
        name: &str,
        now_ms: u64,
    ) -> Result<Profile, StoreError> {
        let mut tx = self.db.pool().begin().await?;
        // The counter is raised first, in one statement: two concurrent adds
        // cannot both pass the limit on any engine.
        let raised = self
            .db
            .query(
                "UPDATE users_accounts SET profile_count = profile_count + 1
                 WHERE id = $1 AND profile_count < $2",
            )
            .bind(account.to_owned())
            .bind(i64::from(self.limits.max_profiles))
            .execute(&mut *tx)
            .await?;
        if raised.rows_affected() == 0 {
            drop(tx);
            return match self.account(account).await? {
                Some(_) => Err(StoreError::ProfileLimit(self.limits.max_profiles)),
                None => Err(StoreError::UnknownAccount),
            };
        }
        // The new count is the new profile's place (0-based: count - 1).
        let count: i64 = self
            .db
            .query("SELECT profile_count FROM users_accounts WHERE id = $1")
            .bind(account.to_owned())
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        let profile = Profile {
            id: new_id('p'),
            name: name.to_owned(),
            created_ms: now_ms,
        };
        self.insert_profile(&mut tx, account, count - 1, &profile)
            .await?;
        tx.commit().await?;
        Ok(profile)
    }

    /// The profile to use: `profile` if it is the account's, else the account's
    /// default when `profile` is `None`.
    pub async fn resolve_profile(
        &self,
        account: &str,
        profile: Option<&str>,
    ) -> Result<String, StoreError> {
        match profile {
            Some(profile) => {
                let row = self
                    .db
                    .query("SELECT id FROM users_profiles WHERE id = $1 AND account_id = $2")
                    .bind(profile.to_owned())
                    .bind(account.to_owned())
                    .fetch_optional(self.db.pool())
                    .await?;
                row.map(|r| r.get(0)).ok_or(StoreError::UnknownProfile)
            }
            None => self
                .account(account)
                .await?
                .map(|a| a.default_profile)
                .ok_or(StoreError::UnknownAccount),
        }
    }

    /// Records a profile's position in a title (one row per title, the newest
    /// write wins), trims the profile's history to its bound, and counts a view.
    pub async fn record(
        &self,
        profile: &str,
        title: &str,
        position_s: f64,
        duration_s: f64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let upsert = match self.db.dialect() {
            Dialect::MySql => {
                "INSERT INTO users_history (profile_id, title, position_s, duration_s, updated_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON DUPLICATE KEY UPDATE position_s = VALUES(position_s),
                   duration_s = VALUES(duration_s), updated_ms = VALUES(updated_ms)"
            }
            Dialect::Sqlite | Dialect::Postgres => {
                "INSERT INTO users_history (profile_id, title, position_s, duration_s, updated_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (profile_id, title) DO UPDATE SET position_s = excluded.position_s,
                   duration_s = excluded.duration_s, updated_ms = excluded.updated_ms"
            }
        };
        let view = match self.db.dialect() {
            Dialect::MySql => {
                "INSERT IGNORE INTO users_views (bucket, title, profile_id) VALUES ($1, $2, $3)"
            }
            Dialect::Sqlite | Dialect::Postgres => {
                "INSERT INTO users_views (bucket, title, profile_id) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING"
            }
        };
        let bucket = bucket_of(now_ms);
        let mut tx = self.db.pool().begin().await?;
        self.db
            .query(upsert)
            .bind(profile.to_owned())
            .bind(title.to_owned())
            .bind(position_s)
            .bind(duration_s)
            .bind(to_i64(now_ms))
            .execute(&mut *tx)
            .await?;
        // The first row past the bound, in the history's order; it and every
        // older row go.
        let boundary = self
            .db
            .query(
                "SELECT updated_ms, title FROM users_history WHERE profile_id = $1
                 ORDER BY updated_ms DESC, title ASC LIMIT 1 OFFSET $2",
            )
            .bind(profile.to_owned())
            .bind(i64::from(self.limits.history_per_profile))
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = boundary {
            let (updated, oldest_title): (i64, String) = (row.get(0), row.get(1));
            self.db
                .query(
                    "DELETE FROM users_history WHERE profile_id = $1
                     AND (updated_ms < $2 OR (updated_ms = $3 AND title >= $4))",
                )
                .bind(profile.to_owned())
                .bind(updated)
                .bind(updated)
                .bind(oldest_title)
                .execute(&mut *tx)
                .await?;
        }
        self.db
            .query(view)
            .bind(bucket)
            .bind(title.to_owned())
            .bind(profile.to_owned())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.prune_views(bucket).await?;
        Ok(())
    }

    /// Deletes views older than the window, once per bucket.
    async fn prune_views(&self, bucket: i64) -> Result<(), StoreError> {
        if self.pruned_bucket.fetch_max(bucket, Ordering::Relaxed) >= bucket {
            return Ok(());
        }
        self.db
            .query("DELETE FROM users_views WHERE bucket < $1")
            .bind(self.first_bucket(bucket))
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    fn first_bucket(&self, current: i64) -> i64 {
        current - i64::from(self.limits.trending_buckets) + 1
    }

    /// A profile's history, newest first, at most `limit` items.
    pub async fn history(&self, profile: &str, limit: u32) -> Result<Vec<HistoryItem>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT title, position_s, duration_s, updated_ms FROM users_history
                 WHERE profile_id = $1 ORDER BY updated_ms DESC, title ASC LIMIT $2",
            )
            .bind(profile.to_owned())
            .bind(i64::from(limit))
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.iter().map(history_item).collect())
    }

    /// The most viewed titles over the window ending at `now_ms`, most first
    /// (ties by title), at most `limit`.
    pub async fn trending(&self, now_ms: u64, limit: u32) -> Result<Vec<TitleViews>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT title, COUNT(*) AS views FROM users_views WHERE bucket >= $1
                 GROUP BY title ORDER BY views DESC, title ASC LIMIT $2",
            )
            .bind(self.first_bucket(bucket_of(now_ms)))
            .bind(i64::from(limit))
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| TitleViews {
                title: r.get(0),
                views: ms(r.get(1)),
            })
            .collect())
    }

    /// How many view rows the store holds (for tests of the window's bound).
    #[doc(hidden)]
    pub async fn view_rows(&self) -> Result<u64, StoreError> {
        let row = self
            .db
            .query("SELECT COUNT(*) FROM users_views")
            .fetch_one(self.db.pool())
            .await?;
        Ok(ms(row.get(0)))
    }
}

fn history_item(r: &AnyRow) -> HistoryItem {
    HistoryItem {
        title: r.get(0),
        position_s: r.get(1),
        duration_s: r.get(2),
        updated_ms: ms(r.get(3)),
    }
}
