//! The Netflix service plane end to end through `casebook up --case netflix`: a user
//! made with `casebook netflix add-user` logs in through the gateway, sees a home
//! page, searches, is refused a play until subscribed, subscribes once however often
//! the request is retried, plays (a signed manifest the edge serves), and the
//! heartbeat lands in the viewing history. Then the recommendation service is
//! killed: home pages keep coming from the gateway's fallback, flagged, and the
//! route's breaker opens in `/admin/routes`.

mod support;

use casebook_kit::http_client::{HttpClient, HttpResponse, bearer};
use casebook_testkit::{DEADLINE, eventually};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use support::{Up, admin_call, casebook};

const EMAIL: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery staple";

async fn call(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
    extra: &[(&'static str, &str)],
) -> HttpResponse {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        headers.insert(header::AUTHORIZATION, bearer(token).unwrap());
    }
    if body.is_some() {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    for (name, value) in extra {
        headers.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    let body = body.map_or_else(Vec::new, |b| serde_json::to_vec(&b).unwrap());
    HttpClient::default()
        .send(method, url, headers, body.into())
        .await
        .unwrap()
}

fn json_of(response: &HttpResponse) -> Value {
    serde_json::from_slice(&response.body).unwrap_or_else(|e| {
        panic!(
            "{} is not JSON ({e}): {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_logs_in_browses_subscribes_and_plays_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let added = casebook(dir.path())
        .args(["netflix", "add-user", EMAIL, PASSWORD])
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "add-user: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    let up = Up::builder(dir.path())
        .up_arg("--case")
        .up_arg("netflix")
        .start();
    let gateway = format!("http://{}", up.address_of("netflix-gateway").await);

    // Credentials: a wrong password and a missing token are refused alike.
    let wrong = call(
        Method::POST,
        &format!("{gateway}/api/v1/login"),
        None,
        Some(json!({ "email": EMAIL, "password": "not the password" })),
        &[],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let anonymous = call(
        Method::GET,
        &format!("{gateway}/api/v1/home"),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let login = call(
        Method::POST,
        &format!("{gateway}/api/v1/login"),
        None,
        Some(json!({ "email": EMAIL, "password": PASSWORD })),
        &[],
    )
    .await;
    assert_eq!(login.status, StatusCode::OK, "{}", json_of(&login));
    let token = json_of(&login)["token"].as_str().unwrap().to_owned();
    let token = Some(token.as_str());
    let unknown = call(
        Method::GET,
        &format!("{gateway}/api/v2/nothing"),
        token,
        None,
        &[],
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // Home rows and search, once the index is built from the catalog.
    let home = call(
        Method::GET,
        &format!("{gateway}/api/v1/home"),
        token,
        None,
        &[],
    )
    .await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(!json_of(&home)["rows"].as_array().unwrap().is_empty());
    let found = std::sync::Mutex::new(Value::Null);
    eventually("search answers from the index", DEADLINE * 4, || async {
        let answer = call(
            Method::GET,
            &format!("{gateway}/api/v1/search?q=sample"),
            token,
            None,
            &[],
        )
        .await;
        let ok = answer.status == StatusCode::OK
            && !answer.headers.contains_key("x-gateway-fallback")
            && json_of(&answer)["results"]
                .as_array()
                .is_some_and(|r| !r.is_empty());
        *found.lock().unwrap() = json_of(&answer);
        ok
    })
    .await;
    let injection = call(
        Method::GET,
        &format!("{gateway}/api/v1/search?q=%27%20OR%201%3D1%20--"),
        token,
        None,
        &[],
    )
    .await;
    assert_eq!(injection.status, StatusCode::OK, "{}", json_of(&injection));

    // The sample title (made at first start) is playable, but not before subscribing.
    let play_body = json!({ "title": "sample" });
    eventually(
        "the sample title is in the catalog",
        DEADLINE * 4,
        || async {
            let answer = call(
                Method::POST,
                &format!("{gateway}/api/v1/playback"),
                token,
                Some(play_body.clone()),
                &[],
            )
            .await;
            answer.status == StatusCode::PAYMENT_REQUIRED
        },
    )
    .await;

    // Subscribing: the key is required, and a retry replays the first answer.
    let subscribe_url = format!("{gateway}/api/v1/billing/subscribe");
    let subscribe = |key: Option<&'static str>| {
        let url = subscribe_url.clone();
        let extra: Vec<(&'static str, &str)> = key
            .map(|k| vec![("idempotency-key", k)])
            .unwrap_or_default();
        async move {
            call(
                Method::POST,
                &url,
                token,
                Some(json!({ "plan": "standard" })),
                &extra,
            )
            .await
        }
    };
    assert_eq!(subscribe(None).await.status, StatusCode::BAD_REQUEST);
    let first = subscribe(Some("e2e-subscribe-1")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", json_of(&first));
    let again = subscribe(Some("e2e-subscribe-1")).await;
    assert_eq!(again.status, first.status);
    assert_eq!(again.body, first.body, "a retry replays the first answer");
    assert!(again.headers.contains_key("idempotent-replayed"));
    let invoices = call(
        Method::GET,
        &format!("{gateway}/api/v1/billing/invoices"),
        token,
        None,
        &[],
    )
    .await;
    assert_eq!(invoices.status, StatusCode::OK);
    assert_eq!(
        json_of(&invoices)["invoices"].as_array().unwrap().len(),
        1,
        "one charge however many retries: {}",
        json_of(&invoices)
    );

    // Now the play is granted (entitlement is cached briefly, so poll) and the
    // manifest it signs is served by the edge.
    let grant = std::sync::Mutex::new(Value::Null);
    eventually("the subscribed user may play", DEADLINE * 2, || async {
        let answer = call(
            Method::POST,
            &format!("{gateway}/api/v1/playback"),
            token,
            Some(play_body.clone()),
            &[],
        )
        .await;
        let ok = answer.status == StatusCode::OK;
        if ok {
            *grant.lock().unwrap() = json_of(&answer);
        }
        ok
    })
    .await;
    let grant = grant.lock().unwrap().clone();
    let manifest = grant["manifest_url"].as_str().unwrap();
    let playlist = call(Method::GET, manifest, None, None, &[]).await;
    assert_eq!(playlist.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&playlist.body).starts_with("#EXTM3U"));

    // A heartbeat through the gateway becomes viewing history.
    let session = grant["session"].as_str().unwrap();
    let events = call(
        Method::POST,
        &format!("{gateway}/api/v1/playback/{session}/events"),
        token,
        Some(json!({ "events": [{
            "type": "heartbeat", "position_ms": 12_000, "buffer_ms": 20_000, "bitrate_bps": 800_000
        }] })),
        &[],
    )
    .await;
    assert_eq!(events.status, StatusCode::ACCEPTED);
    eventually("the heartbeat is in the history", DEADLINE * 2, || async {
        let history = call(
            Method::GET,
            &format!("{gateway}/api/v1/history"),
            token,
            None,
            &[],
        )
        .await;
        history.status == StatusCode::OK
            && json_of(&history)["items"]
                .as_array()
                .is_some_and(|items| items.iter().any(|i| i["title"] == "sample"))
    })
    .await;

    // The recommendation service dies: home pages come from the gateway's fallback,
    // flagged, and the route's breaker opens.
    let instances: Value = HttpClient::default()
        .get_json(&format!("{}/api/instances", up.url))
        .await
        .unwrap();
    let recs = instances
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["service"] == "netflix-recs")
        .unwrap()["instance_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let killed = admin_call(
        &up.token,
        Method::POST,
        &format!("{}/api/instances/{recs}/kill", up.url),
        None,
    )
    .await;
    assert!(killed.status.is_success(), "kill: {}", killed.status);
    for _ in 0..30 {
        let home = call(
            Method::GET,
            &format!("{gateway}/api/v1/home"),
            token,
            None,
            &[],
        )
        .await;
        assert_eq!(home.status, StatusCode::OK, "the fallback answers");
        assert!(home.headers.contains_key("x-gateway-fallback"));
        assert_eq!(json_of(&home)["fallback"], true);
        assert!(!json_of(&home)["rows"].as_array().unwrap().is_empty());
    }
    eventually("the home route's breaker opens", DEADLINE * 2, || async {
        let _ = call(
            Method::GET,
            &format!("{gateway}/api/v1/home"),
            token,
            None,
            &[],
        )
        .await;
        let routes: Value = HttpClient::default()
            .get_json(&format!("{gateway}/admin/routes"))
            .await
            .unwrap();
        routes["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "home" && r["breaker"]["state"] == "open")
    })
    .await;
}
