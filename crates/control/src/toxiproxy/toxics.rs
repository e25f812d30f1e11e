//! What each toxic does to a stream, as pure functions of the data and the time.
//!
//! A link (one direction of one connection, see [`super::link`]) keeps a
//! [`LinkChain`]: the proxy's toxics for that direction, each with the connection's
//! own toxicity roll and state. Every chunk read is *planned* through the chain in
//! order — toxics reorder nothing, they delay (`at`), cut, truncate or drop — and the
//! link then writes each piece at its `at`. Time is passed in, never read here, so
//! every rule is tested on chosen instants.
//!
//! Semantics, as Toxiproxy 2.x's toxics (`toxics/*.go`):
//! - `latency`: each chunk leaves `latency ± jitter` ms after it was read (chunks
//!   are delayed, not spaced: a burst stays a burst).
//! - `bandwidth`: at most `rate` KB/s; a chunk larger than 100 ms of rate is cut in
//!   100 ms slices.
//! - `slicer`: a chunk is cut by halving until pieces are `average_size ±
//!   size_variation` bytes, each `delay` µs after the previous.
//! - `limit_data`: bytes past `bytes` are dropped and the connection closes when the
//!   limit is reached (counted per link, kept across updates).
//! - `timeout`: all data is dropped; the connection closes `timeout` ms after the
//!   toxic began acting on it (0: never). Removing an acting timeout toxic closes
//!   the connection (Toxiproxy's cleanup does the same).
//! - `reset_peer`: on the first data (or end of stream) the data is dropped and,
//!   `timeout` ms later, the connection is reset (RST).
//! - `slow_close`: the end of stream is passed on `delay` ms late.
//!
//! Toxicity: each toxic acts on a given link with probability `toxicity`, rolled
//! when the link first sees it and again when it is updated (as Toxiproxy re-runs a
//! toxic's stub on update).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use super::model::ToxicKind;

/// One toxic of a proxy's chain for one direction, as links receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainEntry {
    pub name: String,
    /// Changes on every update of the toxic (a fresh roll, fresh timers).
    pub generation: u64,
    pub toxicity: f32,
    pub kind: ToxicKind,
}

/// A proxy's chain for one direction, shared with its links.
pub type Chain = Arc<[ChainEntry]>;

/// Data and the instant it may be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub data: Vec<u8>,
    pub at: Instant,
}

/// What a link does once a chunk's pieces are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// In order; each no earlier than the previous.
    pub pieces: Vec<Piece>,
    /// Close the connection after writing them (`limit_data` reached).
    pub close: bool,
}

/// What a timer asks of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Close the connection (FIN).
    Close,
    /// Reset the connection (RST).
    Reset,
}

#[derive(Debug, Clone)]
struct LinkToxic {
    entry: ChainEntry,
    /// Whether the toxic acts on this link (the toxicity roll).
    acting: bool,
    /// `bandwidth`: when the link is next free to send.
    next_free: Option<Instant>,
    /// `limit_data`: bytes passed so far.
    passed: u64,
    /// `timeout` (close) or `reset_peer` (reset, once data came): when.
    deadline: Option<Instant>,
}

impl LinkToxic {
    fn new(entry: &ChainEntry, now: Instant, rng: &mut impl Rng) -> Self {
        let mut toxic = Self {
            entry: entry.clone(),
            acting: false,
            next_free: None,
            passed: 0,
            deadline: None,
        };
        toxic.restart(now, rng);
        toxic
    }

    /// A fresh roll and fresh timers (creation and update); `limit_data`'s count
    /// stays (Toxiproxy keeps a stub's state across updates).
    fn restart(&mut self, now: Instant, rng: &mut impl Rng) {
        self.acting = rng.random::<f32>() < self.entry.toxicity;
        self.next_free = None;
        self.deadline = match self.entry.kind {
            ToxicKind::Timeout { timeout } if self.acting && timeout > 0 => {
                Some(now + Duration::from_millis(timeout))
            }
            _ => None,
        };
    }
}

/// One link's view of its direction's toxics.
#[derive(Debug, Clone, Default)]
pub struct LinkChain {
    toxics: Vec<LinkToxic>,
}

impl LinkChain {
    /// The chain a new link starts with.
    pub fn new(entries: &[ChainEntry], now: Instant, rng: &mut impl Rng) -> Self {
        Self {
            toxics: entries
                .iter()
                .map(|entry| LinkToxic::new(entry, now, rng))
                .collect(),
        }
    }

    /// Follows a change of the proxy's chain: kept toxics keep their state, updated
    /// ones restart, new ones roll. Returns `true` when the connection must close
    /// now (an acting `timeout` toxic was removed).
    pub fn reconcile(&mut self, entries: &[ChainEntry], now: Instant, rng: &mut impl Rng) -> bool {
        let mut old = std::mem::take(&mut self.toxics);
        for entry in entries {
            let toxic = match old.iter().position(|t| t.entry.name == entry.name) {
                Some(i) => {
                    let mut toxic = old.swap_remove(i);
                    if toxic.entry.generation != entry.generation {
                        toxic.entry = entry.clone();
                        toxic.restart(now, rng);
                    }
                    toxic
                }
                None => LinkToxic::new(entry, now, rng),
            };
            self.toxics.push(toxic);
        }
        old.iter()
            .any(|t| t.acting && matches!(t.entry.kind, ToxicKind::Timeout { .. }))
    }

    /// The next timer and what it does, if any.
    pub fn deadline(&self) -> Option<(Instant, Fate)> {
        self.toxics
            .iter()
            .filter_map(|t| {
                let at = t.deadline?;
                Some(match t.entry.kind {
                    ToxicKind::ResetPeer { .. } => (at, Fate::Reset),
                    _ => (at, Fate::Close),
                })
            })
            .min_by_key(|(at, _)| *at)
    }

    /// Plans one chunk read at `piece.at` (`now` starts timers).
    pub fn plan(&mut self, piece: Piece, now: Instant, rng: &mut impl Rng) -> Plan {
        let mut pieces = vec![piece];
        let mut close = false;
        for toxic in self.toxics.iter_mut().filter(|t| t.acting) {
            if pieces.is_empty() {
                break;
            }
            match toxic.entry.kind {
                ToxicKind::Latency { latency, jitter } => {
                    let delay = jittered(latency, jitter, rng);
                    for piece in &mut pieces {
                        piece.at += delay;
                    }
                }
                ToxicKind::Bandwidth { rate } => {
                    pieces = throttle(pieces, rate, &mut toxic.next_free);
                }
                ToxicKind::Slicer {
                    average_size,
                    size_variation,
                    delay,
                } => {
                    pieces = pieces
                        .into_iter()
                        .flat_map(|piece| {
                            slice(piece, average_size, size_variation, delay, &mut *rng)
                        })
                        .collect();
                }
                ToxicKind::LimitData { bytes } => {
                    let mut kept = Vec::new();
                    for mut piece in pieces {
                        let room = bytes.saturating_sub(toxic.passed);
                        let take = usize::try_from(room)
                            .unwrap_or(usize::MAX)
                            .min(piece.data.len());
                        piece.data.truncate(take);
                        toxic.passed += take as u64;
                        if take > 0 {
                            kept.push(piece);
                        }
                    }
                    pieces = kept;
                    if toxic.passed >= bytes {
                        close = true;
                    }
                }
                ToxicKind::Timeout { .. } => pieces.clear(),
                ToxicKind::ResetPeer { timeout } => {
                    pieces.clear();
                    toxic
                        .deadline
                        .get_or_insert(now + Duration::from_millis(timeout));
                }
                ToxicKind::SlowClose { .. } => {}
            }
        }
        Plan { pieces, close }
    }

    /// At the end of the stream: reset at the returned instant when a `reset_peer`
    /// acts, else pass the end on after the returned delay (the acting `slow_close`
    /// delays, summed as Toxiproxy's chained stubs add them).
    pub fn at_end(&mut self, now: Instant) -> End {
        for toxic in self.toxics.iter_mut().filter(|t| t.acting) {
            if let ToxicKind::ResetPeer { timeout } = toxic.entry.kind {
                let at = *toxic
                    .deadline
                    .get_or_insert(now + Duration::from_millis(timeout));
                return End::ResetAt(at);
            }
        }
        let delay = self
            .toxics
            .iter()
            .filter(|t| t.acting)
            .map(|t| match t.entry.kind {
                ToxicKind::SlowClose { delay } => Duration::from_millis(delay),
                _ => Duration::ZERO,
            })
            .sum();
        End::CloseAfter(delay)
    }
}

/// What a link does at the end of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Pass the end on (FIN) after this delay.
    CloseAfter(Duration),
    /// Reset the connection at this instant.
    ResetAt(Instant),
}

/// `latency ± jitter` ms, never negative (Toxiproxy: uniform in `[-jitter, jitter)`).
fn jittered(latency: u64, jitter: u64, rng: &mut impl Rng) -> Duration {
    let ms = if jitter == 0 {
        latency
    } else {
        let offset = rng.random_range(0..jitter * 2) as i128 - jitter as i128;
        (latency as i128 + offset).max(0) as u64
    };
    Duration::from_millis(ms)
}

/// `bandwidth`: each byte takes `1 / rate` ms of the link's time; slices of 100 ms
/// of rate. `next_free` is when the link has sent what it was given before.
pub fn throttle(pieces: Vec<Piece>, rate: u64, next_free: &mut Option<Instant>) -> Vec<Piece> {
    if rate == 0 {
        return pieces;
    }
    let slice_len = usize::try_from(rate.saturating_mul(100)).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    for piece in pieces {
        let mut data = piece.data;
        let mut start = piece.at;
        while !data.is_empty() {
            let rest = data.split_off(slice_len.min(data.len()));
            let begin = next_free.map_or(start, |free| free.max(start));
            // bytes / (rate bytes per ms), in nanoseconds.
            let nanos = (data.len() as u128 * 1_000_000 / rate as u128) as u64;
            let done = begin + Duration::from_nanos(nanos);
            *next_free = Some(done);
            out.push(Piece { data, at: done });
            start = done;
            data = rest;
        }
    }
    out
}

/// `slicer`: cut points by halving (Toxiproxy's `chunk`), pieces `delay` µs apart.
pub fn slice(
    piece: Piece,
    average_size: u64,
    size_variation: u64,
    delay_us: u64,
    rng: &mut impl Rng,
) -> Vec<Piece> {
    let mut cuts = Vec::new();
    cut(
        0,
        piece.data.len(),
        average_size as usize,
        size_variation as usize,
        rng,
        &mut cuts,
    );
    let mut out = Vec::with_capacity(cuts.len());
    for (i, (start, end)) in cuts.into_iter().enumerate() {
        out.push(Piece {
            data: piece.data[start..end].to_vec(),
            at: piece.at + Duration::from_micros(delay_us.saturating_mul(i as u64)),
        });
    }
    out
}

fn cut(
    start: usize,
    end: usize,
    average: usize,
    variation: usize,
    rng: &mut impl Rng,
    out: &mut Vec<(usize, usize)>,
) {
    // `average > variation >= 0` (checked at parse) keeps every half non-empty.
    if (end - start).saturating_sub(average) <= variation {
        if end > start {
            out.push((start, end));
        }
        return;
    }
    let mut mid = start + (end - start) / 2;
    if variation > 0 {
        let offset = rng.random_range(0..variation * 2) as isize - variation as isize;
        mid = (mid as isize + offset).clamp(start as isize + 1, end as isize - 1) as usize;
    }
    cut(start, mid, average, variation, rng, out);
    cut(mid, end, average, variation, rng, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn entry(name: &str, kind: ToxicKind) -> ChainEntry {
        ChainEntry {
            name: name.into(),
            generation: 1,
            toxicity: 1.0,
            kind,
        }
    }

    fn piece(len: usize, at: Instant) -> Piece {
        Piece {
            data: (0..len).map(|i| i as u8).collect(),
            at,
        }
    }

    #[test]
    fn latency_delays_each_chunk_from_its_arrival() {
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        let mut chain = LinkChain::new(
            &[entry(
                "l",
                ToxicKind::Latency {
                    latency: 100,
                    jitter: 0,
                },
            )],
            t0,
            &mut rng,
        );
        let plan = chain.plan(piece(10, t0), t0, &mut rng);
        assert_eq!(plan.pieces[0].at, t0 + Duration::from_millis(100));
        let later = t0 + Duration::from_millis(30);
        let plan = chain.plan(piece(10, later), later, &mut rng);
        assert_eq!(plan.pieces[0].at, later + Duration::from_millis(100));
        // Jitter stays within ± jitter and never below zero.
        for _ in 0..100 {
            let d = jittered(10, 50, &mut rng);
            assert!(d <= Duration::from_millis(60));
        }
    }

    #[test]
    fn bandwidth_spaces_bytes_by_rate_in_100ms_slices() {
        let t0 = Instant::now();
        let mut free = None;
        // 10 KB/s = 10 bytes per ms: 2500 bytes are 250 ms, in slices of 1000.
        let out = throttle(vec![piece(2500, t0)], 10, &mut free);
        let lens: Vec<usize> = out.iter().map(|p| p.data.len()).collect();
        assert_eq!(lens, [1000, 1000, 500]);
        assert_eq!(out[0].at, t0 + Duration::from_millis(100));
        assert_eq!(out[2].at, t0 + Duration::from_millis(250));
        // The next chunk waits for the link to be free.
        let out = throttle(vec![piece(100, t0)], 10, &mut free);
        assert_eq!(out[0].at, t0 + Duration::from_millis(260));
        // The data is intact and in order.
        let all: Vec<u8> = throttle(vec![piece(2500, t0)], 10, &mut None)
            .into_iter()
            .flat_map(|p| p.data)
            .collect();
        assert_eq!(all, piece(2500, t0).data);
    }

    #[test]
    fn slicer_cuts_into_pieces_near_the_average_and_spaces_them() {
        let mut rng = StdRng::seed_from_u64(7);
        let t0 = Instant::now();
        let original = piece(1000, t0);
        let out = slice(original.clone(), 100, 20, 500, &mut rng);
        assert!(out.len() >= 8, "{}", out.len());
        for (i, p) in out.iter().enumerate() {
            assert!(
                !p.data.is_empty() && p.data.len() <= 120,
                "{}",
                p.data.len()
            );
            assert_eq!(p.at, t0 + Duration::from_micros(500 * i as u64));
        }
        let all: Vec<u8> = out.into_iter().flat_map(|p| p.data).collect();
        assert_eq!(all, original.data);
    }

    #[test]
    fn limit_data_passes_exactly_the_limit_then_closes() {
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        let mut chain = LinkChain::new(
            &[entry("l", ToxicKind::LimitData { bytes: 15 })],
            t0,
            &mut rng,
        );
        let plan = chain.plan(piece(10, t0), t0, &mut rng);
        assert_eq!((plan.pieces[0].data.len(), plan.close), (10, false));
        let plan = chain.plan(piece(10, t0), t0, &mut rng);
        assert_eq!((plan.pieces[0].data.len(), plan.close), (5, true));
        // The count survives an update.
        let mut updated = entry("l", ToxicKind::LimitData { bytes: 20 });
        updated.generation = 2;
        chain.reconcile(&[updated], t0, &mut rng);
        let plan = chain.plan(piece(10, t0), t0, &mut rng);
        assert_eq!((plan.pieces[0].data.len(), plan.close), (5, true));
    }

    #[test]
    fn timeout_drops_data_closes_on_time_and_on_removal() {
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        let mut chain = LinkChain::new(
            &[entry("t", ToxicKind::Timeout { timeout: 50 })],
            t0,
            &mut rng,
        );
        assert!(chain.plan(piece(10, t0), t0, &mut rng).pieces.is_empty());
        assert_eq!(
            chain.deadline(),
            Some((t0 + Duration::from_millis(50), Fate::Close))
        );
        assert!(chain.reconcile(&[], t0, &mut rng), "removal closes");
        // Timeout 0: never closes by itself.
        let chain = LinkChain::new(
            &[entry("t", ToxicKind::Timeout { timeout: 0 })],
            t0,
            &mut rng,
        );
        assert_eq!(chain.deadline(), None);
    }

    #[test]
    fn reset_peer_arms_on_data_or_end() {
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        let toxics = [entry("r", ToxicKind::ResetPeer { timeout: 20 })];
        let mut chain = LinkChain::new(&toxics, t0, &mut rng);
        assert_eq!(chain.deadline(), None);
        let later = t0 + Duration::from_millis(5);
        assert!(
            chain
                .plan(piece(3, later), later, &mut rng)
                .pieces
                .is_empty()
        );
        assert_eq!(
            chain.deadline(),
            Some((later + Duration::from_millis(20), Fate::Reset))
        );
        let mut chain = LinkChain::new(&toxics, t0, &mut rng);
        assert_eq!(
            chain.at_end(t0),
            End::ResetAt(t0 + Duration::from_millis(20))
        );
    }

    #[test]
    fn slow_close_delays_the_end_and_toxicity_zero_does_nothing() {
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        let mut chain = LinkChain::new(
            &[entry("s", ToxicKind::SlowClose { delay: 300 })],
            t0,
            &mut rng,
        );
        assert_eq!(
            chain.at_end(t0),
            End::CloseAfter(Duration::from_millis(300))
        );
        let mut off = entry("t", ToxicKind::Timeout { timeout: 10 });
        off.toxicity = 0.0;
        let mut chain = LinkChain::new(&[off], t0, &mut rng);
        assert_eq!(chain.plan(piece(4, t0), t0, &mut rng).pieces.len(), 1);
        assert_eq!(chain.deadline(), None);
        assert!(
            !chain.reconcile(&[], t0, &mut rng),
            "a toxic not acting closes nothing"
        );
    }

    #[test]
    fn toxics_apply_in_chain_order() {
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        // limit then latency: 4 bytes pass, 100 ms late, and the link closes after.
        let mut chain = LinkChain::new(
            &[
                entry("limit", ToxicKind::LimitData { bytes: 4 }),
                entry(
                    "lag",
                    ToxicKind::Latency {
                        latency: 100,
                        jitter: 0,
                    },
                ),
            ],
            t0,
            &mut rng,
        );
        let plan = chain.plan(piece(10, t0), t0, &mut rng);
        assert_eq!(plan.pieces.len(), 1);
        assert_eq!(plan.pieces[0].data, [0, 1, 2, 3]);
        assert_eq!(plan.pieces[0].at, t0 + Duration::from_millis(100));
        assert!(plan.close);
    }
}
