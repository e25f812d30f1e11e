//! casebook's state on real engines (fleet mode). Its own crate so that the kit and
//! the cases pay the engines' client libraries' compile time only when they use them.
//!
//! | module | what it is |
//! |---|---|
//! | [`nats_bus`] | the kit's `EventBus` on NATS JetStream (`NatsBus`) |

pub mod nats_bus;

pub use nats_bus::{NatsBus, NatsConfig};
