//! `casebook netflix ingest FILE --title NAME`, the binary as a child process:
//! the synthetic encoder anywhere; with ffmpeg (installed by `.ci/run`; under CI a
//! missing ffmpeg fails), a generated 6-second clip whose every rendition ffprobe
//! reads at the expected resolution.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use casebook_netflix::origin::catalog::CatalogEntry;
use casebook_netflix::pipeline::hls::{parse_master, parse_media};
use casebook_testkit::peer_program;
use support::casebook;

fn ingest(data: &Path, file: &Path, title: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = casebook(data);
    cmd.args(["netflix", "ingest"])
        .arg(file)
        .args(["--title", title, "--no-progress"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn store(data: &Path) -> std::path::PathBuf {
    data.join("netflix").join("origin")
}

const SYNTHETIC: &[(&str, &str)] = &[("CASEBOOK_NETFLIX__ENCODER", "synthetic")];

#[test]
fn ingest_publishes_a_title_and_refuses_what_it_cannot_take() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("movie.mov");
    // 2.6 MB at the top rung's 5.128 Mbps: 4.06 s, so two segments.
    std::fs::write(&file, vec![1u8; 2_600_000]).unwrap();
    let output = ingest(&data, &file, "My Movie", SYNTHETIC);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("published `my-movie` (My Movie): 4 renditions"),
        "{stdout}"
    );
    // Not a terminal: the phases are lines on stderr (which ones a fast run shows
    // depends on when the watcher looks; the first always).
    assert!(stderr.contains("phase: "), "{stderr}");

    let entry: CatalogEntry =
        serde_json::from_slice(&std::fs::read(store(&data).join("catalog/my-movie.json")).unwrap())
            .unwrap();
    assert_eq!(entry.encoder, "synthetic");
    let master =
        parse_master(&std::fs::read_to_string(store(&data).join(&entry.master_key)).unwrap())
            .unwrap();
    assert_eq!(master.variants.len(), 4);
    for variant in &master.variants {
        let media = parse_media(
            &std::fs::read_to_string(store(&data).join("titles/my-movie").join(&variant.uri))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(media.segments.len(), 2);
        assert!(media.ended);
    }

    // The same title again: refused, nothing changed.
    let before = std::fs::read(store(&data).join("catalog/my-movie.json")).unwrap();
    let output = ingest(&data, &file, "my movie", SYNTHETIC);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("title `my-movie` exists already"),
        "{}",
        text(&output).1
    );
    assert_eq!(
        std::fs::read(store(&data).join("catalog/my-movie.json")).unwrap(),
        before
    );

    // An empty file: refused naming it, nothing listed for it.
    let empty = dir.path().join("empty.mov");
    std::fs::write(&empty, b"").unwrap();
    let output = ingest(&data, &empty, "Empty", SYNTHETIC);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output).1;
    assert!(
        stderr.contains(&empty.display().to_string()) && stderr.contains("is empty"),
        "{stderr}"
    );
    assert!(!store(&data).join("catalog/empty.json").exists());
    assert!(!store(&data).join("titles/empty").exists());

    // A title without a letter or digit: a usage error.
    let output = ingest(&data, &file, "!!!", SYNTHETIC);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).1.contains("--title"), "{}", text(&output).1);
}

#[test]
fn with_ffmpeg_every_rendition_of_a_clip_is_readable_at_its_resolution() {
    let Some(ffmpeg) = peer_program("ffmpeg", "apt-get install ffmpeg") else {
        return;
    };
    let Some(ffprobe) = peer_program("ffprobe", "apt-get install ffmpeg") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clip = dir.path().join("clip.mp4");
    let made = Command::new(&ffmpeg)
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440", "-t", "6"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(made.success());
    // The default encoder (`auto`; the test support picks `synthetic`) finds
    // ffmpeg on the PATH.
    let output = ingest(
        &data,
        &clip,
        "Clip",
        &[
            ("CASEBOOK_NETFLIX__ENCODER", "auto"),
            ("CASEBOOK_NETFLIX__X264_PRESET", "ultrafast"),
        ],
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("encoded by ffmpeg"), "{stdout}");
    assert!(stderr.contains("phase: encoding"), "{stderr}");
    for (name, width, height) in [("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360)] {
        let playlist = store(&data)
            .join("titles/clip")
            .join(name)
            .join("index.m3u8");
        let probe = Command::new(&ffprobe)
            .args([
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=codec_name,width,height",
            ])
            .args(["-of", "csv=p=0"])
            .arg(&playlist)
            .output()
            .unwrap();
        assert!(
            probe.status.success(),
            "{}",
            String::from_utf8_lossy(&probe.stderr)
        );
        // HLS input lists its streams under a program too: the same line twice.
        let stdout = String::from_utf8_lossy(&probe.stdout);
        let first = stdout.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        assert_eq!(first, format!("h264,{width},{height}"), "{name}: {stdout}");
        let media = parse_media(&std::fs::read_to_string(&playlist).unwrap()).unwrap();
        let total: u64 = media.segments.iter().map(|s| s.duration_us).sum();
        assert!(
            (5_900_000..=6_100_000).contains(&total),
            "{name}: {total} µs"
        );
        assert_eq!(media.target_duration, 4);
    }
    assert!(
        !store(&data).join("titles/clip/1080p").exists(),
        "no upscaling"
    );

    // A file ffmpeg cannot read: refused naming it; nothing listed or left.
    let junk = dir.path().join("junk.mp4");
    std::fs::write(&junk, vec![0x42; 20_000]).unwrap();
    let output = ingest(
        &data,
        &junk,
        "Junk",
        &[("CASEBOOK_NETFLIX__ENCODER", "auto")],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output).1;
    assert!(
        stderr.contains("ffmpeg cannot read") && stderr.contains(&junk.display().to_string()),
        "{stderr}"
    );
    assert!(!store(&data).join("catalog/junk.json").exists());
    assert!(!store(&data).join("titles/junk").exists());
}
