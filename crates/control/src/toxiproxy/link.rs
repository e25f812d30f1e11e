//! One proxied connection: two links (client → upstream, upstream → client), each a
//! reader and a writer joined by a bounded channel.
//!
//! The reader stamps each chunk with the instant it was read and queues it
//! ([`CHANNEL_CHUNKS`] chunks of at most [`READ_CHUNK`] bytes: at most 512 KiB in
//! flight per direction, then TCP back-pressure). The writer plans each chunk through
//! the direction's toxics ([`super::toxics::LinkChain`]) and writes the pieces at
//! their instants. A change of the proxy's toxics reaches live links at once (a
//! `watch` channel): pieces waiting for their instant are written without waiting
//! (Toxiproxy's "don't drop data on the floor" when a toxic is interrupted) and the
//! new chain applies from the next chunk.
//!
//! Ends: an end of stream is passed on as a half-close (FIN on the write side;
//! Toxiproxy closes the whole connection instead); a timer or `limit_data` closes the
//! whole connection; `reset_peer` closes both sockets with `SO_LINGER` 0 (RST).
//! Whatever ends, both sockets are closed when the connection's task returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::model::Stream;
use super::toxics::{Chain, End, Fate, LinkChain, Piece};

/// The largest chunk one read takes.
pub const READ_CHUNK: usize = 32 * 1024;
/// Chunks queued between a link's reader and its writer.
pub const CHANNEL_CHUNKS: usize = 16;

/// What both links of a connection share: how it ends.
#[derive(Debug)]
struct Ending {
    cancel: CancellationToken,
    reset: AtomicBool,
}

impl Ending {
    fn close(&self) {
        self.cancel.cancel();
    }

    fn reset(&self) {
        self.reset.store(true, Ordering::SeqCst);
        self.cancel.cancel();
    }
}

/// Runs one connection until both directions end or `cancel` fires (the proxy is
/// disabled or deleted); then closes both sockets. `initial` is each direction's
/// chain as it was at accept (a change since then is followed at once: `chains`
/// report it as not yet seen).
pub async fn run(
    proxy: Arc<str>,
    client: TcpStream,
    upstream: TcpStream,
    chains: [watch::Receiver<Chain>; 2],
    initial: [LinkChain; 2],
    cancel: CancellationToken,
) {
    // Go's sockets (and so Toxiproxy's) have Nagle off: chunks leave as planned.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let ending = Ending {
        cancel,
        reset: AtomicBool::new(false),
    };
    let [up_chain, down_chain] = chains;
    let [up_initial, down_initial] = initial;
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let ((client_read, upstream_write), (upstream_read, client_write)) = tokio::join!(
        pipe(
            &proxy,
            Stream::Upstream,
            client_read,
            upstream_write,
            (up_chain, up_initial),
            &ending
        ),
        pipe(
            &proxy,
            Stream::Downstream,
            upstream_read,
            client_write,
            (down_chain, down_initial),
            &ending
        ),
    );
    let reset = ending.reset.load(Ordering::SeqCst);
    for (read, write) in [(client_read, client_write), (upstream_read, upstream_write)] {
        if let Ok(stream) = read.reunite(write) {
            if reset {
                // Closing with a zero linger sends RST instead of FIN.
                #[allow(deprecated)]
                let _ = stream.set_linger(Some(Duration::ZERO));
            }
            drop(stream);
        }
    }
}

/// One direction: read `source`, plan through the chain, write `sink`. Returns the
/// halves so the connection closes both sockets together.
async fn pipe(
    proxy: &str,
    stream: Stream,
    mut source: OwnedReadHalf,
    mut sink: OwnedWriteHalf,
    (mut chain_rx, chain): (watch::Receiver<Chain>, LinkChain),
    ending: &Ending,
) -> (OwnedReadHalf, OwnedWriteHalf) {
    let (tx, mut rx) = mpsc::channel::<Piece>(CHANNEL_CHUNKS);
    let reader = async {
        loop {
            let mut buffer = vec![0u8; READ_CHUNK];
            let read = tokio::select! {
                () = ending.cancel.cancelled() => break,
                read = source.read(&mut buffer) => read,
            };
            match read {
                Ok(0) => break,
                Ok(n) => {
                    buffer.truncate(n);
                    let piece = Piece {
                        data: buffer,
                        at: Instant::now(),
                    };
                    if tx.send(piece).await.is_err() {
                        break;
                    }
                }
                // A reset or broken peer ends the whole connection.
                Err(_) => {
                    ending.close();
                    break;
                }
            }
        }
        // Dropping the sender is the end of stream for the writer.
        drop(tx);
    };
    let writer = write_loop(
        proxy,
        stream,
        &mut sink,
        &mut rx,
        (&mut chain_rx, chain),
        ending,
    );
    tokio::join!(reader, writer);
    (source, sink)
}

fn sleep_until(at: Instant) -> tokio::time::Sleep {
    tokio::time::sleep_until(tokio::time::Instant::from_std(at))
}

async fn write_loop(
    proxy: &str,
    stream: Stream,
    sink: &mut OwnedWriteHalf,
    rx: &mut mpsc::Receiver<Piece>,
    (chain_rx, mut chain): (&mut watch::Receiver<Chain>, LinkChain),
    ending: &Ending,
) {
    let bytes = metrics::counter!("toxiproxy_bytes_total",
        "proxy" => proxy.to_owned(), "direction" => stream.as_str());
    // Follows a change of the chain; `false` when the connection must close.
    let follow = |chain: &mut LinkChain, chain_rx: &mut watch::Receiver<Chain>| -> bool {
        let entries = chain_rx.borrow_and_update().clone();
        !chain.reconcile(&entries, Instant::now(), &mut rand::rng())
    };
    loop {
        let deadline = chain.deadline();
        tokio::select! {
            biased;
            () = ending.cancel.cancelled() => return,
            changed = chain_rx.changed() => {
                // The proxy is gone (its sender dropped): so is the connection.
                if changed.is_err() || !follow(&mut chain, chain_rx) {
                    ending.close();
                    return;
                }
            }
            () = async { sleep_until(deadline.map_or_else(Instant::now, |(at, _)| at)).await },
                if deadline.is_some() => {
                match deadline.map(|(_, fate)| fate) {
                    Some(Fate::Reset) => ending.reset(),
                    _ => ending.close(),
                }
                return;
            }
            piece = rx.recv() => match piece {
                Some(piece) => {
                    let plan = chain.plan(piece, Instant::now(), &mut rand::rng());
                    let mut hurry = false;
                    for piece in plan.pieces {
                        if !hurry && piece.at > Instant::now() {
                            tokio::select! {
                                biased;
                                () = ending.cancel.cancelled() => return,
                                changed = chain_rx.changed() => {
                                    if changed.is_err() || !follow(&mut chain, chain_rx) {
                                        ending.close();
                                        return;
                                    }
                                    hurry = true;
                                }
                                () = sleep_until(piece.at) => {}
                            }
                        }
                        let written = tokio::select! {
                            () = ending.cancel.cancelled() => return,
                            written = sink.write_all(&piece.data) => written,
                        };
                        if written.is_err() {
                            ending.close();
                            return;
                        }
                        bytes.increment(piece.data.len() as u64);
                    }
                    if plan.close {
                        let _ = sink.flush().await;
                        ending.close();
                        return;
                    }
                }
                None => {
                    match chain.at_end(Instant::now()) {
                        End::ResetAt(at) => {
                            tokio::select! {
                                () = ending.cancel.cancelled() => {}
                                () = sleep_until(at) => ending.reset(),
                            }
                        }
                        End::CloseAfter(delay) => {
                            tokio::select! {
                                () = ending.cancel.cancelled() => {}
                                () = tokio::time::sleep(delay) => {
                                    let _ = sink.shutdown().await;
                                }
                            }
                        }
                    }
                    return;
                }
            }
        }
    }
}
