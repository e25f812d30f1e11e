//! `HELLO [protover [AUTH username password] [SETNAME name]]`: switches the
//! reply protocol and describes the server as Redis 7.0 does. There are no
//! passwords here: AUTH succeeds for Redis's passwordless `default` user only.

use bytes::Bytes;

use super::{Frame, Server, Session, client::valid_name, is};
use crate::resp::frame::Proto;

pub(super) fn run(_: &Server, session: &mut Session, args: &[Bytes]) -> Frame {
    let mut proto = None;
    let mut next = 1;
    if args.len() >= 2 {
        let Some(ver) = crate::resp::parse::parse_i64(&args[1]) else {
            return Frame::err("Protocol version is not an integer or out of range");
        };
        next = 2;
        proto = match ver {
            2 => Some(Proto::Resp2),
            3 => Some(Proto::Resp3),
            _ => return Frame::Error("NOPROTO unsupported protocol version".into()),
        };
    }
    let mut name = None;
    let mut j = next;
    while j < args.len() {
        let more = args.len() - 1 - j;
        if is(&args[j], "auth") && more >= 2 {
            if !is(&args[j + 1], "default") {
                return Frame::Error(
                    "WRONGPASS invalid username-password pair or user is disabled.".into(),
                );
            }
            j += 2;
        } else if is(&args[j], "setname") && more >= 1 {
            if !valid_name(&args[j + 1]) {
                return Frame::err(
                    "Client names cannot contain spaces, newlines or special characters.",
                );
            }
            name = Some(args[j + 1].clone());
            j += 1;
        } else {
            return Frame::err(format!(
                "Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(&args[j])
            ));
        }
        j += 1;
    }
    if let Some(name) = name {
        session.name = (!name.is_empty()).then_some(name);
    }
    if let Some(proto) = proto {
        session.proto = proto;
    }
    let s = |t: &'static str| Frame::bulk(t);
    Frame::Map(vec![
        (s("server"), s("redis")),
        (s("version"), s(super::info::REDIS_VERSION)),
        (s("proto"), Frame::Integer(session.proto.version())),
        (s("id"), Frame::Integer(session.id as i64)),
        (s("mode"), s("standalone")),
        (s("role"), s("master")),
        (s("modules"), Frame::Array(Vec::new())),
    ])
}
