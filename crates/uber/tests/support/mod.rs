//! A minimal RESP client over std sockets and an in-process geo-resp server,
//! shared by the integration tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use casebook_uber::resp::{Frame, Proto, Server};
use tokio_util::sync::CancellationToken;

/// Starts a server on an ephemeral port in its own runtime thread.
pub fn start_server() -> (u16, Arc<Server>) {
    start_server_with(Server::default())
}

/// Starts `server` on an ephemeral port in its own runtime thread.
pub fn start_server_with(server: Server) -> (u16, Arc<Server>) {
    let server = Arc::new(server);
    let (tx, rx) = std::sync::mpsc::channel();
    let shared = server.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr").port())
                .expect("send port");
            shared.serve(listener, CancellationToken::new()).await;
        });
    });
    (rx.recv().expect("server port"), server)
}

/// One connection speaking RESP.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("cannot connect to 127.0.0.1:{port}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn encode(args: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn read_frame(&mut self) -> Frame {
        loop {
            if let Some((frame, used)) = Frame::decode(&self.buf).expect("valid reply") {
                self.buf.drain(..used);
                return frame;
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).expect("read reply");
            assert!(n > 0, "connection closed while waiting for a reply");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn cmd(&mut self, args: &[&[u8]]) -> Frame {
        self.send_raw(&Self::encode(args));
        self.read_frame()
    }

    pub fn cmd_str(&mut self, args: &[&str]) -> Frame {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.cmd(&args)
    }

    /// Everything the server sends until it closes (or 2 s of silence).
    pub fn read_to_end(&mut self) -> Vec<u8> {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut out = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return out,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

impl Client {
    /// Everything the server sends until it closes; panics if it has not
    /// closed after 20 s (a failing test, not a timing judgement).
    pub fn read_until_closed(&mut self) -> Vec<u8> {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut out = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
                Err(e) => panic!("the server did not close the connection: {e}"),
            }
        }
    }
}

/// Encodes a frame as RESP3 text, for messages.
pub fn show(frame: &Frame) -> String {
    let mut out = BytesMut::new();
    frame.encode(Proto::Resp3, &mut out);
    String::from_utf8_lossy(&out).replace("\r\n", " ")
}
