//! Authentication end to end: 401 `unauthorized` for a missing, malformed, badly
//! signed, expired (on the platform's `ManualClock`) or not-yet-valid token and
//! for a wrong API key; the subject (or key id) passed upstream, never a forged
//! one; `optional` and `none` routes.

mod gateway_support;

use std::sync::Arc;
use std::time::Duration;

use casebook_edge::gateway::config::ApiKeyConfig;
use casebook_edge::gateway::{
    AuthMode, GatewayConfig, JwtKey, RouteConfig, TokenIssuer, hash_secret,
};
use gateway_support::{Harness, assert_error, json_body};
use http::StatusCode;

const SECRET: &str = "a-long-random-machine-secret";

fn config() -> GatewayConfig {
    GatewayConfig {
        api_keys: vec![ApiKeyConfig {
            id: "encoder".into(),
            secret_sha256: hash_secret(SECRET),
        }],
        routes: vec![
            RouteConfig::to_service("account", "/api/account", "users"),
            RouteConfig {
                auth: AuthMode::Optional,
                ..RouteConfig::to_service("catalog", "/api/catalog", "users")
            },
            RouteConfig {
                auth: AuthMode::None,
                ..RouteConfig::to_service("login", "/api/login", "users")
            },
        ],
        ..GatewayConfig::default()
    }
}

#[tokio::test]
async fn a_valid_token_passes_its_subject_upstream_and_bad_ones_get_401() {
    let h = Harness::start(config(), &["users"]).await;
    let (name, value) = h.bearer("alice");
    let ok = h
        .get("/api/account/me", &[(name, &value), ("x-user-id", "root")])
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(json_body(&ok)["headers"]["x-user-id"], "alice");

    assert_error(
        &h.get("/api/account/me", &[]).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let other_key = Arc::new(JwtKey::from_bytes(&[1; 32]).unwrap());
    let forged =
        TokenIssuer::new(other_key, &h.service.config().jwt, h.clock.shared()).issue("alice");
    for bad in [
        format!("Bearer {forged}"),
        "Bearer not.a.token".to_owned(),
        "Basic YWxpY2U6cHc=".to_owned(),
        format!("Bearer {}x", h.issuer.issue("alice")),
    ] {
        let refused = h.get("/api/account/me", &[("authorization", &bad)]).await;
        assert_error(&refused, StatusCode::UNAUTHORIZED, "unauthorized");
        assert!(refused.headers.contains_key("www-authenticate"));
    }
    assert_eq!(
        h.hits("users").of("/me"),
        1,
        "only the good token reached the upstream"
    );
}

#[tokio::test]
async fn a_token_expires_on_the_injected_clock_after_its_leeway() {
    let h = Harness::start(config(), &["users"]).await;
    let (name, value) = h.bearer("bob");
    let jwt = &h.service.config().jwt;
    assert_eq!(
        h.get("/api/account/a", &[(name, &value)]).await.status,
        StatusCode::OK
    );
    h.clock
        .advance(jwt.token_ttl + jwt.leeway - Duration::from_secs(1));
    assert_eq!(
        h.get("/api/account/a", &[(name, &value)]).await.status,
        StatusCode::OK
    );
    h.clock.advance(Duration::from_secs(1));
    let expired = h.get("/api/account/a", &[(name, &value)]).await;
    assert_error(&expired, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(
        json_body(&expired)["error"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    // A token whose `nbf` is ahead of the leeway is not valid yet.
    let mut claims = h.issuer.claims_for("carol");
    claims.nbf = Some(claims.iat + 3600);
    let early = format!("Bearer {}", h.issuer.issue_token(&claims));
    let refused = h.get("/api/account/a", &[("authorization", &early)]).await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn api_keys_identify_machine_clients() {
    let h = Harness::start(config(), &["users"]).await;
    let key = format!("encoder.{SECRET}");
    let ok = h.get("/api/account/jobs", &[("x-api-key", &key)]).await;
    assert_eq!(ok.status, StatusCode::OK);
    let seen = &json_body(&ok)["headers"];
    assert_eq!(seen["x-client-id"], "encoder");
    assert!(
        seen.get("x-api-key").is_none(),
        "the secret stays at the gateway"
    );
    assert!(seen.get("x-user-id").is_none());
    for bad in [
        format!("encoder.{SECRET}!"),
        format!("other.{SECRET}"),
        SECRET.to_owned(),
    ] {
        let refused = h.get("/api/account/jobs", &[("x-api-key", &bad)]).await;
        assert_error(&refused, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let (name, value) = h.bearer("alice");
    let both = h
        .get("/api/account/jobs", &[(name, &value), ("x-api-key", &key)])
        .await;
    assert_error(&both, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn optional_routes_take_anonymous_callers_but_not_bad_tokens() {
    let h = Harness::start(config(), &["users"]).await;
    let anonymous = h.get("/api/catalog/titles", &[("x-user-id", "root")]).await;
    assert_eq!(anonymous.status, StatusCode::OK);
    assert!(json_body(&anonymous)["headers"].get("x-user-id").is_none());
    let (name, value) = h.bearer("dave");
    let known = h.get("/api/catalog/titles", &[(name, &value)]).await;
    assert_eq!(json_body(&known)["headers"]["x-user-id"], "dave");
    let bad = h
        .get("/api/catalog/titles", &[("authorization", "Bearer junk")])
        .await;
    assert_error(&bad, StatusCode::UNAUTHORIZED, "unauthorized");

    // `none`: credentials are not read at all, and no identity goes upstream.
    let login = h
        .get(
            "/api/login/start",
            &[("authorization", "Bearer junk"), ("x-user-id", "root")],
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    let seen = &json_body(&login)["headers"];
    assert!(seen.get("x-user-id").is_none());
    assert_eq!(seen["authorization"], "Bearer junk", "passed on, unread");
    let admin = h.admin_route("account").await;
    assert_eq!(admin["refused"], 0);
}
