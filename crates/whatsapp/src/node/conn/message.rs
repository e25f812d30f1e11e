//! `<message/>`: routing to bare and full JIDs, offline storage when nobody can take
//! it; archiving (XEP-0313, with XEP-0359 stanza-ids) and carbons (XEP-0280) on the way.

use super::*;

impl Conn {
    pub(super) async fn message(&mut self, mut element: Element) -> Result<(), Gone> {
        let to = match self.local_recipient(&element) {
            Ok(Some(to)) => to,
            // No `to`: addressed to the sender's own bare JID (RFC 6120 §10.3.1 for messages, §8.1.1.1).
            Ok(None) => {
                element.set_attr("to", self.bare_jid());
                Jid::parse(&self.bare_jid()).expect("a bound JID parses")
            }
            Err(condition) => return self.bounce(&element, "cancel", condition).await,
        };
        let Some(local) = to.local.clone() else {
            // Messages to the server itself: nothing here handles them.
            return self.bounce(&element, "cancel", "service-unavailable").await;
        };
        if !self.shared.domain.accounts.contains(&local) {
            return self.bounce(&element, "cancel", "service-unavailable").await;
        }
        let bare = to.bare();
        let bare_recipient = bare.clone();
        self.archive_and_stamp(&mut element, &bare).await;
        if let Some(own) = &self.bound {
            carbons::copy(
                &self.shared,
                "sent",
                &own.bare,
                Some(&own.resource),
                &element,
            );
        }
        if self.sm.is_some() && matches!(element.attr("type"), None | Some("normal") | Some("chat"))
        {
            // XEP-0198: durable before the sender's <a/> covers it, online or not.
            return self.message_durable(element, to).await;
        }
        let xml = write_stanza(&element);
        if let Some(resource) = &to.resource
            && let Delivery::Delivered(_) = self.shared.router.to_full(&bare, resource, &xml)
        {
            carbons::copy(&self.shared, "received", &bare, Some(resource), &element);
            return Ok(());
        }
        if let Delivery::Delivered(_) = self.shared.router.to_bare(&bare, &xml) {
            return Ok(());
        }
        match element.attr("type") {
            // Only normal and chat messages are stored (RFC 6121 §8.5.2.2 leaves
            // headline/groupchat/error undelivered).
            None | Some("normal") | Some("chat") => {}
            _ => return Ok(()),
        }
        let id = element
            .attr("id")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("cb-{:016x}", rand::random::<u64>()));
        let stored = self
            .shared
            .domain
            .offline
            .store(NewMessage {
                id,
                recipient: bare_recipient.clone(),
                sender: self.full_jid(),
                payload: Bytes::from(element.to_xml()),
            })
            .await;
        match stored {
            Ok(_) => {
                // The recipient may have come online (and flushed) while the store
                // was in flight: have it pick this message up now.
                self.shared.router.nudge_offline(&bare_recipient);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "offline store refused a message");
                self.bounce(&element, "wait", "resource-constraint").await
            }
        }
    }
}
