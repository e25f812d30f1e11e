//! `PING [message]`: `+PONG` or the message.

use bytes::Bytes;

use super::{Frame, Server, Session, wrong_arity};

pub(super) fn run(_: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    match args.len() {
        1 => Frame::Simple("PONG"),
        2 => Frame::Bulk(args[1].clone()),
        _ => wrong_arity("ping"),
    }
}
