//! A standalone geo-resp server for benchmarks and manual tests:
//! `cargo run --release -p casebook-uber --example geo_resp -- [PORT] [WORKER_THREADS]`
//! (defaults: 6380, 1). `casebook up` runs the same server as the `geo-resp`
//! service once it is registered with the platform, with one difference: no
//! `maxmemory`, like a default `redis-server`, so a benchmark's millions of
//! GEOADDs are compared with Redis's and never refused.

use std::sync::Arc;

use casebook_uber::resp::state::sorted_set;
use casebook_uber::resp::{Limits, Server};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().map_or(Ok(6380), |p| p.parse())?;
    let threads: usize = args.next().map_or(Ok(1), |t| t.parse())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        eprintln!("geo-resp listening on {}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        });
        let limits = Limits {
            max_memory_bytes: 0,
            ..Limits::default()
        };
        Arc::new(Server::new(limits, sorted_set))
            .serve(listener, shutdown)
            .await;
        Ok(())
    })
}
