//! `<iq/>`: addressed to another resource (routed) or to the server (ping, disco,
//! session, roster, carbons, MAM, registration changes).

use super::*;

impl Conn {
    pub(super) async fn iq(&mut self, element: Element) -> Result<(), Gone> {
        let kind = element.attr("type").unwrap_or_default().to_owned();
        if !matches!(kind.as_str(), "get" | "set" | "result" | "error")
            || element.attr("id").is_none()
        {
            return self.bounce(&element, "modify", "bad-request").await;
        }
        let to = match self.local_recipient(&element) {
            Ok(to) => to,
            Err(condition) => return self.bounce(&element, "cancel", condition).await,
        };
        let own_bare = self.bare_jid();
        let for_server = match &to {
            None => true,
            Some(jid) => jid.local.is_none() || (jid.bare() == own_bare && jid.resource.is_none()),
        };
        if !for_server {
            let to = to.expect("not for the server means addressed");
            if let Some(resource) = &to.resource {
                let xml = write_stanza(&element);
                if let Delivery::Delivered(_) =
                    self.shared.router.to_full(&to.bare(), resource, &xml)
                {
                    return Ok(());
                }
            }
            return if kind == "get" || kind == "set" {
                self.bounce(&element, "cancel", "service-unavailable").await
            } else {
                Ok(())
            };
        }
        if kind == "result" || kind == "error" {
            return Ok(());
        }
        let payload = element.children().next().cloned();
        if let Some(p) = &payload {
            let p = p.clone();
            if p.is("query", super::roster::ROSTER_NS) {
                return self.roster_iq(element, p).await;
            }
            if p.is("query", super::mam::MAM_NS) && self.shared.config.archive_messages {
                return self.mam_iq(element, p).await;
            }
            if p.is("query", super::register::REGISTER_NS) {
                return self.register_iq(element, p).await;
            }
            if p.ns() == super::carbons::CARBONS_NS {
                return self.carbons_iq(element, &p).await;
            }
        }
        let mut result = Element::new("iq", CLIENT_NS)
            .with_attr("type", "result")
            .with_attr("id", element.attr("id").unwrap_or_default())
            .with_attr("to", self.full_jid())
            .with_attr(
                "from",
                element
                    .attr("to")
                    .unwrap_or(&self.shared.config.domain)
                    .to_owned(),
            );
        match payload {
            Some(p) if kind == "get" && p.is("ping", PING_NS) => {}
            Some(p) if kind == "set" && p.is("session", SESSION_NS) => {}
            Some(p)
                if kind == "get" && p.is("query", DISCO_INFO_NS) && p.attr("node").is_none() =>
            {
                let mut info = disco_info();
                im_features(&mut info, &self.shared);
                result.push_child(info);
            }
            Some(p) if p.is("bind", BIND_NS) => {
                return self.bounce(&element, "cancel", "not-allowed").await;
            }
            _ => return self.bounce(&element, "cancel", "service-unavailable").await,
        }
        self.write(&write_stanza(&result)).await
    }
}

/// The features this node really implements.
fn disco_info() -> Element {
    let mut query = Element::new("query", DISCO_INFO_NS).with_child(
        Element::new("identity", DISCO_INFO_NS)
            .with_attr("category", "server")
            .with_attr("type", "im")
            .with_attr("name", "casebook"),
    );
    for feature in [DISCO_INFO_NS, PING_NS, DELAY_NS] {
        query.push_child(Element::new("feature", DISCO_INFO_NS).with_attr("var", feature));
    }
    query
}

/// The instant-messaging features, as implemented (and configured).
fn im_features(query: &mut Element, shared: &Shared) {
    if shared.config.allow_registration {
        query.push_child(
            Element::new("feature", DISCO_INFO_NS).with_attr("var", super::register::REGISTER_NS),
        );
    }
    for feature in [super::roster::ROSTER_NS, super::carbons::CARBONS_NS] {
        query.push_child(Element::new("feature", DISCO_INFO_NS).with_attr("var", feature));
    }
    if shared.config.archive_messages {
        for feature in [super::mam::MAM_NS, super::mam::SID_NS] {
            query.push_child(Element::new("feature", DISCO_INFO_NS).with_attr("var", feature));
        }
    }
}
