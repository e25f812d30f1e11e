//! The search family, one generic as in Redis: `GEOSEARCH`, `GEOSEARCHSTORE`,
//! `GEORADIUS`, `GEORADIUSBYMEMBER` and their `_RO` variants.
//!
//! Arguments are validated in Redis's order with Redis's errors (the centre and
//! radius of GEORADIUS* first, then options left to right, then the
//! cross-option checks, then the missing-key answers), because clients see
//! which error comes first. Results come from [`crate::geo::search`].

use bytes::Bytes;

use super::geoadd::lon_lat;
use super::geodist::unit_or_err;
use super::{Frame, Server, Session, double_arg, int_arg, is, syntax_error};
use crate::geo::hash::position_of;
use crate::geo::search::{self, Query, Shape, ShapeKind, Sort};
use crate::geo::store::GeoStore;
use crate::resp::state::Keyspace;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// GEORADIUS: centre and radius are positional.
    Coords,
    /// GEORADIUSBYMEMBER: a member and radius are positional.
    Member,
    /// GEOSEARCH / GEOSEARCHSTORE: everything is an option.
    Search,
}

#[derive(Debug, Clone, Copy)]
struct Flags {
    kind: Kind,
    /// The `_RO` variants refuse STORE / STOREDIST.
    no_store: bool,
    /// GEOSEARCHSTORE.
    search_store: bool,
}

pub(super) fn geosearch(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    let keys = server.keys.read();
    run_read(
        server,
        &keys,
        args,
        1,
        Flags {
            kind: Kind::Search,
            no_store: false,
            search_store: false,
        },
    )
}

pub(super) fn geosearchstore(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    let mut keys = server.keys.write();
    run_write(
        server,
        &mut keys,
        args,
        2,
        Flags {
            kind: Kind::Search,
            no_store: false,
            search_store: true,
        },
    )
}

pub(super) fn georadius(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    let mut keys = server.keys.write();
    run_write(
        server,
        &mut keys,
        args,
        1,
        Flags {
            kind: Kind::Coords,
            no_store: false,
            search_store: false,
        },
    )
}

pub(super) fn georadius_ro(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    let keys = server.keys.read();
    run_read(
        server,
        &keys,
        args,
        1,
        Flags {
            kind: Kind::Coords,
            no_store: true,
            search_store: false,
        },
    )
}

pub(super) fn georadiusbymember(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    let mut keys = server.keys.write();
    run_write(
        server,
        &mut keys,
        args,
        1,
        Flags {
            kind: Kind::Member,
            no_store: false,
            search_store: false,
        },
    )
}

pub(super) fn georadiusbymember_ro(server: &Server, _: &mut Session, args: &[Bytes]) -> Frame {
    let keys = server.keys.read();
    run_read(
        server,
        &keys,
        args,
        1,
        Flags {
            kind: Kind::Member,
            no_store: true,
            search_store: false,
        },
    )
}

/// A result to store under a key (STORE, STOREDIST, GEOSEARCHSTORE).
#[derive(Debug)]
struct Store {
    key: Bytes,
    entries: Vec<(Bytes, f64)>,
}

enum Planned {
    Reply(Frame),
    Store(Store),
}

fn run_read(server: &Server, keys: &Keyspace, args: &[Bytes], src: usize, flags: Flags) -> Frame {
    match plan(server, keys, args, src, flags) {
        Planned::Reply(frame) => frame,
        // Read-only variants never plan a store.
        Planned::Store(_) => syntax_error(),
    }
}

fn run_write(
    server: &Server,
    keys: &mut Keyspace,
    args: &[Bytes],
    src: usize,
    flags: Flags,
) -> Frame {
    match plan(server, keys, args, src, flags) {
        Planned::Reply(frame) => frame,
        Planned::Store(store) => {
            let stored = store.entries.len() as i64;
            match server.replace(keys, store.key, store.entries) {
                Ok(()) => Frame::Integer(stored),
                Err(error) => error.into(),
            }
        }
    }
}

/// The searched key's store; `None`: no such key.
type Source<'a> = Option<&'a dyn GeoStore>;

/// The member's decoded position.
fn member_position(set: Source<'_>, member: &[u8]) -> Result<(f64, f64), Frame> {
    set.and_then(|s| s.score(member))
        .map(|s| position_of(s as u64))
        .ok_or_else(|| Frame::err("could not decode requested zset member"))
}

/// Radius and unit: `(radius, metres per unit)`.
fn distance_args(args: &[Bytes]) -> Result<(f64, f64), Frame> {
    let radius = double_arg(&args[0], Some("need numeric radius"))?;
    if radius < 0.0 {
        return Err(Frame::err("radius cannot be negative"));
    }
    Ok((radius, unit_or_err(&args[1])?))
}

fn plan(server: &Server, keys: &Keyspace, args: &[Bytes], src: usize, flags: Flags) -> Planned {
    let source = match server.lookup(keys, &args[src]) {
        Ok(source) => source,
        Err(error) => return Planned::Reply(error.into()),
    };
    match plan_inner(source.as_deref(), args, flags) {
        Ok(planned) => planned,
        Err(frame) => Planned::Reply(frame),
    }
}

fn plan_inner(source: Source<'_>, args: &[Bytes], flags: Flags) -> Result<Planned, Frame> {
    // A missing key (never the live one) answers before any member lookup.
    let exists = source.is_some();
    // Redis zero-initialises its shape.
    let mut shape = Shape {
        lon: 0.0,
        lat: 0.0,
        kind: ShapeKind::Radius(0.0),
        conversion: 0.0,
    };
    let mut store_key: Option<Bytes> = None;
    let base = match flags.kind {
        Kind::Coords => {
            let (lon, lat) = lon_lat(&args[2..4])?;
            let (radius, conversion) = distance_args(&args[4..6])?;
            shape = Shape {
                lon,
                lat,
                kind: ShapeKind::Radius(radius),
                conversion,
            };
            6
        }
        Kind::Member => {
            if exists {
                let (lon, lat) = member_position(source, &args[2])?;
                let (radius, conversion) = distance_args(&args[3..5])?;
                shape = Shape {
                    lon,
                    lat,
                    kind: ShapeKind::Radius(radius),
                    conversion,
                };
            }
            5
        }
        Kind::Search => {
            if flags.search_store {
                store_key = Some(args[1].clone());
                3
            } else {
                2
            }
        }
    };
    let (mut withdist, mut withhash, mut withcoord) = (false, false, false);
    let (mut from_member, mut from_lonlat, mut by_radius, mut by_box) =
        (false, false, false, false);
    let mut sort = Sort::None;
    let mut any = false;
    let mut count: i64 = 0;
    let mut store_dist = false;
    let search = flags.kind == Kind::Search;
    let opts = &args[base.min(args.len())..];
    let remaining = opts.len();
    let mut i = 0;
    while i < remaining {
        let arg = &opts[i];
        if is(arg, "withdist") {
            withdist = true;
        } else if is(arg, "withhash") {
            withhash = true;
        } else if is(arg, "withcoord") {
            withcoord = true;
        } else if is(arg, "any") {
            any = true;
        } else if is(arg, "asc") {
            sort = Sort::Asc;
        } else if is(arg, "desc") {
            sort = Sort::Desc;
        } else if is(arg, "count") && i + 1 < remaining {
            count = int_arg(&opts[i + 1])?;
            if count <= 0 {
                return Err(Frame::err("COUNT must be > 0"));
            }
            i += 1;
        } else if (is(arg, "store") || is(arg, "storedist"))
            && i + 1 < remaining
            && !flags.no_store
            && !search
        {
            store_key = Some(opts[i + 1].clone());
            store_dist = is(arg, "storedist");
            i += 1;
        } else if is(arg, "storedist") && search && flags.search_store {
            store_dist = true;
        } else if is(arg, "frommember") && i + 1 < remaining && search && !from_lonlat {
            if exists {
                let (lon, lat) = member_position(source, &opts[i + 1])?;
                shape.lon = lon;
                shape.lat = lat;
            }
            from_member = true;
            i += 1;
        } else if is(arg, "fromlonlat") && i + 2 < remaining && search && !from_member {
            let (lon, lat) = lon_lat(&opts[i + 1..i + 3])?;
            shape.lon = lon;
            shape.lat = lat;
            from_lonlat = true;
            i += 2;
        } else if is(arg, "byradius") && i + 2 < remaining && search && !by_box {
            let (radius, conversion) = distance_args(&opts[i + 1..i + 3])?;
            shape.kind = ShapeKind::Radius(radius);
            shape.conversion = conversion;
            by_radius = true;
            i += 2;
        } else if is(arg, "bybox") && i + 3 < remaining && search && !by_radius {
            let width = double_arg(&opts[i + 1], Some("need numeric width"))?;
            let height = double_arg(&opts[i + 2], Some("need numeric height"))?;
            if width < 0.0 || height < 0.0 {
                return Err(Frame::err("height or width cannot be negative"));
            }
            shape.conversion = unit_or_err(&opts[i + 3])?;
            shape.kind = ShapeKind::Box { width, height };
            by_box = true;
            i += 3;
        } else {
            return Err(syntax_error());
        }
        i += 1;
    }
    if store_key.is_some() && (withdist || withhash || withcoord) {
        return Err(Frame::err(format!(
            "{} is not compatible with WITHDIST, WITHHASH and WITHCOORD options",
            if flags.search_store {
                "GEOSEARCHSTORE"
            } else {
                "STORE option in GEORADIUS"
            }
        )));
    }
    let typed = String::from_utf8_lossy(&args[0]);
    if search && !(from_member || from_lonlat) {
        return Err(Frame::err(format!(
            "exactly one of FROMMEMBER or FROMLONLAT can be specified for {typed}"
        )));
    }
    if search && !(by_radius || by_box) {
        return Err(Frame::err(format!(
            "exactly one of BYRADIUS and BYBOX can be specified for {typed}"
        )));
    }
    if any && count == 0 {
        return Err(Frame::err("the ANY argument requires COUNT argument"));
    }
    if !exists {
        return Ok(match store_key {
            Some(key) => Planned::Store(Store {
                key,
                entries: Vec::new(),
            }),
            None => Planned::Reply(Frame::Array(Vec::new())),
        });
    }
    let query = Query {
        shape,
        sort,
        count: count as usize,
        any,
    };
    let hits = source.map_or_else(Vec::new, |set| search::search(set, &query));
    if let Some(key) = store_key {
        let entries = hits
            .into_iter()
            .map(|h| {
                let score = if store_dist {
                    h.dist_m / shape.conversion
                } else {
                    h.score
                };
                (h.member, score)
            })
            .collect();
        return Ok(Planned::Store(Store { key, entries }));
    }
    let options = usize::from(withdist) + usize::from(withhash) + usize::from(withcoord);
    let reply = hits
        .into_iter()
        .map(|h| {
            if options == 0 {
                return Frame::Bulk(h.member);
            }
            let mut item = Vec::with_capacity(options + 1);
            item.push(Frame::Bulk(h.member));
            if withdist {
                item.push(Frame::bulk(format!("{:.4}", h.dist_m / shape.conversion)));
            }
            if withhash {
                item.push(Frame::Integer(h.score as i64));
            }
            if withcoord {
                item.push(Frame::Array(vec![
                    Frame::HumanDouble(h.lon),
                    Frame::HumanDouble(h.lat),
                ]));
            }
            Frame::Array(item)
        })
        .collect();
    Ok(Planned::Reply(Frame::Array(reply)))
}
