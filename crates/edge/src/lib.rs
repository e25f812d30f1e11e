//! # casebook-edge
//!
//! The edge plane: the API gateway (filters, routing, auth, rate limits) and the CDN
//! tiers (ISP cache → regional edge → origin). Requests get their request id and
//! trace context here, from [`casebook_kit::telemetry`], before any hop.
//!
//! | module | what it is |
//! |---|---|
//! | [`gateway`] | the API gateway in the manner of Zuul 2: filters by name, routes by prefix through discovery, the resilience stack per route, JWT and API-key auth, rate limits, `/admin/routes` |
//! | [`signing`] | signed, expiring URLs (`?exp=…&sig=…`, HMAC-SHA256 with a key the playback service and the edges share) |
//! | [`cdn`] | a pull-through cache tier as a service: the ISP cache and the regional edge are two configurations of it |

pub mod cdn;
pub mod gateway;
pub mod signing;
