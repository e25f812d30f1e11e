//! The connect-time and keyspace commands over a real socket: what redis-cli,
//! redis-benchmark and client libraries send, pipelining, QUIT.

mod common;

use bytes::Bytes;
use casebook_uber::resp::Frame;
use common::{Client, start_server};

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
