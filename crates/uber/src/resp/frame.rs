//! Replies: the [`Frame`] a command returns, written in RESP2 or RESP3 as the
//! connection's `HELLO` chose, and read back by [`Frame::decode`] (the test
//! client and the reply fuzzer use it).
//!
//! The encodings are Redis 7.0's: in RESP2 a map is a flat array, a double a bulk
//! string, both nulls `$-1` / `*-1`; in RESP3 `%`, `,` and `_`. Doubles are printed
//! the two ways Redis prints them: `%.17g` ([`Frame::Double`], scores) and
//! "human" `%.17Lf` without trailing zeros ([`Frame::HumanDouble`], coordinates).

use bytes::{BufMut, Bytes, BytesMut};

/// The reply protocol of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proto {
    #[default]
    Resp2,
    Resp3,
}

impl Proto {
    pub fn version(self) -> i64 {
        match self {
            Proto::Resp2 => 2,
            Proto::Resp3 => 3,
        }
    }
}

/// One reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+OK`
    Simple(&'static str),
    /// `-ERR ...`: the text after the dash (it carries its own code).
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    /// A missing value (`$-1` / `_`).
    Null,
    /// A missing array (`*-1` / `_`).
    NullArray,
    Array(Vec<Frame>),
    /// A map (`%` in RESP3, a flat array in RESP2).
    Map(Vec<(Frame, Frame)>),
    /// A double printed with `%.17g`.
    Double(f64),
    /// A double printed with `%.17Lf`, trailing zeros removed.
    HumanDouble(f64),
    /// Text (`=` with `txt:` in RESP3, a bulk string in RESP2).
    Verbatim(Bytes),
}

impl Frame {
    /// `-ERR <message>`.
    pub fn err(message: impl std::fmt::Display) -> Frame {
        Frame::Error(format!("ERR {message}"))
    }

    pub fn bulk(bytes: impl Into<Bytes>) -> Frame {
        Frame::Bulk(bytes.into())
    }

    pub fn ok() -> Frame {
        Frame::Simple("OK")
    }

    /// Appends the wire form to `out`.
    pub fn encode(&self, proto: Proto, out: &mut BytesMut) {
        match self {
            Frame::Simple(s) => line(out, b'+', s.as_bytes()),
            Frame::Error(e) => {
                // Redis never lets a newline into an error line.
                out.put_u8(b'-');
                out.extend(
                    e.bytes()
                        .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
                );
                out.put_slice(b"\r\n");
            }
            Frame::Integer(i) => line(out, b':', itoa(*i).as_bytes()),
            Frame::Bulk(b) => bulk(out, b),
            Frame::Null => match proto {
                Proto::Resp2 => out.put_slice(b"$-1\r\n"),
                Proto::Resp3 => out.put_slice(b"_\r\n"),
            },
            Frame::NullArray => match proto {
                Proto::Resp2 => out.put_slice(b"*-1\r\n"),
                Proto::Resp3 => out.put_slice(b"_\r\n"),
            },
            Frame::Array(items) => {
                line(out, b'*', itoa(items.len() as i64).as_bytes());
                for item in items {
                    item.encode(proto, out);
                }
            }
            Frame::Map(pairs) => {
                match proto {
                    Proto::Resp2 => line(out, b'*', itoa(2 * pairs.len() as i64).as_bytes()),
                    Proto::Resp3 => line(out, b'%', itoa(pairs.len() as i64).as_bytes()),
                }
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Frame::Double(d) => double(out, proto, &format_g17(*d)),
            Frame::HumanDouble(d) => double(out, proto, &format_human(*d)),
            Frame::Verbatim(text) => match proto {
                Proto::Resp2 => bulk(out, text),
                Proto::Resp3 => {
                    line(out, b'=', itoa(text.len() as i64 + 4).as_bytes());
                    out.put_slice(b"txt:");
                    out.put_slice(text);
                    out.put_slice(b"\r\n");
                }
            },
        }
    }

    /// Reads one reply (RESP2 or RESP3) from the front of `buf`: the frame and
    /// the bytes it used, `None` when incomplete. Nesting is limited to 64
    /// levels and no length sizes an allocation, so hostile input cannot exhaust
    /// memory. Booleans, big numbers, sets and pushes are read as what they
    /// nearest resemble (integer, bulk, array, array).
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
        let mut pos = 0;
        match decode_at(buf, &mut pos, 0)? {
            Some(frame) => Ok(Some((frame, pos))),
            None => Ok(None),
        }
    }
}

impl From<crate::geo::store::StoreError> for Frame {
    /// `-ERR <what the store said>`.
    fn from(error: crate::geo::store::StoreError) -> Self {
        Frame::err(error)
    }
}

fn itoa(i: i64) -> String {
    i.to_string()
}

fn line(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.reserve(body.len() + 3);
    out.put_u8(tag);
    out.put_slice(body);
    out.put_slice(b"\r\n");
}

fn bulk(out: &mut BytesMut, b: &[u8]) {
    line(out, b'$', itoa(b.len() as i64).as_bytes());
    out.reserve(b.len() + 2);
    out.put_slice(b);
    out.put_slice(b"\r\n");
}

fn double(out: &mut BytesMut, proto: Proto, text: &str) {
    match proto {
        Proto::Resp2 => bulk(out, text.as_bytes()),
        Proto::Resp3 => line(out, b',', text.as_bytes()),
    }
}

/// C's `%.17g`.
pub fn format_g17(d: f64) -> String {
    if d.is_nan() {
        return if d.is_sign_negative() { "-nan" } else { "nan" }.to_owned();
    }
    if d.is_infinite() {
        return if d < 0.0 { "-inf" } else { "inf" }.to_owned();
    }
    if d == 0.0 {
        return if d.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // 17 significant digits: mantissa and exponent after rounding.
    let sci = format!("{d:.16e}");
    let (mantissa, exp) = sci.split_once('e').expect("`e` format has an exponent");
    let exp: i32 = exp.parse().expect("exponent is an integer");
    if !(-4..17).contains(&exp) {
        let mantissa = strip_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (16 - exp).max(0) as usize;
        strip_zeros(&format!("{d:.decimals$}")).to_owned()
    }
}

fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Redis's "human" long double: `%.17Lf` without trailing zeros, `-0` as `0`.
pub fn format_human(d: f64) -> String {
    if !d.is_finite() {
        return format_g17(d);
    }
    let s = format!("{d:.17}");
    let s = strip_zeros(&s);
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

const MAX_DEPTH: usize = 64;

fn decode_line<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let rest = &buf[*pos..];
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    *pos += end + 2;
    Some(&rest[..end])
}

fn parse_int(text: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad integer {:?}", String::from_utf8_lossy(text)))
}

fn decode_at(buf: &[u8], pos: &mut usize, depth: usize) -> Result<Option<Frame>, String> {
    if depth > MAX_DEPTH {
        return Err("nesting too deep".into());
    }
    let Some(&tag) = buf.get(*pos) else {
        return Ok(None);
    };
    let start = *pos;
    *pos += 1;
    let Some(body) = decode_line(buf, pos) else {
        *pos = start;
        return Ok(None);
    };
    // A length beyond what has arrived is an incomplete reply (never an
    // allocation: nothing is sized by it).
    let len_of = |body: &[u8]| -> Result<Option<i64>, String> {
        let n = parse_int(body)?;
        Ok((n <= buf.len() as i64).then_some(n))
    };
    let frame = match tag {
        b'+' => Frame::Simple(match body {
            b"OK" => "OK",
            b"PONG" => "PONG",
            b"QUEUED" => "QUEUED",
            _ => {
                // Other simple strings keep their text as a bulk.
                return Ok(Some(Frame::Bulk(Bytes::copy_from_slice(body))));
            }
        }),
        b'-' => Frame::Error(String::from_utf8_lossy(body).into_owned()),
        b':' => Frame::Integer(parse_int(body)?),
        b'(' => Frame::Bulk(Bytes::copy_from_slice(body)),
        b'#' => Frame::Integer(i64::from(body == b"t")),
        b'_' => Frame::Null,
        b',' => Frame::Double(
            std::str::from_utf8(body)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("bad double")?,
        ),
        b'$' | b'=' | b'!' => {
            let Some(n) = len_of(body)? else {
                *pos = start;
                return Ok(None);
            };
            if n < 0 {
                return Ok(Some(Frame::Null));
            }
            let n = n as usize;
            if buf.len() < *pos + n + 2 {
                *pos = start;
                return Ok(None);
            }
            let data = Bytes::copy_from_slice(&buf[*pos..*pos + n]);
            if &buf[*pos + n..*pos + n + 2] != b"\r\n" {
                return Err("bulk not followed by CRLF".into());
            }
            *pos += n + 2;
            match tag {
                b'=' => Frame::Verbatim(data.slice(4.min(data.len())..)),
                b'!' => Frame::Error(String::from_utf8_lossy(&data).into_owned()),
                _ => Frame::Bulk(data),
            }
        }
        b'*' | b'~' | b'>' | b'%' => {
            let Some(n) = len_of(body)? else {
                *pos = start;
                return Ok(None);
            };
            if n < 0 {
                return Ok(Some(Frame::NullArray));
            }
            let items = if tag == b'%' { 2 * n } else { n };
            let mut out = Vec::with_capacity(items.min(1024) as usize);
            for _ in 0..items {
                match decode_at(buf, pos, depth + 1)? {
                    Some(f) => out.push(f),
                    None => {
                        *pos = start;
                        return Ok(None);
                    }
                }
            }
            if tag == b'%' {
                let mut pairs = Vec::with_capacity(out.len() / 2);
                let mut it = out.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                Frame::Map(pairs)
            } else {
                Frame::Array(out)
            }
        }
        other => return Err(format!("unknown reply type {:?}", other as char)),
    };
    Ok(Some(frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g17_matches_c() {
        assert_eq!(format_g17(3479099956230698.0), "3479099956230698");
        assert_eq!(format_g17(166274.1516), "166274.15160000001");
        assert_eq!(format_g17(0.5), "0.5");
        assert_eq!(format_g17(1e20), "1e+20");
        assert_eq!(format_g17(1.5e-7), "1.4999999999999999e-07");
        assert_eq!(format_g17(f64::INFINITY), "inf");
    }

    #[test]
    fn human_matches_redis() {
        assert_eq!(format_human(13.361389338970184), "13.36138933897018433");
        assert_eq!(format_human(2.0), "2");
        assert_eq!(format_human(-0.0), "0");
    }

    #[test]
    fn encodes_per_protocol_and_decodes_back() {
        let frame = Frame::Map(vec![(Frame::bulk("proto"), Frame::Integer(3))]);
        let mut two = BytesMut::new();
        frame.encode(Proto::Resp2, &mut two);
        assert_eq!(&two[..], b"*2\r\n$5\r\nproto\r\n:3\r\n");
        let mut three = BytesMut::new();
        frame.encode(Proto::Resp3, &mut three);
        assert_eq!(&three[..], b"%1\r\n$5\r\nproto\r\n:3\r\n");
        assert_eq!(Frame::decode(&three).unwrap(), Some((frame, three.len())));
        assert_eq!(Frame::decode(&three[..5]).unwrap(), None);
    }
}
