//! The pipeline without HTTP: the synthetic encoder's sizes and playlists read
//! back, the publish order, and atomicity — a failed encode or publish leaves
//! nothing listed and nothing stored.

mod support;

use std::time::{Duration, SystemTime};

use casebook_kit::clock::ManualClock;
use casebook_netflix::origin::key::{ObjectKey, TitleId};
use casebook_netflix::origin::store::Origin;
use casebook_netflix::pipeline::encode::Source;
use casebook_netflix::pipeline::hls::{self, parse_master, parse_media};
use casebook_netflix::pipeline::ladder::{CODECS, default_ladder};
use casebook_netflix::pipeline::progress::{Phase, Progress};
use casebook_netflix::pipeline::synthetic::{SyntheticSegment, VARIATION_PERMILLE};
use casebook_netflix::pipeline::{IngestError, Pipeline};
use support::{Recording, pipeline, synthetic_config};

fn id(s: &str) -> TitleId {
    TitleId::parse(s).unwrap()
}

fn pattern(secs: u64) -> Source {
    Source::TestPattern {
        duration: Duration::from_secs(secs),
    }
}

async fn text(origin: &Origin, key: &str) -> String {
    let bytes = origin.read(&ObjectKey::parse(key).unwrap()).await.unwrap();
    String::from_utf8(bytes.unwrap_or_else(|| panic!("no {key}")).to_vec()).unwrap()
}

async fn everything(origin: &Origin) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for prefix in ["titles", "catalog"] {
        keys.extend(
            origin
                .list(prefix)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.location.to_string()),
        );
    }
    keys
}

#[tokio::test]
async fn synthetic_segments_have_exact_sizes_and_the_playlists_parse_back() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::local(&dir.path().join("origin")).unwrap();
    let pipeline = pipeline(origin.clone(), synthetic_config(), &dir.path().join("work"));
    let progress = Progress::default();
    let entry = pipeline
        .ingest(&pattern(10), &id("ten"), "Ten Seconds", &progress)
        .await
        .unwrap();
    assert_eq!(progress.phase(), Phase::Publishing);
    assert_eq!(
        progress.position().0,
        progress.position().1,
        "every object counted"
    );

    assert_eq!((entry.duration_secs, entry.segment_secs), (10.0, 4));
    assert_eq!(entry.encoder, "synthetic");
    assert_eq!(entry.master_key, "titles/ten/master.m3u8");
    let master = parse_master(&text(&origin, &entry.master_key).await).unwrap();
    let ladder = default_ladder();
    assert_eq!(master.variants.len(), ladder.len());
    assert_eq!(entry.renditions.len(), ladder.len());
    for ((variant, spec), info) in master.variants.iter().zip(&ladder).zip(&entry.renditions) {
        assert_eq!(variant.uri, format!("{}/index.m3u8", spec.name));
        assert_eq!(variant.codecs.as_deref(), Some(CODECS));
        let resolution = variant.resolution.unwrap();
        assert_eq!(resolution.height, spec.height);
        assert_eq!(
            resolution.width,
            spec.height * 16 / 9 + (spec.height * 16 / 9) % 2
        );
        assert_eq!(
            (info.width, info.height),
            (resolution.width, resolution.height)
        );
        assert_eq!(info.bandwidth_bps, variant.bandwidth);
        assert_eq!(Some(info.average_bandwidth_bps), variant.average_bandwidth);
        assert!(variant.bandwidth >= variant.average_bandwidth.unwrap());
        let total = spec.total_bps() as f64;
        assert!(
            (variant.bandwidth as f64 / total - 1.0).abs() <= 0.05,
            "{variant:?}"
        );

        let media =
            parse_media(&text(&origin, &format!("titles/ten/{}", variant.uri)).await).unwrap();
        assert_eq!(media.target_duration, 4);
        assert!(media.ended);
        assert_eq!(media.playlist_type, Some(hls::PlaylistType::Vod));
        let durations: Vec<u64> = media.segments.iter().map(|s| s.duration_us).collect();
        assert_eq!(durations, [4_000_000, 4_000_000, 2_000_000]);
        for (n, segment) in media.segments.iter().enumerate() {
            assert_eq!(segment.uri, format!("seg{n:05}.ts"));
            let key = format!("titles/ten/{}/{}", spec.name, segment.uri);
            let bytes = origin
                .read(&ObjectKey::parse(&key).unwrap())
                .await
                .unwrap()
                .unwrap();
            let expected = SyntheticSegment {
                title: "ten".into(),
                rendition: spec.clone(),
                index: n,
                duration_us: segment.duration_us,
            };
            assert_eq!(bytes.len() as u64, expected.size(), "{key}");
            let nominal = spec.total_bps() * segment.duration_us / 8_000_000;
            let low = nominal * (1000 - VARIATION_PERMILLE) / 1000 - 188;
            let high = nominal * (1000 + VARIATION_PERMILLE) / 1000;
            assert!(
                (low..=high).contains(&(bytes.len() as u64)),
                "{key}: {}",
                bytes.len()
            );
            assert_eq!(bytes.len() % 188, 0);
            assert!(bytes.chunks(188).all(|p| p[0] == 0x47), "{key}: sync bytes");
        }
    }
    assert_eq!(origin.catalog().await.unwrap(), [entry]);
}

#[tokio::test]
async fn publish_writes_segments_then_media_playlists_then_master_then_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = Recording::new(None);
    let pipeline = pipeline(store.origin(), synthetic_config(), dir.path());
    pipeline
        .ingest(&pattern(9), &id("order"), "Order", &Progress::default())
        .await
        .unwrap();
    let puts = store.puts.lock().clone();
    let kind = |key: &str| match key {
        k if k.ends_with(".ts") => 0,
        k if k.ends_with("/index.m3u8") => 1,
        k if k.ends_with("/master.m3u8") => 2,
        k if k.starts_with("catalog/") => 3,
        k => panic!("unexpected put {k}"),
    };
    let kinds: Vec<u8> = puts.iter().map(|k| kind(k)).collect();
    assert!(
        kinds.windows(2).all(|w| w[0] <= w[1]),
        "out of order: {puts:?}"
    );
    assert_eq!(kinds.iter().filter(|k| **k == 0).count(), 4 * 3);
    assert_eq!(kinds.iter().filter(|k| **k == 1).count(), 4);
    assert_eq!(
        &puts[puts.len() - 2..],
        ["titles/order/master.m3u8", "catalog/order.json"]
    );
}

#[tokio::test]
async fn a_publish_failing_at_any_put_leaves_nothing_stored() {
    let dir = tempfile::tempdir().unwrap();
    // How many puts a whole publish takes.
    let whole = Recording::new(None);
    pipeline(whole.origin(), synthetic_config(), dir.path())
        .ingest(&pattern(5), &id("t"), "T", &Progress::default())
        .await
        .unwrap();
    let puts = whole.puts.lock().len();
    assert_eq!(puts, 4 * 2 + 4 + 2);
    for fail_at in 0..puts {
        let store = Recording::new(Some(fail_at));
        let origin = store.origin();
        let pipeline = pipeline(origin.clone(), synthetic_config(), dir.path());
        let err = pipeline
            .ingest(&pattern(5), &id("t"), "T", &Progress::default())
            .await
            .unwrap_err();
        assert!(matches!(err, IngestError::Publish(_)), "{err}");
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert!(origin.catalog().await.unwrap().is_empty());
        assert!(origin.title(&id("t")).await.unwrap().is_none());
        assert_eq!(
            everything(&origin).await,
            Vec::<String>::new(),
            "failing put {fail_at}"
        );
    }
}

#[tokio::test]
async fn a_source_that_cannot_be_read_is_refused_naming_it_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Recording::new(None);
    let pipeline = pipeline(store.origin(), synthetic_config(), &dir.path().join("work"));
    let empty = dir.path().join("empty.mov");
    std::fs::write(&empty, b"").unwrap();
    let missing = dir.path().join("missing.mov");
    for (file, why) in [(&empty, "is empty"), (&missing, "cannot read")] {
        let err = pipeline
            .ingest(&Source::file(file), &id("x"), "X", &Progress::default())
            .await
            .unwrap_err();
        assert!(matches!(err, IngestError::Source(_)), "{err}");
        let message = err.to_string();
        assert!(
            message.contains(&file.display().to_string()) && message.contains(why),
            "{message}"
        );
    }
    assert!(store.puts.lock().is_empty());
    // The work directory is cleaned up after each attempt.
    assert_eq!(
        std::fs::read_dir(dir.path().join("work")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn a_title_in_the_catalog_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = Recording::new(None);
    let pipeline = pipeline(store.origin(), synthetic_config(), dir.path());
    pipeline
        .ingest(&pattern(4), &id("once"), "Once", &Progress::default())
        .await
        .unwrap();
    let before = store.puts.lock().len();
    let err = pipeline
        .ingest(&pattern(8), &id("once"), "Once", &Progress::default())
        .await
        .unwrap_err();
    assert!(matches!(err, IngestError::Exists(_)), "{err}");
    assert_eq!(store.puts.lock().len(), before);
}

#[tokio::test]
async fn leftovers_of_an_interrupted_publish_are_replaced_or_swept() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::local(&dir.path().join("origin")).unwrap();
    let junk = |k: &str| ObjectKey::parse(k).unwrap();
    // A publish killed after some segments: unlisted.
    origin
        .put(&junk("titles/again/720p/seg00007.ts"), "junk".into())
        .await
        .unwrap();
    origin
        .put(&junk("titles/gone/720p/seg00000.ts"), "junk".into())
        .await
        .unwrap();
    assert!(origin.catalog().await.unwrap().is_empty());

    let p = pipeline(origin.clone(), synthetic_config(), &dir.path().join("work"));
    p.ingest(&pattern(4), &id("again"), "Again", &Progress::default())
        .await
        .unwrap();
    assert!(
        origin
            .head(&junk("titles/again/720p/seg00007.ts"))
            .await
            .unwrap()
            .is_none()
    );

    // Sweep: younger than the grace period stays; older goes; listed stays.
    p.sweep_orphans().await;
    assert!(
        origin
            .head(&junk("titles/gone/720p/seg00000.ts"))
            .await
            .unwrap()
            .is_some()
    );
    let later = ManualClock::starting_at(SystemTime::now() + Duration::from_secs(7200));
    let p = Pipeline::new(
        origin.clone(),
        synthetic_config(),
        &dir.path().join("work"),
        later.shared(),
    )
    .unwrap();
    p.sweep_orphans().await;
    assert!(
        origin
            .head(&junk("titles/gone/720p/seg00000.ts"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(origin.catalog().await.unwrap().len(), 1);
    assert!(
        origin
            .head(&junk("titles/again/master.m3u8"))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn the_catalog_lists_only_titles_with_an_entry_and_a_master() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::local(dir.path()).unwrap();
    let p = pipeline(origin.clone(), synthetic_config(), &dir.path().join("work"));
    for name in ["whole", "no-master", "no-entry"] {
        p.ingest(&pattern(4), &id(name), name, &Progress::default())
            .await
            .unwrap();
    }
    origin
        .delete(&ObjectKey::parse("titles/no-master/master.m3u8").unwrap())
        .await
        .unwrap();
    origin
        .delete(&ObjectKey::parse("catalog/no-entry.json").unwrap())
        .await
        .unwrap();
    // An entry that does not parse is not listed either.
    origin
        .put(
            &ObjectKey::parse("catalog/garbled.json").unwrap(),
            "{".into(),
        )
        .await
        .unwrap();
    let listed: Vec<String> = origin
        .catalog()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id.to_string())
        .collect();
    assert_eq!(listed, ["whole"]);
    assert!(origin.title(&id("no-master")).await.unwrap().is_none());
    assert!(origin.title(&id("garbled")).await.unwrap().is_none());
}
