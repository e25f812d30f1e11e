//! `ZREM key member [...]`: how many were removed; an emptied key is deleted.

use bytes::Bytes;

use super::{Frame, Server, Session};

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    // On the live key each available driver named goes offline.
    match server.write(&args[1], false, |set| {
        args[2..].iter().filter(|m| set.remove(m)).count()
    }) {
        Ok(removed) => Frame::Integer(removed.unwrap_or(0) as i64),
        Err(error) => error.into(),
    }
}
