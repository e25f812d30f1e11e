//! Password hashing: Argon2id, PHC strings, off the async runtime and bounded.
//!
//! Hashing and verifying are CPU-heavy by design, so each runs on
//! `spawn_blocking` behind a semaphore of `login_concurrency` permits; at most
//! `login_queue` more wait for one, and past that the caller is refused at once
//! ([`PasswordError::Busy`], answered 503 with `Retry-After`) — a login storm costs
//! `login_concurrency` cores, never the runtime's worker threads.
//!
//! Verification uses the parameters stored in the hash, so raising the costs
//! later leaves old hashes verifiable. An unknown email is verified against a
//! dummy hash made at start with the current parameters: it costs the same as a
//! real one, so response time does not tell which emails exist.

use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;

/// The Argon2id costs and the admission bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCosts {
    pub memory_kib: u32,
    pub iterations: u32,
    pub concurrency: u32,
    pub queue: u32,
}

/// Why a password operation did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("too many password checks in progress; retry shortly")]
    Busy,
    #[error("password hashing failed: {0}")]
    Internal(String),
}

/// The hasher: Argon2id with the configured costs.
#[derive(Debug)]
pub struct Passwords {
    params: Params,
    dummy: String,
    /// `concurrency` permits: hashes running.
    running: Arc<Semaphore>,
    /// `concurrency + queue` permits: hashes running or waiting.
    admitted: Arc<Semaphore>,
}

fn argon2(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_blocking(params: Params, password: &[u8]) -> Result<String, PasswordError> {
    argon2(params)
        .hash_password(password)
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError::Internal(e.to_string()))
}

impl Passwords {
    /// The hasher; makes the dummy hash (one hash's time).
    pub fn new(costs: HashCosts) -> Result<Self, PasswordError> {
        let params = Params::new(costs.memory_kib, costs.iterations, 1, None)
            .map_err(|e| PasswordError::Internal(e.to_string()))?;
        let dummy = hash_blocking(params.clone(), rand::random::<[u8; 16]>().as_slice())?;
        let concurrency = costs.concurrency.max(1) as usize;
        Ok(Self {
            params,
            dummy,
            running: Arc::new(Semaphore::new(concurrency)),
            admitted: Arc::new(Semaphore::new(concurrency + costs.queue as usize)),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| PasswordError::Busy)?;
        let _running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PasswordError::Busy)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| PasswordError::Internal(e.to_string()))
    }

    /// Takes every admission place until the permit is dropped (tests of the
    /// refusal).
    #[doc(hidden)]
    pub fn occupy_all(&self) -> tokio::sync::OwnedSemaphorePermit {
        let all = self.admitted.available_permits() as u32;
        self.admitted
            .clone()
            .try_acquire_many_owned(all)
            .expect("no other holder in a test")
    }

    /// A PHC string (`$argon2id$v=19$m=…`) for `password`, with a fresh salt.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let params = self.params.clone();
        self.run(move || hash_blocking(params, password.as_bytes()))
            .await?
    }

    /// Whether `password` matches `stored`; with no stored hash, the dummy one is
    /// checked (and the answer is `false`) so the cost is the same.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, PasswordError> {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy.clone());
        let matched = self
            .run(move || {
                argon2(Params::DEFAULT)
                    .verify_password(password.as_bytes(), phc.as_str())
                    .is_ok()
            })
            .await?;
        Ok(known && matched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Passwords {
        Passwords::new(HashCosts {
            memory_kib: 64,
            iterations: 1,
            concurrency: 1,
            queue: 0,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn hashes_verify_and_carry_their_params() {
        let passwords = cheap();
        let phc = passwords.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(
            passwords
                .verify("correct horse".into(), Some(phc.clone()))
                .await
                .unwrap()
        );
        assert!(!passwords.verify("wrong".into(), Some(phc)).await.unwrap());
        // The dummy never admits anyone, whatever the password.
        assert!(!passwords.verify("".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn beyond_the_queue_callers_are_refused() {
        let passwords = Arc::new(cheap());
        // Hold the only admission permit as a running hash would.
        let held = passwords.admitted.clone().try_acquire_owned().unwrap();
        assert_eq!(
            passwords.hash("x".repeat(8)).await.unwrap_err(),
            PasswordError::Busy
        );
        drop(held);
        assert!(passwords.hash("x".repeat(8)).await.is_ok());
    }
}
