//! `ZRANGE key start stop [REV] [WITHSCORES]`: members by rank, Redis's index
//! rules (negative from the end, clamped). RESP3 pairs each member with its
//! score. BYSCORE / BYLEX / LIMIT are not served (this port's keys are geo sets,
//! searched with GEOSEARCH); they get a plain error, not a wrong answer.

use bytes::Bytes;

use super::{Frame, Server, Session, int_arg, is, syntax_error};
use crate::geo::store::{GeoStore, StoreError};
use crate::resp::frame::Proto;

pub(super) fn run(server: &Server, session: &mut Session, args: &[Bytes]) -> Frame {
    let (mut rev, mut withscores) = (false, false);
    let mut j = 4;
    while j < args.len() {
        let arg = &args[j];
        let left = args.len() - j - 1;
        if is(arg, "withscores") {
            withscores = true;
        } else if is(arg, "rev") && !rev {
            rev = true;
        } else if is(arg, "byscore") || is(arg, "bylex") || (is(arg, "limit") && left >= 2) {
            return Frame::err("BYSCORE, BYLEX and LIMIT are not supported by this server");
        } else {
            return syntax_error();
        }
        j += 1;
    }
    let (start, end) = match (int_arg(&args[2]), int_arg(&args[3])) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let items = match server.read(&args[1], |set| set.map(|set| by_rank(set, start, end, rev))) {
        Ok(Some(Ok(items))) => items,
        Ok(None) => return Frame::Array(Vec::new()),
        Ok(Some(Err(error))) | Err(error) => return error.into(),
    };
    let mut out = Vec::with_capacity(items.len() * if withscores { 2 } else { 1 });
    for (member, score) in items {
        match (withscores, session.proto) {
            (false, _) => out.push(Frame::Bulk(member)),
            (true, Proto::Resp2) => {
                out.push(Frame::Bulk(member));
                out.push(Frame::Double(score));
            }
            (true, Proto::Resp3) => out.push(Frame::Array(vec![
                Frame::Bulk(member),
                Frame::Double(score),
            ])),
        }
    }
    Frame::Array(out)
}

/// Redis's index rules: negative from the end, then clamped to what exists
/// (so no index, however large, sizes anything).
fn by_rank(
    set: &dyn GeoStore,
    start: i64,
    end: i64,
    rev: bool,
) -> Result<Vec<(Bytes, f64)>, StoreError> {
    let len = set.len() as i64;
    let mut start = if start < 0 { len + start } else { start };
    let mut end = if end < 0 { len + end } else { end };
    if start < 0 {
        start = 0;
    }
    if start > end || start >= len {
        // Still asked, so a store that cannot rank says so.
        return set.by_rank(1, 0, rev);
    }
    if end >= len {
        end = len - 1;
    }
    set.by_rank(start as usize, end as usize, rev)
}
