//! The connect-time and keyspace commands over a real socket: what redis-cli,
//! redis-benchmark and client libraries send, pipelining, QUIT.

mod support;

use bytes::Bytes;
use casebook_uber::resp::Frame;
use support::{Client, start_server};

fn bulk(s: &str) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn hello_switches_protocol_and_describes_the_server() {
    let (port, _server) = start_server();
    let mut c = Client::connect(port);
    assert_eq!(
        c.cmd_str(&["GEOADD", "k", "13.361389", "38.115556", "Palermo"]),
        Frame::Integer(1)
    );
    // RESP2: a missing score is a null bulk, a score a bulk string.
    c.send_raw(b"ZSCORE k nope\r\nZSCORE k Palermo\r\n");
    assert_eq!(c.read_frame(), Frame::Null);
    assert_eq!(c.read_frame(), bulk("3479099956230698"));
    let Frame::Map(pairs) = c.cmd_str(&["HELLO", "3", "SETNAME", "tester"]) else {
        panic!("HELLO replies a map");
    };
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| *k == bulk(name))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("server"), Some(bulk("redis")));
    assert_eq!(field("version"), Some(bulk("7.0.15")));
    assert_eq!(field("proto"), Some(Frame::Integer(3)));
    assert_eq!(field("mode"), Some(bulk("standalone")));
    assert_eq!(c.cmd_str(&["CLIENT", "GETNAME"]), bulk("tester"));
    // RESP3: doubles and `_` nulls on the wire.
    c.send_raw(b"ZSCORE k Palermo\r\nGEOPOS k nope\r\n");
    assert_eq!(c.read_frame(), Frame::Double(3479099956230698.0));
    assert_eq!(c.read_frame(), Frame::Array(vec![Frame::Null]));
    assert_eq!(
        c.cmd_str(&["HELLO", "4"]),
        Frame::Error("NOPROTO unsupported protocol version".into())
    );
    let resp2 = c.cmd_str(&["HELLO", "2"]);
    assert_eq!(
        c.cmd_str(&["HELLO"]),
        resp2,
        "HELLO without a version keeps the protocol"
    );
}

#[test]
fn what_tools_ask_on_connect() {
    let (port, _server) = start_server();
    let mut c = Client::connect(port);
    // redis-benchmark reads these two; nothing is persisted here.
    assert_eq!(
        c.cmd_str(&["CONFIG", "GET", "save"]),
        Frame::Array(vec![bulk("save"), bulk("")])
    );
    assert_eq!(
        c.cmd_str(&["CONFIG", "GET", "appendonly"]),
        Frame::Array(vec![bulk("appendonly"), bulk("no")])
    );
    assert_eq!(c.cmd_str(&["COMMAND", "DOCS"]), Frame::Array(vec![]));
    assert_eq!(c.cmd_str(&["SELECT", "0"]), Frame::Simple("OK"));
    assert_eq!(
        c.cmd_str(&["SELECT", "1"]),
        Frame::err("DB index is out of range")
    );
    assert_eq!(
        c.cmd_str(&["CLIENT", "SETNAME", "a b"]),
        Frame::err("Client names cannot contain spaces, newlines or special characters.")
    );
    assert_eq!(
        c.cmd_str(&["CLIENT", "KILL"]),
        Frame::err("unknown subcommand 'KILL'. Try CLIENT HELP.")
    );
    assert_eq!(c.cmd_str(&["PING"]), Frame::Simple("PONG"));
    assert_eq!(c.cmd_str(&["ECHO", "hi"]), bulk("hi"));
    let Frame::Bulk(info) = c.cmd_str(&["INFO"]) else {
        panic!("INFO is a bulk string in RESP2");
    };
    let info = String::from_utf8_lossy(&info).into_owned();
    assert!(
        info.starts_with("# Server\r\nredis_version:7.0.15\r\n"),
        "{info}"
    );
    assert!(info.contains(&format!("tcp_port:{port}\r\n")), "{info}");
    assert!(info.contains("# Keyspace\r\n"), "{info}");
    c.cmd_str(&["GEOADD", "a", "1", "2", "x"]);
    let Frame::Bulk(keyspace) = c.cmd_str(&["INFO", "keyspace"]) else {
        panic!("INFO keyspace");
    };
    assert_eq!(
        &keyspace[..],
        b"# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n"
    );
}

#[test]
fn keyspace_commands() {
    let (port, _server) = start_server();
    let mut c = Client::connect(port);
    c.cmd_str(&["GEOADD", "a", "1", "2", "x", "3", "4", "y", "5", "6", "z"]);
    c.cmd_str(&["GEOADD", "b", "1", "2", "x"]);
    assert_eq!(
        c.cmd_str(&["ZRANGE", "a", "-2", "-1"]),
        Frame::Array(vec![bulk("y"), bulk("z")])
    );
    assert_eq!(
        c.cmd_str(&["ZRANGE", "a", "0", "0", "REV"]),
        Frame::Array(vec![bulk("z")])
    );
    assert_eq!(c.cmd_str(&["ZCARD", "a"]), Frame::Integer(3));
    assert_eq!(c.cmd_str(&["ZREM", "a", "x", "nope"]), Frame::Integer(1));
    assert_eq!(c.cmd_str(&["DEL", "a", "b", "c"]), Frame::Integer(2));
    assert_eq!(c.cmd_str(&["ZCARD", "a"]), Frame::Integer(0));
    c.cmd_str(&["GEOADD", "a", "1", "2", "x"]);
    assert_eq!(c.cmd_str(&["FLUSHALL", "ASYNC"]), Frame::Simple("OK"));
    assert_eq!(c.cmd_str(&["FLUSHDB", "now"]), Frame::err("syntax error"));
    assert_eq!(c.cmd_str(&["ZCARD", "a"]), Frame::Integer(0));
    // An emptied key disappears, as in Redis.
    c.cmd_str(&["GEOADD", "e", "1", "2", "x"]);
    c.cmd_str(&["ZREM", "e", "x"]);
    let Frame::Bulk(keyspace) = c.cmd_str(&["INFO", "keyspace"]) else {
        panic!("INFO keyspace");
    };
    assert_eq!(&keyspace[..], b"# Keyspace\r\n");
}

#[test]
fn pipelined_requests_are_answered_in_order_and_quit_closes() {
    let (port, _server) = start_server();
    let mut c = Client::connect(port);
    let mut batch = Vec::new();
    for i in 0..1000 {
        batch.extend(Client::encode(&[
            b"GEOADD",
            b"fleet",
            b"-73.98",
            b"40.75",
            format!("d{i}").as_bytes(),
        ]));
    }
    batch.extend(Client::encode(&[b"ZCARD", b"fleet"]));
    batch.extend(b"QUIT\r\nPING\r\n");
    c.send_raw(&batch);
    for _ in 0..1000 {
        assert_eq!(c.read_frame(), Frame::Integer(1));
    }
    assert_eq!(c.read_frame(), Frame::Integer(1000));
    // QUIT answers +OK and closes: the PING after it is never run.
    assert_eq!(c.read_to_end(), b"+OK\r\n".to_vec());
}

#[test]
fn connections_beyond_max_clients_are_refused_and_the_others_unharmed() {
    use casebook_uber::resp::{Limits, Server};
    use std::sync::Arc;
    let server = Arc::new(Server::new(
        Limits {
            max_clients: 2,
            ..Limits::default()
        },
        || Box::new(casebook_uber::geo::store::SortedGeoSet::default()),
    ));
    let (tx, rx) = std::sync::mpsc::channel();
    let shared = server.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr").port())
                .expect("port");
            shared
                .serve(listener, tokio_util::sync::CancellationToken::new())
                .await;
        });
    });
    let port = rx.recv().expect("port");
    let mut first = Client::connect(port);
    let mut second = Client::connect(port);
    assert_eq!(first.cmd_str(&["PING"]), Frame::Simple("PONG"));
    assert_eq!(second.cmd_str(&["PING"]), Frame::Simple("PONG"));
    let mut third = Client::connect(port);
    assert_eq!(
        third.read_to_end(),
        b"-ERR max number of clients reached\r\n".to_vec()
    );
    assert_eq!(first.cmd_str(&["PING"]), Frame::Simple("PONG"));
    drop(second);
    // A freed slot is taken again (the count drops when the task ends).
    let mut again = None;
    for _ in 0..50 {
        let mut c = Client::connect(port);
        c.send_raw(b"PING\r\n");
        if c.read_frame() == Frame::Simple("PONG") {
            again = Some(c);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(again.is_some(), "the slot of a closed client is reused");
}

// ---- Limits: no client-controlled number sizes an allocation ----

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

fn encoded(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    Client::encode(&args)
}

#[test]
fn a_huge_count_answers_what_exists_and_the_server_lives_on() {
    let (port, _server) = start_server();
    let mut c = Client::connect(port);
    c.cmd_str(&[
        "GEOADD", "cars", "-122.42", "37.77", "a", "-122.41", "37.78", "b", "-122.40", "37.76", "c",
    ]);
    // COUNT 10^9 aborted the whole process (a 64 GB heap); i64::MAX panicked.
    for count in ["1000000000", "9223372036854775807"] {
        let search = [
            "GEOSEARCH",
            "cars",
            "FROMLONLAT",
            "-122.42",
            "37.77",
            "BYRADIUS",
            "5",
            "km",
            "ASC",
            "COUNT",
            count,
        ];
        assert_eq!(
            c.cmd_str(&search),
            Frame::Array(vec![bulk("a"), bulk("b"), bulk("c")]),
            "COUNT {count}"
        );
        let Frame::Array(desc) = c.cmd_str(&[
            "GEORADIUS",
            "cars",
            "-122.42",
            "37.77",
            "5",
            "km",
            "DESC",
            "COUNT",
            count,
        ]) else {
            panic!("GEORADIUS answers an array");
        };
        assert_eq!(desc.len(), 3);
        assert_eq!(
            c.cmd_str(&[
                "GEORADIUSBYMEMBER",
                "cars",
                "a",
                "5",
                "km",
                "COUNT",
                count,
                "STORE",
                "near"
            ]),
            Frame::Integer(3)
        );
        assert_eq!(
            c.cmd_str(&[
                "GEOSEARCHSTORE",
                "near",
                "cars",
                "FROMMEMBER",
                "a",
                "BYBOX",
                "10",
                "10",
                "km",
                "COUNT",
                count,
                "ANY",
            ]),
            Frame::Integer(3)
        );
    }
    assert_eq!(
        c.cmd_str(&[
            "GEOSEARCH",
            "cars",
            "FROMLONLAT",
            "0",
            "0",
            "BYRADIUS",
            "1",
            "m",
            "COUNT",
            "9223372036854775808"
        ]),
        Frame::err("value is not an integer or out of range")
    );
    // ZRANGE's indexes are clamped to what exists.
    assert_eq!(
        c.cmd_str(&[
            "ZRANGE",
            "cars",
            "-9223372036854775808",
            "9223372036854775807"
        ]),
        Frame::Array(vec![bulk("a"), bulk("c"), bulk("b")])
    );
    assert_eq!(
        c.cmd_str(&[
            "ZRANGE",
            "cars",
            "9223372036854775807",
            "-9223372036854775808",
            "WITHSCORES"
        ]),
        Frame::Array(vec![])
    );
    let mut other = Client::connect(port);
    assert_eq!(other.cmd_str(&["PING"]), Frame::Simple("PONG"));
}

#[test]
fn huge_headers_get_redis_errors_and_close_only_their_connection() {
    let (port, _server) = start_server();
    let mut bystander = Client::connect(port);
    bystander.cmd_str(&["GEOADD", "k", "1", "2", "x"]);
    let cases: [(&[u8], &str); 4] = [
        (
            b"*9223372036854775807\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*2000000\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$9223372036854775807\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        // Over the 4 MiB request limit, refused on the header: nothing is buffered.
        (
            b"*1\r\n$4194305\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
    ];
    for (input, reply) in cases {
        let mut c = Client::connect(port);
        c.send_raw(input);
        assert_eq!(
            String::from_utf8_lossy(&c.read_until_closed()),
            reply,
            "{}",
            String::from_utf8_lossy(input)
        );
    }
    // Three 1.5 MB arguments: the third header passes the request limit.
    let mut c = Client::connect(port);
    let big = vec![b'x'; 1_500_000];
    let mut request = b"*4\r\n$4\r\nECHO\r\n".to_vec();
    for _ in 0..2 {
        request.extend_from_slice(b"$1500000\r\n");
        request.extend_from_slice(&big);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"$1500000\r\n");
    c.send_raw(&request);
    assert_eq!(
        String::from_utf8_lossy(&c.read_until_closed()),
        "-ERR Protocol error: request larger than 4194304 bytes (uber.resp_max_request_bytes)\r\n"
    );
    // A declared multibulk count allocates nothing: the connection just waits.
    let mut waiting = Client::connect(port);
    waiting.send_raw(b"*1048576\r\n");
    assert_eq!(bystander.cmd_str(&["ZCARD", "k"]), Frame::Integer(1));
    // GEOPOS / GEOHASH of many members answer one entry per member.
    let mut members = vec!["GEOPOS", "k"];
    members.extend(std::iter::repeat_n("x", 50_000));
    let Frame::Array(positions) = bystander.cmd_str(&members) else {
        panic!("GEOPOS answers an array");
    };
    assert_eq!(positions.len(), 50_000);
}

#[test]
fn the_buffer_budget_refuses_the_connection_that_would_pass_it() {
    use casebook_uber::resp::{Limits, Server};
    let (port, _server) = support::start_server_with(Server::new(
        Limits {
            buffer_budget_bytes: 140_000,
            ..Limits::default()
        },
        casebook_uber::resp::state::sorted_set,
    ));
    let buffered = |c: &mut Client| -> usize {
        let Frame::Bulk(info) = c.cmd_str(&["INFO", "memory"]) else {
            panic!("INFO memory");
        };
        let info = String::from_utf8_lossy(&info).into_owned();
        let line = info
            .lines()
            .find_map(|l| l.strip_prefix("request_buffer_bytes:"))
            .unwrap_or_else(|| panic!("no request_buffer_bytes in {info}"));
        line.parse().expect("a number")
    };
    let mut observer = Client::connect(port);
    let mut a = Client::connect(port);
    let payload = vec![b'p'; 120_000];
    let mut head = b"*2\r\n$4\r\nECHO\r\n$120000\r\n".to_vec();
    head.extend_from_slice(&payload[..115_000]);
    a.send_raw(&head);
    block_on(casebook_testkit::eventually_sync(
        "the partial request to be buffered",
        casebook_testkit::DEADLINE,
        || buffered(&mut observer) >= 115_000,
    ));
    // B's partial request would pass the budget: B is told and closed.
    let mut b = Client::connect(port);
    b.send_raw(b"*2\r\n$4\r\nECHO\r\n$100\r\n");
    assert_eq!(
        String::from_utf8_lossy(&b.read_until_closed()),
        "-ERR request buffer budget exhausted (uber.resp_buffer_budget_bytes): too many large requests in flight, retry later\r\n"
    );
    // Whole small requests need no budget; A's request completes.
    assert_eq!(observer.cmd_str(&["PING"]), Frame::Simple("PONG"));
    let mut rest = payload[115_000..].to_vec();
    rest.extend_from_slice(b"\r\n");
    a.send_raw(&rest);
    assert_eq!(a.read_frame(), Frame::Bulk(Bytes::from(payload)));
    // A's charge is given back right after its reply is written.
    block_on(casebook_testkit::eventually_sync(
        "the budget to be given back",
        casebook_testkit::DEADLINE,
        || buffered(&mut observer) == 0,
    ));
}

#[test]
fn idle_connections_are_closed_on_the_instance_clock() {
    use casebook_kit::clock::ManualClock;
    use casebook_uber::resp::{Limits, Server};
    use std::time::Duration;
    let clock = ManualClock::new();
    let (port, _server) = support::start_server_with(
        Server::new(
            Limits {
                idle_timeout: Some(Duration::from_secs(300)),
                ..Limits::default()
            },
            casebook_uber::resp::state::sorted_set,
        )
        .with_clock(clock.shared()),
    );
    let mut idle = Client::connect(port);
    let mut busy = Client::connect(port);
    assert_eq!(idle.cmd_str(&["PING"]), Frame::Simple("PONG"));
    assert_eq!(busy.cmd_str(&["PING"]), Frame::Simple("PONG"));
    clock.advance(Duration::from_secs(200));
    assert_eq!(busy.cmd_str(&["PING"]), Frame::Simple("PONG"));
    clock.advance(Duration::from_secs(200));
    // 400 s since `idle` spoke, 200 s since `busy` did.
    assert_eq!(idle.read_until_closed(), Vec::<u8>::new());
    assert_eq!(busy.cmd_str(&["PING"]), Frame::Simple("PONG"));
}

#[test]
fn over_maxmemory_writes_get_redis_oom_error_and_reads_are_served() {
    use casebook_uber::resp::{Limits, Server};
    let (port, _server) = support::start_server_with(Server::new(
        Limits {
            max_memory_bytes: 2_000,
            ..Limits::default()
        },
        casebook_uber::resp::state::sorted_set,
    ));
    let oom = Frame::Error("OOM command not allowed when used memory > 'maxmemory'.".into());
    let mut c = Client::connect(port);
    assert_eq!(
        c.cmd_str(&["CONFIG", "GET", "maxmemory"]),
        Frame::Array(vec![bulk("maxmemory"), bulk("2000")])
    );
    let mut added = 0;
    while c.cmd_str(&["GEOADD", "k", "13.36", "38.11", &format!("m{added}")]) != oom {
        added += 1;
        assert!(added < 100, "maxmemory never refused a write");
    }
    assert!(added >= 5, "refused after only {added} members");
    assert_eq!(c.cmd_str(&["GEOADD", "other", "1", "2", "x"]), oom);
    assert_eq!(
        c.cmd_str(&[
            "GEOSEARCHSTORE",
            "dst",
            "k",
            "FROMLONLAT",
            "13.36",
            "38.11",
            "BYRADIUS",
            "1",
            "km"
        ]),
        oom
    );
    // GEORADIUS is a write command in Redis (STORE), refused as a whole.
    assert_eq!(
        c.cmd_str(&["GEORADIUS", "k", "13.36", "38.11", "1", "km"]),
        oom
    );
    assert_eq!(c.cmd_str(&["ZCARD", "k"]), Frame::Integer(added));
    let Frame::Array(found) = c.cmd_str(&["GEORADIUS_RO", "k", "13.36", "38.11", "1", "km"]) else {
        panic!("reads are served");
    };
    assert_eq!(found.len() as i64, added);
    assert_eq!(
        c.cmd_str(&["ZREM", "k", "m0", "m1", "m2"]),
        Frame::Integer(3)
    );
    assert_eq!(
        c.cmd_str(&["GEOADD", "k", "13.36", "38.11", "again"]),
        Frame::Integer(1)
    );
    assert_eq!(c.cmd_str(&["DEL", "k"]), Frame::Integer(1));
    assert_eq!(
        c.cmd_str(&["GEOADD", "other", "1", "2", "x"]),
        Frame::Integer(1)
    );
}

// ---- A panic is contained to its connection ----

/// A store that panics when asked to add the member `boom`.
#[derive(Debug, Default)]
struct Panicky(casebook_uber::geo::store::SortedGeoSet);

impl casebook_uber::geo::store::GeoStore for Panicky {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn memory_bytes(&self) -> usize {
        self.0.memory_bytes()
    }
    fn add(
        &mut self,
        member: Bytes,
        score: f64,
        mode: casebook_uber::geo::store::AddMode,
    ) -> casebook_uber::geo::store::AddOutcome {
        assert!(&member[..] != b"boom", "a command handler panics");
        self.0.add(member, score, mode)
    }
    fn remove(&mut self, member: &[u8]) -> bool {
        self.0.remove(member)
    }
    fn score(&self, member: &[u8]) -> Option<f64> {
        self.0.score(member)
    }
    fn scan(
        &self,
        min: f64,
        max: f64,
        visit: &mut dyn FnMut(f64, &Bytes) -> std::ops::ControlFlow<()>,
    ) {
        self.0.scan(min, max, visit);
    }
    fn by_rank(
        &self,
        start: usize,
        stop: usize,
        reverse: bool,
    ) -> Result<Vec<(Bytes, f64)>, casebook_uber::geo::store::StoreError> {
        self.0.by_rank(start, stop, reverse)
    }
}

#[test]
fn a_panicking_command_closes_only_its_connection() {
    use casebook_uber::resp::{Limits, Server};
    let (port, server) = support::start_server_with(Server::new(Limits::default(), || {
        Box::new(Panicky::default())
    }));
    let mut other = Client::connect(port);
    assert_eq!(
        other.cmd_str(&["GEOADD", "k", "1", "2", "a"]),
        Frame::Integer(1)
    );
    let mut doomed = Client::connect(port);
    doomed.send_raw(&encoded(&["GEOADD", "k", "3", "4", "boom"]));
    assert_eq!(doomed.read_until_closed(), Vec::<u8>::new());
    // The keyspace lock was held across the panic: it is not poisoned, the key
    // is intact, and the connection count and buffer budget were given back.
    assert_eq!(
        other.cmd_str(&["GEOADD", "k", "5", "6", "b"]),
        Frame::Integer(1)
    );
    assert_eq!(other.cmd_str(&["ZCARD", "k"]), Frame::Integer(2));
    let mut fresh = Client::connect(port);
    assert_eq!(fresh.cmd_str(&["ZCARD", "k"]), Frame::Integer(2));
    block_on(casebook_testkit::eventually_sync(
        "the panicked connection to be no longer counted",
        casebook_testkit::DEADLINE,
        || server.clients.load(std::sync::atomic::Ordering::Acquire) == 2,
    ));
    assert_eq!(server.buffered.used(), 0);
}

#[test]
fn the_live_key_is_served_through_the_same_lookup_and_not_counted_in_maxmemory() {
    use casebook_kit::clock::ManualClock;
    use casebook_uber::index::{DriverIndex, IndexConfig};
    use casebook_uber::resp::live::LiveKey;
    use casebook_uber::resp::{Limits, Server};
    use std::sync::Arc;
    let index = Arc::new(
        DriverIndex::new(IndexConfig::default(), ManualClock::new().shared()).expect("index"),
    );
    let source = index.clone();
    let (port, server) = support::start_server_with(
        Server::new(
            Limits {
                max_memory_bytes: 1,
                ..Limits::default()
            },
            casebook_uber::resp::state::sorted_set,
        )
        .with_live(LiveKey::new(
            "drivers",
            Arc::new(move || Some(source.clone())),
        )),
    );
    let oom = Frame::Error("OOM command not allowed when used memory > 'maxmemory'.".into());
    let mut c = Client::connect(port);
    assert_eq!(
        c.cmd_str(&["GEOADD", "plain", "1", "2", "x"]),
        Frame::Integer(1)
    );
    assert_eq!(c.cmd_str(&["GEOADD", "plain", "1", "2", "y"]), oom);
    let used = server.keys.read().used_bytes();
    // The live key's writes go to the driver index: not refused, not counted.
    assert_eq!(
        c.cmd_str(&[
            "GEOADD", "drivers", "-122.42", "37.77", "7", "-122.41", "37.78", "8"
        ]),
        Frame::Integer(2)
    );
    assert_eq!(
        c.cmd_str(&[
            "GEOADD",
            "drivers",
            "-122.42",
            "37.77",
            "9",
            "1",
            "2",
            "not-a-driver"
        ]),
        Frame::err(
            "member 'not-a-driver' of the live key 'drivers' must be a driver id (an unsigned decimal integer)"
        ),
        "every member is checked before any is ingested"
    );
    assert_eq!(index.available_count(), 2);
    assert_eq!(server.keys.read().used_bytes(), used);
    assert_eq!(
        c.cmd_str(&[
            "GEOSEARCH",
            "drivers",
            "FROMLONLAT",
            "-122.42",
            "37.77",
            "BYRADIUS",
            "5",
            "km",
            "ASC",
            "COUNT",
            "9223372036854775807"
        ]),
        Frame::Array(vec![bulk("7"), bulk("8")])
    );
    assert_eq!(
        c.cmd_str(&["ZREM", "drivers", "8", "nope"]),
        Frame::Integer(1)
    );
    assert_eq!(c.cmd_str(&["ZCARD", "drivers"]), Frame::Integer(1));
    assert_eq!(
        c.cmd_str(&["ZRANGE", "drivers", "0", "-1"]),
        Frame::err(
            "ZRANGE is not supported on the live key 'drivers' (a view of the driver index)"
        )
    );
}
