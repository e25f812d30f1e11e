//! The user store's suite, written once and run on SQLite (here) and on
//! PostgreSQL and MariaDB (ignored tests, run by `.ci/run` with `--ignored`).
//! Plus durability: an account written by a process killed with SIGKILL survives.

use std::time::Duration;

use casebook_netflix::sql::scratch::{Scratch, mysql_url, postgres_url};
use casebook_netflix::sql::sqlite_url;
use casebook_netflix::users::store::{
    DEFAULT_PROFILE_NAME, StoreError, StoreLimits, UserStore, VIEW_BUCKET,
};

const LIMITS: StoreLimits = StoreLimits {
    max_profiles: 3,
    history_per_profile: 4,
    trending_buckets: 2,
};
/// 2026-01-01T00:00:00Z, on an hour boundary.
const T0: u64 = 1_767_225_600_000;
const HOUR: u64 = 3_600_000;

async fn suite(url: &str) {
    let store = UserStore::open(url, LIMITS).await.unwrap();
    accounts(&store).await;
    profiles(&store).await;
    history(&store).await;
    trending(&store).await;
    injection_is_inert(&store).await;
    store.close().await;
    // Reopening an up-to-date schema applies nothing and keeps the data.
    let store = UserStore::open(url, LIMITS).await.unwrap();
    assert!(
        store
            .credentials("ANN@example.com")
            .await
            .unwrap()
            .is_some()
    );
    store.close().await;
}

async fn accounts(store: &UserStore) {
    let (ann, profiles) = store
        .create_account("Ann@Example.com", "$argon2id$fake", &[], T0)
        .await
        .unwrap();
    assert_eq!(profiles.len(), 1);
    assert_eq!(profiles[0].name, DEFAULT_PROFILE_NAME);
    assert_eq!(profiles[0].id, ann.default_profile);
    // Unique whatever the case.
    let err = store
        .create_account("ann@EXAMPLE.com", "$argon2id$other", &[], T0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateEmail), "{err}");
    let (id, phc) = store.credentials("aNN@example.COM").await.unwrap().unwrap();
    assert_eq!(
        (id.as_str(), phc.as_str()),
        (ann.id.as_str(), "$argon2id$fake")
    );
    assert!(
        store
            .credentials("bob@example.com")
            .await
            .unwrap()
            .is_none()
    );
    let read = store.account(&ann.id).await.unwrap().unwrap();
    assert_eq!(read, ann);
    assert!(store.account("a0000").await.unwrap().is_none());
}

async fn profiles(store: &UserStore) {
    let names = ["Kid".to_owned(), "Guest".to_owned()];
    let (bo, made) = store
        .create_account("bo@example.com", "h", &names, T0)
        .await
        .unwrap();
    assert_eq!(made[0].id, bo.default_profile);
    let third = store.add_profile(&bo.id, "Third", T0 + 10).await.unwrap();
    let err = store
        .add_profile(&bo.id, "Fourth", T0 + 11)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ProfileLimit(3)), "{err}");
    let listed = store.profiles(&bo.id).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["Kid", "Guest", "Third"]);
    assert_eq!(listed[2], third);
    let err = store.add_profile("a404", "X", T0).await.unwrap_err();
    assert!(matches!(err, StoreError::UnknownAccount), "{err}");
    // Too many at creation is refused before anything is written.
    let four = ["a", "b", "c", "d"].map(str::to_owned);
    let err = store
        .create_account("many@example.com", "h", &four, T0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ProfileLimit(3)), "{err}");
    assert!(
        store
            .credentials("many@example.com")
            .await
            .unwrap()
            .is_none()
    );
    // A profile resolves only for its own account.
    let (cy, _) = store
        .create_account("cy@example.com", "h", &[], T0)
        .await
        .unwrap();
    assert_eq!(
        store
            .resolve_profile(&bo.id, Some(&third.id))
            .await
            .unwrap(),
        third.id
    );
    let err = store
        .resolve_profile(&cy.id, Some(&third.id))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownProfile), "{err}");
    assert_eq!(
        store.resolve_profile(&cy.id, None).await.unwrap(),
        cy.default_profile
    );
}

async fn history(store: &UserStore) {
    let (dee, _) = store
        .create_account("dee@example.com", "h", &[], T0)
        .await
        .unwrap();
    let p = &dee.default_profile;
    for (i, title) in ["t1", "t2", "t3", "t4"].iter().enumerate() {
        store
            .record(p, title, 10.0, 100.0, T0 + i as u64 * 1000)
            .await
            .unwrap();
    }
    // Upsert: t1 again moves to the front with its new position.
    store.record(p, "t1", 55.5, 100.0, T0 + 9000).await.unwrap();
    let items = store.history(p, 10).await.unwrap();
    let titles: Vec<&str> = items.iter().map(|i| i.title.as_str()).collect();
    assert_eq!(titles, ["t1", "t4", "t3", "t2"]);
    assert_eq!(items[0].position_s, 55.5);
    assert_eq!(items[0].duration_s, 100.0);
    assert_eq!(items[0].updated_ms, T0 + 9000);
    // A fifth title pushes the oldest (t2) out: the bound is 4.
    store.record(p, "t5", 1.0, 50.0, T0 + 10_000).await.unwrap();
    let titles: Vec<String> = store
        .history(p, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.title)
        .collect();
    assert_eq!(titles, ["t5", "t1", "t4", "t3"]);
    // Ties on time: the order is by title, and the bound still holds.
    for title in ["z", "y", "x"] {
        store.record(p, title, 0.0, 1.0, T0 + 20_000).await.unwrap();
    }
    let titles: Vec<String> = store
        .history(p, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.title)
        .collect();
    assert_eq!(titles, ["x", "y", "z", "t5"]);
    assert_eq!(store.history(p, 2).await.unwrap().len(), 2);
}

async fn trending(store: &UserStore) {
    let mut viewers = Vec::new();
    for i in 0..3 {
        let (a, _) = store
            .create_account(&format!("viewer{i}@example.com"), "h", &[], T0)
            .await
            .unwrap();
        viewers.push(a.default_profile);
    }
    let base = T0 + 100 * HOUR;
    // "hit": three profiles; heartbeats within an hour count once.
    for p in &viewers {
        for s in 0..3 {
            store
                .record(p, "hit", s as f64, 10.0, base + s * 1000)
                .await
                .unwrap();
        }
    }
    store
        .record(&viewers[0], "niche", 1.0, 10.0, base)
        .await
        .unwrap();
    let top = store.trending(base, 10).await.unwrap();
    let pairs: Vec<(&str, u64)> = top.iter().map(|t| (t.title.as_str(), t.views)).collect();
    // Earlier suites' views (at T0) are outside the window.
    assert_eq!(pairs, [("hit", 3), ("niche", 1)]);
    assert_eq!(store.trending(base, 1).await.unwrap().len(), 1);
    // The next hour: the same profile counts again, the window holds both hours.
    let next = base + VIEW_BUCKET.as_millis() as u64;
    store
        .record(&viewers[0], "niche", 2.0, 10.0, next)
        .await
        .unwrap();
    store
        .record(&viewers[1], "niche", 2.0, 10.0, next)
        .await
        .unwrap();
    let top = store.trending(next, 10).await.unwrap();
    let pairs: Vec<(&str, u64)> = top.iter().map(|t| (t.title.as_str(), t.views)).collect();
    assert_eq!(pairs, [("hit", 3), ("niche", 3)]);
    // Two hours on, the window (2 buckets) has dropped `base`'s hour, and the
    // write of a new hour pruned the rows before it.
    let later = next + HOUR;
    store
        .record(&viewers[2], "late", 0.0, 1.0, later)
        .await
        .unwrap();
    let top = store.trending(later, 10).await.unwrap();
    let pairs: Vec<(&str, u64)> = top.iter().map(|t| (t.title.as_str(), t.views)).collect();
    assert_eq!(pairs, [("niche", 2), ("late", 1)]);
    assert_eq!(store.view_rows().await.unwrap(), 3);
}

async fn injection_is_inert(store: &UserStore) {
    let sneaky = [
        "' OR '1'='1",
        "admin'--",
        "x'); DROP TABLE users_accounts; --",
    ];
    for (i, s) in sneaky.iter().enumerate() {
        assert!(store.credentials(s).await.unwrap().is_none());
        let email = format!("{s}{i}@example.com");
        let (a, _) = store
            .create_account(&email, s, &[s.to_string()], T0)
            .await
            .unwrap();
        let (id, phc) = store.credentials(&email).await.unwrap().unwrap();
        assert_eq!((id, phc.as_str()), (a.id.clone(), *s));
        store
            .record(&a.default_profile, "t'--", 1.0, 2.0, T0)
            .await
            .unwrap();
        let items = store.history(&a.default_profile, 5).await.unwrap();
        assert_eq!(items[0].title, "t'--");
        assert_eq!(store.profiles(&a.id).await.unwrap()[0].name, *s);
    }
    // Still exactly one account per email: nothing matched everything.
    assert!(store.credentials("' OR '1'='1").await.unwrap().is_none());
    assert!(
        store
            .credentials("ann@example.com")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn sqlite_suite_from_an_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    suite(&sqlite_url(&dir.path().join("netflix/users.db"))).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL (CASEBOOK_TEST_POSTGRES); run by .ci/run"]
async fn postgres_suite() {
    let scratch = Scratch::new(&postgres_url()).await.unwrap();
    suite(&scratch.url).await;
    scratch.drop_now().await.unwrap();
}

#[tokio::test]
#[ignore = "needs MariaDB (CASEBOOK_TEST_MYSQL); run by .ci/run"]
async fn mysql_suite() {
    let scratch = Scratch::new(&mysql_url()).await.unwrap();
    suite(&scratch.url).await;
    scratch.drop_now().await.unwrap();
}

const CHILD_DB: &str = "CASEBOOK_USERS_TEST_CHILD_DB";

/// The child half of `an_account_survives_sigkill`: creates an account, says so,
/// and waits to be killed. Does nothing when run on its own.
#[tokio::test]
async fn durability_child() {
    let Ok(url) = std::env::var(CHILD_DB) else {
        return;
    };
    let store = UserStore::open(&url, LIMITS).await.unwrap();
    let (account, _) = store
        .create_account("kept@example.com", "$argon2id$kept", &[], T0)
        .await
        .unwrap();
    store
        .record(&account.default_profile, "watched", 42.0, 60.0, T0)
        .await
        .unwrap();
    println!("\ncreated {}", account.id);
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn an_account_survives_sigkill() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir.path().join("users.db"));
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "durability_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, &url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut id = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        // libtest may print its own `test … ...` before ours on the same line.
        if let Some((_, rest)) = line.split_once("created ") {
            id = Some(rest.trim().to_owned());
            break;
        }
    }
    // SIGKILL: no destructor, no pool close, no checkpoint.
    child.kill().unwrap();
    child.wait().unwrap();
    let id = id.expect("the child created an account");
    let store = UserStore::open(&url, LIMITS).await.unwrap();
    let (found, phc) = store
        .credentials("KEPT@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.as_str(), phc.as_str()),
        (id.as_str(), "$argon2id$kept")
    );
    let account = store.account(&id).await.unwrap().unwrap();
    let items = store.history(&account.default_profile, 5).await.unwrap();
    assert_eq!(items[0].title, "watched");
    assert_eq!(items[0].position_s, 42.0);
    store.close().await;
}
