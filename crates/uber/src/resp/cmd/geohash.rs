//! `GEOHASH key member [...]`: standard 11-character geohashes, null for a
//! missing member.

use bytes::Bytes;

use super::{Frame, Server, Session};
use crate::geo::hash::geohash_string;

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    let scores = match super::member_scores(server, &args[1], &args[2..]) {
        Ok(scores) => scores,
        Err(frame) => return frame,
    };
    Frame::Array(
        scores
            .into_iter()
            .map(|score| match score {
                Some(score) => Frame::bulk(Bytes::copy_from_slice(&geohash_string(score as u64))),
                None => Frame::Null,
            })
            .collect(),
    )
}
