//! `ZREM key member [...]`: how many were removed; an emptied key is deleted.

use bytes::Bytes;

use super::{Frame, Server, Session};

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    if let Some(live) = server.live_key(&args[1]) {
        // On the live key: each available driver named goes offline.
        return match live.index() {
            Ok(index) => Frame::Integer(
                args[2..]
                    .iter()
                    .filter(|m| crate::resp::live::remove(&index, m))
                    .count() as i64,
            ),
            Err(frame) => frame,
        };
    }
    let removed = server
        .keys
        .write()
        .update(&args[1], None, |set| {
            args[2..].iter().filter(|m| set.remove(m)).count()
        })
        .unwrap_or(0);
    Frame::Integer(removed as i64)
}
