//! `GEOHASH key member [...]`: standard 11-character geohashes, null for a
//! missing member.

use bytes::Bytes;

use super::{Frame, Server, Session};
use crate::geo::hash::geohash_string;

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    let keys = server.keys.read();
    let set = keys.get(&args[1]);
    Frame::Array(
        args[2..]
            .iter()
            .map(|member| match set.and_then(|s| s.score(member)) {
                Some(score) => Frame::bulk(Bytes::copy_from_slice(&geohash_string(score as u64))),
                None => Frame::Null,
            })
            .collect(),
    )
}
