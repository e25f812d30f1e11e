//! The user service's engine ([`Users`]: validation, hashing, the store, tokens)
//! and its routes (shapes in the module docs of [`crate::users`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use casebook_edge::gateway::proxy::USER_ID_HEADER;
use casebook_edge::gateway::{JwtKey, TokenIssuer};
use casebook_kit::api::{ApiError, JsonBody};
use casebook_kit::clock::SharedClock;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::passwords::{PasswordError, Passwords};
use super::store::{Account, HistoryItem, Profile, StoreError, TitleViews, UserStore};
use crate::config::NetflixConfig;

/// The largest request body the service reads.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Password bounds, in bytes.
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 256;
/// Email bounds, in bytes.
pub const MAX_EMAIL: usize = 254;
/// Profile names, in characters.
pub const MAX_PROFILE_NAME: usize = 32;
/// Title ids, in bytes.
pub const MAX_TITLE: usize = 128;
/// Positions and durations at or above this (about 11.5 days) are refused.
pub const MAX_SECONDS: f64 = 1.0e6;
/// History items answered when `limit` is absent.
pub const DEFAULT_HISTORY_LIMIT: u32 = 20;
/// Trending titles answered when `limit` is absent, and at most.
pub const DEFAULT_TRENDING_LIMIT: u32 = 20;
pub const MAX_TRENDING_LIMIT: u32 = 100;

/// The service's state.
#[derive(Debug)]
pub struct Users {
    store: UserStore,
    passwords: Passwords,
    issuer: TokenIssuer,
    token_ttl_s: u64,
    clock: SharedClock,
}

/// `POST /api/v1/login`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResponse {
    pub token: String,
    pub account: String,
    pub expires_in: u64,
}

/// An account with its profiles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    #[serde(flatten)]
    pub account: Account,
    pub profiles: Vec<Profile>,
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub account: String,
    pub profile: String,
    pub items: Vec<HistoryItem>,
}

/// `GET /internal/v1/trending`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trending {
    pub titles: Vec<TitleViews>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    password: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    email: String,
    password: String,
    #[serde(default)]
    profiles: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProfile {
    name: String,
}

/// A position report, public (`account` absent: the caller's) or internal.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Progress {
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    profile: Option<String>,
    title: String,
    position_s: f64,
    duration_s: f64,
}

fn code(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, message).with_code(code)
}

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_field(field, message).with_code("invalid_field")
}

/// 3–254 bytes, one `@` with something on each side, no whitespace or controls.
pub fn valid_email(email: &str) -> Result<(), ApiError> {
    if email.len() < 3 || email.len() > MAX_EMAIL {
        return Err(bad("email", format!("must be 3 to {MAX_EMAIL} bytes")));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "email",
            "must not contain spaces or control characters",
        ));
    }
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(())
        }
        _ => Err(bad("email", "must look like name@domain")),
    }
}

/// 8–256 bytes.
pub fn valid_new_password(password: &str) -> Result<(), ApiError> {
    if password.len() < MIN_PASSWORD || password.len() > MAX_PASSWORD {
        return Err(bad(
            "password",
            format!("must be {MIN_PASSWORD} to {MAX_PASSWORD} bytes"),
        ));
    }
    Ok(())
}

/// 1–32 characters, not blank, no control characters.
pub fn valid_profile_name(name: &str, field: &str) -> Result<(), ApiError> {
    let chars = name.chars().count();
    if name.trim().is_empty() || chars > MAX_PROFILE_NAME {
        return Err(bad(
            field,
            format!("must be 1 to {MAX_PROFILE_NAME} characters, not blank"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(bad(field, "must not contain control characters"));
    }
    Ok(())
}

fn valid_title(title: &str) -> Result<(), ApiError> {
    if title.is_empty()
        || title.len() > MAX_TITLE
        || !title.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
    {
        return Err(bad(
            "title",
            format!("must be a title id: 1 to {MAX_TITLE} printable ASCII bytes, no '/'"),
        ));
    }
    Ok(())
}

fn valid_seconds(value: f64, field: &str) -> Result<(), ApiError> {
    if !value.is_finite() || !(0.0..MAX_SECONDS).contains(&value) {
        return Err(bad(
            field,
            format!("must be a number from 0 to {MAX_SECONDS}"),
        ));
    }
    Ok(())
}

fn valid_id(value: &str, field: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 64 || !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(bad(field, "must be an id (1 to 64 letters and digits)"));
    }
    Ok(())
}

fn store_error(err: StoreError) -> ApiError {
    match err {
        StoreError::DuplicateEmail => code(
            StatusCode::CONFLICT,
            "email_taken",
            "an account with this email already exists",
        ),
        StoreError::ProfileLimit(max) => code(
            StatusCode::CONFLICT,
            "profile_limit",
            format!("an account has at most {max} profiles"),
        ),
        StoreError::UnknownAccount => {
            ApiError::not_found("no such account").with_code("unknown_account")
        }
        StoreError::UnknownProfile => ApiError {
            field: Some("profile".into()),
            ..ApiError::not_found("no such profile on this account").with_code("unknown_profile")
        },
        StoreError::Db(sqlx::Error::PoolTimedOut) => code(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the user database is busy; retry shortly",
        ),
        StoreError::Db(e) => {
            tracing::warn!(error = %e, "users: database error");
            code(
                StatusCode::INTERNAL_SERVER_ERROR,
                "database",
                "database error",
            )
        }
    }
}

/// An error that may carry `Retry-After`.
#[derive(Debug)]
pub struct UsersError(ApiError);

impl From<ApiError> for UsersError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<StoreError> for UsersError {
    fn from(e: StoreError) -> Self {
        Self(store_error(e))
    }
}

impl From<PasswordError> for UsersError {
    fn from(e: PasswordError) -> Self {
        Self(match e {
            PasswordError::Busy => {
                code(StatusCode::SERVICE_UNAVAILABLE, "overloaded", e.to_string())
            }
            PasswordError::Internal(_) => {
                tracing::warn!(error = %e, "users: hashing failed");
                code(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "password hashing failed",
                )
            }
        })
    }
}

impl IntoResponse for UsersError {
    fn into_response(self) -> Response {
        let retry = self.0.status == StatusCode::SERVICE_UNAVAILABLE;
        let mut response = self.0.into_response();
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

impl Users {
    /// Opens the store `config` names under `data_dir` and makes the hasher.
    pub async fn open(
        config: &NetflixConfig,
        data_dir: &Path,
        jwt: Arc<JwtKey>,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let users = &config.users;
        let store = UserStore::open(&users.database_url(data_dir), users.limits()).await?;
        let costs = users.hash_costs();
        let passwords = tokio::task::spawn_blocking(move || Passwords::new(costs)).await??;
        Ok(Self {
            store,
            passwords,
            issuer: super::issuer(config, jwt, clock.clone()),
            token_ttl_s: config.gateway.jwt.token_ttl.as_secs().max(1),
            clock,
        })
    }

    pub fn store(&self) -> &UserStore {
        &self.store
    }

    #[doc(hidden)]
    pub fn passwords(&self) -> &Passwords {
        &self.passwords
    }

    fn now_ms(&self) -> u64 {
        self.clock.wall_millis()
    }

    /// Creates an account (the password is hashed here).
    pub async fn create_account(
        &self,
        email: &str,
        password: &str,
        profiles: &[String],
    ) -> Result<AccountView, UsersError> {
        valid_email(email)?;
        valid_new_password(password)?;
        for (i, name) in profiles.iter().enumerate() {
            valid_profile_name(name, &format!("profiles[{i}]"))?;
        }
        let phc = self.passwords.hash(password.to_owned()).await?;
        let (account, profiles) = self
            .store
            .create_account(email, &phc, profiles, self.now_ms())
            .await?;
        Ok(AccountView { account, profiles })
    }

    /// Checks a password; a token for the account if it matches.
    pub async fn login(&self, email: &str, password: &str) -> Result<LoginResponse, UsersError> {
        valid_email(email)?;
        if password.is_empty() || password.len() > MAX_PASSWORD {
            return Err(bad("password", format!("must be 1 to {MAX_PASSWORD} bytes")).into());
        }
        let found = self.store.credentials(email).await?;
        let (account, stored) = match found {
            Some((account, phc)) => (Some(account), Some(phc)),
            None => (None, None),
        };
        let matched = self.passwords.verify(password.to_owned(), stored).await?;
        match account {
            Some(account) if matched => Ok(LoginResponse {
                token: self.issuer.issue(&account),
                account,
                expires_in: self.token_ttl_s,
            }),
            // One answer for a wrong password and an unknown email.
            _ => Err(code(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "wrong email or password",
            )
            .into()),
        }
    }

    /// The caller's account; 401 when it does not exist.
    async fn caller(&self, headers: &HeaderMap) -> Result<Account, UsersError> {
        let id = headers
            .get(USER_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                code(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "this route needs a signed-in caller (x-user-id, set by the gateway)",
                )
            })?;
        self.store.account(id).await?.ok_or_else(|| {
            code(
                StatusCode::UNAUTHORIZED,
                "unknown_account",
                "the token's account does not exist",
            )
            .into()
        })
    }

    /// An account and its profiles.
    pub async fn account_view(&self, account: Account) -> Result<AccountView, UsersError> {
        let profiles = self.store.profiles(&account.id).await?;
        Ok(AccountView { account, profiles })
    }

    /// Records progress on `account`'s profile (its default when `None`).
    pub async fn record(
        &self,
        account: &str,
        profile: Option<&str>,
        title: &str,
        position_s: f64,
        duration_s: f64,
    ) -> Result<(), UsersError> {
        valid_title(title)?;
        valid_seconds(position_s, "position_s")?;
        valid_seconds(duration_s, "duration_s")?;
        if let Some(profile) = profile {
            valid_id(profile, "profile")?;
        }
        let profile = self.store.resolve_profile(account, profile).await?;
        self.store
            .record(&profile, title, position_s, duration_s, self.now_ms())
            .await?;
        Ok(())
    }

    /// A page of `account`'s history from `?profile=&limit=`.
    pub async fn history(
        &self,
        account: &str,
        query: &HashMap<String, String>,
    ) -> Result<HistoryPage, UsersError> {
        let max = self.store.limits().history_per_profile;
        let limit = limit_param(query, DEFAULT_HISTORY_LIMIT.min(max), max)?;
        let profile = query.get("profile").map(String::as_str);
        if let Some(profile) = profile {
            valid_id(profile, "profile")?;
        }
        let profile = self.store.resolve_profile(account, profile).await?;
        let items = self.store.history(&profile, limit).await?;
        Ok(HistoryPage {
            account: account.to_owned(),
            profile,
            items,
        })
    }

    /// The most viewed titles over the trending window.
    pub async fn trending(&self, query: &HashMap<String, String>) -> Result<Trending, UsersError> {
        let limit = limit_param(query, DEFAULT_TRENDING_LIMIT, MAX_TRENDING_LIMIT)?;
        Ok(Trending {
            titles: self.store.trending(self.now_ms(), limit).await?,
        })
    }
}

fn limit_param(query: &HashMap<String, String>, default: u32, max: u32) -> Result<u32, ApiError> {
    match query.get("limit") {
        None => Ok(default),
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(bad(
                "limit",
                format!("must be a whole number from 1 to {max}"),
            )),
        },
    }
}

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

fn params(params: Params) -> Result<HashMap<String, String>, ApiError> {
    params
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request(e.body_text()).with_code("invalid_query"))
}

/// The routes.
pub fn router(users: Arc<Users>) -> Router {
    Router::new()
        .route("/api/v1/login", post(login))
        .route("/api/v1/account", get(account))
        .route("/api/v1/profiles", get(profiles).post(add_profile))
        .route("/api/v1/history", get(history).post(record))
        .route("/internal/v1/history", post(record_internal))
        .route("/internal/v1/history/{account}", get(history_internal))
        .route("/internal/v1/trending", get(trending))
        .route("/internal/v1/accounts", post(create_account))
        // Public sign-up: the same creation, reached through the gateway (no token).
        .route("/api/v1/signup", post(create_account))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(users)
}

type Shared = State<Arc<Users>>;

async fn login(
    State(users): Shared,
    JsonBody(body): JsonBody<Credentials>,
) -> Result<Json<LoginResponse>, UsersError> {
    users.login(&body.email, &body.password).await.map(Json)
}

async fn account(
    State(users): Shared,
    headers: HeaderMap,
) -> Result<Json<AccountView>, UsersError> {
    let account = users.caller(&headers).await?;
    users.account_view(account).await.map(Json)
}

async fn profiles(
    State(users): Shared,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, UsersError> {
    let account = users.caller(&headers).await?;
    let profiles = users.store.profiles(&account.id).await?;
    Ok(Json(json!({ "profiles": profiles })))
}

async fn add_profile(
    State(users): Shared,
    headers: HeaderMap,
    JsonBody(body): JsonBody<NewProfile>,
) -> Result<(StatusCode, Json<Profile>), UsersError> {
    let account = users.caller(&headers).await?;
    valid_profile_name(&body.name, "name")?;
    let profile = users
        .store
        .add_profile(&account.id, &body.name, users.now_ms())
        .await?;
    Ok((StatusCode::CREATED, Json(profile)))
}

async fn history(
    State(users): Shared,
    headers: HeaderMap,
    query: Params,
) -> Result<Json<HistoryPage>, UsersError> {
    let query = params(query)?;
    let account = users.caller(&headers).await?;
    users.history(&account.id, &query).await.map(Json)
}

async fn record(
    State(users): Shared,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Progress>,
) -> Result<StatusCode, UsersError> {
    let account = users.caller(&headers).await?;
    if body.account.is_some() {
        // The caller is the gateway's `x-user-id`, never the body's.
        return Err(bad("account", "not accepted here; the caller's account is used").into());
    }
    users
        .record(
            &account.id,
            body.profile.as_deref(),
            &body.title,
            body.position_s,
            body.duration_s,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn record_internal(
    State(users): Shared,
    JsonBody(body): JsonBody<Progress>,
) -> Result<StatusCode, UsersError> {
    let account = body
        .account
        .as_deref()
        .ok_or_else(|| bad("account", "missing field `account`"))?;
    valid_id(account, "account")?;
    users
        .record(
            account,
            body.profile.as_deref(),
            &body.title,
            body.position_s,
            body.duration_s,
        )
        .await
        .map_err(|e| match e.0.code.as_deref() {
            Some("unknown_account") => UsersError(ApiError {
                field: Some("account".into()),
                ..e.0
            }),
            _ => e,
        })?;
    Ok(StatusCode::NO_CONTENT)
}

async fn history_internal(
    State(users): Shared,
    UrlPath(account): UrlPath<String>,
    query: Params,
) -> Result<Json<HistoryPage>, UsersError> {
    let query = params(query)?;
    valid_id(&account, "account")?;
    users.history(&account, &query).await.map(Json)
}

async fn trending(State(users): Shared, query: Params) -> Result<Json<Trending>, UsersError> {
    let query = params(query)?;
    users.trending(&query).await.map(Json)
}

async fn create_account(
    State(users): Shared,
    JsonBody(body): JsonBody<NewAccount>,
) -> Result<(StatusCode, Json<AccountView>), UsersError> {
    let view = users
        .create_account(&body.email, &body.password, &body.profiles)
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}
