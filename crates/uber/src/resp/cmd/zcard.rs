//! `ZCARD key`: the number of members (0 for a missing key).

use bytes::Bytes;

use super::{Frame, Server, Session};

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    match server.read(&args[1], |set| set.map_or(0, |s| s.len())) {
        Ok(len) => Frame::Integer(len as i64),
        Err(error) => error.into(),
    }
}
