//! The commands: the table (name, arity), dispatch with Redis's unknown-command
//! and arity errors, and the argument helpers every command shares (Redis's
//! number parsing and error texts).
//!
//! Each command is a function `(server, session, args) -> Frame`, one file per
//! command (the GEORADIUS family shares `geosearch`). `args[0]` is the name as
//! the client typed it. Commands reach keys only through the server's lookup
//! (`state::Server::{read, write, lookup, replace, delete}`), which serves the
//! live key from the driver index; a `denyoom` command is refused over
//! `maxmemory` here, before it runs, as Redis does.

mod client;
mod command;
mod config;
mod del;
mod echo;
mod flush;
mod geoadd;
mod geodist;
mod geohash;
mod geopos;
mod geosearch;
mod hello;
mod info;
mod ping;
mod select;
mod zcard;
mod zrange;
mod zrem;
mod zscore;

use bytes::Bytes;

use super::frame::Frame;
use super::parse::parse_i64;
use super::state::{Server, Session};

/// What the connection does after a command.
#[derive(Debug)]
pub enum Outcome {
    Reply(Frame),
    /// Reply, then close (QUIT).
    Close(Frame),
}

type Handler = fn(&Server, &mut Session, &[Bytes]) -> Frame;

/// A command: lower-case name, Redis's arity (n: exactly n arguments counting
/// the name; -n: at least n), whether it is refused over `maxmemory` (Redis's
/// `denyoom` flag), handler.
struct Spec {
    name: &'static str,
    arity: i32,
    denyoom: bool,
    run: Handler,
}

/// Redis's reply to a `denyoom` command over `maxmemory`.
pub const OOM_ERROR: &str = "OOM command not allowed when used memory > 'maxmemory'.";

const COMMANDS: &[Spec] = &[
    Spec {
        name: "geoadd",
        arity: -5,
        denyoom: true,
        run: geoadd::run,
    },
    Spec {
        name: "geosearch",
        arity: -7,
        denyoom: false,
        run: geosearch::geosearch,
    },
    Spec {
        name: "geosearchstore",
        arity: -8,
        denyoom: true,
        run: geosearch::geosearchstore,
    },
    Spec {
        name: "georadius",
        arity: -6,
        denyoom: true,
        run: geosearch::georadius,
    },
    Spec {
        name: "georadius_ro",
        arity: -6,
        denyoom: false,
        run: geosearch::georadius_ro,
    },
    Spec {
        name: "georadiusbymember",
        arity: -5,
        denyoom: true,
        run: geosearch::georadiusbymember,
    },
    Spec {
        name: "georadiusbymember_ro",
        arity: -5,
        denyoom: false,
        run: geosearch::georadiusbymember_ro,
    },
    Spec {
        name: "geopos",
        arity: -2,
        denyoom: false,
        run: geopos::run,
    },
    Spec {
        name: "geodist",
        arity: -4,
        denyoom: false,
        run: geodist::run,
    },
    Spec {
        name: "geohash",
        arity: -2,
        denyoom: false,
        run: geohash::run,
    },
    Spec {
        name: "zrem",
        arity: -3,
        denyoom: false,
        run: zrem::run,
    },
    Spec {
        name: "zcard",
        arity: 2,
        denyoom: false,
        run: zcard::run,
    },
    Spec {
        name: "zrange",
        arity: -4,
        denyoom: false,
        run: zrange::run,
    },
    Spec {
        name: "zscore",
        arity: 3,
        denyoom: false,
        run: zscore::run,
    },
    Spec {
        name: "del",
        arity: -2,
        denyoom: false,
        run: del::run,
    },
    Spec {
        name: "ping",
        arity: -1,
        denyoom: false,
        run: ping::run,
    },
    Spec {
        name: "echo",
        arity: 2,
        denyoom: false,
        run: echo::run,
    },
    Spec {
        name: "info",
        arity: -1,
        denyoom: false,
        run: info::run,
    },
    Spec {
        name: "select",
        arity: 2,
        denyoom: false,
        run: select::run,
    },
    Spec {
        name: "flushdb",
        arity: -1,
        denyoom: false,
        run: flush::run,
    },
    Spec {
        name: "flushall",
        arity: -1,
        denyoom: false,
        run: flush::run,
    },
    Spec {
        name: "hello",
        arity: -1,
        denyoom: false,
        run: hello::run,
    },
    Spec {
        name: "client",
        arity: -2,
        denyoom: false,
        run: client::run,
    },
    Spec {
        name: "config",
        arity: -2,
        denyoom: false,
        run: config::run,
    },
    Spec {
        name: "command",
        arity: -1,
        denyoom: false,
        run: command::run,
    },
];

/// How many commands the table holds (COMMAND COUNT).
pub fn command_count() -> usize {
    COMMANDS.len() + 1 // QUIT is handled before the table.
}

/// Runs one request.
pub fn dispatch(server: &Server, session: &mut Session, args: &[Bytes]) -> Outcome {
    let name = &args[0];
    if name.eq_ignore_ascii_case(b"quit") {
        return Outcome::Close(Frame::ok());
    }
    let Some(spec) = COMMANDS
        .iter()
        .find(|s| name.eq_ignore_ascii_case(s.name.as_bytes()))
    else {
        return Outcome::Reply(unknown_command(args));
    };
    let argc = args.len() as i32;
    if (spec.arity > 0 && argc != spec.arity) || argc < -spec.arity {
        return Outcome::Reply(wrong_arity(spec.name));
    }
    // As Redis: checked before the command runs, so one write may overshoot by
    // its own size. The live key's writes go to the driver index, not here.
    if spec.denyoom && server.stores_here(&args[1]) && server.over_maxmemory() {
        return Outcome::Reply(Frame::Error(OOM_ERROR.to_owned()));
    }
    Outcome::Reply((spec.run)(server, session, args))
}

/// The scores of `members` in `key`, `None` for a missing member or key.
pub(crate) fn member_scores(
    server: &Server,
    key: &[u8],
    members: &[Bytes],
) -> Result<Vec<Option<f64>>, Frame> {
    Ok(server.read(key, |set| {
        members
            .iter()
            .map(|m| set.and_then(|s| s.score(m)))
            .collect()
    })?)
}

/// C's `%.Ns` of an argument: up to a NUL, at most `max` bytes.
fn c_str(arg: &[u8], max: usize) -> String {
    let end = arg
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(arg.len())
        .min(max);
    String::from_utf8_lossy(&arg[..end]).into_owned()
}

fn unknown_command(args: &[Bytes]) -> Frame {
    let mut listed = String::new();
    for arg in &args[1..] {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        listed.push_str(&format!("'{}' ", c_str(arg, room)));
    }
    Frame::err(format!(
        "unknown command '{}', with args beginning with: {listed}",
        c_str(&args[0], 128)
    ))
}

pub(crate) fn wrong_arity(full_name: &str) -> Frame {
    Frame::err(format!(
        "wrong number of arguments for '{full_name}' command"
    ))
}

pub(crate) fn unknown_subcommand(args: &[Bytes], container: &str) -> Frame {
    Frame::err(format!(
        "unknown subcommand '{}'. Try {container} HELP.",
        c_str(&args[1], 128)
    ))
}

pub(crate) fn syntax_error() -> Frame {
    Frame::err("syntax error")
}

pub(crate) fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// Redis's `getLongLongFromObject`.
pub(crate) fn int_arg(arg: &[u8]) -> Result<i64, Frame> {
    parse_i64(arg).ok_or_else(|| Frame::err("value is not an integer or out of range"))
}

/// Redis's `getDoubleFromObject` (C `strtod` over the whole argument, no
/// leading space, no NaN, no overflow or underflow to zero).
pub fn parse_double(arg: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(arg).ok()?;
    let first = *arg.first()?;
    if first.is_ascii_whitespace() || first == 0x0b || first == 0x0c {
        return None;
    }
    let unsigned = text.trim_start_matches(['+', '-']);
    if text.len() - unsigned.len() > 1 {
        return None;
    }
    let negative = text.starts_with('-');
    // Bytes, not `str` slicing: byte 2 may fall inside a multi-byte character.
    let value = if unsigned.len() > 2 && unsigned.as_bytes()[..2].eq_ignore_ascii_case(b"0x") {
        parse_hex_float(&unsigned[2..])?
    } else if unsigned.starts_with(|c: char| c.is_ascii_alphabetic()) {
        // Only strtod's words; NaN is refused like Redis does.
        if unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity") {
            f64::INFINITY
        } else {
            return None;
        }
    } else {
        // Rust reads what strtod reads in decimal (no words reach here).
        let v: f64 = unsigned.parse().ok()?;
        if v.is_infinite() {
            return None; // ERANGE overflow
        }
        // Only a zero needs the mantissa looked at again (a hot path: GEOADD).
        if v == 0.0 {
            let mantissa = unsigned.split(['e', 'E']).next().unwrap_or("");
            if mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
                return None; // ERANGE underflow to zero
            }
        }
        v
    };
    Some(if negative { -value } else { value })
}

fn parse_hex_float(text: &str) -> Option<f64> {
    let (mantissa, exponent) = match text.find(['p', 'P']) {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut value = 0f64;
    for c in int.chars() {
        value = value * 16.0 + f64::from(c.to_digit(16)?);
    }
    let mut scale = 1.0 / 16.0;
    for c in frac.chars() {
        value += f64::from(c.to_digit(16)?) * scale;
        scale /= 16.0;
    }
    if let Some(exp) = exponent {
        let exp: i32 = exp.parse().ok()?;
        value *= 2f64.powi(exp);
    }
    value.is_finite().then_some(value)
}

/// A double argument, or `-ERR <message>` (Redis's default message when none).
pub(crate) fn double_arg(arg: &[u8], message: Option<&str>) -> Result<f64, Frame> {
    parse_double(arg).ok_or_else(|| Frame::err(message.unwrap_or("value is not a valid float")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_like_strtod() {
        assert_eq!(parse_double(b"1.5"), Some(1.5));
        assert_eq!(parse_double(b"-.5"), Some(-0.5));
        assert_eq!(parse_double(b"1e3"), Some(1000.0));
        assert_eq!(parse_double(b"0x10"), Some(16.0));
        assert_eq!(parse_double(b"inf"), Some(f64::INFINITY));
        assert_eq!(parse_double(b"1e400"), None);
        assert_eq!(parse_double(b"1e-400"), None);
        assert_eq!(parse_double(b" 1"), None);
        assert_eq!(parse_double(b"nan"), None);
        assert_eq!(parse_double(b"1x"), None);
        assert_eq!(parse_double(b""), None);
    }

    #[test]
    fn a_multi_byte_character_after_the_first_byte_is_refused_not_a_panic() {
        // Found by the `commands` fuzz target: `1ܒ` sliced `str` at byte 2, inside
        // the character, and panicked the connection.
        assert_eq!(parse_double("1ܒ".as_bytes()), None);
        assert_eq!(parse_double("-0ܒ".as_bytes()), None);
        assert_eq!(parse_double("éx".as_bytes()), None);
    }

    #[test]
    fn unknown_command_lists_arguments() {
        let args = [Bytes::from("foo"), Bytes::from("a"), Bytes::from("b")];
        assert_eq!(
            unknown_command(&args),
            Frame::err("unknown command 'foo', with args beginning with: 'a' 'b' ")
        );
    }
}
