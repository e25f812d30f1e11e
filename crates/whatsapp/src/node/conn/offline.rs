//! Delivering the offline backlog with XEP-0203 delay stamps.

use super::sm::FlushTurn;
use super::*;
use crate::offline::MessageKey;

impl Conn {
    /// Writes the pending offline messages with a XEP-0203 delay, in order. Without
    /// XEP-0198 each batch is removed from the store once written; with it, each
    /// message stays stored until the client's `<a/>` covers it (see
    /// [`super::sm`]), at most half the unacked bound is in flight (the flush
    /// resumes on acks), and a message already in flight is not sent twice.
    pub(super) async fn flush_offline(&mut self, bare: &str) -> Result<(), Gone> {
        let limits = Limits {
            // The stored stanza carries the stamped `from`: allow for it.
            max_stanza_bytes: self.shared.config.max_stanza_bytes + 4096,
            ..Limits::default()
        };
        let parser = FramedParser::new(limits);
        let mut after = None;
        loop {
            let batch = self
                .shared
                .domain
                .offline
                .pending_after(bare, after, OFFLINE_BATCH);
            let Some(last) = batch.last().map(|m| m.seq) else {
                return Ok(());
            };
            let mut written = 0;
            for message in batch {
                after = Some(message.seq);
                let key = match self.sm.as_mut() {
                    None => None,
                    Some(sm) => {
                        let key = MessageKey {
                            sender: message.sender.clone(),
                            id: message.id.clone(),
                        };
                        match sm.flush_turn(&key) {
                            FlushTurn::Send => Some(key),
                            FlushTurn::InFlight => continue,
                            FlushTurn::Paused => return Ok(()),
                        }
                    }
                };
                // Unreadable: dropped with its batch, or skipped (left stored)
                // under stream management.
                let Ok(Frame::Stanza(mut stanza)) = parser.parse(&message.payload) else {
                    tracing::warn!(seq = message.seq.0, "unreadable offline payload");
                    continue;
                };
                stanza.push_child(
                    Element::new("delay", DELAY_NS)
                        .with_attr("from", self.shared.config.domain.clone())
                        .with_attr("stamp", xep0082_stamp(message.stamp_ms)),
                );
                self.write(&write_stanza(&stanza)).await?;
                written += 1;
                if let Some(key) = key {
                    self.sm_mark_stored(key);
                }
            }
            metrics::counter!("whatsapp_offline_delivered_total").increment(written);
            if self.sm.is_none()
                && let Err(error) = self.shared.domain.offline.ack(bare, Ack::UpTo(last)).await
            {
                tracing::warn!(%error, "offline ack failed: the batch will be delivered again");
                return Ok(());
            }
        }
    }
}
