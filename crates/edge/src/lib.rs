//! # casebook-edge
//!
//! The edge plane: the API gateway (filters, routing, auth, rate limits) and the CDN
//! tiers (ISP cache → regional edge → origin). Requests get their request id and
//! trace context here, from [`casebook_kit::telemetry`], before any hop.
//!
//! The gateway and CDN tiers arrive with the netflix case; until then this crate
//! holds only the edge's place in the dependency graph (cases → edge → kit).
