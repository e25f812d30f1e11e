//! # casebook-whatsapp
//!
//! The WhatsApp case study, built for real: chat nodes holding one lightweight task
//! per connection, speaking XMPP (client-to-server over TCP and over WebSocket, as
//! WhatsApp's customised XMPP did), with durable offline store-and-forward,
//! delivery receipts and regional nodes that route to each other.
//!
//! `casebook up` starts one chat node per region of the topology (the `chat`
//! service); `casebook load whatsapp` drives them (or Prosody) with the [`client`]
//! swarm.
//!
//! | module | role |
//! |---|---|
//! | [`archive`] | the XEP-0313 message archive: both copies of a message in one WAL record, per-user count and age bounds, RSM paging |
//! | [`auth`] | SASL SCRAM-SHA-256 / SCRAM-SHA-1 / PLAIN, the account store, the failed-login limiter |
//! | [`client`] | an XMPP client library (SCRAM/PLAIN, bind, XEP-0198, receipts) and the load swarm behind `casebook load whatsapp` |
//! | [`cluster`] | regional nodes as one service: directory, session registry (bare JID → nodes), the batched node-to-node link |
//! | [`node`] | the `chat` service: XMPP c2s over TCP (+STARTTLS), direct TLS and RFC 7395 WebSocket, SASL, bind, routing (to other nodes through `cluster`), capacity redirects, offline delivery with XEP-0203 stamps, XEP-0198 stream management and resumption |
//! | [`offline`] | offline store: per-recipient queues in log-structured shards on the kit's WAL; durable before the sender's ack, removed on the recipient's ack, compaction and retention |
//! | [`roster`] | rosters and pending subscription requests (RFC 6121), one atomically rewritten file per user |
//! | [`xml`] | XMPP XML layer: streaming stanza parser (TCP and RFC 7395 frames) with limits, element tree, writer, stream errors |

pub mod archive;
pub mod auth;
pub mod case;
pub mod client;
pub mod cluster;
pub mod node;
pub mod offline;
pub mod roster;
pub mod xml;
