//! `SELECT index`: only database 0 exists here.

use bytes::Bytes;

use super::{Frame, Server, Session, int_arg};

pub(super) fn run(_: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    match int_arg(&args[1]) {
        // Redis reads the index as an int: beyond it, the integer error.
        Ok(n) if i32::try_from(n).is_err() => Frame::err("value is not an integer or out of range"),
        Ok(0) => Frame::ok(),
        Ok(_) => Frame::err("DB index is out of range"),
        Err(e) => e,
    }
}
