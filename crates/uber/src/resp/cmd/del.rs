//! `DEL key [...]`: how many keys existed.

use bytes::Bytes;

use super::{Frame, Server, Session};

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    if let Some(live) = args[1..].iter().find_map(|k| server.live_key(k)) {
        return live.refused("DEL");
    }
    let mut keys = server.keys.write();
    Frame::Integer(
        args[1..]
            .iter()
            .filter(|k| keys.remove(k))
            .count() as i64,
    )
}
