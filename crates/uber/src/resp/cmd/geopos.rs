//! `GEOPOS key member [...]`: each member's position (its cell's centre), a null
//! array for a missing member.

use bytes::Bytes;

use super::{Frame, Server, Session};
use crate::geo::hash::position_of;

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    let scores = match super::member_scores(server, &args[1], &args[2..]) {
        Ok(scores) => scores,
        Err(frame) => return frame,
    };
    Frame::Array(
        scores
            .into_iter()
            .map(|score| match score {
                Some(score) => {
                    let (lon, lat) = position_of(score as u64);
                    Frame::Array(vec![Frame::HumanDouble(lon), Frame::HumanDouble(lat)])
                }
                None => Frame::NullArray,
            })
            .collect(),
    )
}
