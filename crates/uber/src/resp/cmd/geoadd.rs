//! `GEOADD key [NX|XX] [CH] longitude latitude member [...]`: Redis parses the
//! options, validates every coordinate pair before adding anything, then adds
//! like ZADD. Reply: members added (plus updated with CH).

use bytes::Bytes;

use super::{Frame, Server, Session, is, syntax_error};
use crate::geo::hash;
use crate::geo::store::{AddMode, GeoPoint};

/// Validates a longitude/latitude pair with Redis's errors.
pub(crate) fn lon_lat(args: &[Bytes]) -> Result<(f64, f64), Frame> {
    let lon = super::double_arg(&args[0], None)?;
    let lat = super::double_arg(&args[1], None)?;
    if !(hash::LON_MIN..=hash::LON_MAX).contains(&lon)
        || !(hash::LAT_MIN..=hash::LAT_MAX).contains(&lat)
    {
        return Err(Frame::err(format!(
            "invalid longitude,latitude pair {lon:.6},{lat:.6}"
        )));
    }
    Ok((lon, lat))
}

pub(super) fn run(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    let (mut nx, mut xx, mut ch) = (false, false, false);
    let mut first = 2;
    while first < args.len() {
        let opt = &args[first];
        if is(opt, "nx") {
            nx = true;
        } else if is(opt, "xx") {
            xx = true;
        } else if is(opt, "ch") {
            ch = true;
        } else {
            break;
        }
        first += 1;
    }
    let rest = &args[first..];
    if !rest.len().is_multiple_of(3) || (nx && xx) || rest.is_empty() {
        return syntax_error();
    }
    let mut points = Vec::with_capacity(rest.len() / 3);
    for triple in rest.chunks_exact(3) {
        let (lon, lat) = match lon_lat(triple) {
            Ok(pair) => pair,
            Err(frame) => return frame,
        };
        let score = hash::score_of(lon, lat).expect("validated coordinates encode");
        points.push(GeoPoint {
            member: triple[2].clone(),
            lon,
            lat,
            score: score as f64,
        });
    }
    // XX never creates the key.
    match server.write(&args[1], !xx, |set| {
        set.add_points(points, add_mode(nx, xx))
    }) {
        Ok(Some(Ok((added, updated)))) => {
            Frame::Integer(if ch { added + updated } else { added } as i64)
        }
        Ok(None) => Frame::Integer(0),
        Ok(Some(Err(error))) | Err(error) => error.into(),
    }
}

fn add_mode(nx: bool, xx: bool) -> AddMode {
    if nx {
        AddMode::OnlyNew
    } else if xx {
        AddMode::OnlyExisting
    } else {
        AddMode::Upsert
    }
}
