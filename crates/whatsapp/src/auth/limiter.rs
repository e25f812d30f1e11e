//! Failed-login limiter, per account and per source address, on the injected clock.
//!
//! Guarantees: after `max_account_failures` failures of one account (from any
//! address), or `max_address_failures` failures from one source address (IPv4
//! exactly, IPv6 by its /64, IPv4-mapped IPv6 as IPv4; any accounts), inside one
//! `window`, that key is refused for a back-off that doubles with each consecutive lock-out
//! (`base_backoff`, `2 × base_backoff`, ... capped at `max_backoff`); a key that has
//! been quiet for `forget_after` starts again from scratch. The address bound is the
//! higher one (as ejabberd's and Prosody's are): users behind one NAT share an
//! address, so one user guessing wrong locks out their own account, not their
//! neighbours, until the address as a whole looks like a guesser. A successful login
//! clears its account's record (not its address's, so an attacker cannot reset an
//! address by logging into an account of their own). Memory is bounded: each table
//! tracks at most `max_tracked_keys` keys and evicts the oldest-inserted one.
//!
//! Not guaranteed: a lock-out survives eviction under a flood of more distinct keys
//! than the cap, or a restart (the tables live in memory).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use casebook_kit::clock::SharedClock;
use parking_lot::Mutex;

/// Limiter settings.
#[derive(Debug, Clone)]
pub struct LimiterConfig {
    /// Failures of one account inside one window that lock that account out.
    pub max_account_failures: u32,
    /// Failures from one address inside one window that lock that address out;
    /// at least `max_account_failures`.
    pub max_address_failures: u32,
    /// The failure-counting window.
    pub window: Duration,
    /// The first lock-out's length; each consecutive one doubles.
    pub base_backoff: Duration,
    /// The longest lock-out.
    pub max_backoff: Duration,
    /// Quiet time after which a key's history is forgotten.
    pub forget_after: Duration,
    /// Keys tracked per table (accounts, addresses).
    pub max_tracked_keys: usize,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            max_account_failures: 5,
            max_address_failures: 20,
            window: Duration::from_secs(60),
            base_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(60 * 60),
            max_tracked_keys: 65_536,
        }
    }
}

impl LimiterConfig {
    /// Checks the settings make sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_account_failures == 0 {
            return Err("max_account_failures must be at least 1".into());
        }
        if self.max_address_failures < self.max_account_failures {
            return Err("max_address_failures must be at least max_account_failures".into());
        }
        if self.window.is_zero() || self.base_backoff.is_zero() {
            return Err("window and base_backoff must be positive".into());
        }
        if self.max_backoff < self.base_backoff {
            return Err("max_backoff must be at least base_backoff".into());
        }
        if self.max_tracked_keys == 0 {
            return Err("max_tracked_keys must be at least 1".into());
        }
        Ok(())
    }
}

/// A [`LimiterConfig`] that makes no sense, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid login limiter config: {0}")]
pub struct InvalidLimiterConfig(pub String);

/// Why a login attempt is refused before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    /// The source address is locked out.
    Address { retry_after: Duration },
    /// The account is locked out.
    Account { retry_after: Duration },
}

impl Locked {
    /// How long until the lock-out ends.
    pub fn retry_after(self) -> Duration {
        match self {
            Locked::Address { retry_after } | Locked::Account { retry_after } => retry_after,
        }
    }
}

/// The limiter; share it (`Arc`) between all connections of a node.
#[derive(Debug)]
pub struct LoginLimiter {
    clock: SharedClock,
    config: LimiterConfig,
    tables: Mutex<Tables>,
}

#[derive(Debug)]
struct Tables {
    addresses: BoundedTable<IpAddr>,
    accounts: BoundedTable<String>,
}

impl LoginLimiter {
    /// A limiter on `clock`, or why the config is invalid.
    pub fn new(clock: SharedClock, config: LimiterConfig) -> Result<Self, InvalidLimiterConfig> {
        config.validate().map_err(InvalidLimiterConfig)?;
        let cap = config.max_tracked_keys;
        Ok(Self {
            clock,
            config,
            tables: Mutex::new(Tables {
                addresses: BoundedTable::new(cap),
                accounts: BoundedTable::new(cap),
            }),
        })
    }

    /// Refuses if the address or (when known) the account is locked out.
    pub fn check(&self, address: IpAddr, account: Option<&str>) -> Result<(), Locked> {
        let now = self.clock.now();
        let tables = self.tables.lock();
        if let Some(retry_after) = tables.addresses.locked_for(&address_key(address), now) {
            return Err(Locked::Address { retry_after });
        }
        if let Some(retry_after) = account.and_then(|a| tables.accounts.locked_for(a, now)) {
            return Err(Locked::Account { retry_after });
        }
        Ok(())
    }

    /// Counts a failed attempt against the address and (when known) the account.
    pub fn record_failure(&self, address: IpAddr, account: Option<&str>) {
        let now = self.clock.now();
        let mut tables = self.tables.lock();
        tables.addresses.entry(address_key(address), now).fail(
            now,
            self.config.max_address_failures,
            &self.config,
        );
        if let Some(account) = account {
            tables.accounts.entry(account.to_string(), now).fail(
                now,
                self.config.max_account_failures,
                &self.config,
            );
        }
    }

    /// Clears the account's record after a successful login.
    pub fn record_success(&self, account: &str) {
        self.tables.lock().accounts.remove(account);
    }

    /// Keys currently tracked (addresses, accounts); for metrics and tests.
    pub fn tracked(&self) -> (usize, usize) {
        let tables = self.tables.lock();
        (tables.addresses.map.len(), tables.accounts.map.len())
    }
}

/// IPv6 clients usually own a whole /64, so they are limited as one.
fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[derive(Debug)]
struct Record {
    window_start: Instant,
    failures: u32,
    lockouts: u32,
    locked_until: Option<Instant>,
    last_failure: Instant,
    /// Insertion sequence, to tell live entries from stale ones in the FIFO.
    seq: u64,
}

impl Record {
    /// Counts a failure; `max_failures` in one window lock the key out.
    fn fail(&mut self, now: Instant, max_failures: u32, config: &LimiterConfig) {
        if now.saturating_duration_since(self.last_failure) >= config.forget_after {
            self.lockouts = 0;
        }
        if now.saturating_duration_since(self.window_start) >= config.window {
            self.window_start = now;
            self.failures = 0;
        }
        self.last_failure = now;
        self.failures += 1;
        debug_assert!(self.failures <= max_failures);
        if self.failures >= max_failures {
            self.lockouts = self.lockouts.saturating_add(1);
            let doublings = (self.lockouts - 1).min(31);
            let backoff = config
                .base_backoff
                .saturating_mul(1u32 << doublings)
                .min(config.max_backoff);
            self.locked_until = Some(now + backoff);
            self.failures = 0;
            self.window_start = now;
        }
    }
}

/// A map with at most `cap` keys, evicting the oldest-inserted.
#[derive(Debug)]
struct BoundedTable<K> {
    map: HashMap<K, Record>,
    order: VecDeque<(K, u64)>,
    next_seq: u64,
    cap: usize,
}

impl<K: Hash + Eq + Clone> BoundedTable<K> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            cap,
        }
    }

    fn locked_for<Q>(&self, key: &Q, now: Instant) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let until = self.map.get(key)?.locked_until?;
        (until > now).then(|| until - now)
    }

    fn entry(&mut self, key: K, now: Instant) -> &mut Record {
        if !self.map.contains_key(&key) {
            while self.map.len() >= self.cap {
                // Every live key has a FIFO slot, so this always finds one.
                let evicted = self.evict_oldest();
                debug_assert!(evicted, "FIFO lost track of a live key");
                if !evicted {
                    break;
                }
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.order.push_back((key.clone(), seq));
            self.map.insert(
                key.clone(),
                Record {
                    window_start: now,
                    failures: 0,
                    lockouts: 0,
                    locked_until: None,
                    last_failure: now,
                    seq,
                },
            );
            self.compact();
        }
        debug_assert!(self.map.len() <= self.cap);
        self.map.get_mut(&key).expect("inserted above")
    }

    fn remove<Q>(&mut self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // The FIFO keeps a stale slot; `compact` drops those before they pile up.
        self.map.remove(key);
    }

    fn evict_oldest(&mut self) -> bool {
        while let Some((key, seq)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|r| r.seq == seq) {
                self.map.remove(&key);
                return true;
            }
        }
        false
    }

    /// Keeps the FIFO within twice the cap by dropping slots of removed keys.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.cap + 16 {
            let map = &self.map;
            self.order
                .retain(|(key, seq)| map.get(key).is_some_and(|r| r.seq == *seq));
        }
        debug_assert!(self.order.len() <= 2 * self.cap + 17);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use casebook_kit::clock::ManualClock;

    use super::*;

    fn limiter(clock: &ManualClock, cap: usize) -> LoginLimiter {
        LoginLimiter::new(
            Arc::new(clock.clone()),
            LimiterConfig {
                max_tracked_keys: cap,
                ..LimiterConfig::default()
            },
        )
        .unwrap()
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));
    /// The default bounds: an address tolerates more failures than an account.
    const ACCOUNT_BOUND: u32 = 5;
    const ADDRESS_BOUND: u32 = 20;

    #[test]
    fn one_accounts_failures_lock_that_account_everywhere_but_not_its_neighbours() {
        let clock = ManualClock::new();
        let limiter = limiter(&clock, 100);
        assert_eq!(limiter.config.max_account_failures, ACCOUNT_BOUND);
        assert_eq!(limiter.config.max_address_failures, ADDRESS_BOUND);
        let elsewhere = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1));
        for _ in 0..ACCOUNT_BOUND {
            limiter.record_failure(IP, Some("alice"));
        }
        // Alice is locked out from any address...
        assert!(matches!(
            limiter.check(elsewhere, Some("alice")),
            Err(Locked::Account { .. })
        ));
        assert!(matches!(
            limiter.check(IP, Some("alice")),
            Err(Locked::Account { .. })
        ));
        // ...while bob, behind the same address, still gets in.
        assert_eq!(limiter.check(IP, Some("bob")), Ok(()));
        // Other accounts' failures from that address add up to the address bound.
        for i in ACCOUNT_BOUND..ADDRESS_BOUND - 1 {
            limiter.record_failure(IP, Some(&format!("guess{i}")));
        }
        assert_eq!(limiter.check(IP, Some("bob")), Ok(()));
        limiter.record_failure(IP, Some("one-more"));
        assert!(matches!(
            limiter.check(IP, Some("bob")),
            Err(Locked::Address { .. })
        ));
        assert_eq!(limiter.check(elsewhere, Some("bob")), Ok(()));
    }

    #[test]
    fn five_failures_in_a_window_lock_the_account_and_backoff_doubles() {
        let clock = ManualClock::new();
        let limiter = limiter(&clock, 100);
        let other_ip = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1));
        for _ in 0..4 {
            limiter.record_failure(IP, Some("alice"));
        }
        assert_eq!(limiter.check(other_ip, Some("alice")), Ok(()));
        limiter.record_failure(IP, Some("alice"));
        assert_eq!(
            limiter.check(other_ip, Some("alice")),
            Err(Locked::Account {
                retry_after: Duration::from_secs(30)
            })
        );
        assert_eq!(limiter.check(IP, Some("bob")), Ok(()));
        clock.advance(Duration::from_secs(30));
        assert_eq!(limiter.check(other_ip, Some("alice")), Ok(()));
        // The second consecutive lock-out lasts twice as long.
        for _ in 0..5 {
            limiter.record_failure(other_ip, Some("alice"));
        }
        let third_ip = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 2));
        assert_eq!(
            limiter.check(third_ip, Some("alice")),
            Err(Locked::Account {
                retry_after: Duration::from_secs(60)
            })
        );
    }

    #[test]
    fn failures_spread_over_windows_do_not_lock() {
        let clock = ManualClock::new();
        let limiter = limiter(&clock, 100);
        for _ in 0..20 {
            for _ in 0..4 {
                limiter.record_failure(IP, Some("alice"));
            }
            clock.advance(Duration::from_secs(60));
            assert_eq!(limiter.check(IP, Some("alice")), Ok(()));
        }
    }

    #[test]
    fn backoff_is_capped_and_forgotten_after_quiet() {
        let clock = ManualClock::new();
        let limiter = limiter(&clock, 100);
        let mut last = Duration::ZERO;
        for _ in 0..10 {
            for _ in 0..ADDRESS_BOUND {
                limiter.record_failure(IP, None);
            }
            last = limiter.check(IP, None).unwrap_err().retry_after();
            clock.advance(last);
        }
        assert_eq!(last, Duration::from_secs(15 * 60));
        clock.advance(Duration::from_secs(60 * 60));
        for _ in 0..ADDRESS_BOUND {
            limiter.record_failure(IP, None);
        }
        assert_eq!(
            limiter.check(IP, None).unwrap_err().retry_after(),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn success_resets_the_account_but_not_the_address() {
        let clock = ManualClock::new();
        let limiter = limiter(&clock, 100);
        for _ in 0..4 {
            limiter.record_failure(IP, Some("alice"));
        }
        limiter.record_success("alice");
        for _ in 4..ADDRESS_BOUND {
            limiter.record_failure(IP, Some("alice"));
            limiter.record_success("alice");
        }
        let other_ip = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(limiter.check(other_ip, Some("alice")), Ok(()));
        assert!(matches!(
            limiter.check(IP, None),
            Err(Locked::Address { .. })
        ));
    }

    #[test]
    fn ipv6_is_limited_per_64_and_mapped_v4_as_v4() {
        let clock = ManualClock::new();
        let limiter = limiter(&clock, 100);
        for host in 0..ADDRESS_BOUND as u16 {
            let a: IpAddr = format!("2001:db8:1:2::{host:x}").parse().unwrap();
            limiter.record_failure(a, None);
        }
        let same_64: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limiter.check(same_64, None).is_err());
        assert!(limiter.check(other_64, None).is_ok());
        for _ in 0..ADDRESS_BOUND {
            limiter.record_failure("::ffff:192.0.2.7".parse().unwrap(), None);
        }
        assert!(limiter.check(IP, None).is_err());
    }

    #[test]
    fn tables_stay_bounded_and_evict_the_oldest() {
        let clock = ManualClock::new();
        let limiter = limiter(&clock, 8);
        for _ in 0..5 {
            limiter.record_failure(IP, Some("first"));
        }
        assert!(limiter.check(IP, Some("first")).is_err());
        for i in 0..1000u32 {
            let ip = IpAddr::V4(i.into());
            limiter.record_failure(ip, Some(&format!("user{i}")));
            if i % 3 == 0 {
                limiter.record_success(&format!("user{i}"));
            }
            let (addresses, accounts) = limiter.tracked();
            assert!(addresses <= 8 && accounts <= 8);
        }
        // The oldest keys were evicted, lock-outs with them.
        assert_eq!(limiter.check(IP, Some("first")), Ok(()));
        assert!(limiter.tables.lock().accounts.order.len() <= 2 * 8 + 17);
    }

    #[test]
    fn invalid_configs_are_named() {
        let bad = LimiterConfig {
            max_account_failures: 0,
            ..LimiterConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_account_failures"));
        let bad = LimiterConfig {
            max_address_failures: 4,
            ..LimiterConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_address_failures"));
        let bad = LimiterConfig {
            max_backoff: Duration::from_secs(1),
            ..LimiterConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_backoff"));
        let err = LoginLimiter::new(Arc::new(ManualClock::new()), bad).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid login limiter config: max_backoff")
        );
    }
}
