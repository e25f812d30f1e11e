//! # casebook-whatsapp
//!
//! The WhatsApp case study, built for real: chat nodes holding one lightweight task
//! per connection, speaking XMPP (client-to-server over TCP and over WebSocket, as
//! WhatsApp's customised XMPP did), with durable offline store-and-forward,
//! delivery receipts and regional nodes that route to each other.
//!
//! Under construction (issue 5): the leaf modules come first, then the chat node
//! that assembles them and registers with the platform.
//!
//! | module | role |
//! |---|---|
//! | [`xml`] | XMPP XML layer: streaming stanza parser (TCP and RFC 7395 frames) with limits, element tree, writer, stream errors |

pub mod xml;
