use super::*;
use casebook_kit::clock::{Clock, ManualClock};
use casebook_kit::wal::Durability;
use proptest::prelude::*;

fn config() -> ArchiveConfig {
    ArchiveConfig {
        max_per_user: 5,
        max_age: Duration::from_secs(3600),
        max_page: 3,
        wal: WalConfig {
            segment_bytes: 4096,
            max_record_bytes: 1024,
            durability: Durability::NoSync,
            ..WalConfig::default()
        },
    }
}

fn pair(from: &str, to: &str) -> Vec<Copy> {
    vec![
        Copy {
            owner: from.into(),
            with: to.into(),
        },
        Copy {
            owner: to.into(),
            with: format!("{from}/r"),
        },
    ]
}

fn ids(page: &Page) -> Vec<u64> {
    page.messages.iter().map(|m| m.id).collect()
}

#[tokio::test]
async fn both_copies_paging_filters_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let archive = Archive::open(dir.path(), config(), clock.shared()).unwrap();
    let mut stamps = Vec::new();
    for n in 0..4 {
        let (from, to) = if n % 2 == 0 {
            ("a@d", "b@d")
        } else {
            ("a@d", "c@d")
        };
        archive
            .store(pair(from, to), format!("<m{n}/>"))
            .await
            .unwrap();
        stamps.push(clock.wall_millis());
        clock.advance(Duration::from_secs(10));
    }
    assert_eq!(archive.count("a@d"), 4);
    assert_eq!(archive.count("b@d"), 2);
    let all = archive.query("a@d", &Query::default()).unwrap();
    assert_eq!(
        (ids(&all), all.complete, all.count),
        (vec![1, 2, 3], false, 4)
    );
    let next = archive
        .query(
            "a@d",
            &Query {
                after: Some(wire_id(3)),
                ..Query::default()
            },
        )
        .unwrap();
    assert_eq!((ids(&next), next.complete), (vec![4], true));
    let last = archive
        .query(
            "a@d",
            &Query {
                before: Some(None),
                max: Some(2),
                ..Query::default()
            },
        )
        .unwrap();
    assert_eq!((ids(&last), last.complete), (vec![3, 4], false));
    let earlier = archive
        .query(
            "a@d",
            &Query {
                before: Some(Some(wire_id(3))),
                max: Some(2),
                ..Query::default()
            },
        )
        .unwrap();
    assert_eq!((ids(&earlier), earlier.complete), (vec![1, 2], true));
    // A client's `max` is capped at the page bound, whichever way it pages.
    for before in [None, Some(None)] {
        let capped = archive
            .query(
                "a@d",
                &Query {
                    before,
                    max: Some(usize::MAX),
                    ..Query::default()
                },
            )
            .unwrap();
        assert_eq!(capped.messages.len(), config().max_page);
    }
    let with_c = archive
        .query(
            "a@d",
            &Query {
                with: Some("c@d".into()),
                ..Query::default()
            },
        )
        .unwrap();
    assert_eq!(ids(&with_c), vec![2, 4]);
    let full = archive
        .query(
            "b@d",
            &Query {
                with: Some("a@d/r".into()),
                ..Query::default()
            },
        )
        .unwrap();
    assert_eq!(ids(&full), vec![1, 3]);
    let window = archive
        .query(
            "a@d",
            &Query {
                start_ms: Some(stamps[1]),
                end_ms: Some(stamps[2]),
                ..Query::default()
            },
        )
        .unwrap();
    assert_eq!(ids(&window), vec![2, 3]);
    assert!(matches!(
        archive.query(
            "a@d",
            &Query {
                after: Some(wire_id(99)),
                ..Query::default()
            }
        ),
        Err(ArchiveError::UnknownId(_))
    ));
    drop(archive);

    let reopened = Archive::open(dir.path(), config(), clock.shared()).unwrap();
    assert_eq!(reopened.count("a@d"), 4);
    let id = reopened
        .store(pair("a@d", "b@d"), "<m/>".into())
        .await
        .unwrap();
    assert_eq!(id, 5, "ids keep increasing across restarts");
}

#[tokio::test]
async fn count_and_age_bounds_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let archive = Archive::open(dir.path(), config(), clock.shared()).unwrap();
    for n in 0..7 {
        archive
            .store(pair("a@d", "b@d"), format!("<m{n}/>"))
            .await
            .unwrap();
    }
    assert_eq!(archive.count("a@d"), 5, "the oldest two went");
    let first = archive.query("a@d", &Query::default()).unwrap();
    assert_eq!(first.messages[0].id, 3);
    clock.advance(Duration::from_secs(3601));
    assert_eq!(archive.count("a@d"), 0, "past the age bound");
    archive
        .store(pair("a@d", "b@d"), "<new/>".into())
        .await
        .unwrap();
    assert_eq!(archive.count("a@d"), 1);
    archive.delete("b@d").await.unwrap();
    assert_eq!(archive.count("b@d"), 0);
    assert_eq!(archive.count("a@d"), 1);
    drop(archive);
    let reopened = Archive::open(dir.path(), config(), clock.shared()).unwrap();
    assert_eq!((reopened.count("a@d"), reopened.count("b@d")), (1, 0));
}

#[tokio::test]
async fn compaction_copies_live_messages_forward_and_frees_segments() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let archive = Archive::open(dir.path(), config(), clock.shared()).unwrap();
    for n in 0..60 {
        archive
            .store(pair("a@d", "b@d"), format!("<message n='{n}'/>"))
            .await
            .unwrap();
    }
    let before = archive.wal.segment_starts().len();
    assert!(before > 2, "{before} segments");
    let mut freed = 0;
    for _ in 0..before {
        freed += archive.compact_step().await.unwrap();
    }
    assert!(freed > 0);
    assert!(archive.wal.segment_starts().len() < before);
    let page = archive.query("a@d", &Query::default()).unwrap();
    assert_eq!(ids(&page), vec![56, 57, 58], "same ids after copy-forward");
    drop(archive);
    let reopened = Archive::open(dir.path(), config(), clock.shared()).unwrap();
    let page = reopened.query("b@d", &Query::default()).unwrap();
    assert_eq!((ids(&page), page.count), (vec![56, 57, 58], 5));
    assert_eq!(&*page.messages[0].payload, "<message n='55'/>");
}

#[tokio::test]
async fn submitted_messages_are_seen_by_the_next_query_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let archive = Arc::new(Archive::open(dir.path(), config(), clock.shared()).unwrap());
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(
            archive
                .submit(pair("a@d", "b@d"), format!("<m{n}/>"))
                .await
                .unwrap(),
        );
    }
    assert_eq!(ids, vec![1, 2, 3, 4]);
    let page = archive
        .query_settled(
            "b@d",
            &Query {
                max: Some(3),
                before: Some(None),
                ..Query::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((ids_of(&page), page.count), (vec![2, 3, 4], 4));
    let too_big = archive.submit(pair("a@d", "b@d"), "x".repeat(2000)).await;
    assert!(matches!(too_big, Err(ArchiveError::TooLarge)));
    drop(archive);
    let reopened = Archive::open(dir.path(), config(), clock.shared()).unwrap();
    assert_eq!(reopened.count("a@d"), 4);
}

fn ids_of(page: &Page) -> Vec<u64> {
    ids(page)
}

proptest! {
    /// Whatever bytes a record holds, decoding returns a record or an error.
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Record::decode(&bytes);
    }

    /// Records round-trip; a flipped byte decodes to an error or some record.
    #[test]
    fn records_round_trip(id in any::<u64>(), stamp in any::<u64>(), payload in ".{0,40}", at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let record = Record::Message { id, stamp_ms: stamp, copies: pair("a@d", "b@d"), payload };
        let mut bytes = record.encode();
        prop_assert_eq!(Record::decode(&bytes).unwrap(), record);
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let _ = Record::decode(&bytes);
    }
}
