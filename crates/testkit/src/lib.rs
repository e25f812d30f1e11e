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

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 1s waiting for never")]
    async fn panics_naming_what_it_waited_for() {
        eventually_sync("never", Duration::from_secs(1), || false).await;
    }
}
