//! `CONFIG GET parameter [...]`: the few parameters tools read on connect
//! (redis-benchmark reads `save` and `appendonly`), with this server's true
//! values: nothing is persisted. Glob patterns are matched against that list.
//! `CONFIG SET` and the rest: Redis's unknown-subcommand error.

use bytes::Bytes;

use super::{Frame, Server, Session, is, unknown_subcommand, wrong_arity};

const PARAMETERS: &[(&str, &str)] = &[
    ("appendonly", "no"),
    ("save", ""),
    ("databases", "1"),
    ("maxmemory", "0"),
];

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((&c, rest)) => {
            text.first().is_some_and(|t| t.eq_ignore_ascii_case(&c)) && glob(rest, &text[1..])
        }
    }
}

pub(super) fn run(_: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    if !is(&args[1], "get") {
        return unknown_subcommand(args, "CONFIG");
    }
    if args.len() < 3 {
        return wrong_arity("config|get");
    }
    let pairs = PARAMETERS
        .iter()
        .filter(|(name, _)| args[2..].iter().any(|p| glob(p, name.as_bytes())))
        .map(|(name, value)| (Frame::bulk(*name), Frame::bulk(*value)))
        .collect();
    Frame::Map(pairs)
}
