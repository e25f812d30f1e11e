//! `ZSCORE key member`: the score (`%.17g`; a double in RESP3), null if missing.

use bytes::Bytes;

use super::{Frame, Server, Session};

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    let score = match server.live_key(&args[1]) {
        Some(live) => match live.index() {
            Ok(index) => crate::resp::live::score(&index, &args[2]),
            Err(frame) => return frame,
        },
        None => server
            .keys
            .read()
            .get(&args[1])
            .and_then(|s| s.score(&args[2])),
    };
    match score {
        Some(score) => Frame::Double(score),
        None => Frame::Null,
    }
}
