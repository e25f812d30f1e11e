//! A quick measurement, not a test: logins/s at the default Argon2id costs and
//! history writes/s, on SQLite (and PostgreSQL when it answers). Run with
//! `CASEBOOK_USERS_BENCH=1 cargo test --release -p casebook-netflix --test users_bench --
//! --ignored --nocapture` (without the variable it returns at once, so a CI run of
//! every ignored test for the engine suites does not spend a minute here).

use std::sync::Arc;
use std::time::{Duration, Instant};

use casebook_edge::gateway::JwtKey;
use casebook_kit::clock::SystemClock;
use casebook_netflix::config::NetflixConfig;
use casebook_netflix::sql::scratch::{Scratch, postgres_url};
use casebook_netflix::users::{Users, UsersConfig};

const LOGINS: usize = 200;
const WRITERS: usize = 8;
const WRITES_EACH: usize = 500;

async fn measure(label: &str, database: Option<String>, dir: &std::path::Path) {
    let config = NetflixConfig {
        users: UsersConfig {
            database,
            ..UsersConfig::default()
        },
        ..NetflixConfig::default()
    };
    let key = Arc::new(JwtKey::from_bytes(&[1u8; 32]).unwrap());
    let users = Arc::new(
        Users::open(&config, dir, key, SystemClock::shared())
            .await
            .unwrap(),
    );
    let account = users
        .create_account("bench@example.com", "a password of some length", &[])
        .await
        .unwrap();
    // Logins: more callers than hash slots, each retrying a 503 (none expected
    // with a queue of 64 and these callers).
    let started = Instant::now();
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let users = users.clone();
            tokio::spawn(async move {
                for _ in 0..LOGINS / 16 {
                    users
                        .login("bench@example.com", "a password of some length")
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let logins = (LOGINS / 16 * 16) as f64;
    println!(
        "{label}: {logins} logins in {secs:.2} s = {:.1} logins/s (m={} KiB, t={}, {} at once)",
        logins / secs,
        config.users.argon2_memory_kib,
        config.users.argon2_iterations,
        config.users.login_concurrency
    );
    // History writes: WRITERS concurrent writers, each its own profile... of one
    // account's default, over 50 titles (upserts, trims past 200, view rows).
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let users = users.clone();
            let account = account.account.id.clone();
            tokio::spawn(async move {
                for i in 0..WRITES_EACH {
                    users
                        .record(
                            &account,
                            None,
                            &format!("t{}", (w * 7 + i) % 250),
                            i as f64,
                            1e4,
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let writes = (WRITERS * WRITES_EACH) as f64;
    println!(
        "{label}: {writes} history writes by {WRITERS} writers in {secs:.2} s = {:.0} writes/s",
        writes / secs
    );
    users.store().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand with --release and CASEBOOK_USERS_BENCH=1"]
async fn measure_logins_and_history_writes() {
    if std::env::var_os("CASEBOOK_USERS_BENCH").is_none() {
        eprintln!("set CASEBOOK_USERS_BENCH=1 to measure");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    measure("sqlite", None, dir.path()).await;
    let connected =
        tokio::time::timeout(Duration::from_secs(3), Scratch::new(&postgres_url())).await;
    if let Ok(Ok(scratch)) = connected {
        measure("postgres", Some(scratch.url.clone()), dir.path()).await;
        scratch.drop_now().await.unwrap();
    }
}
