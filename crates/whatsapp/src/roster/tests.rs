use super::*;
use proptest::prelude::*;

fn item(subscription: Subscription) -> Item {
    Item {
        name: Some("Bob".into()),
        groups: ["Friends".to_owned()].into(),
        subscription,
        ask: false,
    }
}

#[tokio::test]
async fn changes_survive_a_reopen_and_unchanged_updates_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = RosterStore::open(dir.path(), RosterConfig::default()).unwrap();
    store
        .update("alice@d", |r| {
            r.items.insert("bob@d".into(), item(Subscription::To));
            r.pending_in.insert("carol@d".into(), "<presence/>".into());
            Ok(())
        })
        .await
        .unwrap();
    let path = store.path_of("alice@d");
    let written = std::fs::metadata(&path).unwrap().modified().unwrap();
    store.update("alice@d", |_| Ok(())).await.unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        written
    );
    drop(store);

    let reopened = RosterStore::open(dir.path(), RosterConfig::default()).unwrap();
    assert!(reopened.cached("alice@d").is_none(), "loaded lazily");
    let roster = reopened.get("alice@d").await.unwrap();
    assert_eq!(roster.items["bob@d"], item(Subscription::To));
    assert_eq!(roster.pending_in["carol@d"], "<presence/>");
    assert!(reopened.cached("alice@d").is_some());
    assert!(reopened.get("nobody@d").await.unwrap().items.is_empty());

    reopened.delete("alice@d").await.unwrap();
    assert!(!path.exists());
    assert!(reopened.get("alice@d").await.unwrap().items.is_empty());
}

#[tokio::test]
async fn bounds_refuse_the_change_and_keep_the_old_roster() {
    let dir = tempfile::tempdir().unwrap();
    let config = RosterConfig {
        max_items: 2,
        max_pending: 1,
        ..RosterConfig::default()
    };
    let store = RosterStore::open(dir.path(), config).unwrap();
    for contact in ["a@d", "b@d"] {
        store
            .update("u@d", |r| {
                r.items.insert(contact.into(), Item::default());
                Ok(())
            })
            .await
            .unwrap();
    }
    let full = store
        .update("u@d", |r| {
            r.items.insert("c@d".into(), Item::default());
            Ok(())
        })
        .await;
    assert!(matches!(full, Err(RosterError::Full(2))), "{full:?}");
    assert_eq!(store.get("u@d").await.unwrap().items.len(), 2);
    let full = store
        .update("u@d", |r| {
            r.pending_in.insert("x@d".into(), String::new());
            r.pending_in.insert("y@d".into(), String::new());
            Ok(())
        })
        .await;
    assert!(matches!(full, Err(RosterError::Full(1))));
}

#[tokio::test]
async fn long_names_and_groups_cannot_grow_a_roster_past_its_byte_bound() {
    let dir = tempfile::tempdir().unwrap();
    let store = RosterStore::open(dir.path(), RosterConfig::default()).unwrap();
    // Every item within the per-item limits, yet together past the roster's bound.
    let fat = || Item {
        name: Some("n".repeat(MAX_NAME_BYTES)),
        groups: (0..MAX_GROUPS)
            .map(|g| format!("{g:04}{}", "g".repeat(MAX_NAME_BYTES - 4)))
            .collect(),
        ..Item::default()
    };
    assert!(validate_item(&fat()).is_ok());
    let per_item = fat().groups.iter().map(String::len).sum::<usize>() + MAX_NAME_BYTES;
    let fits = RosterConfig::default().max_bytes / per_item;
    let mut refused = None;
    for n in 0..=fits + 1 {
        let result = store
            .update("u@d", |r| {
                r.items.insert(format!("c{n}@d"), fat());
                Ok(())
            })
            .await;
        if let Err(error) = result {
            refused = Some((n, error));
            break;
        }
    }
    let (n, error) = refused.expect("the byte bound refused a change");
    assert!(matches!(error, RosterError::TooLarge(_)), "{error:?}");
    assert!(n <= fits, "refused at item {n}, {fits} fit");
    let kept = store.get("u@d").await.unwrap();
    assert_eq!(kept.items.len(), n);
    assert!(kept.stored_bytes() <= RosterConfig::default().max_bytes);
    // Shrinking is always allowed.
    store
        .update("u@d", |r| {
            r.items.remove("c0@d");
            Ok(())
        })
        .await
        .unwrap();
}

#[test]
fn corrupt_or_foreign_files_are_refused_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = RosterStore::open(dir.path(), RosterConfig::default()).unwrap();
    let path = store.path_of("u@d");
    std::fs::write(&path, b"{not json").unwrap();
    let err = load(&path, "u@d", RosterConfig::default()).unwrap_err();
    assert!(matches!(err, RosterError::Corrupt { .. }));
    assert!(err.to_string().contains(&path.display().to_string()));
    let other = r#"{"version":1,"user":"v@d","roster":{"items":{},"pending_in":{}}}"#;
    assert!(parse(other.as_bytes(), "u@d", RosterConfig::default()).is_err());
    let bad_jid = r#"{"version":1,"user":"u@d","roster":{"items":{"a@d/r":{"name":null,"groups":[],"subscription":"none","ask":false}},"pending_in":{}}}"#;
    assert!(parse(bad_jid.as_bytes(), "u@d", RosterConfig::default()).is_err());
}

#[test]
fn subscription_algebra() {
    assert_eq!(Subscription::None.with_to(true), Subscription::To);
    assert_eq!(Subscription::From.with_to(true), Subscription::Both);
    assert_eq!(Subscription::Both.with_from(false), Subscription::To);
    assert_eq!(Subscription::To.with_to(false), Subscription::None);
}

fn arb_roster() -> impl Strategy<Value = Roster> {
    let jid = "[a-z]{1,8}@[a-z]{1,5}";
    let item = (
        proptest::option::of("[A-Za-z ]{0,12}"),
        proptest::collection::btree_set("[a-z]{1,6}", 0..3),
        0u8..4,
        any::<bool>(),
    )
        .prop_map(|(name, groups, sub, ask)| Item {
            name,
            groups,
            subscription: [
                Subscription::None,
                Subscription::To,
                Subscription::From,
                Subscription::Both,
            ][sub as usize],
            ask,
        });
    (
        proptest::collection::btree_map(jid, item, 0..8),
        proptest::collection::btree_map(jid, "[<>a-z ]{0,20}", 0..4),
    )
        .prop_map(|(items, pending_in)| Roster { items, pending_in })
}

proptest! {
    /// Whatever bytes sit in a roster file, loading returns a roster or an error:
    /// never a panic, never a roster outside the bounds.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(roster) = parse(&bytes, "u@d", RosterConfig::default()) {
            prop_assert!(roster.items.len() <= RosterConfig::default().max_items);
        }
    }

    /// A written roster reads back equal; any single-byte corruption of it is either
    /// refused or still a valid roster.
    #[test]
    fn round_trip_and_mutations(roster in arb_roster(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let file = RosterFile { version: FILE_VERSION, user: "u@d".into(), roster: roster.clone() };
        let mut bytes = serde_json::to_vec(&file).unwrap();
        prop_assert_eq!(parse(&bytes, "u@d", RosterConfig::default()).unwrap(), roster);
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(parsed) = parse(&bytes, "u@d", RosterConfig::default()) {
            for jid in parsed.items.keys() {
                prop_assert!(validate_contact(jid).is_ok());
            }
        }
    }
}
