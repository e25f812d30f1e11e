//! The streaming path end to end through `casebook up --case netflix`: the sample
//! title made at first start is listed, `POST /v1/playback` answers a signed
//! manifest on an edge, the edge refuses the same URL unsigned or tampered, and
//! ffmpeg decodes the whole title through the CDN from the signed master playlist
//! (installed by `.ci/run`; under CI a missing ffmpeg fails the test).

mod support;

use casebook_kit::http_client::HttpClient;
use casebook_testkit::{DEADLINE, eventually, peer_program};
use support::Up;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_title_plays_through_an_edge_from_a_signed_manifest() {
    let Some(ffmpeg) = peer_program("ffmpeg", "apt-get install ffmpeg") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let up = Up::builder(dir.path())
        .up_arg("--case")
        .up_arg("netflix")
        .env("CASEBOOK_NETFLIX__ENCODER", "ffmpeg")
        .start();
    let playback = up.address_of("netflix-playback").await;
    let client = HttpClient::default();
    // The sample is encoded in the background at the first start.
    let found = std::sync::Mutex::new(None::<String>);
    eventually("the sample title is listed", DEADLINE * 4, || async {
        let Ok(listed) = client
            .get_json::<serde_json::Value>(&format!("http://{playback}/v1/titles"))
            .await
        else {
            return false;
        };
        let id = listed["titles"]
            .as_array()
            .and_then(|t| t.first())
            .and_then(|t| t["id"].as_str())
            .map(str::to_owned);
        let listed = id.is_some();
        *found.lock().unwrap() = id;
        listed
    })
    .await;
    let title = found.lock().unwrap().clone().unwrap();
    let session: serde_json::Value = client
        .json(
            http::Method::POST,
            &format!("http://{playback}/v1/playback"),
            &serde_json::json!({ "title": title }),
        )
        .await
        .unwrap();
    let manifest = session["manifest_url"].as_str().unwrap().to_owned();
    assert!(
        manifest.contains("?exp=") && manifest.contains("&sig="),
        "{manifest}"
    );

    // The edge refuses the same object unsigned, and with another object's signature.
    let unsigned = manifest.split('?').next().unwrap();
    let refused = client
        .send(
            http::Method::GET,
            unsigned,
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, http::StatusCode::FORBIDDEN);
    let other = manifest.replace("master.m3u8", "master2.m3u8");
    let refused = client
        .send(
            http::Method::GET,
            &other,
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, http::StatusCode::FORBIDDEN);

    // ffmpeg reads the signed master, every rewritten (signed) media playlist and
    // segment through the CDN, and decodes the title.
    let decoded = tokio::process::Command::new(&ffmpeg)
        .args([
            "-v", "error", "-i", &manifest, "-map", "0:v:0", "-f", "null", "-",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        decoded.status.success(),
        "ffmpeg could not decode {manifest}: {}",
        String::from_utf8_lossy(&decoded.stderr)
    );
}
