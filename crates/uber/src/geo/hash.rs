//! Redis's geohash arithmetic: 52-bit interleaved scores, cell areas, neighbours,
//! the 11-character base32 strings of `GEOHASH`, and the haversine distance on
//! Redis's sphere.
//!
//! Every function reproduces the *results* of Redis 7.0's `geohash.c` /
//! `geohash_helper.c` bit for bit (same operation order in floating point), because
//! the scores are visible to clients (`ZSCORE`, `WITHHASH`) and the search cells
//! decide which members a `GEOSEARCH` can find.
//!
//! Bit layout: latitude bits at even positions, longitude bits at odd positions
//! (bit 0 is the least significant latitude bit), `step` bits of each.

/// Most bits per coordinate: 26 + 26 = 52, what a double holds exactly.
pub const STEP_MAX: u8 = 26;
/// Mercator's latitude limit (EPSG:900913): Redis cannot index the poles.
pub const LAT_MIN: f64 = -85.05112878;
pub const LAT_MAX: f64 = 85.05112878;
pub const LON_MIN: f64 = -180.0;
pub const LON_MAX: f64 = 180.0;
/// Redis's Earth radius (the WGS-84 quadratic mean radius), in metres.
pub const EARTH_RADIUS_M: f64 = 6372797.560856;
/// Half the equator in Mercator metres: the range that step 1 covers.
const MERCATOR_MAX: f64 = 20037726.37;
const D_R: f64 = std::f64::consts::PI / 180.0;

#[inline]
pub fn deg_rad(deg: f64) -> f64 {
    deg * D_R
}

#[inline]
pub fn rad_deg(rad: f64) -> f64 {
    rad / D_R
}

/// A geohash cell: `step` bits per coordinate, interleaved in `bits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cell {
    pub bits: u64,
    pub step: u8,
}

impl Cell {
    /// Redis's "zeroed" neighbour (a cell excluded from the search).
    pub const ZERO: Cell = Cell { bits: 0, step: 0 };

    pub fn is_zero(self) -> bool {
        self.bits == 0 && self.step == 0
    }

    /// The cell's scores `[min, max)` on the 52-bit scale.
    pub fn score_range(self) -> (u64, u64) {
        let shift = 52 - 2 * u32::from(self.step);
        (self.bits << shift, (self.bits + 1) << shift)
    }

    /// Its four children (one more bit per coordinate), in score order.
    pub fn children(self) -> [Cell; 4] {
        let base = self.bits << 2;
        let step = self.step + 1;
        [0, 1, 2, 3].map(|i| Cell {
            bits: base | i,
            step,
        })
    }
}

/// A coordinate range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub min: f64,
    pub max: f64,
}

/// The longitude and latitude ranges of a cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Area {
    pub lon: Range,
    pub lat: Range,
}

/// The ranges Redis indexes (its `geohashGetCoordRange`).
pub const WGS84_LON: Range = Range {
    min: LON_MIN,
    max: LON_MAX,
};
pub const WGS84_LAT: Range = Range {
    min: LAT_MIN,
    max: LAT_MAX,
};
/// The standard geohash ranges, which `GEOHASH` re-encodes with.
pub const STANDARD_LAT: Range = Range {
    min: -90.0,
    max: 90.0,
};

fn spread(v: u32) -> u64 {
    let mut x = u64::from(v);
    x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
    x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | (x << 2)) & 0x3333_3333_3333_3333;
    (x | (x << 1)) & 0x5555_5555_5555_5555
}

fn squash(v: u64) -> u32 {
    let mut x = v & 0x5555_5555_5555_5555;
    x = (x | (x >> 1)) & 0x3333_3333_3333_3333;
    x = (x | (x >> 2)) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | (x >> 4)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x >> 8)) & 0x0000_FFFF_0000_FFFF;
    x = (x | (x >> 16)) & 0x0000_0000_FFFF_FFFF;
    x as u32
}

/// Encodes a point at `step` within the given ranges; `None` outside Redis's
/// indexable area or outside the ranges (Redis's `geohashEncode` returning 0).
pub fn encode(lon_range: Range, lat_range: Range, lon: f64, lat: f64, step: u8) -> Option<Cell> {
    if step == 0 || step > 32 {
        return None;
    }
    if !(LON_MIN..=LON_MAX).contains(&lon) || !(LAT_MIN..=LAT_MAX).contains(&lat) {
        return None;
    }
    if lat < lat_range.min || lat > lat_range.max || lon < lon_range.min || lon > lon_range.max {
        return None;
    }
    let mut lat_offset = (lat - lat_range.min) / (lat_range.max - lat_range.min);
    let mut lon_offset = (lon - lon_range.min) / (lon_range.max - lon_range.min);
    let scale = (1u64 << step) as f64;
    lat_offset *= scale;
    lon_offset *= scale;
    // C converts the double to uint32_t by truncation; the values are < 2^33 here.
    let bits = spread(lat_offset as u32) | (spread(lon_offset as u32) << 1);
    Some(Cell { bits, step })
}

/// Encodes with Redis's WGS84 ranges.
pub fn encode_wgs84(lon: f64, lat: f64, step: u8) -> Option<Cell> {
    encode(WGS84_LON, WGS84_LAT, lon, lat, step)
}

/// The score GEOADD stores for a point (`None` outside the indexable area).
pub fn score_of(lon: f64, lat: f64) -> Option<u64> {
    encode_wgs84(lon, lat, STEP_MAX).map(|cell| cell.bits)
}

/// The area of a cell within the given ranges.
pub fn decode(lon_range: Range, lat_range: Range, cell: Cell) -> Area {
    let lat_scale = lat_range.max - lat_range.min;
    let lon_scale = lon_range.max - lon_range.min;
    let ilat = squash(cell.bits);
    let ilon = squash(cell.bits >> 1);
    let div = (1u64 << cell.step) as f64;
    Area {
        lat: Range {
            min: lat_range.min + (f64::from(ilat) / div) * lat_scale,
            max: lat_range.min + ((f64::from(ilat) + 1.0) / div) * lat_scale,
        },
        lon: Range {
            min: lon_range.min + (f64::from(ilon) / div) * lon_scale,
            max: lon_range.min + ((f64::from(ilon) + 1.0) / div) * lon_scale,
        },
    }
}

/// The area of a cell in Redis's WGS84 ranges.
pub fn decode_wgs84(cell: Cell) -> Area {
    decode(WGS84_LON, WGS84_LAT, cell)
}

/// The point a score stands for: the centre of its step-26 cell, clamped to the
/// indexable area — what GEOPOS and WITHCOORD print.
pub fn position_of(score: u64) -> (f64, f64) {
    let area = decode_wgs84(Cell {
        bits: score,
        step: STEP_MAX,
    });
    let lon = ((area.lon.min + area.lon.max) / 2.0).clamp(LON_MIN, LON_MAX);
    let lat = ((area.lat.min + area.lat.max) / 2.0).clamp(LAT_MIN, LAT_MAX);
    (lon, lat)
}

const ODD: u64 = 0xaaaa_aaaa_aaaa_aaaa;
const EVEN: u64 = 0x5555_5555_5555_5555;

/// One cell east (`d > 0`) or west, wrapping around the bit space as Redis does.
fn move_x(cell: Cell, d: i8) -> Cell {
    if d == 0 {
        return cell;
    }
    let shift = 64 - 2 * u32::from(cell.step);
    let mut x = cell.bits & ODD;
    let y = cell.bits & EVEN;
    let zz = EVEN >> shift;
    if d > 0 {
        x = x.wrapping_add(zz + 1);
    } else {
        x |= zz;
        x = x.wrapping_sub(zz + 1);
    }
    x &= ODD >> shift;
    Cell {
        bits: x | y,
        step: cell.step,
    }
}

/// One cell north (`d > 0`) or south.
fn move_y(cell: Cell, d: i8) -> Cell {
    if d == 0 {
        return cell;
    }
    let shift = 64 - 2 * u32::from(cell.step);
    let x = cell.bits & ODD;
    let mut y = cell.bits & EVEN;
    let zz = ODD >> shift;
    if d > 0 {
        y = y.wrapping_add(zz + 1);
    } else {
        y |= zz;
        y = y.wrapping_sub(zz + 1);
    }
    y &= EVEN >> shift;
    Cell {
        bits: x | y,
        step: cell.step,
    }
}

/// The 3x3 neighbourhood, in the order Redis visits it: centre, N, S, E, W,
/// NE, NW, SE, SW.
pub fn neighbourhood(center: Cell) -> [Cell; 9] {
    let at = |dx: i8, dy: i8| move_y(move_x(center, dx), dy);
    [
        center,
        at(0, 1),
        at(0, -1),
        at(1, 0),
        at(-1, 0),
        at(1, 1),
        at(-1, 1),
        at(1, -1),
        at(-1, -1),
    ]
}

/// Redis's choice of cell size for a search of this radius at this latitude.
pub fn estimate_step(range_m: f64, lat: f64) -> u8 {
    if range_m == 0.0 {
        return 26;
    }
    let mut range = range_m;
    let mut step: i32 = 1;
    while range < MERCATOR_MAX {
        range *= 2.0;
        step += 1;
    }
    step -= 2;
    if !(-66.0..=66.0).contains(&lat) {
        step -= 1;
        if !(-80.0..=80.0).contains(&lat) {
            step -= 1;
        }
    }
    step.clamp(1, 26) as u8
}

/// Great-circle distance in metres (haversine), exactly as Redis 7.0 computes it.
pub fn distance(lon1: f64, lat1: f64, lon2: f64, lat2: f64) -> f64 {
    let lat1r = deg_rad(lat1);
    let lon1r = deg_rad(lon1);
    let lat2r = deg_rad(lat2);
    let lon2r = deg_rad(lon2);
    let u = ((lat2r - lat1r) / 2.0).sin();
    let v = ((lon2r - lon1r) / 2.0).sin();
    2.0 * EARTH_RADIUS_M * (u * u + lat1r.cos() * lat2r.cos() * v * v).sqrt().asin()
}

/// The 11-character standard geohash `GEOHASH` prints for a stored score: the
/// point is decoded, re-encoded with the standard ±90 latitude range, and the
/// 52 bits give ten characters; the eleventh is always `0`, as in Redis.
pub fn geohash_string(score: u64) -> [u8; 11] {
    const ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";
    let (lon, lat) = position_of(score);
    let bits = encode(WGS84_LON, STANDARD_LAT, lon, lat, STEP_MAX)
        .map(|c| c.bits)
        .unwrap_or(0);
    let mut out = [b'0'; 11];
    for (i, slot) in out.iter_mut().enumerate().take(10) {
        let idx = (bits >> (52 - (i + 1) * 5)) & 0x1f;
        *slot = ALPHABET[idx as usize];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palermo_scores_and_positions_match_redis_docs() {
        // From the GEOADD / GEOPOS / GEOHASH documentation examples.
        assert_eq!(score_of(13.361389, 38.115556), Some(3479099956230698));
        let (lon, lat) = position_of(3479099956230698);
        assert!((lon - 13.361389338970184).abs() < 1e-12);
        assert!((lat - 38.115_556_395_496_3).abs() < 1e-12);
        assert_eq!(&geohash_string(3479099956230698), b"sqc8b49rny0");
        let catania = score_of(15.087269, 37.502669).unwrap();
        assert_eq!(&geohash_string(catania), b"sqdtr74hyu0");
        let (c_lon, c_lat) = position_of(catania);
        let d = distance(lon, lat, c_lon, c_lat);
        assert_eq!(format!("{d:.4}"), "166274.1516");
    }

    #[test]
    fn interleaving_round_trips() {
        for v in [0u32, 1, 0x3ff_ffff, 0x1234_5678, u32::MAX] {
            assert_eq!(squash(spread(v)), v);
        }
    }

    #[test]
    fn neighbours_are_adjacent_cells() {
        let c = encode_wgs84(2.0, 48.0, 10).unwrap();
        let a = decode_wgs84(c);
        let n = neighbourhood(c);
        let north = decode_wgs84(n[1]);
        assert_eq!(north.lat.min, a.lat.max);
        assert_eq!(north.lon, a.lon);
        let east = decode_wgs84(n[3]);
        assert_eq!(east.lon.min, a.lon.max);
        let sw = decode_wgs84(n[8]);
        assert_eq!(sw.lon.max, a.lon.min);
        assert_eq!(sw.lat.max, a.lat.min);
    }

    #[test]
    fn step_estimate_follows_radius_and_latitude() {
        assert_eq!(estimate_step(0.0, 0.0), 26);
        assert!(estimate_step(2000.0, 40.0) > estimate_step(200_000.0, 40.0));
        assert_eq!(estimate_step(2000.0, 70.0) + 1, estimate_step(2000.0, 40.0));
        assert_eq!(estimate_step(1e9, 0.0), 1);
    }
}
