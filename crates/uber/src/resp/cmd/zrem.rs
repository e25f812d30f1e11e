//! `ZREM key member [...]`: how many were removed; an emptied key is deleted.

use bytes::Bytes;

use super::{Frame, Server, Session};

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    let mut keys = server.keys.write();
    let Some(set) = keys.get_mut(&args[1]) else {
        return Frame::Integer(0);
    };
    let removed = args[2..].iter().filter(|m| set.remove(m)).count();
    if set.is_empty() {
        keys.remove(&args[1]);
    }
    Frame::Integer(removed as i64)
}
