//! The pipeline with the real ffmpeg (Debian's `ffmpeg` package; `.ci/run`
//! installs it, and under CI a missing ffmpeg fails these tests): the test
//! pattern and a clip without audio encode into renditions ffprobe reads at the
//! expected resolutions; a file ffmpeg cannot read is refused naming it, with
//! nothing written.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use casebook_kit::clock::ManualClock;
use casebook_kit::http_client::HttpClient;
use casebook_netflix::config::{EncoderChoice, NetflixConfig};
use casebook_netflix::origin::key::TitleId;
use casebook_netflix::origin::store::Origin;
use casebook_netflix::pipeline::encode::Source;
use casebook_netflix::pipeline::progress::Progress;
use casebook_netflix::pipeline::{IngestError, PipelineService};
use casebook_testkit::{DEADLINE, eventually, peer_program};
use http::{HeaderMap, Method};
use support::{Recording, Running, pipeline};

const INSTALL: &str = "apt-get install ffmpeg";

fn ffmpeg_config() -> Option<NetflixConfig> {
    let ffmpeg = peer_program("ffmpeg", INSTALL)?;
    let ffprobe = peer_program("ffprobe", INSTALL)?;
    Some(NetflixConfig {
        encoder: EncoderChoice::Ffmpeg,
        ffmpeg: Some(ffmpeg),
        ffprobe: Some(ffprobe),
        // The fastest x264 preset: these tests check structure, not quality.
        x264_preset: "ultrafast".into(),
        sample_title: false,
        ..NetflixConfig::default()
    })
}

/// What ffprobe reads from a playlist: (codec, width, height) per stream.
fn probe(ffprobe: &Path, playlist: &Path) -> Vec<(String, u32, u32)> {
    let output = Command::new(ffprobe)
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "json",
        ])
        .arg(playlist)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ffprobe {}: {}",
        playlist.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    json["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_name"].as_str().unwrap_or("").to_owned(),
                s["width"].as_u64().unwrap_or(0) as u32,
                s["height"].as_u64().unwrap_or(0) as u32,
            )
        })
        .collect()
}

fn assert_renditions(ffprobe: &Path, title_dir: &Path, expected: &[(&str, u32, u32)]) {
    for (name, width, height) in expected {
        let streams = probe(ffprobe, &title_dir.join(name).join("index.m3u8"));
        assert!(
            streams.contains(&("h264".into(), *width, *height)),
            "{name}: {streams:?}"
        );
        assert!(streams.iter().any(|s| s.0 == "aac"), "{name}: {streams:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_pattern_and_a_silent_clip_encode_into_readable_renditions() {
    let Some(config) = ffmpeg_config() else {
        return;
    };
    let ffprobe = config.ffprobe.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::local(&dir.path().join("origin")).unwrap();
    let p = pipeline(origin.clone(), config.clone(), &dir.path().join("work"));

    // The sample's source: 1280×720, so no 1080p rendition (no upscaling).
    let progress = Progress::default();
    let entry = p
        .ingest(
            &Source::TestPattern {
                duration: Duration::from_secs(5),
            },
            &TitleId::parse("pattern").unwrap(),
            "Pattern",
            &progress,
        )
        .await
        .unwrap();
    assert_eq!(entry.encoder, "ffmpeg");
    assert_eq!((entry.duration_secs.round(), entry.segment_secs), (5.0, 4));
    let names: Vec<&str> = entry.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["720p", "480p", "360p"]);
    assert_renditions(
        &ffprobe,
        &dir.path().join("origin/titles/pattern"),
        &[("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360)],
    );

    // A 4:3 clip with no audio track: renditions keep its shape and get silent AAC.
    let clip = dir.path().join("silent.mkv");
    let made = Command::new(config.ffmpeg.as_ref().unwrap())
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=640x480:rate=25",
            "-t",
            "3",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(made.success());
    let entry = p
        .ingest(
            &Source::file(&clip),
            &TitleId::parse("silent").unwrap(),
            "Silent",
            &Progress::default(),
        )
        .await
        .unwrap();
    let shapes: Vec<(u32, u32)> = entry
        .renditions
        .iter()
        .map(|r| (r.width, r.height))
        .collect();
    assert_eq!(shapes, [(960, 720), (640, 480), (480, 360)]);
    assert_renditions(
        &ffprobe,
        &dir.path().join("origin/titles/silent"),
        &[("720p", 960, 720), ("480p", 640, 480), ("360p", 480, 360)],
    );
    assert_eq!(origin.catalog().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_ffmpeg_cannot_read_is_refused_naming_it_and_nothing_is_written() {
    let Some(config) = ffmpeg_config() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Recording::new(None);
    let p = pipeline(store.origin(), config.clone(), &dir.path().join("work"));
    let junk = dir.path().join("holiday.mp4");
    std::fs::write(&junk, vec![0x5a; 50_000]).unwrap();
    let err = p
        .ingest(
            &Source::file(&junk),
            &TitleId::parse("holiday").unwrap(),
            "Holiday",
            &Progress::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, IngestError::Source(_)), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("ffmpeg cannot read") && message.contains("holiday.mp4"),
        "{message}"
    );
    assert!(store.puts.lock().is_empty());

    // Through the API: the job fails, its status naming the upload.
    let service = PipelineService::new(config, store.origin(), dir.path().to_owned());
    let running = Running::start(Arc::new(service), dir.path(), ManualClock::new().shared()).await;
    let response = HttpClient::default()
        .send(
            Method::POST,
            &running.url("/v1/titles?name=Holiday"),
            HeaderMap::new(),
            Bytes::from(vec![0x5a; 50_000]),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 202);
    let accepted: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    let url = running.url(accepted["status_url"].as_str().unwrap());
    eventually("the job fails", DEADLINE, || async {
        let job: serde_json::Value = HttpClient::default().get_json(&url).await.unwrap();
        assert_ne!(job["state"], "done", "{job}");
        job["state"] == "failed"
    })
    .await;
    let job: serde_json::Value = HttpClient::default().get_json(&url).await.unwrap();
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("ffmpeg cannot read the upload of `Holiday`"),
        "{error}"
    );
    assert!(store.puts.lock().is_empty());
    assert!(store.origin().catalog().await.unwrap().is_empty());
}
