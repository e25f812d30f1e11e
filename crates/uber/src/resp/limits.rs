//! The RESP port's limits: request sizes, connections, the global budget of
//! buffered request bytes, the idle timeout and `maxmemory` on stored data.
//!
//! | limit | default | `[uber]` key | beyond it |
//! |---|---|---|---|
//! | one request (sum of its arguments, each charged [`ARG_OVERHEAD`] more) | 4 MiB | `resp_max_request_bytes` | `-ERR Protocol error: …`, connection closed |
//! | one argument | the request limit | (same) | `-ERR Protocol error: invalid bulk length` (Redis's `proto-max-bulk-len` text), closed |
//! | arguments in one request | 1,048,576 | — | `-ERR Protocol error: invalid multibulk length`, closed |
//! | connections | 10,000 | `resp_max_clients` | `-ERR max number of clients reached`, closed |
//! | request bytes buffered by all connections | 256 MiB | `resp_buffer_budget_bytes` | see below |
//! | idle time of a connection | 300 s | `resp_idle_timeout` (`"0s"`: off) | closed without a reply, as Redis's `timeout` does |
//! | stored data (estimate) | 512 MiB | `resp_maxmemory_bytes` (0: none) | writes get `-OOM command not allowed when used memory > 'maxmemory'.` |
//!
//! The buffer budget: a connection between requests may always read one chunk
//! ([`READ_CHUNK`]); a connection in the middle of a request must charge what it
//! holds plus its next read to the budget first. When the charge does not fit,
//! that connection is told `-ERR request buffer budget exhausted …` and closed
//! (refused, not queued: a queue of half-received requests could wait on each
//! other forever). So the request bytes held by the port never exceed
//! `resp_buffer_budget_bytes + connections × READ_CHUNK` (≈ 416 MiB at the
//! defaults); counted in bytes received, not in allocator capacity.
//!
//! `maxmemory` is checked as Redis does with `noeviction`: before a command
//! that may grow the data (GEOADD, GEORADIUS, GEORADIUSBYMEMBER,
//! GEOSEARCHSTORE), refused while the estimate is above the limit, so one
//! command may overshoot by at most its own request size. Reads, ZREM, DEL and
//! FLUSH are always served. The live key's writes go to the driver index, which
//! is not this port's data: they are not refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// What one read of a connection may add to its buffer.
pub const READ_CHUNK: usize = 16 * 1024;

/// What an argument costs beyond its bytes (its handle in the argument vector),
/// so a request of many empty arguments is charged for the memory it takes.
pub const ARG_OVERHEAD: usize = std::mem::size_of::<bytes::Bytes>();

/// Redis's `proto-max-bulk-len`, the most `resp_max_request_bytes` may be.
pub const MAX_REQUEST_BYTES_CEILING: usize = 512 * 1024 * 1024;

/// The limits of one RESP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most arguments in one multibulk request.
    pub max_multibulk_len: usize,
    /// Largest single argument.
    pub max_bulk_len: usize,
    /// Largest request: its arguments' bytes plus [`ARG_OVERHEAD`] each.
    pub max_request_bytes: usize,
    /// Most simultaneous connections (Redis's `maxclients`); the next one is
    /// told `-ERR max number of clients reached` and closed.
    pub max_clients: usize,
    /// Request bytes all connections together may hold (see the module docs).
    pub buffer_budget_bytes: usize,
    /// A connection silent this long is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Stored data (estimated) above which writes are refused; 0: no limit.
    pub max_memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_multibulk_len: 1024 * 1024,
            max_bulk_len: 4 * 1024 * 1024,
            max_request_bytes: 4 * 1024 * 1024,
            max_clients: 10_000,
            buffer_budget_bytes: 256 * 1024 * 1024,
            idle_timeout: Some(Duration::from_secs(300)),
            max_memory_bytes: 512 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// The limits `[uber]` configures.
    pub fn from_config(config: &crate::config::UberConfig) -> Self {
        Self {
            max_clients: config.resp_max_clients,
            max_bulk_len: config.resp_max_request_bytes,
            max_request_bytes: config.resp_max_request_bytes,
            buffer_budget_bytes: config.resp_buffer_budget_bytes,
            idle_timeout: (!config.resp_idle_timeout.is_zero()).then_some(config.resp_idle_timeout),
            max_memory_bytes: config.resp_maxmemory_bytes,
            ..Self::default()
        }
    }

    /// Whether `used` stored bytes are over `maxmemory`.
    pub fn over_maxmemory(&self, used: usize) -> bool {
        self.max_memory_bytes != 0 && used > self.max_memory_bytes
    }
}

/// Checks the `[uber] resp_*` limit keys; the error names the dotted key.
pub fn validate_config(
    config: &crate::config::UberConfig,
) -> Result<(), casebook_kit::config::ConfigError> {
    use casebook_kit::config::ConfigError;
    if !(1024..=MAX_REQUEST_BYTES_CEILING).contains(&config.resp_max_request_bytes) {
        return Err(ConfigError::new(
            "uber.resp_max_request_bytes",
            format!("must be in 1024..={MAX_REQUEST_BYTES_CEILING} (Redis's proto-max-bulk-len)"),
        ));
    }
    if config.resp_buffer_budget_bytes / 2 < config.resp_max_request_bytes {
        return Err(ConfigError::new(
            "uber.resp_buffer_budget_bytes",
            format!(
                "must be at least twice resp_max_request_bytes ({}), so a request of that size can be buffered with room to spare",
                config.resp_max_request_bytes
            ),
        ));
    }
    Ok(())
}

/// The global budget of buffered request bytes, shared by every connection.
#[derive(Debug)]
pub struct BufferBudget {
    limit: usize,
    used: AtomicUsize,
}

impl BufferBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// Bytes charged now, by all connections.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    fn try_charge(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// One connection's share of the [`BufferBudget`]; given back when dropped
/// (also when the connection's task unwinds).
#[derive(Debug)]
pub struct Charge<'a> {
    budget: &'a BufferBudget,
    held: usize,
}

impl<'a> Charge<'a> {
    pub fn new(budget: &'a BufferBudget) -> Self {
        Self { budget, held: 0 }
    }

    /// Makes this connection's charge exactly `bytes`; `false` (and the charge
    /// unchanged) when growing it would pass the budget.
    pub fn set(&mut self, bytes: usize) -> bool {
        if bytes == self.held {
            return true;
        }
        if bytes > self.held {
            if !self.budget.try_charge(bytes - self.held) {
                return false;
            }
        } else {
            self.budget.release(self.held - bytes);
        }
        self.held = bytes;
        true
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        self.budget.release(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stay_within_the_budget_and_are_given_back() {
        let budget = BufferBudget::new(100);
        let mut a = Charge::new(&budget);
        let mut b = Charge::new(&budget);
        assert!(a.set(60));
        assert!(!b.set(41), "60 + 41 is over 100");
        assert_eq!(budget.used(), 60);
        assert!(b.set(40));
        assert!(a.set(10), "shrinking always succeeds");
        assert!(b.set(90));
        drop(b);
        assert_eq!(budget.used(), 10);
        drop(a);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn config_keys_are_validated_by_name() {
        let mut config = crate::config::UberConfig::default();
        assert_eq!(validate_config(&config), Ok(()));
        config.resp_max_request_bytes = 1024 * 1024 * 1024;
        let error = validate_config(&config).unwrap_err();
        assert_eq!(error.key(), "uber.resp_max_request_bytes", "{error}");
        config.resp_max_request_bytes = 8 * 1024 * 1024;
        config.resp_buffer_budget_bytes = 1024 * 1024;
        let error = validate_config(&config).unwrap_err();
        assert_eq!(error.key(), "uber.resp_buffer_budget_bytes", "{error}");
        config.resp_idle_timeout = Duration::ZERO;
        config.resp_buffer_budget_bytes = 16 * 1024 * 1024;
        assert_eq!(Limits::from_config(&config).idle_timeout, None);
    }

    #[test]
    fn the_idle_timeout_is_a_humantime_string_and_zero_turns_it_off() {
        let parse = |json: &str| -> crate::config::UberConfig {
            serde_json::from_str(json).expect("a valid [uber] table")
        };
        let default = Limits::from_config(&parse("{}"));
        assert_eq!(default.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(default, Limits::default(), "the defaults agree");
        let five = parse(r#"{"resp_idle_timeout": "5m"}"#);
        assert_eq!(
            Limits::from_config(&five).idle_timeout,
            Some(Duration::from_secs(300))
        );
        let off = parse(r#"{"resp_idle_timeout": "0s"}"#);
        assert_eq!(Limits::from_config(&off).idle_timeout, None);
        assert!(
            serde_json::from_str::<crate::config::UberConfig>(r#"{"resp_idle_timeout": 300}"#)
                .is_err()
        );
    }
}
