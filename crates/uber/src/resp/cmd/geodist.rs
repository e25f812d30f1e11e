//! `GEODIST key member1 member2 [M|KM|FT|MI]`: the distance with 4 decimals, null
//! when either member is missing.

use bytes::Bytes;

use super::{Frame, Server, Session, syntax_error};
use crate::geo::hash::{distance, position_of};
use crate::geo::unit_factor;

pub(crate) fn unit_or_err(arg: &[u8]) -> Result<f64, Frame> {
    unit_factor(arg)
        .ok_or_else(|| Frame::err("unsupported unit provided. please use M, KM, FT, MI"))
}

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    let to_meter = match args.len() {
        5 => match unit_or_err(&args[4]) {
            Ok(f) => f,
            Err(e) => return e,
        },
        4 => 1.0,
        _ => return syntax_error(),
    };
    let scores = match super::member_scores(server, &args[1], &args[2..4]) {
        Ok(scores) => scores,
        Err(frame) => return frame,
    };
    let (Some(a), Some(b)) = (scores[0], scores[1]) else {
        return Frame::Null;
    };
    let (lon1, lat1) = position_of(a as u64);
    let (lon2, lat2) = position_of(b as u64);
    Frame::bulk(format!(
        "{:.4}",
        distance(lon1, lat1, lon2, lat2) / to_meter
    ))
}
