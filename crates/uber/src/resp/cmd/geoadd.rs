//! `GEOADD key [NX|XX] [CH] longitude latitude member [...]`: Redis parses the
//! options, validates every coordinate pair before adding anything, then adds
//! like ZADD. Reply: members added (plus updated with CH).

use bytes::Bytes;

use super::{Frame, Server, Session, is, syntax_error};
use crate::geo::hash;
use crate::geo::store::{AddMode, AddOutcome};
use crate::resp::live::{self, LiveKey};

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
        points.push((triple[2].clone(), score as f64));
    }
    if let Some(live) = server.live_key(&args[1]) {
        return add_live(live, rest, ch, nx, xx);
    }
    let mode = add_mode(nx, xx);
    // XX never creates the key.
    let create = (!xx).then_some(server.new_store);
    let (added, updated) = server
        .keys
        .write()
        .update(&args[1], create, |set| {
            let (mut added, mut updated) = (0, 0);
            for (member, score) in points {
                match set.add(member, score, mode) {
                    AddOutcome::Added => added += 1,
                    AddOutcome::Updated => updated += 1,
                    AddOutcome::Unchanged => {}
                }
            }
            (added, updated)
        })
        .unwrap_or((0, 0));
    Frame::Integer(if ch { added + updated } else { added })
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

/// GEOADD to the live key: every member must be a driver id (checked before
/// anything is ingested, as Redis checks every pair first).
fn add_live(live: &LiveKey, triples: &[Bytes], ch: bool, nx: bool, xx: bool) -> Frame {
    let mut drivers = Vec::with_capacity(triples.len() / 3);
    for triple in triples.chunks_exact(3) {
        let Some(driver) = live::driver_id(&triple[2]) else {
            return live::not_a_driver(live, &triple[2]);
        };
        let (lon, lat) = lon_lat(triple).expect("validated by the caller");
        drivers.push((driver, lon, lat));
    }
    let index = match live.index() {
        Ok(index) => index,
        Err(frame) => return frame,
    };
    let (mut added, mut updated) = (0, 0);
    for (driver, lon, lat) in drivers {
        match live::add(&index, driver, lon, lat, add_mode(nx, xx)) {
            Ok(AddOutcome::Added) => added += 1,
            Ok(AddOutcome::Updated) => updated += 1,
            Ok(AddOutcome::Unchanged) => {}
            Err(frame) => return frame,
        }
    }
    Frame::Integer(if ch { added + updated } else { added })
}
