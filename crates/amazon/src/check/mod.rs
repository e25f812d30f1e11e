//! Checkers over recorded histories of the inventory API, shared by the crate's
//! tests and the `kill -9` fault test of the binary.
//!
//! | module | what it checks |
//! |---|---|
//! | [`clients`] | recording clients over HTTP: Zipf SKUs, duplicate keys, every unanswered request retried until answered |
//! | [`history`] | the record: [`Op`], [`Answer`], [`Event`], and the [`Recorder`] concurrent clients share |
//! | [`conservation`] | O(n): stock conserved and never negative, one effect per key, nothing acknowledged lost, no hidden effect |
//! | `linearizable` | (feature `linearizability`) per SKU, with `stateright`'s `LinearizabilityTester` against a sequential spec |
//!
//! The linearizability check links `stateright`, so it sits behind a feature that
//! only test builds enable (the crate's own dev-dependency on itself, and the
//! binary's tests); the binary never carries it.

pub mod clients;
pub mod conservation;
pub mod history;
#[cfg(feature = "linearizability")]
pub mod linearizable;

pub use conservation::{FinalReservation, FinalState, Report, check_conservation};
pub use history::{Answer, Event, Op, Recorder};
