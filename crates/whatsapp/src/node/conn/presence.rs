//! `<presence/>` (RFC 6121 §3–§4): availability and its broadcast to contacts,
//! probes answered from each contact's last presence, directed presence,
//! subscriptions (the user's half here, the contact's half in [`super::roster`]),
//! and the unavailable broadcast when the session ends however it ends.
//!
//! All delivery goes through the router's `to_bare` / `to_full`. Guarantees: a
//! contact sees the user's presence only with subscription `from`/`both` (or a
//! directed presence); inbound subscription requests are stored durably and
//! re-delivered at each initial presence until answered (§3.1.3); the user's
//! sessions' teardown (socket closed, stream error, kick, instance killed) sends
//! `unavailable` to everyone who saw it available. Absent: pre-approval (§3.4, not
//! advertised), presence to other domains (no s2s), probes to other nodes (the
//! last presence lives in this node's router).

use std::collections::BTreeSet;

use super::roster::{
    inbound_subscribed, inbound_unsubscribe, inbound_unsubscribed, send_unavailable_from,
    subscription_presence,
};
use super::*;
use crate::roster::{Item, RosterError, validate_contact};

/// Most JIDs one session may send directed presence to (each gets `unavailable`
/// when the session ends); beyond it the presence is refused.
pub const MAX_DIRECTED: usize = 256;

/// The presence side of a bound session: what [`session_ended`] needs.
#[derive(Debug, Default)]
pub(super) struct PresenceState {
    /// An available presence was broadcast and not yet retracted.
    pub(super) broadcast: bool,
    /// Directed-presence recipients not covered by the roster.
    pub(super) directed: BTreeSet<String>,
}

/// Sends `presence` (stamped `from`, no `to`) to every contact with `from`/`both`,
/// to the user's other available resources, and to the directed recipients.
fn broadcast(shared: &Shared, bound: &Bound, presence: &Element) {
    let deliver_bare = |to: &str| {
        let mut copy = presence.clone();
        copy.set_attr("to", to);
        shared.router.to_bare(to, &write_stanza(&copy));
    };
    if let Some(roster) = shared.domain.rosters.cached(&bound.bare) {
        for (contact, item) in &roster.items {
            if item.subscription.has_from() && is_local(shared, contact) {
                deliver_bare(contact);
            }
        }
    }
    for resource in shared.router.available_resources(&bound.bare) {
        if resource != bound.resource {
            let mut copy = presence.clone();
            copy.set_attr("to", format!("{}/{resource}", bound.bare));
            shared
                .router
                .to_full(&bound.bare, &resource, &write_stanza(&copy));
        }
    }
    for to in &bound.presence.directed {
        let mut copy = presence.clone();
        copy.set_attr("to", to.clone());
        let xml = write_stanza(&copy);
        match to.split_once('/') {
            Some((bare, resource)) => shared.router.to_full(bare, resource, &xml),
            None => shared.router.to_bare(to, &xml),
        };
    }
}

fn is_local(shared: &Shared, jid: &str) -> bool {
    jid.rsplit_once('@')
        .is_some_and(|(_, domain)| domain == shared.config.domain)
}

/// The session is going away: retract its presence (RFC 6121 §4.5.2).
pub(super) fn session_ended(bound: &mut Bound) {
    if !bound.presence.broadcast {
        return;
    }
    bound.presence.broadcast = false;
    let unavailable = Element::new("presence", CLIENT_NS)
        .with_attr("type", "unavailable")
        .with_attr("from", bound.full());
    // Off the router first, so no probe answers with this session meanwhile.
    bound
        .shared
        .router
        .set_last_presence(&bound.bare, &bound.resource, bound.conn_id, None);
    broadcast(&bound.shared.clone(), bound, &unavailable);
}

impl Conn {
    pub(super) async fn presence(&mut self, element: Element) -> Result<(), Gone> {
        self.presence_inner(element).await?;
        self.drain_queued().await
    }

    async fn presence_inner(&mut self, element: Element) -> Result<(), Gone> {
        match element.attr("type") {
            Some(kind @ ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed")) => {
                let kind = kind.to_owned();
                self.subscription(&kind, element).await
            }
            // Clients do not probe (§4.3); errors to presence are not routed back.
            Some("probe") | Some("error") => Ok(()),
            None | Some("unavailable") if element.attr("to").is_some() => {
                self.directed(element).await
            }
            None | Some("unavailable") => self.availability(element).await,
            Some(_) => self.bounce(&element, "modify", "bad-request").await,
        }
    }

    /// Broadcast presence (no `to`): availability, offline flush, probes, pending
    /// subscription requests.
    async fn availability(&mut self, element: Element) -> Result<(), Gone> {
        let bound = self.bound.as_ref().expect("session stage is bound");
        let (bare, resource, conn_id) = (bound.bare.clone(), bound.resource.clone(), bound.conn_id);
        // Loaded now so the broadcast (and the teardown's) has it in memory.
        let roster = match self.shared.domain.rosters.get(&bare).await {
            Ok(roster) => roster,
            Err(error) => {
                tracing::warn!(%error, "roster read failed");
                return self.bounce(&element, "wait", "internal-server-error").await;
            }
        };
        if element.attr("type") == Some("unavailable") {
            self.shared
                .router
                .set_presence(&bare, &resource, conn_id, false, 0);
            self.available = false;
            let bound = self.bound.as_mut().expect("session stage is bound");
            if bound.presence.broadcast {
                bound.presence.broadcast = false;
                self.shared
                    .router
                    .set_last_presence(&bare, &resource, conn_id, None);
                broadcast(&self.shared, bound, &element);
                bound.presence.directed.clear();
            }
            return Ok(());
        }
        let priority = element
            .child("priority", CLIENT_NS)
            .and_then(|p| p.text().trim().parse::<i8>().ok())
            .unwrap_or(0);
        let first = !self.available;
        if first {
            // Drain what was stored while unavailable before live messages flow,
            // then once more for what was stored in between.
            self.flush_offline(&bare).await?;
        }
        self.shared
            .router
            .set_presence(&bare, &resource, conn_id, true, priority);
        self.available = true;
        self.shared.router.set_last_presence(
            &bare,
            &resource,
            conn_id,
            Some(Arc::new(element.clone())),
        );
        let bound = self.bound.as_mut().expect("session stage is bound");
        bound.presence.broadcast = true;
        broadcast(&self.shared, bound, &element);
        if first {
            self.flush_offline(&bare).await?;
            self.initial_presence_extras(&roster).await?;
        }
        Ok(())
    }

    /// After initial presence: contacts' current presence (probe results, §4.2.3),
    /// the user's other resources' presence, then unanswered subscription requests
    /// (§3.1.3).
    async fn initial_presence_extras(
        &mut self,
        roster: &crate::roster::Roster,
    ) -> Result<(), Gone> {
        let full = self.full_jid();
        let bare = self.bare_jid();
        let mut out = String::new();
        let mut sources: Vec<&str> = roster
            .items
            .iter()
            .filter(|(contact, item)| item.subscription.has_to() && is_local(&self.shared, contact))
            .map(|(contact, _)| contact.as_str())
            .collect();
        sources.push(&bare);
        for source in sources {
            for last in self.shared.router.last_presences(source) {
                if last.attr("from") == Some(full.as_str()) {
                    continue;
                }
                let mut copy = Element::clone(&last);
                copy.set_attr("to", full.clone());
                out.push_str(&write_stanza(&copy));
            }
        }
        for request in roster.pending_in.values() {
            out.push_str(request);
        }
        if out.is_empty() {
            return Ok(());
        }
        self.write(&out).await
    }

    /// Presence addressed to someone (§4.6): routed, remembered for the teardown.
    async fn directed(&mut self, element: Element) -> Result<(), Gone> {
        let to = match self.local_recipient(&element) {
            Ok(Some(to)) => to,
            Ok(None) => return Ok(()),
            Err(condition) => return self.bounce(&element, "modify", condition).await,
        };
        // Presence to an account that does not exist is dropped (RFC 6120 §10.5.3.1).
        if !to
            .local
            .as_ref()
            .is_some_and(|l| self.shared.domain.accounts.contains(l))
        {
            return Ok(());
        }
        let target = match &to.resource {
            Some(resource) => format!("{}/{resource}", to.bare()),
            None => to.bare(),
        };
        let bound = self.bound.as_mut().expect("session stage is bound");
        let covered = self
            .shared
            .domain
            .rosters
            .cached(&bound.bare)
            .is_some_and(|r| {
                r.items
                    .get(&to.bare())
                    .is_some_and(|i| i.subscription.has_from())
            });
        if element.attr("type") == Some("unavailable") {
            bound.presence.directed.remove(&target);
        } else if !covered && !bound.presence.directed.contains(&target) {
            if bound.presence.directed.len() >= MAX_DIRECTED {
                return self.bounce(&element, "wait", "policy-violation").await;
            }
            bound.presence.directed.insert(target);
        }
        let xml = write_stanza(&element);
        match &to.resource {
            Some(resource) => self.shared.router.to_full(&to.bare(), resource, &xml),
            None => self.shared.router.to_bare(&to.bare(), &xml),
        };
        Ok(())
    }

    /// The user's half of a subscription transition, then the contact's.
    async fn subscription(&mut self, kind: &str, element: Element) -> Result<(), Gone> {
        let to = match self.local_recipient(&element) {
            Ok(Some(to)) if to.local.is_some() => to,
            Ok(_) => return self.bounce(&element, "modify", "bad-request").await,
            Err(condition) => return self.bounce(&element, "modify", condition).await,
        };
        let user = self.bare_jid();
        // Subscriptions are between bare JIDs (§3.1.2: the `to` resource is dropped).
        let contact = to.bare();
        if contact == user || validate_contact(&contact).is_err() {
            return self.bounce(&element, "modify", "bad-request").await;
        }
        let shared = self.shared.clone();
        let result = match kind {
            "subscribe" => self.outbound_subscribe(&user, &contact, &element).await,
            "subscribed" => {
                let mut approved = false;
                let changed = change_item_tracked(&shared, &user, &contact, |item, roster| {
                    let pending = roster.pending_in.remove(&contact).is_some();
                    match item {
                        Some(i) if i.subscription.has_from() => Some(i),
                        item if !pending => item,
                        item => {
                            approved = true;
                            let mut i = item.unwrap_or_default();
                            i.subscription = i.subscription.with_from(true);
                            Some(i)
                        }
                    }
                })
                .await;
                if changed.is_ok() && approved {
                    inbound_subscribed(&shared, &user, &contact, Some(&element)).await;
                }
                changed
            }
            "unsubscribe" => {
                let changed = change_item_tracked(&shared, &user, &contact, |item, _| {
                    item.map(|mut i| {
                        i.subscription = i.subscription.with_to(false);
                        i.ask = false;
                        i
                    })
                })
                .await;
                if changed.is_ok() {
                    inbound_unsubscribe(&shared, &user, &contact, Some(&element)).await;
                }
                changed
            }
            _ => {
                let mut had = false;
                let changed = change_item_tracked(&shared, &user, &contact, |item, roster| {
                    had = roster.pending_in.remove(&contact).is_some()
                        || item.as_ref().is_some_and(|i| i.subscription.has_from());
                    item.map(|mut i| {
                        i.subscription = i.subscription.with_from(false);
                        i
                    })
                })
                .await;
                if changed.is_ok() && had {
                    send_unavailable_from(&shared, &user, &contact);
                    inbound_unsubscribed(&shared, &user, &contact, Some(&element)).await;
                }
                changed
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(error) => {
                let (kind, condition) = super::roster::roster_error_condition(&error);
                self.bounce(&element, kind, condition).await
            }
        }
    }

    /// `subscribe` (§3.1.2–§3.1.3): pending-out on the user's side; on the contact's,
    /// an automatic `subscribed` when it already has `from`, else the request is
    /// stored and delivered; an unknown contact answers `unsubscribed`.
    async fn outbound_subscribe(
        &mut self,
        user: &str,
        contact: &str,
        element: &Element,
    ) -> Result<(), RosterError> {
        let shared = self.shared.clone();
        change_item_tracked(&shared, user, contact, |item, _| {
            let mut i = item.unwrap_or_default();
            if !i.subscription.has_to() {
                i.ask = true;
            }
            Some(i)
        })
        .await?;
        let local = contact.split('@').next().unwrap_or_default();
        if !shared.domain.accounts.contains(local) {
            // No such account (§3.1.3): as if the contact had refused.
            inbound_unsubscribed(&shared, contact, user, None).await;
            let refusal = subscription_presence("unsubscribed", contact, user, None);
            shared.router.to_bare(user, &write_stanza(&refusal));
            return Ok(());
        }
        let contact_roster = shared.domain.rosters.get(contact).await?;
        if contact_roster
            .items
            .get(user)
            .is_some_and(|i| i.subscription.has_from())
        {
            // Already approved: the contact's server answers for it (§3.1.3).
            inbound_subscribed(&shared, contact, user, None).await;
            return Ok(());
        }
        let request = subscription_presence("subscribe", user, contact, Some(element));
        let mut xml = write_stanza(&request);
        if xml.len() > shared.domain.rosters.config().max_request_bytes {
            xml = write_stanza(&subscription_presence("subscribe", user, contact, None));
        }
        let stored = shared
            .domain
            .rosters
            .update(contact, |roster| {
                roster.pending_in.insert(user.to_owned(), xml.clone());
                Ok(())
            })
            .await;
        if let Err(error) = stored {
            // The contact cannot take more requests: the requester is told why.
            tracing::debug!(%error, contact, "subscription request refused");
            let reply = error_reply(element, "wait", "policy-violation");
            let _ = self.write(&write_stanza(&reply)).await;
            return Ok(());
        }
        shared.router.to_bare(contact, &xml);
        Ok(())
    }
}

/// [`super::roster::change_item`] without the before/after.
async fn change_item_tracked(
    shared: &Shared,
    user: &str,
    contact: &str,
    change: impl FnOnce(Option<Item>, &mut crate::roster::Roster) -> Option<Item>,
) -> Result<(), RosterError> {
    super::roster::change_item(shared, user, contact, change)
        .await
        .map(|_| ())
}
