//! `ZSCORE key member`: the score (`%.17g`; a double in RESP3), null if missing.

use bytes::Bytes;

use super::{Frame, Server, Session};

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    match server.read(&args[1], |set| set.and_then(|s| s.score(&args[2]))) {
        Ok(Some(score)) => Frame::Double(score),
        Ok(None) => Frame::Null,
        Err(error) => error.into(),
    }
}
