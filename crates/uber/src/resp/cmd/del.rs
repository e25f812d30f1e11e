//! `DEL key [...]`: how many keys existed.

use bytes::Bytes;

use super::{Frame, Server, Session};

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    match server.delete(&args[1..]) {
        Ok(deleted) => Frame::Integer(deleted as i64),
        Err(error) => error.into(),
    }
}
