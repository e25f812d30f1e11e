//! `FLUSHDB [ASYNC|SYNC]` and `FLUSHALL [ASYNC|SYNC]`: one database, so both
//! empty it (at once: there is no background freeing here).

use bytes::Bytes;

use super::{Frame, Server, Session, is, syntax_error};

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    if args.len() > 2 || (args.len() == 2 && !is(&args[1], "async") && !is(&args[1], "sync")) {
        return syntax_error();
    }
    let old = server.keys.write().take();
    drop(old);
    Frame::ok()
}
