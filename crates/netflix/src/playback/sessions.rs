//! Playback sessions in memory, bounded in count and in idleness.
//!
//! A session is created by `POST /v1/playback` and kept alive by every request
//! that names it (a re-POST, an event batch). Guarantees:
//! - **idle expiry on the injected clock**: a session untouched for `idle` is
//!   gone (its id then answers 404 for events, and a re-POST starts a new one);
//! - **a bound on count**: at most `max` sessions; a new one past the bound
//!   evicts the least recently active (counted in
//!   `casebook_netflix_playback_sessions_evicted_total`).
//!
//! Not guaranteed: sessions outlive the instance (they are memory only: a
//! restarted playback service forgets them, and players simply start new ones).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use casebook_kit::clock::SharedClock;
use parking_lot::Mutex;

use super::steering::Tier;

/// Failed edges remembered per session.
pub const MAX_AVOIDED: usize = 16;

/// One playback session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub title: String,
    /// The client's region (steering's starting point).
    pub client_region: String,
    /// The CDN instance serving it now.
    pub edge: SocketAddr,
    pub edge_region: String,
    pub tier: Tier,
    pub failovers: u32,
    /// Instances this session was moved off, newest last.
    pub avoided: Vec<SocketAddr>,
    /// The caller's account, when the play came through the gateway.
    pub account: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<String, (Session, Instant)>,
    /// (last touched, id): the eviction and expiry order.
    by_age: BTreeSet<(Instant, String)>,
}

impl Inner {
    fn remove(&mut self, id: &str) -> Option<Session> {
        let (session, touched) = self.by_id.remove(id)?;
        self.by_age.remove(&(touched, id.to_owned()));
        Some(session)
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Sessions {
    clock: SharedClock,
    idle: Duration,
    max: usize,
    inner: Mutex<Inner>,
}

impl Sessions {
    pub fn new(clock: SharedClock, idle: Duration, max: usize) -> Self {
        Self {
            clock,
            idle,
            max: max.max(1),
            inner: Mutex::default(),
        }
    }

    /// Stores `session` (new or updated) as touched now.
    pub fn put(&self, session: Session) {
        let now = self.clock.now();
        let mut inner = self.inner.lock();
        Self::expire_locked(&mut inner, now, self.idle);
        inner.remove(&session.id);
        while inner.by_id.len() >= self.max {
            let Some((_, oldest)) = inner.by_age.first().cloned() else {
                break;
            };
            inner.remove(&oldest);
            metrics::counter!("casebook_netflix_playback_sessions_evicted_total").increment(1);
        }
        inner.by_age.insert((now, session.id.clone()));
        inner.by_id.insert(session.id.clone(), (session, now));
    }

    /// The live session `id`, touched now.
    pub fn touch(&self, id: &str) -> Option<Session> {
        let now = self.clock.now();
        let mut inner = self.inner.lock();
        let (session, touched) = inner.by_id.get(id).cloned()?;
        if now.saturating_duration_since(touched) >= self.idle {
            inner.remove(id);
            return None;
        }
        inner.by_age.remove(&(touched, id.to_owned()));
        inner.by_age.insert((now, id.to_owned()));
        if let Some(entry) = inner.by_id.get_mut(id) {
            entry.1 = now;
        }
        Some(session)
    }

    /// Drops every session idle for `idle` or more; returns how many.
    pub fn expire(&self) -> usize {
        let now = self.clock.now();
        Self::expire_locked(&mut self.inner.lock(), now, self.idle)
    }

    fn expire_locked(inner: &mut Inner, now: Instant, idle: Duration) -> usize {
        let mut gone = 0;
        while let Some((touched, id)) = inner.by_age.first().cloned() {
            if now.saturating_duration_since(touched) < idle {
                break;
            }
            inner.remove(&id);
            gone += 1;
        }
        gone
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.inner.lock().by_id.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use casebook_kit::clock::ManualClock;

    fn session(id: &str) -> Session {
        Session {
            id: id.into(),
            title: "t".into(),
            client_region: "us-east".into(),
            edge: SocketAddr::from(([127, 0, 0, 1], 1)),
            edge_region: "us-east".into(),
            tier: Tier::Isp,
            failovers: 0,
            avoided: vec![],
            account: None,
        }
    }

    #[test]
    fn idle_sessions_expire_on_the_clock_and_touching_keeps_them() {
        let clock = ManualClock::new();
        let sessions = Sessions::new(clock.shared(), Duration::from_secs(60), 10);
        sessions.put(session("a"));
        sessions.put(session("b"));
        clock.advance(Duration::from_secs(40));
        assert!(sessions.touch("a").is_some());
        clock.advance(Duration::from_secs(30));
        assert!(sessions.touch("b").is_none(), "b idled 70 s");
        assert!(sessions.touch("a").is_some(), "a was touched 30 s ago");
        clock.advance(Duration::from_secs(60));
        assert_eq!(sessions.expire(), 1);
        assert!(sessions.is_empty());
    }

    #[test]
    fn past_the_bound_the_least_recently_active_goes() {
        let clock = ManualClock::new();
        let sessions = Sessions::new(clock.shared(), Duration::from_secs(60), 3);
        for id in ["a", "b", "c"] {
            sessions.put(session(id));
            clock.advance(Duration::from_secs(1));
        }
        sessions.touch("a");
        sessions.put(session("d"));
        assert_eq!(sessions.len(), 3);
        assert!(sessions.touch("b").is_none());
        for id in ["a", "c", "d"] {
            assert!(sessions.touch(id).is_some(), "{id}");
        }
    }
}
