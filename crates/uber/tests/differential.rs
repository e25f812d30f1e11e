//! Differential test against a real `redis-server`: the same
//! random GEOADD / GEOSEARCH / GEOSEARCHSTORE / GEORADIUS / GEORADIUSBYMEMBER /
//! GEODIST / GEOPOS / GEOHASH / ZREM / ZSCORE / ZCARD / ZRANGE stream goes to
//! both, in RESP2 and then RESP3, and every reply must match (numbers printed as
//! text within 0.1 % or 1e-6, everything else exactly). Bad protocol input is
//! compared byte for byte.
//!
//! Each test starts its own private `redis-server` on a free port (no
//! persistence) and stops it when done, so nothing has to be running and no
//! shared server is touched. Without `redis-server` installed the tests say so in
//! one line and return; under CI (`CI` set) that is a failure, never a skip.
//! Random streams print their seed; `CASEBOOK_TEST_SEED` replays one.

mod support;

use bytes::Bytes;
use casebook_uber::resp::Frame;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::{Client, show, start_server};

/// A private `redis-server` on a free loopback port, stopped when dropped.
struct PrivateRedis {
    port: u16,
    _process: casebook_testkit::Reaped,
}

impl PrivateRedis {
    /// Starts one, or `None` (after one printed line) when Redis is not installed.
    fn start() -> Option<Self> {
        let program = casebook_testkit::peer_program(
            "redis-server",
            "apt-get install redis-server (CI installs it)",
        )?;
        let port = casebook_testkit::free_port();
        let process = std::process::Command::new(program)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let process = casebook_testkit::Reaped(process);
        // Ready once it accepts a connection (bounded: a broken install fails here).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server never listened on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Some(Self {
            port,
            _process: process,
        })
    }
}

fn numbers_close(a: &[u8], b: &[u8]) -> bool {
    let parse = |x: &[u8]| {
        std::str::from_utf8(x)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
    };
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-6_f64.max(1e-3 * x.abs()),
        _ => false,
    }
}

fn same(ours: &Frame, redis: &Frame) -> bool {
    match (ours, redis) {
        (Frame::Bulk(a), Frame::Bulk(b)) => a == b || numbers_close(a, b),
        (Frame::Double(a), Frame::Double(b)) => (a - b).abs() <= 1e-6_f64.max(1e-3 * a.abs()),
        (Frame::Array(a), Frame::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (Frame::Map(a), Frame::Map(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|((k1, v1), (k2, v2))| same(k1, k2) && same(v1, v2))
        }
        _ => ours == redis,
    }
}

fn member_of(item: &Frame) -> Option<&Bytes> {
    match item {
        Frame::Bulk(m) => Some(m),
        Frame::Array(parts) => match parts.first() {
            Some(Frame::Bulk(m)) => Some(m),
            _ => None,
        },
        _ => None,
    }
}

fn without_member(item: &Frame) -> Frame {
    match item {
        Frame::Array(parts) => Frame::Array(parts[1..].to_vec()),
        _ => Frame::Null,
    }
}

/// Redis sorts by distance with an unstable sort: members at the very same
/// position may come in either order, and a COUNT cut may keep either. Two
/// search replies are equivalent when, position by position, the members have
/// the same score (the same cell, so the same distance) and the rest of each
/// item matches.
fn tie_equivalent(ours: &Frame, redis: &Frame, score: &mut dyn FnMut(&Bytes) -> Frame) -> bool {
    let (Frame::Array(a), Frame::Array(b)) = (ours, redis) else {
        return false;
    };
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| match (member_of(x), member_of(y)) {
                (Some(mx), Some(my)) => {
                    same(&without_member(x), &without_member(y))
                        && (mx == my || score(mx) == score(my))
                }
                _ => false,
            })
}

/// ZRANGE WITHSCORES of a stored result: the same scores in order; members
/// may differ only where the scores tie exactly (the same text: the same
/// distance or cell). A tie inside the result may come in either order, and a tie
/// at a COUNT cut may keep either member (Redis sorts with an unstable sort), so
/// the member kept at that place differs while its score does not.
fn stored_tie_equivalent(ours: &Frame, redis: &Frame) -> bool {
    let (Frame::Array(a), Frame::Array(b)) = (ours, redis) else {
        return false;
    };
    a.len() == b.len()
        && a.chunks(2)
            .zip(b.chunks(2))
            .all(|(x, y)| same(&x[1], &y[1]) && (x[0] == y[0] || x[1] == y[1]))
}

struct Gen {
    rng: StdRng,
    prefix: String,
    centers: Vec<(f64, f64)>,
}

impl Gen {
    fn key(&mut self) -> String {
        format!("{}:k{}", self.prefix, self.rng.random_range(0..3))
    }
    fn dest(&mut self) -> String {
        format!("{}:d{}", self.prefix, self.rng.random_range(0..2))
    }
    fn member(&mut self) -> String {
        format!("m{}", self.rng.random_range(0..150))
    }
    fn point(&mut self) -> (f64, f64) {
        match self.rng.random_range(0..20) {
            0 => (
                self.rng.random_range(-180.0..180.0),
                self.rng.random_range(-85.0..85.0),
            ),
            1 => (200.0, 10.0), // invalid: Redis's error text
            2 => (
                self.rng.random_range(-180.0..180.0),
                self.rng.random_range(84.0..85.05),
            ),
            _ => {
                let (lon, lat) = self.centers[self.rng.random_range(0..self.centers.len())];
                (
                    lon + self.rng.random_range(-0.2..0.2),
                    lat + self.rng.random_range(-0.2..0.2),
                )
            }
        }
    }
    fn num(&mut self, x: f64) -> String {
        // Mix plain, exponent and integral spellings, as clients send them.
        match self.rng.random_range(0..6) {
            0 => format!("{x:e}"),
            1 => format!("{}", x.round()),
            _ => format!("{x}"),
        }
    }
    fn unit(&mut self) -> (&'static str, f64) {
        [
            ("m", 1.0),
            ("km", 1000.0),
            ("mi", 1609.34),
            ("ft", 0.3048),
            ("KM", 1000.0),
        ][self.rng.random_range(0..5)]
    }

    fn search_options(&mut self, out: &mut Vec<String>, with: bool) {
        let mut opts: Vec<Vec<String>> = Vec::new();
        match self.rng.random_range(0..4) {
            0 => opts.push(vec!["ASC".into()]),
            1 => opts.push(vec!["desc".into()]),
            _ => {}
        }
        if self.rng.random_bool(0.6) {
            // COUNT has no upper bound in Redis: huge ones must answer what exists.
            let count = match self.rng.random_range(0..10) {
                0 => "1000000000".to_owned(),
                1 => i64::MAX.to_string(),
                _ => self.rng.random_range(1..25).to_string(),
            };
            let mut c = vec!["COUNT".into(), count];
            if self.rng.random_bool(0.2) {
                c.push("ANY".into());
            }
            opts.push(c);
        }
        if with {
            for w in ["WITHDIST", "WITHCOORD", "WITHHASH"] {
                if self.rng.random_bool(0.4) {
                    opts.push(vec![w.into()]);
                }
            }
        }
        // Options come in any order.
        for i in (1..opts.len()).rev() {
            let j = self.rng.random_range(0..=i);
            opts.swap(i, j);
        }
        out.extend(opts.into_iter().flatten());
    }

    fn command(&mut self) -> Vec<String> {
        let key = self.key();
        let mut c: Vec<String> = Vec::new();
        match self.rng.random_range(0..100) {
            0..=29 => {
                c.extend(["GEOADD".into(), key]);
                for opt in ["NX", "XX", "CH"] {
                    if self.rng.random_bool(0.1) {
                        c.push(opt.into());
                    }
                }
                for _ in 0..self.rng.random_range(1..4) {
                    let (lon, lat) = self.point();
                    let m = self.member();
                    c.extend([self.num(lon), self.num(lat), m]);
                }
            }
            30..=33 => {
                c.extend(["ZREM".into(), key, self.member(), self.member()]);
            }
            34..=53 => {
                let store = self.rng.random_bool(0.15);
                if store {
                    let dest = self.dest();
                    c.extend(["GEOSEARCHSTORE".into(), dest, key]);
                } else {
                    c.extend(["GEOSEARCH".into(), key]);
                }
                if self.rng.random_bool(0.4) {
                    c.extend(["FROMMEMBER".into(), self.member()]);
                } else {
                    let (lon, lat) = self.point();
                    c.extend(["FROMLONLAT".into(), self.num(lon), self.num(lat)]);
                }
                let (unit, factor) = self.unit();
                let size = self.rng.random_range(1.0..60_000.0) / factor;
                if self.rng.random_bool(0.5) {
                    c.extend(["BYRADIUS".into(), self.num(size), unit.into()]);
                } else {
                    let w = self.rng.random_range(0.2..2.0) * size;
                    c.extend(["BYBOX".into(), self.num(w), self.num(size), unit.into()]);
                }
                self.search_options(&mut c, !store);
                if store && self.rng.random_bool(0.5) {
                    c.push("STOREDIST".into());
                }
            }
            54..=61 => {
                let by_member = self.rng.random_bool(0.4);
                if by_member {
                    c.extend(["GEORADIUSBYMEMBER".into(), key, self.member()]);
                } else {
                    let (lon, lat) = self.point();
                    c.extend(["GEORADIUS".into(), key, self.num(lon), self.num(lat)]);
                }
                let (unit, factor) = self.unit();
                let size = self.rng.random_range(1.0..80_000.0) / factor;
                c.extend([self.num(size), unit.into()]);
                let store = self.rng.random_bool(0.15);
                self.search_options(&mut c, !store);
                if store {
                    let kind = if self.rng.random_bool(0.5) {
                        "STORE"
                    } else {
                        "STOREDIST"
                    };
                    let dest = self.dest();
                    c.extend([kind.into(), dest]);
                }
            }
            62..=68 => {
                c.extend(["GEODIST".into(), key, self.member(), self.member()]);
                if self.rng.random_bool(0.5) {
                    c.push(self.unit().0.into());
                }
            }
            69..=75 => {
                c.extend(["GEOPOS".into(), key, self.member(), self.member()]);
            }
            76..=81 => {
                c.extend(["GEOHASH".into(), key, self.member(), self.member()]);
            }
            82..=86 => {
                c.extend(["ZSCORE".into(), key, self.member()]);
            }
            87..=89 => {
                c.extend(["ZCARD".into(), key]);
            }
            90..=95 => {
                let k = if self.rng.random_bool(0.5) {
                    key
                } else {
                    self.dest()
                };
                // Extreme indexes are clamped to what exists.
                let (start, stop) = [
                    ("0", "-1"),
                    ("0", "-1"),
                    ("-9223372036854775808", "9223372036854775807"),
                    ("9223372036854775807", "-9223372036854775808"),
                    ("-3", "9223372036854775807"),
                ][self.rng.random_range(0..5)];
                c.extend([
                    "ZRANGE".into(),
                    k,
                    start.into(),
                    stop.into(),
                    "WITHSCORES".into(),
                ]);
            }
            _ => {
                // Argument errors: Redis's texts and validation order.
                let bad: [&[&str]; 10] = [
                    &[
                        "GEOSEARCH",
                        "K",
                        "FROMLONLAT",
                        "1",
                        "2",
                        "BYRADIUS",
                        "-1",
                        "m",
                    ],
                    &[
                        "GEOSEARCH",
                        "K",
                        "FROMLONLAT",
                        "1",
                        "2",
                        "BYRADIUS",
                        "1",
                        "parsec",
                    ],
                    &[
                        "GEOSEARCH",
                        "K",
                        "FROMLONLAT",
                        "1",
                        "2",
                        "BYRADIUS",
                        "1",
                        "m",
                        "COUNT",
                        "0",
                    ],
                    &[
                        "GEOSEARCH",
                        "K",
                        "FROMLONLAT",
                        "1",
                        "2",
                        "BYRADIUS",
                        "1",
                        "m",
                        "ANY",
                    ],
                    &["GEOSEARCH", "K", "BYRADIUS", "1", "m", "ASC", "WITHDIST"],
                    &[
                        "GEOSEARCH",
                        "K",
                        "FROMMEMBER",
                        "nosuch",
                        "BYBOX",
                        "1",
                        "1",
                        "km",
                    ],
                    &["GEORADIUS", "K", "1", "100", "1", "m"],
                    &["GEORADIUSBYMEMBER", "K", "nosuch", "1", "m"],
                    &["GEOADD", "K", "NX", "XX", "1", "2", "a"],
                    &[
                        "GEOSEARCHSTORE",
                        "D",
                        "K",
                        "FROMLONLAT",
                        "1",
                        "2",
                        "BYRADIUS",
                        "1",
                        "m",
                        "WITHDIST",
                    ],
                ];
                let pick = bad[self.rng.random_range(0..bad.len())];
                let dest = self.dest();
                for a in pick {
                    c.push(match *a {
                        "K" => key.clone(),
                        "D" => dest.clone(),
                        other => other.into(),
                    });
                }
            }
        }
        c
    }
}

fn run_stream(seed: u64, commands: usize, resp3: bool) {
    let Some(private) = PrivateRedis::start() else {
        return;
    };
    let (port, _server) = start_server();
    let mut ours = Client::connect(port);
    let mut checker = Client::connect(port);
    let mut redis = Client::connect(private.port);
    let prefix = format!("casebook-diff:{seed}");
    let mut generator = Gen {
        rng: StdRng::seed_from_u64(seed),
        prefix: prefix.clone(),
        centers: vec![
            (-73.98, 40.75),
            (13.36, 38.11),
            (151.2, -33.86),
            (179.9, 0.0),
            (-0.1, 51.5),
        ],
    };
    if resp3 {
        for c in [&mut ours, &mut redis] {
            match c.cmd_str(&["HELLO", "3"]) {
                Frame::Map(pairs) => assert!(pairs.iter().any(|(k, v)| {
                    *k == Frame::Bulk(Bytes::from("proto")) && *v == Frame::Integer(3)
                })),
                other => panic!("HELLO 3: {}", show(&other)),
            }
        }
    }
    let mut searches_with_results = 0;
    for n in 0..commands {
        let command = generator.command();
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        let a = ours.cmd_str(&args);
        let b = redis.cmd_str(&args);
        let src = if command[0] == "GEOSEARCHSTORE" {
            &command[2]
        } else {
            &command[1]
        };
        let equivalent = same(&a, &b)
            || (command[0].starts_with("GEO")
                && tie_equivalent(&a, &b, &mut |m| {
                    checker.cmd(&[b"ZSCORE", src.as_bytes(), m])
                }))
            || (command[0] == "ZRANGE"
                && command[1].contains(":d")
                && stored_tie_equivalent(&a, &b));
        assert!(
            equivalent,
            "command #{n} {command:?}\n ours:  {}\n redis: {}",
            show(&a),
            show(&b)
        );
        if command[0].starts_with("GEO")
            && command[0].contains("SEARCH")
            && matches!(&a, Frame::Array(items) if !items.is_empty())
        {
            searches_with_results += 1;
        }
    }
    assert!(
        searches_with_results > commands / 50,
        "only {searches_with_results} searches found anything"
    );
}

#[test]
fn random_geo_streams_match_redis_resp2() {
    let seed = casebook_testkit::seed("random_geo_streams_match_redis_resp2");
    run_stream(seed, 3000, false);
}

#[test]
fn random_geo_streams_match_redis_resp3() {
    let seed = casebook_testkit::seed("random_geo_streams_match_redis_resp3");
    run_stream(seed, 1500, true);
}

/// Raw bytes to both servers; everything each sends back until it closes
/// (each case ends in a protocol error or QUIT) must be identical.
#[test]
fn protocol_errors_match_redis_byte_for_byte() {
    let Some(private) = PrivateRedis::start() else {
        return;
    };
    let (port, _server) = start_server();
    let long_line = vec![b'a'; 70_000];
    let long_count = {
        let mut v = b"*1\r\n$".to_vec();
        v.extend(std::iter::repeat_n(b'1', 70_000));
        v
    };
    // Numbers no command may be sized by, and a long client name.
    let hostile_numbers = {
        let mut v = b"HELLO 99999999999999999999\r\nHELLO -9223372036854775808\r\n\
            SELECT 9223372036854775807\r\n\
            GEOSEARCH nosuchkey FROMLONLAT 0 0 BYRADIUS 1 km COUNT 9223372036854775807\r\n\
            GEORADIUS nosuchkey 0 0 1 km COUNT 1000000000 ASC\r\n\
            ZRANGE nosuchkey -9223372036854775808 9223372036854775807\r\n\
            INFO a b c d e f g h i j k l m n o p q r s t u v w x y z\r\nCLIENT SETNAME "
            .to_vec();
        v.extend(std::iter::repeat_n(b'n', 60_000));
        v.extend_from_slice(b"\r\nCLIENT GETNAME\r\nQUIT\r\n");
        v
    };
    let cases: Vec<Vec<u8>> = vec![
        hostile_numbers,
        b"*1\r\nx3\r\n".to_vec(),
        b"*3000000000\r\n".to_vec(),
        b"*abc\r\n".to_vec(),
        b"*1\r\n$-1\r\n".to_vec(),
        b"*1\r\n$abc\r\n".to_vec(),
        b"*1\r\n$99999999999\r\n".to_vec(),
        b"*1\r\n\r\n".to_vec(),
        b"PING\r\nset \"a\"b c\r\n".to_vec(),
        b"PING\r\nfoo 'bar\r\n".to_vec(),
        b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n*1\r\nxx\r\n".to_vec(),
        b"ping\r\n\r\n*0\r\n*-1\r\nfoo a b\r\nGEOADD k 1\r\nQUIT\r\n".to_vec(),
        b"GEOPOS nosuchkey a\r\nGEODIST nosuchkey a b\r\nPING hello\r\nQUIT\r\n".to_vec(),
        b"HELLO 4\r\nHELLO x\r\nECHO \"\\x41\\tb\"\r\nquit\r\n".to_vec(),
        b"*2\r\n$4\r\nPING\r\n$2\r\nhiXX*1\r\n$4\r\nQUIT\r\n".to_vec(),
        long_line,
        long_count,
    ];
    for case in cases {
        let mut ours = Client::connect(port);
        let mut redis = Client::connect(private.port);
        ours.send_raw(&case);
        redis.send_raw(&case);
        let a = ours.read_to_end();
        let b = redis.read_to_end();
        let shown = String::from_utf8_lossy(&case[..case.len().min(80)]).into_owned();
        assert_eq!(
            String::from_utf8_lossy(&a),
            String::from_utf8_lossy(&b),
            "input {shown:?}"
        );
        assert!(!b.is_empty(), "Redis answered nothing to {shown:?}");
    }
}

/// A client that breaks the protocol is answered and dropped; another client
/// on the same server, mid-pipeline, is unharmed.
#[test]
fn a_protocol_error_closes_only_its_connection() {
    let (port, _server) = start_server();
    let mut good = Client::connect(port);
    assert_eq!(
        good.cmd_str(&["GEOADD", "k", "13.361389", "38.115556", "Palermo"]),
        Frame::Integer(1)
    );
    // Half a request from the good client, then a bad one from another.
    good.send_raw(b"*2\r\n$6\r\nGEOPOS\r\n");
    let mut bad = Client::connect(port);
    bad.send_raw(b"*1\r\n$4\r\nPING\r\n*1\r\nx\r\n");
    assert_eq!(
        bad.read_to_end(),
        b"+PONG\r\n-ERR Protocol error: expected '$', got 'x'\r\n".to_vec()
    );
    good.send_raw(b"$1\r\nk\r\n");
    assert_eq!(
        good.read_frame(),
        Frame::Array(vec![]),
        "the good client finishes its request: GEOPOS k (no members) is an empty array"
    );
}
