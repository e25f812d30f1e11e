//! The pipeline service over HTTP (uploads, jobs) and the sample title at start.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use casebook_kit::clock::ManualClock;
use casebook_kit::http_client::HttpClient;
use casebook_netflix::config::NetflixConfig;
use casebook_netflix::origin::OriginService;
use casebook_netflix::origin::key::TitleId;
use casebook_netflix::pipeline::PipelineService;
use casebook_netflix::pipeline::sample::{self, SAMPLE_ID};
use casebook_testkit::{DEADLINE, eventually};
use http::{HeaderMap, Method, StatusCode};
use support::{Recording, Running, pipeline, synthetic_config};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn post(url: &str, body: Vec<u8>) -> (StatusCode, serde_json::Value, HeaderMap) {
    let response = HttpClient::default()
        .send(Method::POST, url, HeaderMap::new(), Bytes::from(body))
        .await
        .unwrap();
    let json = serde_json::from_slice(&response.body).unwrap_or_default();
    (response.status, json, response.headers)
}

async fn get(url: &str) -> (StatusCode, serde_json::Value) {
    let response = HttpClient::default()
        .send(Method::GET, url, HeaderMap::new(), Bytes::new())
        .await
        .unwrap();
    (
        response.status,
        serde_json::from_slice(&response.body).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_becomes_a_job_and_then_a_listed_title() {
    let dir = tempfile::tempdir().unwrap();
    let store = Recording::new(None);
    let config = NetflixConfig {
        max_upload_bytes: 1 << 20,
        ..synthetic_config()
    };
    let service = PipelineService::new(config, store.origin(), dir.path().to_owned());
    let p = Running::start(Arc::new(service), dir.path(), ManualClock::new().shared()).await;

    let (status, json, headers) =
        post(&p.url("/v1/titles?name=My%20Movie"), vec![7u8; 600_000]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    assert_eq!(json["title"], "my-movie");
    let status_url = json["status_url"].as_str().unwrap().to_owned();
    assert_eq!(headers["location"], status_url.as_str());
    eventually("the job is done", DEADLINE, || async {
        let (status, job) = get(&p.url(&status_url)).await;
        assert_eq!(status, StatusCode::OK);
        assert_ne!(job["state"], "failed", "{job}");
        job["state"] == "done"
    })
    .await;
    let (_, last) = get(&p.url(&status_url)).await;
    assert_eq!(last["progress"], 1.0);
    assert_eq!(last["entry"]["id"], "my-movie");
    assert_eq!(last["entry"]["name"], "My Movie");
    // 600 kB at the top rung's 5.128 Mbps: about 0.94 s, so one segment of 4 s.
    assert_eq!(last["entry"]["duration_secs"], 4.0);
    let listed = store.origin().catalog().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id.as_str(), "my-movie");
    let jobs = get(&p.url("/v1/jobs")).await.1;
    assert_eq!(jobs.as_array().unwrap().len(), 1);

    // The same name again: a conflict, before the body is read.
    let (status, json, _) = post(&p.url("/v1/titles?name=my%20movie"), vec![1; 10]).await;
    assert_eq!(
        (status, json["field"].as_str()),
        (StatusCode::CONFLICT, Some("name"))
    );
    // Bad names, an empty body, too large a body.
    for (query, body, expected, field) in [
        ("", vec![1; 10], StatusCode::BAD_REQUEST, Some("name")),
        ("?name=", vec![1; 10], StatusCode::BAD_REQUEST, Some("name")),
        (
            "?name=%21%21",
            vec![1; 10],
            StatusCode::BAD_REQUEST,
            Some("name"),
        ),
        ("?name=Empty", vec![], StatusCode::BAD_REQUEST, None),
    ] {
        let (status, json, _) = post(&p.url(&format!("/v1/titles{query}")), body).await;
        assert_eq!(status, expected, "{query}: {json}");
        assert!(json["error"].is_string(), "{query}: {json}");
        assert_eq!(json["field"].as_str(), field, "{query}");
    }
    // Too large by its Content-Length: refused before the body is read. Only the
    // head is sent: a client still writing a body the server will not read races
    // the server's close (a broken pipe, or a reset that discards the answer).
    let mut stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let head = format!(
        "POST /v1/titles?name=Big HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        p.addr,
        (1u64 << 20) + 1
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");

    // Too large without a Content-Length: refused as it streams.
    let mut stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let head = format!(
        "POST /v1/titles?name=Chunked HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        p.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..17 {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(&chunk);
        framed.extend_from_slice(b"\r\n");
        if stream.write_all(&framed).await.is_err() {
            break; // The server may answer and close before the last chunk.
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Nothing of the refused uploads is left: no job, no file, nothing stored.
    assert_eq!(get(&p.url("/v1/jobs")).await.1.as_array().unwrap().len(), 1);
    let uploads = std::fs::read_dir(p.platform.data_dir().join("netflix-pipeline"))
        .map(|_| {
            walk(p.platform.data_dir())
                .into_iter()
                .filter(|f| f.ends_with(".upload"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(uploads, 0);
    assert_eq!(store.origin().catalog().await.unwrap().len(), 1);

    let (status, json) = get(&p.url("/v1/jobs/job-nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(json["error"].is_string());
    let (status, _) = get(&p.url("/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, json) = get(&p.url("/v1/titles")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(json["error"].is_string());
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    out
}

fn sample_config() -> NetflixConfig {
    NetflixConfig {
        sample_title: true,
        sample_duration: Duration::from_secs(8),
        ..synthetic_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_is_made_at_start_while_the_services_serve() {
    let dir = tempfile::tempdir().unwrap();
    let store = Recording::new(None);
    let origin = OriginService::new(sample_config(), store.origin(), dir.path().to_owned());
    let o = Running::start(Arc::new(origin), dir.path(), ManualClock::new().shared()).await;
    // The origin answers at once, whether or not the sample is there yet.
    let (status, _) = get(&o.url("/v1/titles")).await;
    assert_eq!(status, StatusCode::OK);
    eventually("the sample is listed", DEADLINE, || async {
        let (_, titles) = get(&o.url("/v1/titles")).await;
        titles.as_array().is_some_and(|t| t.len() == 1)
    })
    .await;
    let (_, sample) = get(&o.url(&format!("/v1/titles/{SAMPLE_ID}"))).await;
    assert_eq!(sample["duration_secs"], 8.0);
    assert_eq!(sample["encoder"], "synthetic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_is_made_once_however_many_try() {
    let dir = tempfile::tempdir().unwrap();
    let store = Recording::new(None);
    let lock = sample::lock_path(dir.path());
    let a = pipeline(store.origin(), sample_config(), &dir.path().join("a"));
    let b = pipeline(store.origin(), sample_config(), &dir.path().join("b"));
    let (made_a, made_b) = tokio::join!(sample::ensure(&a, &lock), sample::ensure(&b, &lock));
    let made = [made_a.unwrap(), made_b.unwrap()];
    // One made it; the other found the lock taken or the catalog no longer empty.
    assert_eq!(made.iter().flatten().count(), 1);
    let entry_puts = || {
        store
            .puts
            .lock()
            .iter()
            .filter(|k| *k == "catalog/sample.json")
            .count()
    };
    assert_eq!(entry_puts(), 1);
    // A restart finds the catalog not empty: nothing to do.
    assert!(sample::ensure(&a, &lock).await.unwrap().is_none());
    assert_eq!(entry_puts(), 1);
    // Nor when the catalog holds another title only.
    let other = Recording::new(None);
    let c = pipeline(other.origin(), sample_config(), &dir.path().join("c"));
    c.ingest(
        &casebook_netflix::pipeline::encode::Source::TestPattern {
            duration: Duration::from_secs(4),
        },
        &TitleId::parse("other").unwrap(),
        "Other",
        &Default::default(),
    )
    .await
    .unwrap();
    assert!(sample::ensure(&c, &lock).await.unwrap().is_none());
    // And not at all when the configuration says so.
    let off = Recording::new(None);
    let d = pipeline(off.origin(), synthetic_config(), &dir.path().join("d"));
    assert!(sample::ensure(&d, &lock).await.unwrap().is_none());
    assert!(off.puts.lock().is_empty());
}
