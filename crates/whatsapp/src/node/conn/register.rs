//! XEP-0077 in-band registration (`jabber:iq:register`), only when
//! `allow_registration` is set: before authentication, the registration form and
//! account creation (rate-limited per IP address on the injected clock); after it,
//! password change and account removal.
//!
//! Guarantees: passwords become SCRAM secrets through [`crate::auth::Accounts`]
//! (never stored in the clear); an existing account is a `conflict`; every
//! registration attempt from one address counts against its budget (so guessing
//! names is limited too); removing an account deletes its roster and archive,
//! cancels its subscriptions with local contacts, closes its other sessions and
//! then this one (`<not-authorized/>` after the result). Absent: CAPTCHAs / data-form registration (XEP-0158), e-mail
//! fields, the offline queue's removal (it expires by retention).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use casebook_kit::clock::SharedClock;
use parking_lot::Mutex;

use super::roster::{inbound_unsubscribe, inbound_unsubscribed};
use super::*;
use crate::auth::AccountError;

pub use crate::xmpp::{REGISTER_FEATURE_NS, REGISTER_NS};

/// Per-address registration budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationLimits {
    /// Attempts one address may make per window.
    pub per_window: usize,
    pub window: Duration,
    /// Addresses tracked at once; beyond it new addresses are refused until
    /// windows expire (bounded memory under a spray of sources).
    pub max_tracked: usize,
}

impl Default for RegistrationLimits {
    fn default() -> Self {
        Self {
            per_window: 5,
            window: Duration::from_secs(3600),
            max_tracked: 10_000,
        }
    }
}

/// Sliding-window limiter of registration attempts per IP address.
#[derive(Debug)]
pub struct RegistrationLimiter {
    clock: SharedClock,
    limits: RegistrationLimits,
    attempts: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl RegistrationLimiter {
    pub fn new(clock: SharedClock, limits: RegistrationLimits) -> Self {
        Self {
            clock,
            limits,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt from `address`; `false` when over budget.
    pub fn try_acquire(&self, address: IpAddr) -> bool {
        let now = self.clock.now();
        let window = self.limits.window;
        let expired = |t: &Instant| now.saturating_duration_since(*t) >= window;
        let mut attempts = self.attempts.lock();
        if !attempts.contains_key(&address) && attempts.len() >= self.limits.max_tracked {
            attempts.retain(|_, times| {
                while times.front().is_some_and(expired) {
                    times.pop_front();
                }
                !times.is_empty()
            });
            if attempts.len() >= self.limits.max_tracked {
                return false;
            }
        }
        let times = attempts.entry(address).or_default();
        while times.front().is_some_and(expired) {
            times.pop_front();
        }
        if times.len() >= self.limits.per_window {
            return false;
        }
        times.push_back(now);
        true
    }
}

/// Whether `element` is an iq carrying a registration query.
pub(super) fn is_register_iq(element: &Element) -> bool {
    element.is("iq", CLIENT_NS) && element.child("query", REGISTER_NS).is_some()
}

fn field(query: &Element, name: &str) -> Option<String> {
    query.child(name, REGISTER_NS).map(Element::text)
}

fn account_error_condition(error: &AccountError) -> (&'static str, &'static str) {
    match error {
        AccountError::Exists(_) => ("cancel", "conflict"),
        AccountError::InvalidLocalpart(_) | AccountError::InvalidPassword(_) => {
            ("modify", "not-acceptable")
        }
        AccountError::RegistrationDisabled => ("cancel", "not-allowed"),
        AccountError::NotFound(_) => ("cancel", "item-not-found"),
        _ => ("wait", "internal-server-error"),
    }
}

impl Conn {
    /// A registration iq before authentication (the Sasl stage dispatches here).
    /// Whether registration is offered on this stream: it carries a password, so
    /// like PLAIN only once encrypted, unless `allow_insecure_plain` (local testing).
    pub(super) fn registration_offered(&self) -> bool {
        let config = &self.shared.config;
        config.allow_registration && (self.transport.encrypted() || config.allow_insecure_plain)
    }

    pub(super) async fn register_unauthenticated(&mut self, element: Element) -> Result<(), Gone> {
        let query = element
            .child("query", REGISTER_NS)
            .cloned()
            .expect("dispatched on a register query");
        match element.attr("type") {
            Some("get") => {
                let form = Element::new("query", REGISTER_NS)
                    .with_child(
                        Element::new("instructions", REGISTER_NS)
                            .with_text("Choose a username and password."),
                    )
                    .with_child(Element::new("username", REGISTER_NS))
                    .with_child(Element::new("password", REGISTER_NS));
                self.register_reply(&element, Some(form)).await
            }
            Some("set") => {
                let (Some(username), Some(password)) =
                    (field(&query, "username"), field(&query, "password"))
                else {
                    return self.bounce(&element, "modify", "not-acceptable").await;
                };
                if !self.shared.domain.registrations.try_acquire(self.peer.ip()) {
                    metrics::counter!("whatsapp_registrations_refused_total").increment(1);
                    return self.bounce(&element, "wait", "policy-violation").await;
                }
                let accounts = self.shared.domain.accounts.clone();
                let created =
                    tokio::task::spawn_blocking(move || accounts.register(&username, &password))
                        .await;
                match created {
                    Ok(Ok(localpart)) => {
                        tracing::info!(%localpart, peer = %self.peer, "account registered in band");
                        self.register_reply(&element, None).await
                    }
                    Ok(Err(error)) => {
                        let (kind, condition) = account_error_condition(&error);
                        self.bounce(&element, kind, condition).await
                    }
                    Err(_) => self.bounce(&element, "wait", "internal-server-error").await,
                }
            }
            _ => self.bounce(&element, "modify", "bad-request").await,
        }
    }

    /// `<iq type="result"/>` before a session exists (no `to`).
    async fn register_reply(
        &mut self,
        request: &Element,
        payload: Option<Element>,
    ) -> Result<(), Gone> {
        let mut result = Element::new("iq", CLIENT_NS)
            .with_attr("type", "result")
            .with_attr("id", request.attr("id").unwrap_or_default());
        if let Some(payload) = payload {
            result.push_child(payload);
        }
        self.write(&write_stanza(&result)).await
    }

    /// A registration iq from a bound session: password change or removal.
    pub(super) async fn register_iq(
        &mut self,
        element: Element,
        query: Element,
    ) -> Result<(), Gone> {
        if !self.registration_offered() {
            return self.bounce(&element, "cancel", "service-unavailable").await;
        }
        let bound = self.bound.as_ref().expect("session stage is bound");
        let (bare, local) = (
            bound.bare.clone(),
            self.authenticated.clone().unwrap_or_default(),
        );
        if element.attr("type") == Some("get") {
            let form = Element::new("query", REGISTER_NS)
                .with_child(Element::new("registered", REGISTER_NS))
                .with_child(Element::new("username", REGISTER_NS).with_text(local));
            return self.iq_result(&element, Some(form)).await;
        }
        if element.attr("type") != Some("set") {
            return self.bounce(&element, "modify", "bad-request").await;
        }
        if query.child("remove", REGISTER_NS).is_some() {
            return self.remove_account(element, &bare, &local).await;
        }
        let (Some(username), Some(password)) =
            (field(&query, "username"), field(&query, "password"))
        else {
            return self.bounce(&element, "modify", "bad-request").await;
        };
        if crate::auth::nodeprep_lite(&username).ok().as_deref() != Some(local.as_str()) {
            // Only one's own password can be changed (XEP-0077 §3.3).
            return self.bounce(&element, "cancel", "not-authorized").await;
        }
        let accounts = self.shared.domain.accounts.clone();
        let changed =
            tokio::task::spawn_blocking(move || accounts.change_password(&local, &password)).await;
        match changed {
            Ok(Ok(())) => self.iq_result(&element, None).await,
            Ok(Err(error)) => {
                let (kind, condition) = account_error_condition(&error);
                self.bounce(&element, kind, condition).await
            }
            Err(_) => self.bounce(&element, "wait", "internal-server-error").await,
        }
    }

    /// XEP-0077 §3.2: the account goes, then its sessions.
    async fn remove_account(
        &mut self,
        element: Element,
        bare: &str,
        local: &str,
    ) -> Result<(), Gone> {
        let accounts = self.shared.domain.accounts.clone();
        let owned = local.to_owned();
        match tokio::task::spawn_blocking(move || accounts.remove(&owned)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                let (kind, condition) = account_error_condition(&error);
                return self.bounce(&element, kind, condition).await;
            }
            Err(_) => return self.bounce(&element, "wait", "internal-server-error").await,
        }
        // Contacts stop seeing (and asking for) the removed account.
        if let Ok(roster) = self.shared.domain.rosters.get(bare).await {
            for (contact, item) in &roster.items {
                if item.subscription.has_to() || item.ask {
                    inbound_unsubscribe(&self.shared, bare, contact, None).await;
                }
                if item.subscription.has_from() {
                    inbound_unsubscribed(&self.shared, bare, contact, None).await;
                }
            }
        }
        if let Err(error) = self.shared.domain.rosters.delete(bare).await {
            tracing::warn!(%error, "roster of a removed account not deleted");
        }
        if let Err(error) = self.shared.domain.archive.delete(bare).await {
            tracing::warn!(%error, "archive of a removed account not deleted");
        }
        self.iq_result(&element, None).await?;
        // The other sessions are dropped; this one ends with `<not-authorized/>`
        // after the result, so the client knows the credentials are gone.
        let kicked = self.shared.router.kick_all_except(bare, self.conn_id);
        tracing::info!(bare, kicked, "account removed in band");
        self.close_with(&stream_error_text("not-authorized")).await
    }
}
