//! RESP2/RESP3, the Redis protocol, in the mini-redis style: a request parser,
//! reply [`Frame`]s, one file per command under [`cmd`], and the `geo-resp`
//! server that runs them over TCP.
//!
//! | module | role |
//! |---|---|
//! | [`parse`] | incremental request parser: multibulk and inline, Redis's limits and error texts |
//! | [`frame`] | replies, written in RESP2 or RESP3; a reply reader for clients and tests |
//! | [`cmd`] | the commands: table, arity, dispatch, argument helpers |
//! | [`state`] | the shared server state (keyspace with its memory estimate, limits, clock) and per-connection sessions |
//! | [`limits`] | the limits: request sizes, the global request buffer budget, idle timeout, `maxmemory` |
//! | [`server`] | the connection loop with pipelining, limits and idle timeout; the `geo-resp` service |
//! | [`live`] | the live key: a view of the `uber` service's driver index (`drivers`) |
//! | [`fuzzing`] | the invariants the fuzz targets check |
//!
//! Guarantees: requests are answered in order, replies of one read batched into
//! one write; a protocol error is answered with Redis's text and closes that
//! connection only, and so does a command that panics. No number a client sends
//! (COUNT, lengths, counts, indexes, patterns) sizes an allocation or a
//! recursion: memory is bounded by [`limits`] (request size, a global budget of
//! buffered request bytes, idle timeout, `maxmemory` on stored data). Deliberately absent: AUTH/ACLs, MULTI/EXEC, pub/sub, keys of
//! any type but geo sets (so WRONGTYPE never arises), databases other than 0,
//! persistence, ZRANGE's BYSCORE/BYLEX forms.

pub mod cmd;
pub mod frame;
pub mod fuzzing;
pub mod limits;
pub mod live;
pub mod parse;
pub mod server;
pub mod state;

pub use frame::{Frame, Proto};
pub use limits::Limits;
pub use parse::{ProtocolError, RequestParser};
pub use server::GeoResp;
pub use state::{Server, Session};
