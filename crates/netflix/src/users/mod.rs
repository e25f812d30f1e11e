//! The user service (`netflix-users`, :8086): accounts, profiles, viewing history,
//! login. Its public routes sit behind the gateway, which verifies the bearer
//! token and passes its subject (an account id) as `x-user-id`; the internal ones
//! are for other services and no gateway route reaches them.
//!
//! | route | body / query | answer |
//! |---|---|---|
//! | `POST /api/v1/login` | `{"email", "password"}` | `{"token", "account", "expires_in"}`; 401 `invalid_credentials` for a wrong password and an unknown email alike |
//! | `GET /api/v1/account` | – | `{"id", "email", "default_profile", "created_ms", "profiles": [{"id", "name", "created_ms"}]}` |
//! | `GET /api/v1/profiles` | – | `{"profiles": [...]}`, the default first |
//! | `POST /api/v1/profiles` | `{"name"}` | 201 the profile; 409 `profile_limit` past `max_profiles` |
//! | `GET /api/v1/history` | `?profile=&limit=` | `{"account", "profile", "items": [{"title", "position_s", "duration_s", "updated_ms"}]}`, newest first |
//! | `POST /api/v1/history` | `{"title", "position_s", "duration_s", "profile"?}` | 204 |
//! | `GET /internal/v1/history/{account}` | `?profile=&limit=` | as the public one |
//! | `POST /internal/v1/history` | `{"account", "profile"?, "title", "position_s", "duration_s"}` | 204 (the playback service's heartbeats) |
//! | `GET /internal/v1/trending` | `?limit=` | `{"titles": [{"title", "views"}]}`, most viewed over `trending_window` first |
//! | `POST /api/v1/signup` | `{"email", "password", "profiles"?}` | the same as `POST /internal/v1/accounts`, public through the gateway (no token; rate-limited per client address) |
//! | `POST /internal/v1/accounts` | `{"email", "password", "profiles"?}` | 201 the account as `GET /api/v1/account` shows it; 409 `email_taken` |
//!
//! A missing `x-user-id` on a public route is 401 `unauthorized`; an id with no
//! account (a token outliving its account's database) is 401 `unknown_account`.
//! Validation errors are 400 naming the field: emails of 3–254 bytes with one
//! `@` and no spaces, passwords of 8–256 bytes (Argon2 of a huge input is a
//! denial of service), profile names of 1–32 characters, titles of 1–128
//! printable ASCII bytes, positions and durations finite, ≥ 0 and below
//! [`api::MAX_SECONDS`], `limit` of 1 to the bound. Bodies over
//! [`api::MAX_BODY_BYTES`] are 413.
//!
//! Passwords: Argon2id PHC strings ([`passwords`]); at most
//! `login_concurrency` hashes run and `login_queue` wait, beyond that 503
//! `overloaded` with `Retry-After: 1`. Storage and bounds: [`store`].
//!
//! `casebook netflix add-user` opens the store directly ([`add_user`]), not
//! through this service: it works without `casebook up`, and SQLite's WAL lets it
//! write beside a running service (PostgreSQL in fleet mode is shared anyway).
//!
//! Not guaranteed: deleting accounts or profiles, changing passwords or emails,
//! email verification, rate limiting per account (the gateway limits per caller).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use casebook_edge::gateway::{JwtKey, TokenIssuer};
use casebook_kit::case::CaseEnv;
use casebook_kit::clock::SharedClock;
use casebook_kit::config::ConfigError;
use casebook_kit::runtime::{BoxFuture, InstanceContext, ServiceFactory, StartError, serve_http};
use serde::{Deserialize, Serialize};

use crate::config::NetflixConfig;
use crate::sql::Dialect;

pub mod api;
pub mod passwords;
pub mod store;

pub use api::Users;
use passwords::HashCosts;
use store::{StoreLimits, UserStore};

/// The service's name in discovery.
pub const USERS_SERVICE: &str = "netflix-users";

/// The `[netflix.users]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsersConfig {
    /// The database URL (`sqlite://…`, `postgres://…`, `mysql://…`); unset:
    /// SQLite at `<data_dir>/netflix/users.db`.
    pub database: Option<String>,
    /// Profiles per account, the default one included.
    pub max_profiles: u32,
    /// History rows kept per profile (the newest).
    pub history_per_profile: u32,
    /// Argon2id memory cost in KiB (OWASP's minimum: 19 MiB).
    pub argon2_memory_kib: u32,
    /// Argon2id passes.
    pub argon2_iterations: u32,
    /// Password hashes that run at once (each takes a core).
    pub login_concurrency: u32,
    /// Password hashes that may wait for one; past that logins get 503.
    pub login_queue: u32,
    /// How far back trending counts views (whole hours).
    #[serde(with = "humantime_serde")]
    pub trending_window: Duration,
}

impl Default for UsersConfig {
    fn default() -> Self {
        Self {
            database: None,
            max_profiles: 5,
            history_per_profile: 200,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            login_concurrency: 2,
            login_queue: 64,
            trending_window: Duration::from_secs(24 * 3600),
        }
    }
}

impl UsersConfig {
    /// Checks every key; the error names the first one at fault under `key`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let bad =
            |name: &str, message: &str| Err(ConfigError::new(format!("{key}.{name}"), message));
        if let Some(url) = &self.database
            && Dialect::of_url(url).is_none()
        {
            return bad(
                "database",
                "must be a sqlite://, postgres:// or mysql:// URL",
            );
        }
        if !(1..=20).contains(&self.max_profiles) {
            return bad("max_profiles", "must be 1 to 20");
        }
        if !(1..=10_000).contains(&self.history_per_profile) {
            return bad("history_per_profile", "must be 1 to 10000");
        }
        if !(8..=1024 * 1024).contains(&self.argon2_memory_kib) {
            return bad("argon2_memory_kib", "must be 8 to 1048576 (1 GiB)");
        }
        if !(1..=20).contains(&self.argon2_iterations) {
            return bad("argon2_iterations", "must be 1 to 20");
        }
        if !(1..=64).contains(&self.login_concurrency) {
            return bad("login_concurrency", "must be 1 to 64");
        }
        if self.login_queue > 10_000 {
            return bad("login_queue", "must be at most 10000");
        }
        let hours = self.trending_window.as_secs() / 3600;
        if !(1..=24 * 90).contains(&hours) || !self.trending_window.as_secs().is_multiple_of(3600) {
            return bad("trending_window", "must be whole hours, 1h to 90 days");
        }
        Ok(())
    }

    /// The database URL under `data_dir` when none is configured.
    pub fn database_url(&self, data_dir: &Path) -> String {
        store::database_url(self.database.as_deref(), data_dir)
    }

    pub fn limits(&self) -> StoreLimits {
        StoreLimits {
            max_profiles: self.max_profiles,
            history_per_profile: self.history_per_profile,
            trending_buckets: (self.trending_window.as_secs() / 3600).max(1) as u32,
        }
    }

    pub fn hash_costs(&self) -> HashCosts {
        HashCosts {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            concurrency: self.login_concurrency,
            queue: self.login_queue,
        }
    }
}

/// The platform's factory for `netflix-users`.
#[derive(Debug)]
pub struct UsersService {
    config: NetflixConfig,
    data_dir: std::path::PathBuf,
    jwt: Arc<JwtKey>,
}

impl UsersService {
    pub fn new(
        config: &NetflixConfig,
        env: &CaseEnv,
        jwt: Arc<JwtKey>,
    ) -> Result<Self, ConfigError> {
        config.users.validate("netflix.users")?;
        Ok(Self {
            config: config.clone(),
            data_dir: env.data_dir.clone(),
            jwt,
        })
    }
}

impl ServiceFactory for UsersService {
    fn name(&self) -> &str {
        USERS_SERVICE
    }

    fn start<'a>(
        &'a self,
        ctx: &'a InstanceContext,
    ) -> BoxFuture<'a, Result<SocketAddr, StartError>> {
        Box::pin(async move {
            let users = Users::open(
                &self.config,
                &self.data_dir,
                self.jwt.clone(),
                ctx.clock().clone(),
            )
            .await?;
            let listener = ctx.bind(ctx.listen_addr()).await?;
            let address = listener.local_addr().map_err(anyhow::Error::from)?;
            serve_http(ctx, listener, api::router(Arc::new(users)));
            Ok(address)
        })
    }
}

/// Why [`add_user`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AddUserError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("an account with the email {0:?} already exists")]
    DuplicateEmail(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Creates an account on the store `config` names under `data_dir` (the same
/// one `casebook up` serves), with `profiles` (none: one named
/// [`store::DEFAULT_PROFILE_NAME`]); closes the store before returning.
pub async fn add_user(
    config: &NetflixConfig,
    data_dir: &Path,
    email: &str,
    password: &str,
    profiles: &[String],
    clock: SharedClock,
) -> Result<(store::Account, Vec<store::Profile>), AddUserError> {
    let users = &config.users;
    users
        .validate("netflix.users")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let invalid = |e: casebook_kit::api::ApiError| AddUserError::Invalid {
        field: e.field.unwrap_or_default(),
        message: e.error,
    };
    api::valid_email(email).map_err(invalid)?;
    api::valid_new_password(password).map_err(invalid)?;
    for (i, name) in profiles.iter().enumerate() {
        api::valid_profile_name(name, &format!("profile[{i}]")).map_err(invalid)?;
    }
    if profiles.len() > users.max_profiles as usize {
        return Err(AddUserError::Invalid {
            field: "profile".into(),
            message: format!("at most {} profiles", users.max_profiles),
        });
    }
    let hasher = passwords::Passwords::new(users.hash_costs()).map_err(anyhow::Error::from)?;
    let phc = hasher
        .hash(password.to_owned())
        .await
        .map_err(anyhow::Error::from)?;
    let store = UserStore::open(&users.database_url(data_dir), users.limits())
        .await
        .map_err(anyhow::Error::from)?;
    let created = store
        .create_account(email, &phc, profiles, clock.wall_millis())
        .await;
    store.close().await;
    match created {
        Ok(made) => Ok(made),
        Err(store::StoreError::DuplicateEmail) => Err(AddUserError::DuplicateEmail(email.into())),
        Err(e) => Err(anyhow::Error::from(e).into()),
    }
}

/// The token issuer the service mints with: the gateway's key and `[netflix.gateway.jwt]`.
pub fn issuer(config: &NetflixConfig, jwt: Arc<JwtKey>, clock: SharedClock) -> TokenIssuer {
    TokenIssuer::new(jwt, &config.gateway.jwt, clock)
}
