//! # casebook-whatsapp
//!
//! The WhatsApp case study, built for real: chat nodes holding one lightweight task
//! per connection, speaking XMPP (client-to-server over TCP, TLS and WebSocket, as
//! WhatsApp's customised XMPP did), with durable offline store-and-forward, delivery
//! receipts, XEP-0198 resumption and regional nodes that route to each other;
//! `casebook up` starts one chat node per region and `casebook load whatsapp` drives
//! them (or Prosody) with the [`load`] swarm.
//!
//! | service / listener | default port | serves |
//! |---|---|---|
//! | `chat` | 5222 | XMPP client-to-server over TCP, STARTTLS offered (RFC 6120) |
//! | `chat` → `xmpp-tls` | 5223 | the same over TLS from the first byte (XEP-0368) |
//! | `chat` → `xmpp-websocket` | 5280 | the same over RFC 7395 WebSocket at `/xmpp-websocket` |
//! | `chat` → `chat-link` | a free port | the node-to-node link (internal, found through the cluster directory) |
//!
//! Region *i*'s node listens on each port + 100 × *i* (`WhatsappConfig::node_ports`).
//!
//! | module | role |
//! |---|---|
//! | [`archive`] | the XEP-0313 message archive: both copies of a message in one WAL record, per-user count and age bounds, RSM paging |
//! | [`auth`] | SASL SCRAM-SHA-256 / SCRAM-SHA-1 / PLAIN, the account store, the failed-login limiter |
//! | [`client`] | an XMPP client library (SCRAM/PLAIN, bind, XEP-0198, receipts) |
//! | [`load`] | the swarm behind `casebook load whatsapp`: open-loop logins and messaging, latency from the intended send time, the report and its progress |
//! | [`cluster`] | regional nodes as one service: directory, session registry (bare JID → nodes), the batched node-to-node link |
//! | [`node`] | the `chat` service: XMPP c2s over TCP (+STARTTLS), direct TLS and RFC 7395 WebSocket, SASL, bind, routing (to other nodes through `cluster`), capacity redirects, offline delivery with XEP-0203 stamps, XEP-0198 stream management and resumption |
//! | [`offline`] | offline store: per-recipient queues in log-structured shards on the kit's WAL; durable before the sender's ack, removed on the recipient's ack, compaction and retention |
//! | [`roster`] | rosters and pending subscription requests (RFC 6121), one atomically rewritten file per user |
//! | [`xml`] | XMPP XML layer: streaming stanza parser (TCP and RFC 7395 frames) with limits, element tree, writer, stream errors |
//! | [`xmpp`] | the vocabulary every module shares: namespace constants, JIDs, localpart preparation (a leaf) |

pub mod archive;
pub mod auth;
pub mod case;
pub mod client;
pub mod cluster;
pub mod load;
pub mod node;
pub mod offline;
pub mod roster;
pub mod xml;
pub mod xmpp;
