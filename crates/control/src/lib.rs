//! # casebook-control
//!
//! The control plane: the one service every other registers with. It serves
//! discovery (Eureka semantics), the Atlas-like metrics store and the platform's
//! admin API on port 7700.

pub mod metrics_store;
