//! `SELECT index`: only database 0 exists here.

use bytes::Bytes;

use super::{Frame, Server, Session, int_arg};

pub(super) fn run(_: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    match int_arg(&args[1]) {
        // Redis reads the index as an int (`getIntFromObjectOrReply`): a long
        // beyond it gets that function's own words (typo included).
        Ok(n) if i32::try_from(n).is_err() => {
            Frame::err("value is out of range, value must between -2147483648 and 2147483647")
        }
        Ok(0) => Frame::ok(),
        Ok(_) => Frame::err("DB index is out of range"),
        Err(e) => e,
    }
}
