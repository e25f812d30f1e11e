//! # casebook-netflix
//!
//! The Netflix case study's streaming path — studio → encoding → origin → CDN →
//! player — and its service plane: users, catalog, recommendations and search,
//! billing and playback behind the API gateway on :8080. The cache tiers are
//! `casebook_edge::cdn` and the gateway `casebook_edge::gateway`; this crate has
//! the rest.
//!
//! | module | what it is |
//! |---|---|
//! | [`billing`] | billing: plans, subscriptions, invoices and payments (SQL), charged exactly once per idempotency key against a simulated provider |
//! | [`case`] | the case's face: pipeline, origin, the two CDN tiers, playback, and the service plane with its gateway |
//! | [`catalog`] | the catalog service: a few thousand generated titles (seeded) and the pipeline's playable ones, paged, versioned |
//! | [`config`] | the `[netflix]` table |
//! | [`gateway`] | the default `[netflix.gateway]` table: every service behind `/api/v1/…` |
//! | [`load`] | the service-plane workload behind `casebook load netflix --api` |
//! | [`origin`] | the origin: objects in an object store, catalog metadata beside them, served over HTTP |
//! | [`pipeline`] | the content pipeline: a title → a bitrate ladder as HLS (ffmpeg, or the synthetic encoder) → published to the origin |
//! | [`playback`] | the playback API: catalog, sessions, steering to the nearest healthy edge, signed manifests, heartbeats and QoE events |
//! | [`player`] | the player fleet behind `casebook load netflix`: network traces, ABR (BBA, BOLA), a buffer model, QoE |
//! | [`recs`] | recommendations and search: typo-tolerant full text (tantivy), home rows from viewing history, the cached popular rows |
//! | [`sql`] | how a SQL store opens: SQLite by default, PostgreSQL or MariaDB by URL; migrations per dialect |
//! | [`users`] | the user service: accounts, profiles, viewing history, trending views, login (Argon2id, JWTs the gateway verifies) on SQLite or PostgreSQL |

pub mod billing;
pub mod case;
pub mod catalog;
pub mod config;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod gateway;
pub mod load;
pub mod origin;
pub mod pipeline;
pub mod playback;
pub mod player;
pub mod recs;
pub mod sql;
pub mod users;
