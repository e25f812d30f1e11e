//! `ZSCORE key member`: the score (`%.17g`; a double in RESP3), null if missing.

use bytes::Bytes;

use super::{Frame, Server, Session};

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    let keys = server.keys.read();
    match keys.get(&args[1]).and_then(|s| s.score(&args[2])) {
        Some(score) => Frame::Double(score),
        None => Frame::Null,
    }
}
