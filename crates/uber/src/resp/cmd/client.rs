//! `CLIENT SETNAME | GETNAME | ID`: what client libraries send on connect.
//! Other subcommands get Redis's unknown-subcommand error.

use bytes::Bytes;

use super::{Frame, Server, Session, is, unknown_subcommand, wrong_arity};

/// Redis's rule for client names: printable ASCII, no spaces.
pub(crate) fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

pub(super) fn run(_: &Server, session: &mut Session, args: &[Bytes]) -> Frame {
    let sub = &args[1];
    if is(sub, "setname") {
        if args.len() != 3 {
            return wrong_arity("client|setname");
        }
        if !valid_name(&args[2]) {
            return Frame::err(
                "Client names cannot contain spaces, newlines or special characters.",
            );
        }
        session.name = (!args[2].is_empty()).then(|| args[2].clone());
        Frame::ok()
    } else if is(sub, "getname") {
        if args.len() != 2 {
            return wrong_arity("client|getname");
        }
        session.name.clone().map_or(Frame::Null, Frame::Bulk)
    } else if is(sub, "id") {
        if args.len() != 2 {
            return wrong_arity("client|id");
        }
        Frame::Integer(session.id as i64)
    } else {
        unknown_subcommand(args, "CLIENT")
    }
}
