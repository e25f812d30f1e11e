//! The user service over HTTP on a real platform: login and its tokens, the
//! public routes as the gateway calls them (`x-user-id`), the internal routes
//! other services depend on, and bad input.

mod support;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use bytes::Bytes;
use casebook_edge::gateway::auth::AuthError;
use casebook_edge::gateway::{JwtKey, TokenVerifier};
use casebook_kit::case::CaseEnv;
use casebook_kit::clock::ManualClock;
use casebook_kit::http_client::{HttpClient, HttpResponse};
use casebook_kit::resolve::Resolver;
use casebook_kit::topology::Topology;
use casebook_netflix::config::NetflixConfig;
use casebook_netflix::users::{UsersConfig, UsersService, add_user};
use serde_json::{Value, json};
use support::Running;

struct Fixture {
    _dir: tempfile::TempDir,
    data_dir: PathBuf,
    config: NetflixConfig,
    clock: ManualClock,
    key: Arc<JwtKey>,
    running: Running,
    client: HttpClient,
}

fn config() -> NetflixConfig {
    NetflixConfig {
        users: UsersConfig {
            // Cheap hashes: the tests check behaviour, not cost.
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            max_profiles: 3,
            history_per_profile: 3,
            ..UsersConfig::default()
        },
        ..NetflixConfig::default()
    }
}

impl Fixture {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let clock = ManualClock::new();
        let config = config();
        let env = CaseEnv {
            topology: Topology::default(),
            host: IpAddr::from([127, 0, 0, 1]),
            data_dir: data_dir.clone(),
            resolver: Arc::new(Resolver::detached(clock.shared())),
            version: "test".into(),
        };
        let key = Arc::new(JwtKey::from_bytes(&[7u8; 32]).unwrap());
        let service = UsersService::new(&config, &env, key.clone()).unwrap();
        let running = Running::start(Arc::new(service), &data_dir, clock.shared()).await;
        Self {
            _dir: dir,
            data_dir,
            config,
            clock,
            key,
            running,
            client: HttpClient::new(Duration::from_secs(10)),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        user: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let response = self.raw(method, path, user, body).await;
        let value = if response.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&response.body).unwrap_or_else(|_| {
                panic!(
                    "{path}: not JSON: {:?}",
                    String::from_utf8_lossy(&response.body)
                )
            })
        };
        (response.status, value)
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        user: Option<&str>,
        body: Option<Value>,
    ) -> HttpResponse {
        let mut headers = HeaderMap::new();
        if let Some(user) = user {
            headers.insert("x-user-id", HeaderValue::from_str(user).unwrap());
        }
        let bytes = match body {
            Some(body) => {
                headers.insert("content-type", HeaderValue::from_static("application/json"));
                Bytes::from(serde_json::to_vec(&body).unwrap())
            }
            None => Bytes::new(),
        };
        self.client
            .send(method, &self.running.url(path), headers, bytes)
            .await
            .unwrap()
    }

    async fn signup(&self, email: &str, password: &str) -> Value {
        let (status, body) = self
            .send(
                Method::POST,
                "/internal/v1/accounts",
                None,
                Some(json!({ "email": email, "password": password })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    async fn login(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.send(
            Method::POST,
            "/api/v1/login",
            None,
            Some(json!({ "email": email, "password": password })),
        )
        .await
    }
}

fn assert_error(result: &(StatusCode, Value), status: StatusCode, code: &str, field: Option<&str>) {
    assert_eq!(result.0, status, "{}", result.1);
    assert_eq!(result.1["code"], code, "{}", result.1);
    assert_eq!(result.1["field"].as_str(), field, "{}", result.1);
}

#[tokio::test]
async fn login_issues_a_token_the_gateway_accepts() {
    let f = Fixture::start().await;
    let account = f.signup("Ann@Example.com", "correct horse").await;
    let id = account["id"].as_str().unwrap();
    // Any case of the email signs in.
    let (status, body) = f.login("ann@example.COM", "correct horse").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["account"], id);
    assert_eq!(body["expires_in"], 3600);
    let verifier = TokenVerifier::new(f.key.clone(), &f.config.gateway.jwt, f.clock.shared());
    let claims = verifier.verify(body["token"].as_str().unwrap()).unwrap();
    assert_eq!(claims.sub, id);
    // It expires on the clock, after the TTL and the leeway.
    f.clock.advance(Duration::from_secs(3600 + 31));
    assert_eq!(
        verifier
            .verify(body["token"].as_str().unwrap())
            .unwrap_err(),
        AuthError::Expired
    );
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_look_the_same() {
    let f = Fixture::start().await;
    f.signup("ann@example.com", "correct horse").await;
    let wrong = f.login("ann@example.com", "incorrect horse").await;
    let unknown = f.login("nobody@example.com", "correct horse").await;
    assert_error(
        &wrong,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        None,
    );
    assert_eq!(wrong, unknown);
}

#[tokio::test]
async fn injection_looking_credentials_are_inert() {
    let f = Fixture::start().await;
    f.signup("admin@example.com", "the real one").await;
    for (email, password) in [
        ("admin@example.com", "' OR '1'='1"),
        ("admin@example.com'--", "anything at all"),
        ("admin'--@example.com", "' OR '1'='1"),
        ("'OR'1'='1'@x", "' OR '1'='1"),
        ("x@x'OR/**/email_key/**/LIKE'%", "' OR 1=1 --"),
    ] {
        let result = f.login(email, password).await;
        assert_error(
            &result,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            None,
        );
    }
    // With spaces, the email is refused by shape before any query.
    let result = f.login("' OR '1'='1", "' OR '1'='1").await;
    assert_error(
        &result,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("email"),
    );
    // An account whose email and password look like injections is just an account.
    let sneaky = f.signup("o'brien'--@example.com", "' OR '1'='1").await;
    let (status, body) = f.login("O'BRIEN'--@example.com", "' OR '1'='1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["account"], sneaky["id"]);
    // And it did not make anyone else's password work.
    let result = f.login("admin@example.com", "' OR '1'='1").await;
    assert_error(
        &result,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        None,
    );
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let f = Fixture::start().await;
    let post = |path: &'static str, body: Value| f.send(Method::POST, path, None, Some(body));
    let r = post(
        "/internal/v1/accounts",
        json!({"email": "no-at-sign", "password": "long enough"}),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_field", Some("email"));
    let r = post(
        "/internal/v1/accounts",
        json!({"email": "a@b.c", "password": "short"}),
    )
    .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("password"),
    );
    let huge = "p".repeat(257);
    let r = post("/api/v1/login", json!({"email": "a@b.c", "password": huge})).await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("password"),
    );
    let r = post("/api/v1/login", json!({"email": "a@b.c"})).await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        Some("password"),
    );
    let r = post(
        "/api/v1/login",
        json!({"email": "a b@c.d", "password": "whatever1"}),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_field", Some("email"));
    let a = f.signup("ann@example.com", "correct horse").await;
    let id = a["id"].as_str().unwrap();
    let progress = |body: Value| f.send(Method::POST, "/api/v1/history", Some(id), Some(body));
    let r = progress(json!({"title": "t", "position_s": -1.0, "duration_s": 1.0})).await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("position_s"),
    );
    let r = progress(json!({"title": "t", "position_s": 1.0, "duration_s": 1e300})).await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("duration_s"),
    );
    let r = progress(json!({"title": "", "position_s": 1.0, "duration_s": 1.0})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_field", Some("title"));
    let r = progress(json!({"title": "t", "position_s": "1", "duration_s": 1.0})).await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        Some("position_s"),
    );
    // A client cannot name someone else's account in the public body.
    let r = progress(json!({"account": "a1", "title": "t", "position_s": 1.0, "duration_s": 1.0}))
        .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("account"),
    );
    let r = f
        .send(Method::GET, "/api/v1/history?limit=0", Some(id), None)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_field", Some("limit"));
    let r = f
        .send(Method::GET, "/api/v1/history?limit=x", Some(id), None)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_field", Some("limit"));
    let r = f
        .send(Method::GET, "/internal/v1/trending?limit=101", None, None)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_field", Some("limit"));
    // Too large a body is 413 before anything is parsed.
    let big = json!({"email": "a@b.c", "password": "x".repeat(20_000)});
    let r = f.raw(Method::POST, "/api/v1/login", None, Some(big)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn public_routes_need_a_caller() {
    let f = Fixture::start().await;
    for (method, path) in [
        (Method::GET, "/api/v1/account"),
        (Method::GET, "/api/v1/profiles"),
        (Method::GET, "/api/v1/history"),
    ] {
        let r = f.send(method.clone(), path, None, None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized", None);
        let r = f.send(method, path, Some("a0123456789abcdef"), None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unknown_account", None);
    }
    let r = f
        .send(
            Method::POST,
            "/api/v1/profiles",
            None,
            Some(json!({"name": "Kid"})),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized", None);
}

#[tokio::test]
async fn account_profiles_and_their_limit() {
    let f = Fixture::start().await;
    let a = f.signup("ann@example.com", "correct horse").await;
    let id = a["id"].as_str().unwrap();
    let r = f
        .send(
            Method::POST,
            "/api/v1/profiles",
            Some(id),
            Some(json!({"name": "  "})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_field", Some("name"));
    let r = f
        .send(Method::POST, "/api/v1/profiles", Some(id), Some(json!({})))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_json", Some("name"));
    for name in ["Kid", "Guest"] {
        let (status, body) = f
            .send(
                Method::POST,
                "/api/v1/profiles",
                Some(id),
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["name"], name);
    }
    let r = f
        .send(
            Method::POST,
            "/api/v1/profiles",
            Some(id),
            Some(json!({"name": "Fourth"})),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "profile_limit", None);
    let (status, account) = f.send(Method::GET, "/api/v1/account", Some(id), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(account["email"], "ann@example.com");
    let names: Vec<&str> = account["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Main", "Kid", "Guest"]);
    assert_eq!(account["default_profile"], account["profiles"][0]["id"]);
    let (_, listed) = f
        .send(Method::GET, "/api/v1/profiles", Some(id), None)
        .await;
    assert_eq!(listed["profiles"], account["profiles"]);
    // Nothing leaks the password hash.
    assert!(!account.to_string().contains("argon2"), "{account}");
    let r = f
        .send(
            Method::POST,
            "/internal/v1/accounts",
            None,
            Some(json!({"email": "ANN@example.com", "password": "another one"})),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "email_taken", None);
}

#[tokio::test]
async fn history_public_and_internal_and_trending() {
    let f = Fixture::start().await;
    let a = f.signup("ann@example.com", "correct horse").await;
    let id = a["id"].as_str().unwrap();
    let (_, kid) = f
        .send(
            Method::POST,
            "/api/v1/profiles",
            Some(id),
            Some(json!({"name": "Kid"})),
        )
        .await;
    let kid = kid["id"].as_str().unwrap();
    for title in ["t1", "t2", "t3", "t4"] {
        let (status, body) = f
            .send(
                Method::POST,
                "/api/v1/history",
                Some(id),
                Some(json!({"title": title, "position_s": 12.5, "duration_s": 600.0})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        f.clock.advance(Duration::from_secs(1));
    }
    // The playback service's heartbeat, on the kid's profile.
    let (status, body) = f
        .send(
            Method::POST,
            "/internal/v1/history",
            None,
            Some(json!({"account": id, "profile": kid, "title": "t1", "position_s": 3.0, "duration_s": 600.0})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // Newest first, bounded to 3 per profile.
    let (status, page) = f.send(Method::GET, "/api/v1/history", Some(id), None).await;
    assert_eq!(status, StatusCode::OK);
    let titles: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["t4", "t3", "t2"]);
    // The internal shape the recs service reads.
    let (status, internal) = f
        .send(
            Method::GET,
            &format!("/internal/v1/history/{id}?limit=2"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(internal["account"], id);
    let first = &internal["items"][0];
    assert_eq!(first["title"], "t4");
    assert_eq!(first["position_s"].as_f64(), Some(12.5));
    assert_eq!(first["duration_s"].as_f64(), Some(600.0));
    assert!(first["updated_ms"].as_u64().unwrap() > 1_767_225_600_000);
    assert_eq!(internal["items"].as_array().unwrap().len(), 2);
    let (_, kid_page) = f
        .send(
            Method::GET,
            &format!("/internal/v1/history/{id}?profile={kid}"),
            None,
            None,
        )
        .await;
    assert_eq!(kid_page["items"][0]["title"], "t1");
    assert_eq!(kid_page["items"][0]["position_s"].as_f64(), Some(3.0));
    // Another account's profile is not found for this one.
    let b = f.signup("bo@example.com", "correct horse").await;
    let bo = b["id"].as_str().unwrap();
    let r = f
        .send(
            Method::GET,
            &format!("/api/v1/history?profile={kid}"),
            Some(bo),
            None,
        )
        .await;
    assert_error(
        &r,
        StatusCode::NOT_FOUND,
        "unknown_profile",
        Some("profile"),
    );
    let r = f
        .send(
            Method::POST,
            "/internal/v1/history",
            None,
            Some(json!({"account": "a404", "title": "t1", "position_s": 1.0, "duration_s": 2.0})),
        )
        .await;
    assert_error(
        &r,
        StatusCode::NOT_FOUND,
        "unknown_account",
        Some("account"),
    );
    let r = f
        .send(Method::GET, "/internal/v1/history/a404", None, None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "unknown_account", None);
    // Trending: t1 by two profiles, t2–t4 by one.
    let (status, trending) = f
        .send(Method::GET, "/internal/v1/trending?limit=2", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        trending,
        json!({"titles": [{"title": "t1", "views": 2}, {"title": "t2", "views": 1}]})
    );
    // A day and an hour later, the window is empty.
    f.clock.advance(Duration::from_secs(25 * 3600));
    let (_, trending) = f
        .send(Method::GET, "/internal/v1/trending", None, None)
        .await;
    assert_eq!(trending, json!({"titles": []}));
}

#[tokio::test]
async fn add_user_writes_the_store_the_service_reads() {
    let f = Fixture::start().await;
    // As `casebook netflix add-user` does, beside the running service.
    let (account, profiles) = add_user(
        &f.config,
        &f.data_dir,
        "cli@example.com",
        "from the cli",
        &["Me".to_owned(), "Kid".to_owned()],
        f.clock.shared(),
    )
    .await
    .unwrap();
    assert_eq!(profiles.len(), 2);
    let (status, body) = f.login("cli@example.com", "from the cli").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["account"], account.id);
    let again = add_user(
        &f.config,
        &f.data_dir,
        "CLI@example.com",
        "another pw",
        &[],
        f.clock.shared(),
    )
    .await
    .unwrap_err();
    assert!(again.to_string().contains("already exists"), "{again}");
    let bad = add_user(
        &f.config,
        &f.data_dir,
        "nope",
        "another pw",
        &[],
        f.clock.shared(),
    )
    .await
    .unwrap_err();
    assert!(bad.to_string().starts_with("email:"), "{bad}");
}

#[tokio::test]
async fn past_the_hashing_queue_logins_get_503_with_retry_after() {
    use axum::response::IntoResponse as _;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let key = Arc::new(JwtKey::from_bytes(&[7u8; 32]).unwrap());
    let users = casebook_netflix::users::Users::open(&config(), dir.path(), key, clock.shared())
        .await
        .unwrap();
    users
        .create_account("ann@example.com", "correct horse", &[])
        .await
        .unwrap();
    // Every running and waiting place taken, as by a storm in progress.
    let storm = users.passwords().occupy_all();
    let refused = users
        .login("ann@example.com", "correct horse")
        .await
        .unwrap_err()
        .into_response();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    drop(storm);
    let answer = users
        .login("ann@example.com", "correct horse")
        .await
        .unwrap();
    assert!(!answer.token.is_empty());
}
