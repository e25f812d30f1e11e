//! `ZCARD key`: the number of members (0 for a missing key).

use bytes::Bytes;

use super::{Frame, Server, Session};

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    if let Some(live) = server.live_key(&args[1]) {
        return match live.index() {
            Ok(index) => Frame::Integer(index.available_count() as i64),
            Err(frame) => frame,
        };
    }
    let keys = server.keys.read();
    Frame::Integer(keys.get(&args[1]).map_or(0, |s| s.len() as i64))
}
