//! `GEOPOS key member [...]`: each member's position (its cell's centre), a null
//! array for a missing member.

use bytes::Bytes;

use super::{Frame, Server, Session};
use crate::geo::hash::position_of;

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    let keys = server.keys.read();
    let set = keys.get(&args[1]);
    Frame::Array(
        args[2..]
            .iter()
            .map(|member| match set.and_then(|s| s.score(member)) {
                Some(score) => {
                    let (lon, lat) = position_of(score as u64);
                    Frame::Array(vec![Frame::HumanDouble(lon), Frame::HumanDouble(lat)])
                }
                None => Frame::NullArray,
            })
            .collect(),
    )
}
