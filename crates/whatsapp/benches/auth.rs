//! SASL login throughput, server side.
//!
//! Run: `cargo bench -p casebook-whatsapp --bench auth` (release profile).
//!
//! - `scram_sha256_server`: the server's half of a SCRAM-SHA-256 login (parse,
//!   secrets lookup, server-first, proof check, server signature) with the
//!   client-final precomputed: no PBKDF2, since the server holds StoredKey.
//! - `sasl_scram_sha256_login`: a whole login through `SaslServer` (limiter,
//!   random nonce) plus the client's cheap half with a cached ClientKey.
//! - `sasl_plain_login`: a PLAIN login through `SaslServer`: one PBKDF2-SHA-256
//!   of 4096 iterations, the price of PLAIN against stored SCRAM secrets.
//! - `derive_credentials`: account creation (PBKDF2 for SHA-1 and SHA-256).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use casebook_kit::clock::SystemClock;
use casebook_whatsapp::auth::scram::ScramServer;
use casebook_whatsapp::auth::{
    Accounts, AccountsConfig, Credentials, LimiterConfig, LoginLimiter, SaslPolicy, SaslServer,
    SaslStep, ScramHash,
};
use casebook_whatsapp::client::{ScramCache, ScramClient};
use divan::{Bencher, black_box};

fn main() {
    divan::Divan::from_args().sample_count(50).main();
}

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Setup {
    _dir: tempfile::TempDir,
    accounts: Arc<Accounts>,
    limiter: Arc<LoginLimiter>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let accounts = Accounts::open(dir.path(), "example.com", AccountsConfig::default())
        .expect("open accounts");
    accounts.add("alice", "pencil").expect("add alice");
    Setup {
        _dir: dir,
        accounts: Arc::new(accounts),
        limiter: Arc::new(
            LoginLimiter::new(SystemClock::shared(), LimiterConfig::default())
                .expect("default limiter config"),
        ),
    }
}

/// The client's half with its keys cached (what real clients cache): the
/// crate's client, so the benchmark measures the code the swarm runs.
fn client_final(hash: ScramHash, cache: &ScramCache, server_first: &[u8]) -> Vec<u8> {
    let mut client = ScramClient::with_first(hash, "alice", "pencil", "n,,", "clientnonce");
    client
        .client_final(server_first, Some(cache))
        .expect("client-final")
}

#[divan::bench]
fn scram_sha256_server(bencher: Bencher<'_, '_>) {
    let s = setup();
    let hash = ScramHash::Sha256;
    let cache = ScramCache::default();
    let mut probe = ScramServer::new(hash);
    let server_first = probe
        .client_first(b"n,,n=alice,r=clientnonce", "servernonce", |_| {
            Ok(s.accounts.lookup(hash, "alice"))
        })
        .expect("server-first");
    let last = client_final(hash, &cache, &server_first);
    bencher.bench_local(|| {
        let mut server = ScramServer::new(hash);
        server
            .client_first(
                black_box(b"n,,n=alice,r=clientnonce"),
                "servernonce",
                |first| Ok(s.accounts.lookup(hash, &first.username)),
            )
            .expect("server-first");
        let success = server.client_final(black_box(&last)).expect("login");
        black_box(success)
    });
}

#[divan::bench]
fn sasl_scram_sha256_login(bencher: Bencher<'_, '_>) {
    let s = setup();
    let hash = ScramHash::Sha256;
    let cache = ScramCache::default();
    let policy = SaslPolicy {
        encrypted: true,
        allow_insecure_plain: false,
    };
    bencher.bench_local(|| {
        let mut sasl = SaslServer::new(s.accounts.clone(), s.limiter.clone(), policy, PEER);
        let SaslStep::Challenge(server_first) =
            sasl.start("SCRAM-SHA-256", Some(b"n,,n=alice,r=clientnonce"))
        else {
            panic!("expected a challenge");
        };
        let last = client_final(hash, &cache, &server_first);
        let step = sasl.step(&last);
        assert!(matches!(step, SaslStep::Success { .. }));
        black_box(step)
    });
}

#[divan::bench]
fn sasl_plain_login(bencher: Bencher<'_, '_>) {
    let s = setup();
    let policy = SaslPolicy {
        encrypted: true,
        allow_insecure_plain: false,
    };
    bencher.bench_local(|| {
        let mut sasl = SaslServer::new(s.accounts.clone(), s.limiter.clone(), policy, PEER);
        let step = sasl.start("PLAIN", Some(black_box(b"\0alice\0pencil")));
        assert!(matches!(step, SaslStep::Success { .. }));
        black_box(step)
    });
}

#[divan::bench]
fn derive_credentials() -> Credentials {
    Credentials::derive(black_box("pencil"), 4096).expect("derive")
}
