//! Embedded SQL by default, a real engine by URL: the one way the case's SQL stores
//! (users, billing) open their database and migrate it.
//!
//! | URL | engine | where |
//! |---|---|---|
//! | unset | SQLite, in WAL mode, `synchronous = FULL` | `<data_dir>/netflix/<store>.db` |
//! | `sqlite:///path/x.db` | SQLite, the same settings | that file |
//! | `postgres://user@host/db` | PostgreSQL | fleet mode |
//! | `mysql://user@host/db` | MariaDB / MySQL | fleet mode (the case study's MySQL) |
//!
//! Queries are written once, in PostgreSQL's numbered style (`$1`, `$2`, …), which
//! SQLite reads too; for MySQL [`Db::query`] rewrites them to `?`, so each `$n`
//! must appear once and in order (checked). Every value is bound, never spliced:
//! user input cannot change a statement's shape.
//!
//! Migrations are plain SQL per dialect, versioned, each store in its own
//! migrations table (`_casebook_<store>_migrations`), so several stores can share
//! one database. A migration already applied with other text is refused at start
//! (sqlx checks the checksum) rather than silently skipped.
//!
//! Guaranteed: a statement that returned is committed to the engine's durable log
//! (SQLite: the WAL file, synced on every commit), so `kill -9` loses nothing that
//! was answered. Not guaranteed: anything across stores (no distributed
//! transactions); a pool larger than [`MAX_CONNECTIONS`].

use std::borrow::Cow;
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyArguments, AnyPoolOptions};
use sqlx::migrate::{Migration as SqlxMigration, MigrationType, Migrator};
use sqlx::query::Query;
use sqlx::{Any, AnyPool, AssertSqlSafe, Executor, SqlSafeStr};

/// Connections a store's pool holds at most (SQLite serialises writers anyway).
pub const MAX_CONNECTIONS: u32 = 8;
/// How long a query waits for a connection before failing.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The engine behind a [`Db`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

impl Dialect {
    /// The dialect a URL names, or `None` for an unsupported scheme.
    pub fn of_url(url: &str) -> Option<Self> {
        let scheme = url.split_once(':')?.0;
        match scheme {
            "sqlite" => Some(Self::Sqlite),
            "postgres" | "postgresql" => Some(Self::Postgres),
            "mysql" | "mariadb" => Some(Self::MySql),
            _ => None,
        }
    }
}

/// One schema change, in each dialect's SQL (several statements allowed).
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
    pub mysql: &'static str,
}

impl Migration {
    fn sql(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => self.postgres,
            Dialect::MySql => self.mysql,
        }
    }
}

/// Why a database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL {0:?}: use sqlite://, postgres:// or mysql://")]
    UnsupportedUrl(String),
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating {store}: {source}")]
    Migrate {
        store: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// A store's database: a pool and the dialect its queries are rewritten for.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
}

/// The URL of an embedded store's SQLite file, created when missing.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

impl Db {
    /// Connects to `url` and brings `store`'s schema up to date.
    pub async fn open(url: &str, store: &str, migrations: &[Migration]) -> Result<Self, DbError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let dialect = Dialect::of_url(url).ok_or_else(|| DbError::UnsupportedUrl(redact(url)))?;
        if dialect == Dialect::Sqlite
            && let Some(dir) = url
                .strip_prefix("sqlite://")
                .map(|rest| rest.split('?').next().unwrap_or(rest))
                .and_then(|file| Path::new(file).parent())
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| DbError::Connect {
                url: redact(url),
                source: sqlx::Error::Io(e),
            })?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if dialect == Dialect::Sqlite {
                // One writer at a time either way; fewer connections, fewer busy waits.
                4
            } else {
                MAX_CONNECTIONS
            })
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(|source| DbError::Connect {
                url: redact(url),
                source,
            })?;
        if dialect == Dialect::Sqlite {
            // Persistent for the file: readers never block the writer, and each
            // commit is synced (FULL) before it returns.
            pool.execute("PRAGMA journal_mode = WAL").await?;
        }
        let db = Self { pool, dialect };
        db.migrate(store, migrations).await?;
        Ok(db)
    }

    async fn migrate(&self, store: &str, migrations: &[Migration]) -> Result<(), DbError> {
        let list = migrations
            .iter()
            .map(|m| {
                SqlxMigration::new(
                    m.version,
                    Cow::Borrowed(m.description),
                    MigrationType::Simple,
                    m.sql(self.dialect).into_sql_str(),
                    false,
                )
            })
            .collect();
        let mut migrator = Migrator::with_migrations(list);
        migrator.dangerous_set_table_name(format!("_casebook_{store}_migrations"));
        migrator
            .run(&self.pool)
            .await
            .map_err(|source| DbError::Migrate {
                store: store.to_owned(),
                source,
            })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A query of `sql` (written with `$1`, `$2`, …) for this engine; bind its
    /// values in order.
    pub fn query(&self, sql: &'static str) -> Query<'static, Any, AnyArguments> {
        sqlx::query(AssertSqlSafe(self.text(sql)))
    }

    /// `sql` as this engine reads it.
    pub fn text(&self, sql: &'static str) -> String {
        match self.dialect {
            Dialect::MySql => numbered_to_positional(sql),
            Dialect::Sqlite | Dialect::Postgres => sql.to_owned(),
        }
    }

    /// Closes the pool (waits for connections in use to come back).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `$1 … $n` → `?`, each number exactly once and in order (a programming error
/// otherwise, so it panics: the statement would bind the wrong values).
/// Placeholders inside quoted literals are left alone.
fn numbered_to_positional(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut expected = 1u32;
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        if c == '\'' || c == '"' || c == '`' {
            quote = Some(c);
            out.push(c);
            continue;
        }
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut number = 0u32;
            while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                number = number * 10 + d;
                chars.next();
            }
            assert_eq!(
                number, expected,
                "placeholders must be $1, $2, … once each and in order for MySQL: {sql}"
            );
            expected += 1;
            out.push('?');
            continue;
        }
        out.push(c);
    }
    out
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Private databases on the machine's engines for tests: a fresh schema
/// (PostgreSQL) or database (MySQL) per call, dropped by [`scratch::Scratch::drop_now`].
#[doc(hidden)]
pub mod scratch {
    use super::*;

    /// The PostgreSQL the engine tests use (override with `CASEBOOK_TEST_POSTGRES`).
    pub fn postgres_url() -> String {
        std::env::var("CASEBOOK_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    /// The MariaDB the engine tests use (override with `CASEBOOK_TEST_MYSQL`).
    pub fn mysql_url() -> String {
        std::env::var("CASEBOOK_TEST_MYSQL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
    }

    /// A throw-away namespace on an engine.
    #[derive(Debug)]
    pub struct Scratch {
        /// Connect here: the namespace is the default schema / database.
        pub url: String,
        admin_url: String,
        name: String,
        dialect: Dialect,
    }

    impl Scratch {
        /// A new namespace on the engine at `admin_url`.
        pub async fn new(admin_url: &str) -> Result<Self, DbError> {
            static DRIVERS: Once = Once::new();
            DRIVERS.call_once(sqlx::any::install_default_drivers);
            let dialect = Dialect::of_url(admin_url)
                .ok_or_else(|| DbError::UnsupportedUrl(admin_url.to_owned()))?;
            let name = format!("casebook_t{}_{}", std::process::id(), rand::random::<u32>());
            let admin = AnyPoolOptions::new()
                .max_connections(1)
                .connect(admin_url)
                .await
                .map_err(|source| DbError::Connect {
                    url: redact(admin_url),
                    source,
                })?;
            let (create, url) = match dialect {
                Dialect::Postgres => (
                    format!("CREATE SCHEMA {name}"),
                    with_param(admin_url, &format!("options=-csearch_path%3D{name}")),
                ),
                Dialect::MySql => (
                    format!("CREATE DATABASE {name}"),
                    replace_database(admin_url, &name),
                ),
                Dialect::Sqlite => return Err(DbError::UnsupportedUrl(admin_url.to_owned())),
            };
            admin.execute(AssertSqlSafe(create)).await?;
            admin.close().await;
            Ok(Self {
                url,
                admin_url: admin_url.to_owned(),
                name,
                dialect,
            })
        }

        /// Drops the namespace and everything in it.
        pub async fn drop_now(self) -> Result<(), DbError> {
            let admin = AnyPoolOptions::new()
                .max_connections(1)
                .connect(&self.admin_url)
                .await?;
            let drop = match self.dialect {
                Dialect::Postgres => format!("DROP SCHEMA {} CASCADE", self.name),
                _ => format!("DROP DATABASE {}", self.name),
            };
            admin.execute(AssertSqlSafe(drop)).await?;
            admin.close().await;
            Ok(())
        }
    }

    fn with_param(url: &str, param: &str) -> String {
        if url.contains('?') {
            format!("{url}&{param}")
        } else {
            format!("{url}?{param}")
        }
    }

    fn replace_database(url: &str, database: &str) -> String {
        let (base, query) = url
            .split_once('?')
            .map_or((url, None), |(b, q)| (b, Some(q)));
        let host_end = base.find("://").map_or(0, |i| i + 3);
        let base = match base[host_end..].find('/') {
            Some(slash) => &base[..host_end + slash],
            None => base,
        };
        match query {
            Some(q) => format!("{base}/{database}?{q}"),
            None => format!("{base}/{database}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_placeholders_in_order_outside_literals() {
        assert_eq!(
            numbered_to_positional("SELECT '$1', a FROM t WHERE b = $1 AND c = $2"),
            "SELECT '$1', a FROM t WHERE b = ? AND c = ?"
        );
        assert_eq!(numbered_to_positional("SELECT 1"), "SELECT 1");
    }

    #[test]
    #[should_panic(expected = "in order")]
    fn out_of_order_placeholders_are_a_bug() {
        numbered_to_positional("UPDATE t SET a = $2 WHERE b = $1");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("sqlite:///x.db"), "sqlite:///x.db");
    }

    const MIGRATIONS: &[Migration] = &[Migration {
        version: 1,
        description: "notes",
        sqlite: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        postgres: "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",
        mysql: "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",
    }];

    async fn round_trip(db: &Db) {
        use sqlx::Row;
        db.query("INSERT INTO notes (id, body) VALUES ($1, $2)")
            .bind(7_i64)
            .bind("x' OR '1'='1")
            .execute(db.pool())
            .await
            .unwrap();
        let row = db
            .query("SELECT body FROM notes WHERE id = $1")
            .bind(7_i64)
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>(0), "x' OR '1'='1");
    }

    #[tokio::test]
    async fn sqlite_opens_migrates_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(&dir.path().join("sub/notes.db"));
        let db = Db::open(&url, "notes", MIGRATIONS).await.unwrap();
        round_trip(&db).await;
        db.close().await;
        // Reopening applies nothing new and keeps the row.
        let db = Db::open(&url, "notes", MIGRATIONS).await.unwrap();
        let count: i64 = sqlx::Row::get(
            &db.query("SELECT COUNT(*) FROM notes")
                .fetch_one(db.pool())
                .await
                .unwrap(),
            0,
        );
        assert_eq!(count, 1);
    }

    #[tokio::test]
    async fn a_changed_migration_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(&dir.path().join("notes.db"));
        Db::open(&url, "notes", MIGRATIONS)
            .await
            .unwrap()
            .close()
            .await;
        let changed = [Migration {
            sqlite: "CREATE TABLE notes (id INTEGER PRIMARY KEY)",
            ..MIGRATIONS[0]
        }];
        let err = Db::open(&url, "notes", &changed).await.unwrap_err();
        assert!(matches!(err, DbError::Migrate { .. }), "{err}");
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL (CASEBOOK_TEST_POSTGRES); run by .ci/run"]
    async fn postgres_opens_and_migrates() {
        let scratch = scratch::Scratch::new(&scratch::postgres_url())
            .await
            .unwrap();
        let db = Db::open(&scratch.url, "notes", MIGRATIONS).await.unwrap();
        assert_eq!(db.dialect(), Dialect::Postgres);
        round_trip(&db).await;
        db.close().await;
        scratch.drop_now().await.unwrap();
    }

    #[tokio::test]
    #[ignore = "needs MariaDB (CASEBOOK_TEST_MYSQL); run by .ci/run"]
    async fn mysql_opens_and_migrates() {
        let scratch = scratch::Scratch::new(&scratch::mysql_url()).await.unwrap();
        let db = Db::open(&scratch.url, "notes", MIGRATIONS).await.unwrap();
        assert_eq!(db.dialect(), Dialect::MySql);
        round_trip(&db).await;
        db.close().await;
        scratch.drop_now().await.unwrap();
    }
}
