//! `ECHO message`.

use bytes::Bytes;

use super::{Frame, Server, Session};

pub(super) fn run(_: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    Frame::Bulk(args[1].clone())
}
