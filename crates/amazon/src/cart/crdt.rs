//! The cart as a CRDT: an add-wins map from SKU to quantity, built the way Riak's
//! ORSWOT (`riak_dt_orswot`) builds an observed-remove set without tombstones.
//!
//! # State
//! - a **version vector** (`clock`): for each replica (actor), how many writes of
//!   this cart it has made that this state has seen;
//! - **lines**: SKU → the *dots* that keep the line alive, each dot `(actor,
//!   counter)` naming the write that made it, with that write's contribution to the
//!   quantity;
//! - **deferred removes**: a remove whose context names writes this state has not
//!   seen yet is kept, and applied again as those writes arrive.
//!
//! Every dot of a line is covered by the clock; a line with no dot is absent.
//!
//! # Quantity rule
//! A dot contributes either `Add(n)` (an add of `n`: `POST …/items`) or `Set(n)`
//! (`PUT …/items/{sku}`). A line's quantity is
//! **the largest `Set` among its dots (0 without one) plus the sum of its `Add`s**.
//! - An add makes a new dot and keeps the line's other dots, so two concurrent adds
//!   of 1 to a line of 1 give 3: no add's quantity is forgotten.
//! - A set replaces every dot the writing replica has seen by one `Set` dot; a
//!   concurrent add survives beside it (set 5 ∥ add 1 → 6), and of two concurrent
//!   sets the larger counts (set 3 ∥ set 5 → 5): a set never silently eats an add
//!   it did not see, and never doubles.
//! - A remove (with the context the client read) drops exactly the dots that
//!   context covers. An add concurrent with it is not covered, so **a concurrent add
//!   and remove keep the item** (with the add's quantity); a dot an observed remove
//!   dropped is never revived by a merge, because the remover's clock has seen it
//!   (**an observed remove never brings the item back**).
//! - An add is capped so that the line, as the writing replica sees it, holds at
//!   most `cap` (the configured per-line limit); an add to a full line makes no
//!   dot. Concurrent adds on several replicas may take a line past the cap; readers
//!   clamp what they show (see [`Cart::quantity`]).
//!
//! # Merge
//! As ORSWOT: a dot both sides hold stays; a dot one side holds stays only if the
//! other side's clock has not seen it (if it has, the other side removed it); the
//! clocks take their pointwise maximum; deferred removes are united and applied
//! again, and dropped once the clock covers their context. Merge is commutative,
//! associative and idempotent for states made by these operations (tested against
//! the `crdts` crate's `Orswot` as an oracle in `tests/cart_crdt.rs`).
//!
//! # Bounds
//! The number of dots of a line is bounded: every `Add` dot adds at least 1 and a
//! replica adds nothing to a line it sees full, so a line holds at most `cap` add
//! dots per actor, plus one `Set` per actor. [`Cart::check`] enforces the wire
//! bounds ([`Limits`]) on states received from elsewhere.
//!
//! # Not guaranteed
//! - Dots must be unique: an actor never makes two dots with one counter. The
//!   replica guarantees it (its writes to a cart are serialised and durable before
//!   anyone sees them, and an actor id belongs to one data directory); a state
//!   that breaks it merges to an arbitrary one of the two contributions.
//! - A forged context (a client's) can remove writes the client never saw, in its
//!   own cart only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A replica's identity in the clocks: random, made once per data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActorId(pub u64);

impl ActorId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for ActorId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("an actor id is 16 hex digits, got {s:?}"));
        }
        u64::from_str_radix(s, 16)
            .map(Self)
            .map_err(|e| e.to_string())
    }
}

impl Serialize for ActorId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ActorId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One write: the actor that made it and its counter there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    pub actor: ActorId,
    pub counter: u64,
}

/// The largest counter accepted from the wire: far from overflow, so
/// [`VClock::increment`] never wraps.
pub const MAX_COUNTER: u64 = 1 << 62;

/// A version vector: actor → the number of its writes seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VClock(BTreeMap<ActorId, u64>);

impl VClock {
    /// Writes of `actor` seen.
    pub fn get(&self, actor: ActorId) -> u64 {
        self.0.get(&actor).copied().unwrap_or(0)
    }

    /// Whether the write `dot` is seen.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.get(dot.actor) >= dot.counter
    }

    /// Whether this clock has seen everything `other` has.
    pub fn descends(&self, other: &VClock) -> bool {
        other.0.iter().all(|(actor, &n)| self.get(*actor) >= n)
    }

    /// The pointwise maximum.
    pub fn merge(&mut self, other: &VClock) {
        for (&actor, &n) in &other.0 {
            let mine = self.0.entry(actor).or_insert(0);
            *mine = (*mine).max(n);
        }
    }

    /// The next write of `actor`, recorded as seen.
    pub fn increment(&mut self, actor: ActorId) -> Dot {
        let counter = self.0.entry(actor).or_insert(0);
        *counter += 1;
        Dot {
            actor,
            counter: *counter,
        }
    }

    /// Actors with at least one write seen.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(actor, writes seen)`, by actor.
    pub fn iter(&self) -> impl Iterator<Item = (ActorId, u64)> + '_ {
        self.0.iter().map(|(a, n)| (*a, *n))
    }

    /// A clock of the given entries (zero counters are left out).
    pub fn from_entries(entries: impl IntoIterator<Item = (ActorId, u64)>) -> Self {
        Self(entries.into_iter().filter(|(_, n)| *n > 0).collect())
    }

    /// Checks a clock from elsewhere: at most `max_actors` actors, every counter
    /// in `1..=MAX_COUNTER`.
    pub fn check(&self, limits: &Limits) -> Result<(), String> {
        if self.0.len() > limits.max_actors {
            return Err(format!(
                "{} actors in a clock (at most {})",
                self.0.len(),
                limits.max_actors
            ));
        }
        if let Some((actor, n)) = self.0.iter().find(|(_, n)| **n == 0 || **n > MAX_COUNTER) {
            return Err(format!("actor {actor} has counter {n} (1..={MAX_COUNTER})"));
        }
        Ok(())
    }
}

/// What one dot adds to its line's quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Contribution {
    /// `n` more (an add).
    Add(u32),
    /// Exactly `n` (a set), before the adds beside it.
    Set(u32),
}

impl Contribution {
    fn amount(self) -> u32 {
        match self {
            Self::Add(n) | Self::Set(n) => n,
        }
    }
}

/// One line: its live dots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Line {
    dots: BTreeMap<Dot, Contribution>,
}

impl Line {
    /// The quantity by the rule in the module docs (saturating, unclamped).
    pub fn quantity(&self) -> u32 {
        let mut set = 0u32;
        let mut added = 0u64;
        for contribution in self.dots.values() {
            match *contribution {
                Contribution::Set(n) => set = set.max(n),
                Contribution::Add(n) => added += u64::from(n),
            }
        }
        u32::try_from(u64::from(set) + added).unwrap_or(u32::MAX)
    }

    /// The live dots and what each contributes.
    pub fn dots(&self) -> impl Iterator<Item = (&Dot, &Contribution)> {
        self.dots.iter()
    }
}

/// Bounds on a state received from elsewhere (see [`Cart::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_actors: usize,
    pub max_lines: usize,
    pub max_dots_per_line: usize,
    /// Dots of all lines together (bounds a state's size on the wire and in a
    /// log record).
    pub max_dots: usize,
    pub max_deferred: usize,
    pub max_sku_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_actors: 64,
            max_lines: 2_048,
            max_dots_per_line: 4_096,
            max_dots: 16_384,
            max_deferred: 256,
            max_sku_len: 64,
        }
    }
}

/// One user's cart as a CRDT. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Cart {
    clock: VClock,
    lines: BTreeMap<String, Line>,
    deferred: BTreeMap<VClock, BTreeSet<String>>,
}

impl Cart {
    /// Everything this state has seen.
    pub fn clock(&self) -> &VClock {
        &self.clock
    }

    /// The quantity of `sku` (0 when absent), unclamped.
    pub fn quantity(&self, sku: &str) -> u32 {
        self.lines.get(sku).map_or(0, Line::quantity)
    }

    /// Whether `sku` is in the cart.
    pub fn contains(&self, sku: &str) -> bool {
        self.lines.contains_key(sku)
    }

    /// `(sku, quantity)` for every line, by SKU.
    pub fn lines(&self) -> impl Iterator<Item = (&str, u32)> {
        self.lines
            .iter()
            .map(|(sku, line)| (sku.as_str(), line.quantity()))
    }

    /// The line of `sku`, with its dots.
    pub fn line(&self, sku: &str) -> Option<&Line> {
        self.lines.get(sku)
    }

    /// Lines in the cart.
    pub fn line_count(&self) -> usize {
        self.lines.len()
    }

    /// Removes waiting for writes this state has not seen.
    pub fn deferred_count(&self) -> usize {
        self.deferred.len()
    }

    /// Adds up to `qty` of `sku` as `actor`, so that the line holds at most `cap`
    /// as this state sees it. Returns how much was added (0: the line was full and
    /// nothing changed).
    pub fn add(&mut self, actor: ActorId, sku: &str, qty: u32, cap: u32) -> u32 {
        let room = cap.saturating_sub(self.quantity(sku));
        let delta = qty.min(room);
        if delta == 0 {
            return 0;
        }
        let dot = self.clock.increment(actor);
        self.lines
            .entry(sku.to_owned())
            .or_default()
            .dots
            .insert(dot, Contribution::Add(delta));
        self.apply_deferred();
        delta
    }

    /// Sets `sku` to `qty` as `actor`: every dot of the line seen here is replaced
    /// by one `Set` dot.
    pub fn set(&mut self, actor: ActorId, sku: &str, qty: u32) {
        let dot = self.clock.increment(actor);
        let mut line = Line::default();
        line.dots.insert(dot, Contribution::Set(qty));
        self.lines.insert(sku.to_owned(), line);
        self.apply_deferred();
    }

    /// Removes what `context` saw of `sku`: the line's dots it covers. If `context`
    /// names writes this state has not seen, the remove is kept and applied to them
    /// when they arrive. Returns whether any dot went or the remove was deferred.
    pub fn remove(&mut self, sku: &str, context: &VClock) -> bool {
        let before = self.lines.get(sku).map_or(0, |l| l.dots.len());
        let mut skus = BTreeSet::new();
        skus.insert(sku.to_owned());
        let deferred = self.apply_remove(skus, context.clone());
        let after = self.lines.get(sku).map_or(0, |l| l.dots.len());
        deferred || after < before
    }

    /// Joins `other` into this state.
    pub fn merge(&mut self, other: &Cart) {
        let mut lines = BTreeMap::new();
        let skus: BTreeSet<&String> = self.lines.keys().chain(other.lines.keys()).collect();
        for sku in skus {
            let mine = self.lines.get(sku);
            let theirs = other.lines.get(sku);
            let mut dots = BTreeMap::new();
            if let Some(mine) = mine {
                for (dot, contribution) in &mine.dots {
                    let both = theirs.is_some_and(|t| t.dots.contains_key(dot));
                    if both || !other.clock.covers(dot) {
                        dots.insert(*dot, *contribution);
                    }
                }
            }
            if let Some(theirs) = theirs {
                for (dot, contribution) in &theirs.dots {
                    if !dots.contains_key(dot) && !self.clock.covers(dot) {
                        dots.insert(*dot, *contribution);
                    }
                }
            }
            if !dots.is_empty() {
                lines.insert(sku.clone(), Line { dots });
            }
        }
        self.lines = lines;
        self.clock.merge(&other.clock);
        for (context, skus) in &other.deferred {
            self.deferred
                .entry(context.clone())
                .or_default()
                .extend(skus.iter().cloned());
        }
        self.apply_deferred();
    }

    /// Whether merging `other` would change this state.
    pub fn would_change(&self, other: &Cart) -> bool {
        let mut merged = self.clone();
        merged.merge(other);
        merged != *self
    }

    /// Removes the covered dots of `skus`; keeps the remove if the clock does not
    /// cover `context`. Returns whether it was kept.
    fn apply_remove(&mut self, skus: BTreeSet<String>, context: VClock) -> bool {
        for sku in &skus {
            if let Some(line) = self.lines.get_mut(sku) {
                line.dots.retain(|dot, _| !context.covers(dot));
                if line.dots.is_empty() {
                    self.lines.remove(sku);
                }
            }
        }
        if self.clock.descends(&context) {
            return false;
        }
        self.deferred.entry(context).or_default().extend(skus);
        true
    }

    fn apply_deferred(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        for (context, skus) in std::mem::take(&mut self.deferred) {
            self.apply_remove(skus, context);
        }
    }

    /// Checks a state received from elsewhere: the bounds, and the invariants the
    /// operations keep (every dot covered by the clock, no empty line, no
    /// contribution of 0, no deferred remove the clock already covers).
    pub fn check(&self, limits: &Limits) -> Result<(), String> {
        self.clock.check(limits)?;
        if self.lines.len() > limits.max_lines {
            return Err(format!(
                "{} lines (at most {})",
                self.lines.len(),
                limits.max_lines
            ));
        }
        let dots: usize = self.lines.values().map(|l| l.dots.len()).sum();
        if dots > limits.max_dots {
            return Err(format!("{dots} dots (at most {})", limits.max_dots));
        }
        for (sku, line) in &self.lines {
            check_sku(sku, limits.max_sku_len)?;
            if line.dots.is_empty() {
                return Err(format!("line {sku} has no dot"));
            }
            if line.dots.len() > limits.max_dots_per_line {
                return Err(format!(
                    "line {sku} has {} dots (at most {})",
                    line.dots.len(),
                    limits.max_dots_per_line
                ));
            }
            for (dot, contribution) in &line.dots {
                if !self.clock.covers(dot) || dot.counter == 0 {
                    return Err(format!(
                        "line {sku}: dot {}:{} is not covered by the clock",
                        dot.actor, dot.counter
                    ));
                }
                if contribution.amount() == 0 {
                    return Err(format!("line {sku}: a contribution of 0"));
                }
            }
        }
        if self.deferred.len() > limits.max_deferred {
            return Err(format!(
                "{} deferred removes (at most {})",
                self.deferred.len(),
                limits.max_deferred
            ));
        }
        for (context, skus) in &self.deferred {
            context.check(limits)?;
            if self.clock.descends(context) || skus.is_empty() {
                return Err("a deferred remove that is due or names no SKU".to_owned());
            }
            if skus.len() > limits.max_lines {
                return Err(format!("a deferred remove of {} SKUs", skus.len()));
            }
            for sku in skus {
                check_sku(sku, limits.max_sku_len)?;
                if let Some(line) = self.lines.get(sku)
                    && line.dots.keys().any(|dot| context.covers(dot))
                {
                    return Err(format!("line {sku} keeps a dot a deferred remove covers"));
                }
            }
        }
        Ok(())
    }
}

/// A SKU as the cart stores it: 1 to `max_len` characters of `[A-Za-z0-9._-]`.
pub fn check_sku(sku: &str, max_len: usize) -> Result<(), String> {
    let ok = !sku.is_empty()
        && sku.len() <= max_len
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a SKU is 1 to {max_len} characters of A-Z, a-z, 0-9, '.', '_', '-'"
        ))
    }
}

// The wire form: `{"clock": {actor: n}, "lines": {sku: [[actor, counter, "a"|"s", n]]},
// "deferred": [[clock, [sku]]]}` — compact, and canonical (maps are ordered), so two
// equal states encode to the same bytes.

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireCart {
    #[serde(default, skip_serializing_if = "VClock::is_empty")]
    clock: VClock,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    lines: BTreeMap<String, Vec<WireDot>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    deferred: Vec<(VClock, BTreeSet<String>)>,
}

#[derive(Serialize, Deserialize)]
struct WireDot(ActorId, u64, Kind, u32);

#[derive(Clone, Copy, Serialize, Deserialize)]
enum Kind {
    #[serde(rename = "a")]
    Add,
    #[serde(rename = "s")]
    Set,
}

impl Serialize for Cart {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let lines = self
            .lines
            .iter()
            .map(|(sku, line)| {
                let dots = line
                    .dots
                    .iter()
                    .map(|(dot, c)| {
                        let (kind, n) = match *c {
                            Contribution::Add(n) => (Kind::Add, n),
                            Contribution::Set(n) => (Kind::Set, n),
                        };
                        WireDot(dot.actor, dot.counter, kind, n)
                    })
                    .collect();
                (sku.clone(), dots)
            })
            .collect();
        WireCart {
            clock: self.clock.clone(),
            lines,
            deferred: self
                .deferred
                .iter()
                .map(|(c, skus)| (c.clone(), skus.clone()))
                .collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Cart {
    /// Reads the wire form; a dot given twice is an error. Bounds and invariants
    /// are [`Cart::check`]'s job, which callers run with their own [`Limits`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = WireCart::deserialize(d)?;
        let mut lines = BTreeMap::new();
        for (sku, wire_dots) in wire.lines {
            let mut dots = BTreeMap::new();
            for WireDot(actor, counter, kind, n) in wire_dots {
                let contribution = match kind {
                    Kind::Add => Contribution::Add(n),
                    Kind::Set => Contribution::Set(n),
                };
                if dots.insert(Dot { actor, counter }, contribution).is_some() {
                    return Err(serde::de::Error::custom(format!(
                        "line {sku}: dot {actor}:{counter} given twice"
                    )));
                }
            }
            lines.insert(sku, Line { dots });
        }
        let mut deferred: BTreeMap<VClock, BTreeSet<String>> = BTreeMap::new();
        for (context, skus) in wire.deferred {
            deferred.entry(context).or_default().extend(skus);
        }
        Ok(Self {
            clock: wire.clock,
            lines,
            deferred,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ActorId = ActorId(0xa);
    const B: ActorId = ActorId(0xb);
    const CAP: u32 = 1_000;

    #[test]
    fn concurrent_adds_both_count() {
        let mut base = Cart::default();
        base.add(A, "sku", 1, CAP);
        let (mut a, mut b) = (base.clone(), base);
        a.add(A, "sku", 1, CAP);
        b.add(B, "sku", 1, CAP);
        a.merge(&b);
        assert_eq!(a.quantity("sku"), 3);
    }

    #[test]
    fn a_concurrent_add_and_remove_keep_the_item_with_the_added_quantity() {
        let mut base = Cart::default();
        base.add(A, "sku", 2, CAP);
        let (mut a, mut b) = (base.clone(), base);
        let seen = a.clock().clone();
        assert!(a.remove("sku", &seen));
        assert!(!a.contains("sku"));
        b.add(B, "sku", 1, CAP);
        a.merge(&b);
        assert_eq!(
            a.quantity("sku"),
            1,
            "the remove took what it saw, the add stays"
        );
        b.merge(&a);
        assert_eq!(a, b);
    }

    #[test]
    fn an_observed_remove_never_comes_back() {
        let mut a = Cart::default();
        a.add(A, "sku", 1, CAP);
        let stale = a.clone();
        let seen = a.clock().clone();
        a.remove("sku", &seen);
        a.merge(&stale);
        assert!(
            !a.contains("sku"),
            "the stale copy's dot was seen and removed"
        );
        let mut b = stale;
        b.merge(&a);
        assert!(!b.contains("sku"));
    }

    #[test]
    fn sets_replace_what_they_saw_and_the_larger_of_concurrent_sets_counts() {
        let mut base = Cart::default();
        base.add(A, "sku", 4, CAP);
        let (mut a, mut b) = (base.clone(), base);
        a.set(A, "sku", 3);
        b.set(B, "sku", 5);
        assert_eq!(a.quantity("sku"), 3);
        a.merge(&b);
        assert_eq!(a.quantity("sku"), 5);
        a.add(A, "sku", 2, CAP);
        assert_eq!(a.quantity("sku"), 7);
    }

    #[test]
    fn a_remove_ahead_of_the_state_waits_for_the_writes_it_saw() {
        let mut a = Cart::default();
        a.add(A, "sku", 1, CAP);
        let mut lagging = Cart::default();
        // The client read `a` and removes at a replica that has not seen the add.
        assert!(lagging.remove("sku", &a.clock().clone()));
        assert_eq!(lagging.deferred_count(), 1);
        lagging.merge(&a);
        assert!(!lagging.contains("sku"));
        assert_eq!(
            lagging.deferred_count(),
            0,
            "applied once its writes arrived"
        );
    }

    #[test]
    fn adds_stop_at_the_cap_as_the_writer_sees_the_line() {
        let mut a = Cart::default();
        assert_eq!(a.add(A, "sku", 7, 10), 7);
        assert_eq!(a.add(A, "sku", 7, 10), 3);
        let clock = a.clock().clone();
        assert_eq!(a.add(A, "sku", 1, 10), 0);
        assert_eq!(a.clock(), &clock, "a full line makes no dot");
    }

    #[test]
    fn the_wire_form_round_trips_and_is_checked() {
        let mut a = Cart::default();
        a.add(A, "x-1", 2, CAP);
        a.set(B, "y.2", 3);
        let mut lagging = a.clone();
        let ahead = VClock::from_entries([(A, 9)]);
        lagging.remove("x-1", &ahead);
        let json = serde_json::to_string(&lagging).unwrap();
        let back: Cart = serde_json::from_str(&json).unwrap();
        assert_eq!(back, lagging);
        back.check(&Limits::default()).unwrap();

        let uncovered =
            r#"{"clock":{"000000000000000a":1},"lines":{"s":[["000000000000000a",2,"a",1]]}}"#;
        let cart: Cart = serde_json::from_str(uncovered).unwrap();
        assert!(
            cart.check(&Limits::default())
                .unwrap_err()
                .contains("not covered")
        );
        let twice = r#"{"clock":{"000000000000000a":1},"lines":{"s":[["000000000000000a",1,"a",1],["000000000000000a",1,"s",2]]}}"#;
        assert!(serde_json::from_str::<Cart>(twice).is_err());
        let bad_sku =
            r#"{"clock":{"000000000000000a":1},"lines":{"s k":[["000000000000000a",1,"a",1]]}}"#;
        let cart: Cart = serde_json::from_str(bad_sku).unwrap();
        assert!(cart.check(&Limits::default()).is_err());
    }
}
