//! XEP-0280 message carbons (`urn:xmpp:carbons:2`): a user's other devices see
//! the chats it sends and receives.
//!
//! Rules (XEP-0280 §6): only `chat` messages and `normal` ones with a body are
//! copied; never a message marked `<private/>` (carbons) or `<no-copy/>`
//! (XEP-0334), never one that is itself a carbon. Sent carbons go to the sender's
//! other available, carbons-enabled resources; received carbons to the recipient's
//! available, carbons-enabled resources that did not get the message itself (a
//! message to the bare JID reaches every non-negative-priority resource already,
//! so only the full-JID case makes received carbons). Each carbon is `from` the
//! owner's bare JID and wraps the stanza in XEP-0297 `<forwarded/>`. Absent: the
//! carbons of messages delivered through another node's router (the enabled flag
//! lives in this node's session table).

use super::mam::{FORWARD_NS, HINTS_NS, has_body_chat_or_normal};
use super::*;

pub use crate::xmpp::CARBONS_NS;

/// Whether `message` may be carbon-copied.
fn eligible(message: &Element) -> bool {
    has_body_chat_or_normal(message)
        && message.child("private", CARBONS_NS).is_none()
        && message.child("no-copy", HINTS_NS).is_none()
        && message.child("sent", CARBONS_NS).is_none()
        && message.child("received", CARBONS_NS).is_none()
}

/// Sends `<direction><forwarded>message</forwarded></direction>` to each of
/// `owner`'s carbons-enabled resources except `except`.
pub(super) fn copy(
    shared: &Shared,
    direction: &str,
    owner: &str,
    except: Option<&str>,
    message: &Element,
) {
    if !eligible(message) {
        return;
    }
    let resources = shared.router.carbon_resources(owner, except);
    if resources.is_empty() {
        return;
    }
    let wrapped = Element::new(direction, CARBONS_NS)
        .with_child(Element::new("forwarded", FORWARD_NS).with_child(message.clone()));
    for resource in resources {
        let mut carbon = Element::new("message", CLIENT_NS)
            .with_attr("from", owner)
            .with_attr("to", format!("{owner}/{resource}"))
            .with_child(wrapped.clone());
        if let Some(kind) = message.attr("type") {
            carbon.set_attr("type", kind);
        }
        shared
            .router
            .to_full(owner, &resource, &write_stanza(&carbon));
    }
}

impl Conn {
    /// `<enable/>` / `<disable/>`.
    pub(super) async fn carbons_iq(
        &mut self,
        element: Element,
        request: &Element,
    ) -> Result<(), Gone> {
        let enable = match request.name() {
            "enable" => true,
            "disable" => false,
            _ => return self.bounce(&element, "modify", "bad-request").await,
        };
        if element.attr("type") != Some("set") {
            return self.bounce(&element, "modify", "bad-request").await;
        }
        let bound = self.bound.as_ref().expect("session stage is bound");
        self.shared
            .router
            .set_carbons(&bound.bare, &bound.resource, bound.conn_id, enable);
        self.iq_result(&element, None).await
    }
}
