//! Delivering the offline backlog with XEP-0203 delay stamps.

use super::*;

impl Conn {
    /// Writes every pending offline message with a XEP-0203 delay, in order, and
    /// removes each batch once written — or, with XEP-0198 enabled, once the
    /// client's `<a/>` covers it (see [`super::sm`]).
    pub(super) async fn flush_offline(&mut self, bare: &str) -> Result<(), Gone> {
        if self.sm.is_some() {
            return self.flush_offline_acked(bare).await;
        }
        let limits = Limits {
            // The stored stanza carries the stamped `from`: allow for it.
            max_stanza_bytes: self.shared.config.max_stanza_bytes + 4096,
            ..Limits::default()
        };
        let parser = FramedParser::new(limits);
        loop {
            let batch = self.shared.domain.offline.pending(bare, OFFLINE_BATCH);
            let Some(last) = batch.last().map(|m| m.seq) else {
                return Ok(());
            };
            for message in &batch {
                let Ok(Frame::Stanza(mut stanza)) = parser.parse(&message.payload) else {
                    tracing::warn!(seq = message.seq.0, "unreadable offline payload dropped");
                    continue;
                };
                stanza.push_child(
                    Element::new("delay", DELAY_NS)
                        .with_attr("from", self.shared.config.domain.clone())
                        .with_attr("stamp", xep0082_stamp(message.stamp_ms)),
                );
                self.write(&write_stanza(&stanza)).await?;
            }
            metrics::counter!("whatsapp_offline_delivered_total").increment(batch.len() as u64);
            if let Err(error) = self.shared.domain.offline.ack(bare, Ack::UpTo(last)).await {
                tracing::warn!(%error, "offline ack failed: the batch will be delivered again");
                return Ok(());
            }
        }
    }
}
