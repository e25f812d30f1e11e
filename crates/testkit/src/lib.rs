//! # casebook-testkit
//!
//! Helpers shared by the test suites of every casebook crate. A dev-dependency only:
//! nothing here is linked into the binary.
//!
//! | item | role |
//! |---|---|
//! | [`eventually`] | poll an async condition until it holds, failing the test with what was awaited after a deadline |
//! | [`eventually_sync`] | the same for a plain closure |
//! | [`DEADLINE`] | the generous default deadline (tests assert outcomes, never timings) |
//! | [`seed`] | a randomised test's seed: from `CASEBOOK_TEST_SEED`, else fresh; printed either way |
//! | [`peer_program`] | a third-party program a test runs privately: its path, or one printed line saying how to get it (a failure under CI) |
//! | [`Reaped`] | a child process killed and reaped when dropped, however the test ends |
//! | [`free_port`] | a free loopback TCP port for a private peer |

use std::future::Future;
use std::time::Duration;

/// The default deadline of [`eventually`]: generous, because the deadline only
/// bounds a test that is already failing; it never judges speed.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(10);

/// Polls `condition` until it returns true; panics naming `what` once `deadline`
/// has passed without it.
///
/// The deadline runs on tokio's clock, so a test with a paused clock advances it
/// deterministically.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for a synchronous condition.
pub async fn eventually_sync(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    eventually(what, deadline, || std::future::ready(condition())).await;
}

/// The environment variable that fixes a randomised test's seed.
pub const SEED_VAR: &str = "CASEBOOK_TEST_SEED";

/// The seed of a randomised test: `CASEBOOK_TEST_SEED` when set (to replay a
/// failure), else a fresh one. Printed either way, so a failing run says how to
/// replay it.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var(SEED_VAR) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_VAR}={text:?} is not a u64")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 ^ u64::from(std::process::id()))
            .unwrap_or(1),
    };
    eprintln!("{test}: seed {seed} (replay with {SEED_VAR}={seed})");
    seed
}

/// The path of a third-party program a test runs a private copy of (e.g.
/// `redis-server`), looked up on `PATH`. Missing: one printed line saying how to
/// install it and `None` (the caller returns early) — except under CI (`CI` set),
/// where `.ci/run` installs every peer, so a missing one fails the test.
pub fn peer_program(program: &str, install: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is not installed, and CI must run this test ({install})"
        );
        eprintln!("left out: {program} is not installed; to run this test: {install}");
    }
    found
}

/// A free loopback TCP port (bound, then released: a private peer takes it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A child process killed and reaped when dropped while it still runs: a failed
/// assertion must not leave a server behind.
#[derive(Debug)]
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_once_the_condition_holds() {
        let mut polls = 0;
        eventually_sync("three polls", DEADLINE, || {
            polls += 1;
            polls == 3
        })
        .await;
        assert_eq!(polls, 3);
    }

    #[test]
    fn a_program_on_the_path_is_found_and_a_missing_one_is_none_outside_ci() {
        assert!(peer_program("sh", "apt-get install dash").is_some());
        if std::env::var_os("CI").is_none() {
            assert!(peer_program("no-such-program-casebook", "nothing").is_none());
        }
    }

    #[test]
    fn a_reaped_child_is_killed_on_drop() {
        let child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let pid = child.id();
        drop(Reaped(child));
        // Reaped: the pid no longer names a live process of ours.
        let alive = std::path::Path::new(&format!("/proc/{pid}/stat")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(" Z ");
        assert!(!alive, "sleep {pid} survived its guard");
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 1s waiting for never")]
    async fn panics_naming_what_it_waited_for() {
        eventually_sync("never", Duration::from_secs(1), || false).await;
    }
}
