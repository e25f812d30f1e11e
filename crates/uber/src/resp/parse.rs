//! The request parser: bytes in, commands (argument vectors) out, incrementally.
//!
//! Two request forms, chosen by the first byte as Redis does: `*` starts a
//! multibulk array of bulk strings (what client libraries send); anything else
//! is an inline command, one line split like a shell (what redis-cli's raw mode
//! and telnet send; quotes and `\xHH` escapes as in Redis's `sdssplitargs`).
//!
//! Guarantees:
//! - Any chunking of the same bytes yields the same commands and errors
//!   (fuzzed and property-tested).
//! - Limits are checked as bytes arrive, with Redis's error wording: a count line
//!   or an inline line longer than 64 KiB without its terminator, a multibulk
//!   count above [`Limits::max_multibulk_len`], a bulk length above
//!   [`Limits::max_bulk_len`]; the caller replies the error and closes, as Redis
//!   does. A request whose bulk headers announce more than
//!   [`Limits::max_request_bytes`] in total (each argument charged
//!   [`ARG_OVERHEAD`] more) is refused on that header, before its data is
//!   buffered ([`ProtocolError::TooLarge`]). No declared length or count sizes
//!   an allocation: the argument vector starts at most 1024 long and grows
//!   with what arrives. The buffer therefore never holds more than one bulk
//!   plus 64 KiB plus one read.
//! - What Redis tolerates is tolerated: `*0` / `*-1` and empty lines are
//!   skipped, the two bytes after a bulk are not checked.
//!
//! Deliberately absent: Redis's special handling of very large arguments
//! (it only changes allocation), and its inline parser waiting for more data
//! when a NUL byte comes before the newline (`strchr`); here the line ends at
//! the newline and its arguments at the NUL, as `sdssplitargs` reads them.

use bytes::{Buf, Bytes, BytesMut};

use super::limits::{ARG_OVERHEAD, Limits};

/// Redis's `PROTO_INLINE_MAX_SIZE`: longest line without its terminator.
pub const INLINE_MAX: usize = 64 * 1024;

/// Why a connection must end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Reply this error (Redis's text, after `-ERR `), then close.
    #[error("Protocol error: {0}")]
    Reply(String),
    /// Reply this, then close: the request is larger than
    /// [`Limits::max_request_bytes`] (known from its bulk headers, before its
    /// data is buffered).
    #[error("Protocol error: request larger than {0} bytes (uber.resp_max_request_bytes)")]
    TooLarge(usize),
}

impl ProtocolError {
    fn reply(text: impl Into<String>) -> Self {
        ProtocolError::Reply(text.into())
    }
}

#[derive(Debug, Default)]
enum State {
    /// Between requests.
    #[default]
    Idle,
    /// Inside a multibulk request.
    Multibulk {
        remaining: usize,
        bulk_len: Option<usize>,
        args: Vec<Bytes>,
        bytes: usize,
    },
}

/// An incremental request parser; feed it a buffer that data is appended to.
#[derive(Debug, Default)]
pub struct RequestParser {
    limits: Limits,
    state: State,
}

/// Redis's `string2ll`: optional `-`, digits, no leading zeros, no `+`, no spaces.
pub fn parse_i64(text: &[u8]) -> Option<i64> {
    if text.is_empty() || text.len() >= 21 {
        return None;
    }
    if text == b"0" {
        return Some(0);
    }
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut value: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        if value > i64::MAX as u64 + 1 {
            None
        } else {
            Some((value as i64).wrapping_neg())
        }
    } else {
        i64::try_from(value).ok()
    }
}

impl RequestParser {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: State::Idle,
        }
    }

    /// Bytes held in the partial request: the arguments already cut out of
    /// the buffer, each charged [`ARG_OVERHEAD`] more.
    pub fn pending_bytes(&self) -> usize {
        match &self.state {
            State::Idle => 0,
            State::Multibulk {
                bytes, bulk_len, ..
            } => bytes - bulk_len.map_or(0, |len| len + ARG_OVERHEAD),
        }
    }

    /// The next complete request from the front of `buf` (consumed), `Ok(None)`
    /// when more bytes are needed. An empty vector is a request to skip (empty
    /// line, `*0`).
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        if let State::Idle = self.state {
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            if first != b'*' {
                return inline(buf);
            }
            // The count line: Redis looks for `\r` and needs one byte after it.
            let Some(cr) = memchr(b'\r', buf) else {
                if buf.len() > INLINE_MAX {
                    return Err(ProtocolError::reply("too big mbulk count string"));
                }
                return Ok(None);
            };
            if cr + 2 > buf.len() {
                return Ok(None);
            }
            let count = parse_i64(&buf[1..cr]).filter(|&n| n <= i64::from(i32::MAX));
            let Some(count) = count else {
                return Err(ProtocolError::reply("invalid multibulk length"));
            };
            if count > self.limits.max_multibulk_len as i64 {
                return Err(ProtocolError::reply("invalid multibulk length"));
            }
            buf.advance(cr + 2);
            if count <= 0 {
                return Ok(Some(Vec::new()));
            }
            self.state = State::Multibulk {
                remaining: count as usize,
                bulk_len: None,
                args: Vec::with_capacity((count as usize).min(1024)),
                bytes: 0,
            };
        }
        let State::Multibulk {
            remaining,
            bulk_len,
            args,
            bytes,
        } = &mut self.state
        else {
            unreachable!("idle handled above");
        };
        while *remaining > 0 {
            let len = match *bulk_len {
                Some(len) => len,
                None => {
                    let Some(cr) = memchr(b'\r', buf) else {
                        if buf.len() > INLINE_MAX {
                            return Err(ProtocolError::reply("too big bulk count string"));
                        }
                        return Ok(None);
                    };
                    if cr + 2 > buf.len() {
                        return Ok(None);
                    }
                    if buf[0] != b'$' {
                        let got = match buf[0] {
                            b'\r' | b'\n' => ' ',
                            other => other as char,
                        };
                        return Err(ProtocolError::Reply(format!("expected '$', got '{got}'")));
                    }
                    let len = parse_i64(&buf[1..cr])
                        .filter(|&n| n >= 0 && n as u64 <= self.limits.max_bulk_len as u64);
                    let Some(len) = len else {
                        return Err(ProtocolError::reply("invalid bulk length"));
                    };
                    // Refused on the header: a request over the limit is never buffered.
                    *bytes += len as usize + ARG_OVERHEAD;
                    if *bytes > self.limits.max_request_bytes {
                        return Err(ProtocolError::TooLarge(self.limits.max_request_bytes));
                    }
                    buf.advance(cr + 2);
                    *bulk_len = Some(len as usize);
                    len as usize
                }
            };
            if buf.len() < len + 2 {
                return Ok(None);
            }
            let arg = buf.split_to(len).freeze();
            buf.advance(2);
            args.push(arg);
            *bulk_len = None;
            *remaining -= 1;
        }
        let State::Multibulk { args, .. } = std::mem::take(&mut self.state) else {
            unreachable!("still in a multibulk");
        };
        Ok(Some(args))
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

fn inline(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(nl) = memchr(b'\n', buf) else {
        if buf.len() > INLINE_MAX {
            return Err(ProtocolError::reply("too big inline request"));
        }
        return Ok(None);
    };
    let end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let args = split_args(&buf[..end]);
    buf.advance(nl + 1);
    match args {
        Some(args) => Ok(Some(args)),
        None => Err(ProtocolError::reply("unbalanced quotes in request")),
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Redis's `sdssplitargs`: `None` on unbalanced quotes (or a closing quote not
/// followed by a space).
pub fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    // Redis splits a C string: a NUL ends the line.
    let line = &line[..memchr(0, line).unwrap_or(line.len())];
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i >= line.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            let c = line.get(i).copied();
            if in_dq {
                match c {
                    None => return None,
                    Some(b'\\')
                        if line.get(i + 1) == Some(&b'x')
                            && line.get(i + 2).and_then(|&b| hex(b)).is_some()
                            && line.get(i + 3).and_then(|&b| hex(b)).is_some() =>
                    {
                        let hi = hex(line[i + 2]).unwrap_or(0);
                        let lo = hex(line[i + 3]).unwrap_or(0);
                        current.push(hi * 16 + lo);
                        i += 3;
                    }
                    Some(b'\\') if i + 1 < line.len() => {
                        i += 1;
                        current.push(match line[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    Some(b'"') => {
                        // The closing quote must be followed by a space or the end.
                        if let Some(&next) = line.get(i + 1)
                            && !is_space(next)
                        {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => current.push(other),
                }
            } else if in_sq {
                match c {
                    None => return None,
                    Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                        i += 1;
                        current.push(b'\'');
                    }
                    Some(b'\'') => {
                        if let Some(&next) = line.get(i + 1)
                            && !is_space(next)
                        {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => current.push(other),
                }
            } else {
                match c {
                    None => break,
                    // Unquoted tokens end only at these (not at \v or \f).
                    Some(b' ' | b'\n' | b'\r' | b'\t') => break,
                    Some(b'"') => in_dq = true,
                    Some(b'\'') => in_sq = true,
                    Some(other) => current.push(other),
                }
            }
            i += 1;
        }
        args.push(Bytes::from(current));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> (Vec<Vec<Bytes>>, Option<ProtocolError>) {
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match parser.next(&mut buf) {
                Ok(Some(args)) => out.push(args),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn multibulk_inline_and_errors() {
        let (cmds, err) = all(b"*2\r\n$4\r\nPING\r\n$2\r\nhi\r\nPING x\r\n");
        assert_eq!(err, None);
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[1], vec![Bytes::from("PING"), Bytes::from("x")]);
        assert_eq!(
            all(b"*1\r\nx3\r\n").1,
            Some(ProtocolError::Reply("expected '$', got 'x'".into()))
        );
        assert_eq!(
            all(b"*3000000000\r\n").1,
            Some(ProtocolError::Reply("invalid multibulk length".into()))
        );
        assert_eq!(
            all(b"*1\r\n$-1\r\n").1,
            Some(ProtocolError::Reply("invalid bulk length".into()))
        );
        assert_eq!(
            all(b"set \"a\"b c\r\n").1,
            Some(ProtocolError::Reply("unbalanced quotes in request".into()))
        );
        assert_eq!(
            split_args(b"set 'it\\'s' \"\\x41\\n\"").unwrap(),
            vec![Bytes::from("set"), Bytes::from("it's"), Bytes::from("A\n")]
        );
        let (cmds, err) = all(b"*0\r\n\r\n*-1\r\n");
        assert_eq!(err, None);
        assert!(cmds.iter().all(Vec::is_empty));
    }

    #[test]
    fn string2ll_rules() {
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"012"), None);
        assert_eq!(parse_i64(b"-0"), None);
        assert_eq!(parse_i64(b"+1"), None);
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
    }
}
