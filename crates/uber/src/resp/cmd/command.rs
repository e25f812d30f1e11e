//! `COMMAND COUNT | DOCS`: redis-cli asks for `COMMAND DOCS` on start for its
//! hints; this server has no docs to give and answers an empty map, on which
//! redis-cli falls back to its built-in help. Plain `COMMAND` (the full command
//! table) is not served: Redis's unknown-subcommand error for the rest.

use bytes::Bytes;

use super::{Frame, Server, Session, command_count, is, unknown_subcommand};

pub(super) fn run(_: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    if args.len() == 1 {
        return Frame::err("COMMAND without a subcommand is not supported by this server");
    }
    if is(&args[1], "count") && args.len() == 2 {
        Frame::Integer(command_count() as i64)
    } else if is(&args[1], "docs") {
        Frame::Map(Vec::new())
    } else {
        unknown_subcommand(args, "COMMAND")
    }
}
