//! `CONFIG GET parameter [...]`: the few parameters tools read on connect
//! (redis-benchmark reads `save` and `appendonly`), with this server's true
//! values: nothing is persisted. Glob patterns are matched against that list.
//! `maxmemory`, `maxclients`, `proto-max-bulk-len` and `timeout` are the
//! configured limits (`[uber] resp_*`, `timeout` in seconds, 0: off). Patterns are matched without recursion, in time
//! linear in pattern × name, so no pattern can exhaust the stack or the CPU.
//! `CONFIG SET` and the rest: Redis's unknown-subcommand error.

use bytes::Bytes;

use super::{Frame, Server, Session, is, unknown_subcommand, wrong_arity};

fn parameters(server: &Server) -> [(&'static str, String); 8] {
    let limits = &server.limits;
    [
        ("appendonly", "no".to_owned()),
        ("save", String::new()),
        ("databases", "1".to_owned()),
        ("maxmemory", limits.max_memory_bytes.to_string()),
        ("maxmemory-policy", "noeviction".to_owned()),
        ("maxclients", limits.max_clients.to_string()),
        ("proto-max-bulk-len", limits.max_bulk_len.to_string()),
        (
            "timeout",
            limits.idle_timeout.map_or(0, |t| t.as_secs()).to_string(),
        ),
    ]
}

/// Glob match (`*`, `?`, ASCII case-insensitive), iteratively: on a mismatch
/// the last `*` takes one more character, so each (pattern, text) position
/// pair is visited at most once.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // The last `*` seen and the text position it is matched up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c.eq_ignore_ascii_case(&text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((at, upto)) => {
                    star = Some((at, upto + 1));
                    p = at + 1;
                    t = upto + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    if !is(&args[1], "get") {
        return unknown_subcommand(args, "CONFIG");
    }
    if args.len() < 3 {
        return wrong_arity("config|get");
    }
    let pairs = parameters(server)
        .into_iter()
        .filter(|(name, _)| args[2..].iter().any(|p| glob(p, name.as_bytes())))
        .map(|(name, value)| (Frame::bulk(name), Frame::bulk(value)))
        .collect();
    Frame::Map(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_redis() {
        assert!(glob(b"*", b"save"));
        assert!(glob(b"max*", b"maxmemory"));
        assert!(glob(b"MAX?EMORY", b"maxmemory"));
        assert!(glob(b"*o*y", b"maxmemory-policy"));
        assert!(!glob(b"max", b"maxmemory"));
        assert!(!glob(b"*x", b"save"));
        assert!(glob(b"", b""));
        assert!(!glob(b"?", b""));
    }

    #[test]
    fn a_huge_pattern_neither_overflows_the_stack_nor_spins() {
        // One frame per `*` in the recursive matcher: a request-sized pattern
        // overflowed the stack, which aborts the whole process.
        let mut pattern = vec![b'*'; 4 * 1024 * 1024];
        pattern.push(b'x');
        let server = Server::default();
        let mut session = server.new_session();
        let args = [
            Bytes::from("CONFIG"),
            Bytes::from("GET"),
            Bytes::from(pattern),
        ];
        assert_eq!(run(&server, &mut session, &args), Frame::Map(Vec::new()));
        let stars = Bytes::from(vec![b'*'; 4 * 1024 * 1024]);
        let Frame::Map(all) = run(
            &server,
            &mut session,
            &[args[0].clone(), args[1].clone(), stars],
        ) else {
            panic!("CONFIG GET answers a map");
        };
        assert_eq!(all.len(), 8);
    }
}
