//! `ZCARD key`: the number of members (0 for a missing key).

use bytes::Bytes;

use super::{Frame, Server, Session};

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    let keys = server.keys.read();
    Frame::Integer(keys.get(&args[1]).map_or(0, |s| s.len() as i64))
}
