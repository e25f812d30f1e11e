use super::*;
use crate::clock::ManualClock;
use crate::events::WalBus;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Account {
    open: bool,
    balance: i64,
    events: u64,
}

impl Aggregate for Account {
    fn apply(&mut self, event: &Event) {
        self.events += 1;
        match event.event_type.as_str() {
            "opened" => self.open = true,
            "deposited" => self.balance += event.payload["amount"].as_i64().unwrap(),
            other => panic!("unknown event {other}"),
        }
    }
}

fn wal() -> WalConfig {
    WalConfig {
        segment_bytes: 16 * 1024,
        max_record_bytes: 8 * 1024,
        durability: Durability::NoSync,
        ..WalConfig::default()
    }
}

fn config(snapshot_every: u64) -> EventStoreConfig {
    EventStoreConfig {
        topic: "accounts".into(),
        snapshot_every,
        wal: wal(),
    }
}

fn deposit(clock: &ManualClock, account: &str, amount: i64) -> Event {
    Event::new(
        "deposited",
        account,
        serde_json::json!({ "amount": amount }),
        clock,
    )
}

fn opened(clock: &ManualClock, account: &str) -> Event {
    Event::new("opened", account, serde_json::json!({}), clock)
}

#[tokio::test]
async fn stale_versions_are_rejected_not_merged() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let store: EventStore<Account> = EventStore::open(dir.path(), config(100)).unwrap();
    assert_eq!(
        store
            .append(
                "a1",
                0,
                vec![opened(&clock, "a1"), deposit(&clock, "a1", 5)]
            )
            .await
            .unwrap(),
        2
    );
    let err = store
        .append("a1", 1, vec![deposit(&clock, "a1", 7)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EventStoreError::Conflict {
                expected: 1,
                actual: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        store
            .append("a1", 2, vec![deposit(&clock, "a1", 7)])
            .await
            .unwrap(),
        3
    );
    let (state, version) = store.load("a1").await;
    assert_eq!((state.balance, state.open, version), (12, true, 3));
    assert_eq!(store.load("nobody").await, (Account::default(), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_at_one_version_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let store: EventStore<Account> = EventStore::open(dir.path(), config(100)).unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let event = deposit(&clock, "acct", i);
            tokio::spawn(async move { store.append("acct", 0, vec![event]).await })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(version) => {
                assert_eq!(version, 1);
                wins += 1;
            }
            Err(EventStoreError::Conflict {
                expected: 0,
                actual: 1,
                ..
            }) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.load("acct").await.1, 1);
}

#[tokio::test]
async fn bad_appends_get_precise_errors() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let store: EventStore<Account> = EventStore::open(dir.path(), config(100)).unwrap();
    assert!(matches!(
        store.append("a", 0, vec![]).await,
        Err(EventStoreError::Invalid(_))
    ));
    let err = store
        .append("a", 0, vec![deposit(&clock, "b", 1)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not the aggregate id"), "{err}");
    assert!(matches!(
        store.append("", 0, vec![deposit(&clock, "", 1)]).await,
        Err(EventStoreError::Invalid(_))
    ));
    assert_eq!(store.load("a").await.1, 0);
}

#[tokio::test]
async fn snapshots_bound_replay_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    {
        let store: EventStore<Account> = EventStore::open(dir.path(), config(3)).unwrap();
        store
            .append("a", 0, vec![opened(&clock, "a")])
            .await
            .unwrap();
        for v in 1..7 {
            store
                .append("a", v, vec![deposit(&clock, "a", 10)])
                .await
                .unwrap();
        }
        store
            .append("b", 0, vec![opened(&clock, "b")])
            .await
            .unwrap();
        // 7 events, snapshot every 3: snapshots at 3 and 6, one event after.
        assert_eq!(store.events_since_snapshot("a").await, 1);
        assert_eq!(store.events_since_snapshot("b").await, 1);
    }
    let store: EventStore<Account> = EventStore::open(dir.path(), config(3)).unwrap();
    assert_eq!(store.events_since_snapshot("a").await, 1);
    let (state, version) = store.load("a").await;
    assert_eq!(
        state,
        Account {
            open: true,
            balance: 60,
            events: 7
        }
    );
    assert_eq!(version, 7);
    // Versions continue after restart, and stale ones are still refused.
    assert!(
        store
            .append("a", 6, vec![deposit(&clock, "a", 1)])
            .await
            .is_err()
    );
    assert_eq!(
        store
            .append("a", 7, vec![deposit(&clock, "a", 1)])
            .await
            .unwrap(),
        8
    );
}

/// A read model: balance per account.
#[derive(Debug, Default)]
struct Balances(BTreeMap<String, i64>);

impl Projection for Balances {
    type State = BTreeMap<String, i64>;
    fn apply(&mut self, delivery: &Delivery) {
        let amount = delivery.event.payload["amount"].as_i64().unwrap_or(0);
        *self.0.entry(delivery.event.key.clone()).or_default() += amount;
    }
    fn state(&self) -> Self::State {
        self.0.clone()
    }
    fn restore(&mut self, state: Self::State) {
        self.0 = state;
    }
}

#[tokio::test]
async fn projections_resume_from_their_checkpoint_and_skip_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let bus: Arc<dyn EventBus> = Arc::new(WalBus::open(dir.path().join("bus"), wal()).unwrap());
    let store: EventStore<Account> =
        EventStore::open(dir.path().join("store"), config(100)).unwrap();
    let relay = store.relay(bus.clone(), 100);
    store
        .append("a", 0, vec![opened(&clock, "a"), deposit(&clock, "a", 5)])
        .await
        .unwrap();
    store
        .append("b", 0, vec![deposit(&clock, "b", 3)])
        .await
        .unwrap();
    relay.relay_once().await.unwrap();

    let views = dir.path().join("views");
    let mut runner = ProjectionRunner::open(
        bus.clone(),
        "accounts",
        "balances",
        Balances::default(),
        &views,
        Durability::NoSync,
    )
    .unwrap();
    assert_eq!(runner.step().await.unwrap(), 3);
    assert_eq!(runner.step().await.unwrap(), 0);
    assert_eq!(runner.offset(), 3);
    drop(runner);

    store
        .append("a", 2, vec![deposit(&clock, "a", 100)])
        .await
        .unwrap();
    relay.relay_once().await.unwrap();
    // Restart: state and offset come back together; only the new event is applied.
    let mut runner = ProjectionRunner::open(
        bus.clone(),
        "accounts",
        "balances",
        Balances::default(),
        &views,
        Durability::NoSync,
    )
    .unwrap();
    assert_eq!(
        runner.projection().0,
        BTreeMap::from([("a".into(), 5), ("b".into(), 3)])
    );
    assert_eq!(runner.step().await.unwrap(), 1);
    assert_eq!(runner.projection().0["a"], 105);

    // The relay re-publishes (as after a crash before marking sent): same ids, skipped.
    Checkpoint::new(dir.path().join("store/relay.offset"), Durability::NoSync)
        .store(1)
        .unwrap();
    relay.relay_once().await.unwrap();
    assert_eq!(runner.step().await.unwrap(), 0);
    assert_eq!(runner.offset(), 6);
    assert_eq!(
        runner.projection().0,
        BTreeMap::from([("a".into(), 105), ("b".into(), 3)])
    );
}

#[tokio::test]
async fn a_running_projection_follows_the_bus_until_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let bus = WalBus::open(dir.path().join("bus"), wal()).unwrap();
    let shared: Arc<dyn EventBus> = Arc::new(bus.clone());
    let runner = ProjectionRunner::open(
        shared.clone(),
        "accounts",
        "live",
        Balances::default(),
        dir.path(),
        Durability::NoSync,
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async {
        let _ = stopped.await;
    }));
    for amount in [1, 2, 3] {
        shared
            .publish("accounts", deposit(&clock, "a", amount))
            .await
            .unwrap();
    }
    assert_eq!(bus.end_offset("accounts").unwrap(), 3);
    // Committed offset 3 means the runner applied and saved all three.
    while shared.committed("accounts", "live").await.unwrap() < 3 {
        tokio::task::yield_now().await;
    }
    stop.send(()).unwrap();
    let projection = task.await.unwrap().unwrap();
    assert_eq!(projection.0["a"], 6);
}
