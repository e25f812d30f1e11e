//! The `casebook` binary end to end: what `up` prints and serves, how it stops, and
//! how it refuses bad configuration.

mod support;

use support::{admin_call, casebook, control_url};

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command};

use casebook_kit::http_client::HttpClient;

use casebook_testkit::Reaped;

/// Starts `casebook up` on a free control port and returns it with its URL and token.
fn start_up(
    data_dir: &std::path::Path,
) -> (Reaped, String, String, BufReader<std::process::ChildStdout>) {
    let mut child = Reaped(
        casebook(data_dir)
            .args(["--control-port", "0", "up"])
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let (url, token) = control_url(&first);
    (child, url, token, stdout)
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn up_prints_the_control_plane_url_first_serves_the_api_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, token, mut stdout) = start_up(dir.path());
    let client = HttpClient::default();

    let health: serde_json::Value = client.get_json(&format!("{url}/health")).await.unwrap();
    assert_eq!(health["status"], "up");
    assert_eq!(health["service"], "control");

    let topology: serde_json::Value = client
        .get_json(&format!("{url}/api/topology"))
        .await
        .unwrap();
    let regions: Vec<&str> = topology["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(regions, ["us-east", "eu-west", "ap-south"]);

    let instances: serde_json::Value = client
        .get_json(&format!("{url}/api/instances"))
        .await
        .unwrap();
    let by_service = |service: &str| {
        instances
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["service"] == service)
            .unwrap_or_else(|| panic!("no {service} instance in {instances}"))
            .clone()
    };
    assert_eq!(by_service("control")["state"], "running");
    let chat = by_service("chat");
    assert_eq!(chat["state"], "running");
    // The chat node speaks XMPP on its (free, test-chosen) port.
    let chat_addr: std::net::SocketAddr = chat["address"].as_str().unwrap().parse().unwrap();
    assert_ne!(chat_addr.port(), 5222, "tests never take the real port");
    let mut xmpp = tokio::net::TcpStream::connect(chat_addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut xmpp,
        b"<stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    while !String::from_utf8_lossy(&answer).contains("</stream:features>") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            tokio::io::AsyncReadExt::read(&mut xmpp, &mut buf),
        )
        .await
        .expect("the chat node answers")
        .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&answer).contains("SCRAM-SHA-256"));
    // The RESP geo port answers Redis commands on its (free) port.
    let resp = by_service("geo-resp");
    assert_eq!(resp["state"], "running");
    let resp_addr: std::net::SocketAddr = resp["address"].as_str().unwrap().parse().unwrap();
    assert_ne!(resp_addr.port(), 6380, "tests never take the real port");
    let mut redis = tokio::net::TcpStream::connect(resp_addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut redis,
        b"GEOADD k 13.361389 38.115556 Palermo\r\nGEOHASH k Palermo\r\n",
    )
    .await
    .unwrap();
    let mut reply = Vec::new();
    while !reply.ends_with(b"sqc8b49rny0\r\n") {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            tokio::io::AsyncReadExt::read(&mut redis, &mut buf),
        )
        .await
        .expect("the RESP port answers")
        .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&buf[..n]);
    }
    assert_eq!(reply, b":1\r\n*1\r\n$11\r\nsqc8b49rny0\r\n");
    // The Uber HTTP API serves its city view on its (free) port.
    // The replica of the first region, where the RESP port runs too.
    let uber = instances
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["service"] == "uber" && i["region"] == "us-east")
        .unwrap_or_else(|| panic!("no us-east uber replica in {instances}"))
        .clone();
    assert_eq!(uber["state"], "running");
    let uber_addr: std::net::SocketAddr = uber["address"].as_str().unwrap().parse().unwrap();
    assert_ne!(uber_addr.port(), 8090, "tests never take the real port");
    let city: serde_json::Value = client
        .get_json(&format!("http://{uber_addr}/v1/city"))
        .await
        .unwrap();
    assert_eq!(city["city"], "sf");
    // Surge pricing is its own service, on its (free) port: a quiet cell is 1.0.
    let pricing = by_service("uber-pricing");
    assert_eq!(pricing["state"], "running");
    let pricing_addr: std::net::SocketAddr = pricing["address"].as_str().unwrap().parse().unwrap();
    assert_ne!(pricing_addr.port(), 8091, "tests never take the real port");
    let surge: serde_json::Value = client
        .get_json(&format!(
            "http://{pricing_addr}/v1/multiplier?lat=37.7749&lon=-122.4194"
        ))
        .await
        .unwrap();
    assert_eq!(surge["multiplier"], 1.0, "{surge}");
    // The API was handed pricing's real (free) port by `up`: its quote is a real
    // answer, not the fallback it would give calling the default :8091.
    let quote: serde_json::Value = client
        .json(
            http::Method::POST,
            &format!("http://{uber_addr}/v1/quote"),
            &serde_json::json!({
                "pickup": {"lat": 37.7749, "lng": -122.4194},
                "dropoff": {"lat": 37.7849, "lng": -122.4094},
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        (quote["multiplier"].clone(), quote["fallback"].clone()),
        (serde_json::json!(1.0), serde_json::json!(false)),
        "{quote}"
    );
    // The RESP port's `drivers` key is the API's driver index: a driver pinged
    // over HTTP is a member there, at Redis's rounding of its position.
    let pinged: serde_json::Value = client
        .json(
            http::Method::POST,
            &format!("http://{uber_addr}/v1/drivers/77/location"),
            // San Francisco: a us-east city (a ping elsewhere leaves this
            // region's index).
            &serde_json::json!({"lat": 37.7749, "lon": -122.4194, "ts": 1, "status": "available"}),
        )
        .await
        .unwrap();
    assert_eq!(pinged["accepted"], 1, "{pinged}");
    tokio::io::AsyncWriteExt::write_all(&mut redis, b"GEOHASH drivers 77 78\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    // Redis 7.0's answer for the same point (GEOADD + GEOHASH on :6379).
    let expected = b"*2\r\n$11\r\n9q8yyk8ytp0\r\n$-1\r\n";
    while reply.len() < expected.len() {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            tokio::io::AsyncReadExt::read(&mut redis, &mut buf),
        )
        .await
        .expect("the RESP port answers")
        .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&buf[..n]);
    }
    assert_eq!(reply, expected, "{}", String::from_utf8_lossy(&reply));
    assert!(
        String::from_utf8_lossy(&answer).contains("urn:ietf:params:xml:ns:xmpp-tls"),
        "STARTTLS is offered"
    );
    // Direct TLS and WebSocket listen too, on free ports as well.
    for (name, default_port) in [("xmpp-tls", 5223), ("xmpp-websocket", 5280)] {
        let address: std::net::SocketAddr = chat["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("{name} published: {chat}"))["address"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_ne!(
            address.port(),
            default_port,
            "tests never take the real port"
        );
        tokio::net::TcpStream::connect(address).await.unwrap();
    }
    assert!(
        dir.path().join("control").is_dir(),
        "state lives under --data-dir"
    );

    // The control plane registers with its own discovery once its address is known.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let apps: serde_json::Value = client
            .get_json(&format!("{url}/api/discovery/apps/control"))
            .await
            .unwrap();
        if apps["instances"][0]["instance"]["instance_id"] == "control-us-east-a-1" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never registered: {apps}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // The process pushes its own metrics to the control plane's store every second.
    loop {
        let series: serde_json::Value = client
            .get_json(&format!(
                "{url}/api/metrics/series?name=http_requests_total"
            ))
            .await
            .unwrap();
        if series["total"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no metrics pushed: {series}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let err = client
        .get_json::<serde_json::Value>(&format!(
            "{url}/api/metrics/query?name=http_requests_total&fn=median"
        ))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::BAD_REQUEST));
    assert!(err.to_string().contains("`median`"), "{err}");

    let index = client
        .call::<()>(http::Method::GET, &format!("{url}/"), None)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&index.body).contains("control-us-east-a-1"));

    // State-changing calls need the token the first line carries.
    let instances_url = format!("{url}/api/instances");
    let start = |service: &str| {
        admin_call(
            &token,
            http::Method::POST,
            &instances_url,
            Some(serde_json::json!({ "service": service })),
        )
    };
    assert_eq!(start("nope").await.status, http::StatusCode::BAD_REQUEST);
    assert_eq!(start("control").await.status, http::StatusCode::CONFLICT);
    let err = client
        .json::<_, serde_json::Value>(
            http::Method::POST,
            &format!("{url}/api/instances"),
            &serde_json::json!({ "service": "nope" }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::UNAUTHORIZED));
    // The token file is the installation's: created 0600 beside the state.
    let token_file = dir.path().join("control.token");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&token_file).unwrap().permissions()
        ) & 0o777,
        0o600
    );

    terminate(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful stop exits 0, got {status}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    // The control plane; three chat nodes; the RESP geo port, pricing, and one Uber
    // API replica per region (three: regions gossip driver state to each other);
    // three cart replicas and the amazon API; the netflix origin, pipeline and
    // playback, a regional edge and an ISP cache per region, then its service
    // plane: users, catalog, recs, billing and the gateway.
    assert!(rest.contains("stopped 27 instance(s)"), "{rest}");
}

#[test]
fn a_taken_control_port_is_named_with_the_flag_that_changes_it() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let output = casebook(dir.path())
        .args(["--control-port", &port.to_string(), "up"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("port {port} is taken")),
        "{stderr}"
    );
    assert!(stderr.contains("--control-port"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("control plane:"),
        "nothing claims to be running"
    );
}

#[test]
fn a_bad_config_names_the_file_and_key_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("casebook.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(b"[control]\nport = 99999\n")
        .unwrap();
    let output = casebook(dir.path())
        .arg("--config")
        .arg(&path)
        .arg("up")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains("key `control.port`"), "{stderr}");
    assert!(stderr.contains("u16"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn an_environment_override_reaches_the_effective_config() {
    let dir = tempfile::tempdir().unwrap();
    let output = casebook(dir.path())
        .env("CASEBOOK_SHUTDOWN__DRAIN_TIMEOUT", "3s")
        .arg("config")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("drain_timeout = \"3s\""), "{stdout}");
}

#[test]
fn serving_an_unknown_service_lists_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let output = casebook(dir.path())
        .args(["serve", "nope"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "unknown service `nope` (known: control, chat, uber-pricing, uber, geo-resp, \
             amazon-cart, amazon, netflix-origin, netflix-pipeline, netflix-edge, netflix-isp, \
             netflix-playback, netflix-users, netflix-catalog, netflix-recs, netflix-billing, \
             netflix-gateway)"
        ),
        "{stderr}"
    );
}
