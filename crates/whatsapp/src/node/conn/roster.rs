//! `jabber:iq:roster` (RFC 6121 §2): roster get and set, roster pushes to every
//! interested resource, and the roster side of the subscription state machine
//! (§3), shared by the user's and the contact's halves of each transition.
//!
//! Every change is persisted by the [`crate::roster::RosterStore`] before a push or
//! a reply describes it. Only contacts of this node's domain have a "contact side"
//! (no server-to-server yet: subscriptions to other domains are refused).

use super::*;
use crate::roster::{Item, MAX_GROUPS, Roster, RosterError, validate_contact, validate_item};

pub use crate::xmpp::ROSTER_NS;

/// The `<item/>` of a roster result or push.
pub(super) fn item_element(jid: &str, item: Option<&Item>) -> Element {
    let mut element = Element::new("item", ROSTER_NS).with_attr("jid", jid);
    let Some(item) = item else {
        element.set_attr("subscription", "remove");
        return element;
    };
    if let Some(name) = &item.name {
        element.set_attr("name", name.clone());
    }
    element.set_attr("subscription", item.subscription.as_str());
    if item.ask {
        element.set_attr("ask", "subscribe");
    }
    for group in &item.groups {
        element.push_child(Element::new("group", ROSTER_NS).with_text(group.clone()));
    }
    element
}

/// Pushes the item of `contact` (or its removal) to every interested resource of
/// `user` (RFC 6121 §2.1.6).
pub(super) fn push(shared: &Shared, user: &str, contact: &str, item: Option<&Item>) {
    let query = Element::new("query", ROSTER_NS).with_child(item_element(contact, item));
    for resource in shared.router.roster_interested(user) {
        let iq = Element::new("iq", CLIENT_NS)
            .with_attr("type", "set")
            .with_attr("id", format!("push-{:016x}", rand::random::<u64>()))
            .with_attr("to", format!("{user}/{resource}"))
            .with_child(query.clone());
        shared.router.to_full(user, &resource, &write_stanza(&iq));
    }
}

/// Changes the item of `contact` in `user`'s roster with `change` (which gets the
/// item, `None` if absent, and returns the new one, `None` to remove); persists and
/// pushes when it changed. Returns (before, after).
pub(super) async fn change_item(
    shared: &Shared,
    user: &str,
    contact: &str,
    change: impl FnOnce(Option<Item>, &mut Roster) -> Option<Item>,
) -> Result<(Option<Item>, Option<Item>), RosterError> {
    let (before, after) = shared
        .domain
        .rosters
        .update(user, |roster| {
            let before = roster.items.get(contact).cloned();
            let after = change(before.clone(), roster);
            match &after {
                Some(item) => roster.items.insert(contact.to_owned(), item.clone()),
                None => roster.items.remove(contact),
            };
            Ok((before, after))
        })
        .await?;
    if before != after {
        push(shared, user, contact, after.as_ref());
    }
    Ok((before, after))
}

/// The stanza error a store failure becomes.
pub(super) fn roster_error_condition(error: &RosterError) -> (&'static str, &'static str) {
    match error {
        // RFC 6121 §2.1.6 / §2.3.3: over the roster quota.
        RosterError::Full(_) | RosterError::TooLarge(_) => ("modify", "not-acceptable"),
        RosterError::Invalid { .. } => ("modify", "bad-request"),
        RosterError::Corrupt { .. } | RosterError::Io { .. } => ("wait", "internal-server-error"),
    }
}

impl Conn {
    /// A roster get or set addressed to the server (`query` is its payload).
    pub(super) async fn roster_iq(&mut self, element: Element, query: Element) -> Result<(), Gone> {
        self.roster_iq_inner(element, query).await?;
        self.drain_queued().await
    }

    async fn roster_iq_inner(&mut self, element: Element, query: Element) -> Result<(), Gone> {
        let bound = self.bound.as_ref().expect("session stage is bound");
        let (user, resource, conn_id) = (bound.bare.clone(), bound.resource.clone(), bound.conn_id);
        let kind = element.attr("type").unwrap_or_default();
        if kind == "get" {
            let roster = match self.shared.domain.rosters.get(&user).await {
                Ok(roster) => roster,
                Err(error) => {
                    tracing::warn!(%error, "roster read failed");
                    return self.bounce(&element, "wait", "internal-server-error").await;
                }
            };
            self.shared
                .router
                .set_roster_interested(&user, &resource, conn_id);
            let mut result = Element::new("query", ROSTER_NS);
            for (jid, item) in &roster.items {
                result.push_child(item_element(jid, Some(item)));
            }
            return self.iq_result(&element, Some(result)).await;
        }
        // A set: exactly one item (RFC 6121 §2.3.3).
        let items: Vec<&Element> = query.children().collect();
        let [item] = items.as_slice() else {
            return self.bounce(&element, "modify", "bad-request").await;
        };
        if !item.is("item", ROSTER_NS) {
            return self.bounce(&element, "modify", "bad-request").await;
        }
        let Some(contact) = item
            .attr("jid")
            .and_then(Jid::parse)
            .filter(|j| j.resource.is_none())
            .map(|j| j.bare())
            .filter(|j| validate_contact(j).is_ok())
        else {
            return self.bounce(&element, "modify", "bad-request").await;
        };
        if item.attr("subscription") == Some("remove") {
            return self.roster_remove(element, &user, &contact).await;
        }
        let mut groups = std::collections::BTreeSet::new();
        for group in item.children() {
            if !group.is("group", ROSTER_NS) || !groups.insert(group.text()) {
                // Unknown children or a duplicate group (§2.3.3).
                return self.bounce(&element, "modify", "bad-request").await;
            }
            if groups.len() > MAX_GROUPS {
                return self.bounce(&element, "modify", "not-acceptable").await;
            }
        }
        let fields = Item {
            name: item.attr("name").map(str::to_owned),
            groups,
            ..Item::default()
        };
        if validate_item(&fields).is_err() {
            return self.bounce(&element, "modify", "not-acceptable").await;
        }
        let changed = change_item(&self.shared, &user, &contact, |before, _| {
            let before = before.unwrap_or_default();
            // The client sets name and groups; the subscription is the server's.
            Some(Item {
                subscription: before.subscription,
                ask: before.ask,
                ..fields
            })
        })
        .await;
        match changed {
            Ok(_) => self.iq_result(&element, None).await,
            Err(error) => {
                let (kind, condition) = roster_error_condition(&error);
                self.bounce(&element, kind, condition).await
            }
        }
    }

    /// Roster remove (RFC 6121 §2.5.2): cancels both directions and any pending
    /// request, then removes the item.
    async fn roster_remove(
        &mut self,
        element: Element,
        user: &str,
        contact: &str,
    ) -> Result<(), Gone> {
        let mut pending = false;
        let removed = change_item(&self.shared, user, contact, |_, roster| {
            pending = roster.pending_in.remove(contact).is_some();
            None
        })
        .await;
        let before = match removed {
            Ok((Some(before), _)) => before,
            Ok((None, _)) if pending => Item::default(),
            Ok((None, _)) => return self.bounce(&element, "cancel", "item-not-found").await,
            Err(error) => {
                let (kind, condition) = roster_error_condition(&error);
                return self.bounce(&element, kind, condition).await;
            }
        };
        if before.subscription.has_to() || before.ask {
            inbound_unsubscribe(&self.shared, user, contact, None).await;
        }
        if before.subscription.has_from() || pending {
            send_unavailable_from(&self.shared, user, contact);
            inbound_unsubscribed(&self.shared, user, contact, None).await;
        }
        self.iq_result(&element, None).await
    }

    /// `<iq type="result"/>` to `request`, with `payload` if any.
    pub(super) async fn iq_result(
        &mut self,
        request: &Element,
        payload: Option<Element>,
    ) -> Result<(), Gone> {
        let mut result = Element::new("iq", CLIENT_NS)
            .with_attr("type", "result")
            .with_attr("id", request.attr("id").unwrap_or_default())
            .with_attr("to", self.full_jid());
        if let Some(to) = request.attr("to") {
            result.set_attr("from", to);
        }
        if let Some(payload) = payload {
            result.push_child(payload);
        }
        self.write(&write_stanza(&result)).await
    }
}

/// A subscription presence from `from` (bare) to `to` (bare), with `original`'s
/// children (status, nick) when given.
pub(super) fn subscription_presence(
    kind: &str,
    from: &str,
    to: &str,
    original: Option<&Element>,
) -> Element {
    let mut presence = Element::new("presence", CLIENT_NS)
        .with_attr("type", kind)
        .with_attr("from", from)
        .with_attr("to", to);
    if let Some(original) = original {
        if let Some(id) = original.attr("id") {
            presence.set_attr("id", id);
        }
        for child in original.children() {
            presence.push_child(child.clone());
        }
    }
    presence
}

/// Sends `unavailable` from each available resource of `user` to `contact`.
pub(super) fn send_unavailable_from(shared: &Shared, user: &str, contact: &str) {
    for last in shared.router.last_presences(user) {
        let mut unavailable = Element::new("presence", CLIENT_NS)
            .with_attr("type", "unavailable")
            .with_attr("to", contact);
        if let Some(from) = last.attr("from") {
            unavailable.set_attr("from", from);
        }
        shared.router.to_bare(contact, &write_stanza(&unavailable));
    }
}

/// Sends the current presence of each available resource of `user` to `contact`.
pub(super) fn send_presence_from(shared: &Shared, user: &str, contact: &str) {
    for last in shared.router.last_presences(user) {
        let mut presence = Element::clone(&last);
        presence.set_attr("to", contact);
        shared.router.to_bare(contact, &write_stanza(&presence));
    }
}

/// Contact side of "`user` unsubscribes from `contact`" (§3.3.3): the contact loses
/// `from`, its pending request from `user` goes, and it is told.
pub(super) async fn inbound_unsubscribe(
    shared: &Shared,
    user: &str,
    contact: &str,
    original: Option<&Element>,
) {
    let Some(had_from) = local_contact_change(shared, contact, user, |item, roster| {
        let pending = roster.pending_in.remove(user).is_some();
        let had = item.as_ref().is_some_and(|i| i.subscription.has_from()) || pending;
        let next = item.map(|mut i| {
            i.subscription = i.subscription.with_from(false);
            i
        });
        (next, had)
    })
    .await
    else {
        return;
    };
    if had_from {
        let presence = subscription_presence("unsubscribe", user, contact, original);
        shared.router.to_bare(contact, &write_stanza(&presence));
        send_unavailable_from(shared, contact, user);
    }
}

/// Contact side of "`user` cancels or denies `contact`'s subscription" (§3.2.3):
/// the contact loses `to` and its `ask`, and is told.
pub(super) async fn inbound_unsubscribed(
    shared: &Shared,
    user: &str,
    contact: &str,
    original: Option<&Element>,
) {
    let Some(had) = local_contact_change(shared, contact, user, |item, _| {
        let had = item
            .as_ref()
            .is_some_and(|i| i.subscription.has_to() || i.ask);
        let next = item.map(|mut i| {
            i.subscription = i.subscription.with_to(false);
            i.ask = false;
            i
        });
        (next, had)
    })
    .await
    else {
        return;
    };
    if had {
        let presence = subscription_presence("unsubscribed", user, contact, original);
        shared.router.to_bare(contact, &write_stanza(&presence));
    }
}

/// Contact side of "`user` approves `contact`'s request" (§3.1.6): with `ask` set,
/// the contact gains `to` and gets `user`'s current presence. Returns whether it
/// applied.
pub(super) async fn inbound_subscribed(
    shared: &Shared,
    user: &str,
    contact: &str,
    original: Option<&Element>,
) -> bool {
    let applied = local_contact_change(shared, contact, user, |item, _| match item {
        Some(mut i) if i.ask => {
            i.ask = false;
            i.subscription = i.subscription.with_to(true);
            (Some(i), true)
        }
        other => (other, false),
    })
    .await
    .unwrap_or(false);
    if applied {
        let presence = subscription_presence("subscribed", user, contact, original);
        shared.router.to_bare(contact, &write_stanza(&presence));
        send_presence_from(shared, user, contact);
    }
    applied
}

/// Changes `owner`'s item for `other` when `owner` is a local account; `None` when
/// it is not (or the store failed, logged).
async fn local_contact_change<R>(
    shared: &Shared,
    owner: &str,
    other: &str,
    change: impl FnOnce(Option<Item>, &mut Roster) -> (Option<Item>, R),
) -> Option<R> {
    let jid = Jid::parse(owner)?;
    if jid.domain != shared.config.domain || !shared.domain.accounts.contains(jid.local.as_deref()?)
    {
        return None;
    }
    let mut out = None;
    let changed = change_item(shared, owner, other, |item, roster| {
        let (next, r) = change(item, roster);
        out = Some(r);
        next
    })
    .await;
    match changed {
        Ok(_) => out,
        Err(error) => {
            tracing::warn!(%error, owner, "roster change failed");
            None
        }
    }
}
