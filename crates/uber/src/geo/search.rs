//! Radius and box searches with Redis's results.
//!
//! Redis answers GEOSEARCH / GEORADIUS from the nine geohash cells around the
//! centre at a step estimated from the radius (some cells dropped, the step
//! lowered once when the neighbours do not reach the bounding box), then filters
//! every member of those cells by the exact shape test. Its answer is therefore
//! *the members of those cells that pass the test* — not every member within the
//! radius — and this module computes that same set ([`areas`] is Redis's cell
//! choice, [`within`] its test, with the same floating-point operations).
//!
//! How it is computed differs where the result allows:
//! - without COUNT, or with COUNT ANY, the cells are scanned in Redis's order
//!   (centre, N, S, E, W, NE, NW, SE, SW; score order inside a cell) so unsorted
//!   and ANY-truncated answers are the same members in the same order;
//! - with COUNT n (no ANY) only the n nearest are wanted, so the cells are
//!   searched best first: each is split into quarters down to a few levels below
//!   Redis's step, quarters are visited in order of a conservative lower bound on
//!   their distance, and the search stops when no unvisited quarter can beat the
//!   n-th best. Same candidate set and same test, so the same n nearest (members at
//!   exactly equal distance may be chosen and ordered differently, as Redis's own
//!   unstable sort does).
//!
//! Memory: nothing is sized by COUNT (it has no upper bound, as in Redis); a
//! search holds at most min(COUNT, members scanned) hits plus its frontier of
//! cells (at most 9 × 4^4 quarters per level reached).
//!
//! Deliberately absent: Redis's duplicated results when two non-adjacent cells of
//! a huge-radius search coincide are reproduced by the plain scan (the best-first
//! path is only taken when all scanned cells are distinct).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::ops::ControlFlow;

use bytes::Bytes;

use super::hash::{
    self, Area, Cell, EARTH_RADIUS_M, decode_wgs84, deg_rad, distance, encode_wgs84, estimate_step,
    neighbourhood, position_of, rad_deg,
};
use super::store::GeoStore;

/// The area searched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ShapeKind {
    /// A circle of this radius (in the query's unit).
    Radius(f64),
    /// An axis-aligned box this wide and high (in the query's unit).
    Box { width: f64, height: f64 },
}

/// A search area around a centre, with the unit's size in metres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub lon: f64,
    pub lat: f64,
    pub kind: ShapeKind,
    /// Metres per unit (1, 1000, 0.3048, 1609.34).
    pub conversion: f64,
}

/// Result order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Scan order (Redis's cell order, then score order).
    #[default]
    None,
    Asc,
    Desc,
}

/// A search: shape, order, COUNT (0 = all) and ANY.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Query {
    pub shape: Shape,
    pub sort: Sort,
    pub count: usize,
    pub any: bool,
}

/// One member found.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub member: Bytes,
    /// The stored score (a geohash; a distance in a STOREDIST result set).
    pub score: f64,
    /// Distance from the centre in metres.
    pub dist_m: f64,
    pub lon: f64,
    pub lat: f64,
}

/// Redis's shape test: the distance from the centre when the point is inside.
pub fn within(shape: &Shape, lon: f64, lat: f64) -> Option<f64> {
    match shape.kind {
        ShapeKind::Radius(radius) => {
            let d = distance(shape.lon, shape.lat, lon, lat);
            // `d > r` rather than `d <= r` so a NaN distance passes, as in Redis.
            if d > radius * shape.conversion {
                None
            } else {
                Some(d)
            }
        }
        ShapeKind::Box { width, height } => {
            let width_m = width * shape.conversion;
            let height_m = height * shape.conversion;
            let lon_d = distance(lon, lat, shape.lon, lat);
            let lat_d = distance(lon, lat, lon, shape.lat);
            if lon_d > width_m / 2.0 || lat_d > height_m / 2.0 {
                return None;
            }
            Some(distance(shape.lon, shape.lat, lon, lat))
        }
    }
}

/// The bounding box Redis computes for the shape: (min lon, min lat, max lon, max lat).
fn bounding_box(shape: &Shape) -> [f64; 4] {
    let (height, width) = match shape.kind {
        ShapeKind::Radius(r) => (shape.conversion * r, shape.conversion * r),
        ShapeKind::Box { width, height } => (
            shape.conversion * (height / 2.0),
            shape.conversion * (width / 2.0),
        ),
    };
    let lat_delta = rad_deg(height / EARTH_RADIUS_M);
    let lon_delta_top = rad_deg(width / EARTH_RADIUS_M / deg_rad(shape.lat + lat_delta).cos());
    let lon_delta_bottom = rad_deg(width / EARTH_RADIUS_M / deg_rad(shape.lat - lat_delta).cos());
    let delta = if shape.lat < 0.0 {
        lon_delta_bottom
    } else {
        lon_delta_top
    };
    [
        shape.lon - delta,
        shape.lat - lat_delta,
        shape.lon + delta,
        shape.lat + lat_delta,
    ]
}

/// Redis's nine cells for a shape (centre, N, S, E, W, NE, NW, SE, SW), with the
/// useless ones set to [`Cell::ZERO`].
pub fn areas(shape: &Shape) -> [Cell; 9] {
    let [min_lon, min_lat, max_lon, max_lat] = bounding_box(shape);
    let radius_m = match shape.kind {
        ShapeKind::Radius(r) => r,
        ShapeKind::Box { width, height } => {
            ((width / 2.0) * (width / 2.0) + (height / 2.0) * (height / 2.0)).sqrt()
        }
    } * shape.conversion;
    let mut step = estimate_step(radius_m, shape.lat);
    // The centre was validated by the caller: it is always encodable.
    let encode = |step| encode_wgs84(shape.lon, shape.lat, step).unwrap_or(Cell::ZERO);
    let mut cells = neighbourhood(encode(step));
    let north = decode_wgs84(cells[1]);
    let south = decode_wgs84(cells[2]);
    let east = decode_wgs84(cells[3]);
    let west = decode_wgs84(cells[4]);
    let decrease = north.lat.max < max_lat
        || south.lat.min > min_lat
        || east.lon.max < max_lon
        || west.lon.min > min_lon;
    if step > 1 && decrease {
        step -= 1;
        cells = neighbourhood(encode(step));
    }
    if step >= 2 {
        let area = decode_wgs84(cells[0]);
        // Indices: 1 N, 2 S, 3 E, 4 W, 5 NE, 6 NW, 7 SE, 8 SW.
        let mut drop = |idx: [usize; 3]| idx.iter().for_each(|&i| cells[i] = Cell::ZERO);
        if area.lat.min < min_lat {
            drop([2, 8, 7]);
        }
        if area.lat.max > max_lat {
            drop([1, 5, 6]);
        }
        if area.lon.min < min_lon {
            drop([4, 8, 6]);
        }
        if area.lon.max > max_lon {
            drop([3, 7, 5]);
        }
    }
    cells
}

/// The cells Redis scans, in order: non-zero ones, skipping a cell equal to the
/// one processed just before it (but, as in Redis, never skipping a repeat of
/// the centre, whose index 0 reads as "nothing processed yet").
fn scanned_cells(cells: &[Cell; 9]) -> Vec<Cell> {
    let mut out = Vec::with_capacity(9);
    let mut last = 0usize;
    for (i, cell) in cells.iter().enumerate() {
        if cell.is_zero() {
            continue;
        }
        if last != 0 && *cell == cells[last] {
            continue;
        }
        out.push(*cell);
        last = i;
    }
    out
}

/// The shape test with the centre's trigonometry done once per search: the same
/// operations in the same order as [`within`], so the same bits.
struct Probe<'a> {
    shape: &'a Shape,
    lat1r: f64,
    lon1r: f64,
    cos_lat1: f64,
    radius_m: f64,
}

impl<'a> Probe<'a> {
    fn new(shape: &'a Shape) -> Self {
        let lat1r = deg_rad(shape.lat);
        let radius_m = match shape.kind {
            ShapeKind::Radius(r) => r * shape.conversion,
            ShapeKind::Box { .. } => f64::NAN,
        };
        Self {
            shape,
            lat1r,
            lon1r: deg_rad(shape.lon),
            cos_lat1: lat1r.cos(),
            radius_m,
        }
    }

    /// Position and distance of a stored score when it passes the test.
    fn test(&self, score: f64) -> Option<(f64, f64, f64)> {
        // Redis decodes `(uint64_t)score`: whatever the score, it names a cell.
        let (lon, lat) = position_of(score as u64);
        let dist = match self.shape.kind {
            ShapeKind::Radius(_) => {
                let lat2r = deg_rad(lat);
                let lon2r = deg_rad(lon);
                let u = ((lat2r - self.lat1r) / 2.0).sin();
                let v = ((lon2r - self.lon1r) / 2.0).sin();
                let d = 2.0
                    * EARTH_RADIUS_M
                    * (u * u + self.cos_lat1 * lat2r.cos() * v * v).sqrt().asin();
                // `d > r` rather than `d <= r` so a NaN distance passes, as in Redis.
                if d > self.radius_m {
                    return None;
                }
                d
            }
            ShapeKind::Box { .. } => within(self.shape, lon, lat)?,
        };
        Some((dist, lon, lat))
    }
}

fn by_distance(a: &Hit, b: &Hit) -> Ordering {
    a.dist_m.partial_cmp(&b.dist_m).unwrap_or(Ordering::Equal)
}

/// Runs a search; hits carry distances in metres (divide by the unit's
/// conversion to print them), at most `count` of them when a count is given.
pub fn search(store: &dyn GeoStore, query: &Query) -> Vec<Hit> {
    if let Some(candidates) = store.narrow(&query.shape) {
        return search(&candidates, query);
    }
    let cells = scanned_cells(&areas(&query.shape));
    let mut sort = query.sort;
    if query.count != 0 && sort == Sort::None && !query.any {
        sort = Sort::Asc;
    }
    let distinct = cells
        .iter()
        .enumerate()
        .all(|(i, c)| !cells[..i].contains(c));
    let mut hits = if query.count != 0 && !query.any && distinct {
        nearest(store, &query.shape, &cells, query.count, sort)
    } else {
        scan_all(
            store,
            &query.shape,
            &cells,
            if query.any { query.count } else { 0 },
        )
    };
    match sort {
        Sort::None => {}
        Sort::Asc => hits.sort_by(by_distance),
        Sort::Desc => hits.sort_by(|a, b| by_distance(b, a)),
    }
    if query.count != 0 {
        hits.truncate(query.count);
    }
    hits
}

/// Redis's own scan: every cell in order, every member in score order, stopping
/// once `limit` hits are found (0 = no limit).
fn scan_all(store: &dyn GeoStore, shape: &Shape, cells: &[Cell], limit: usize) -> Vec<Hit> {
    let probe = Probe::new(shape);
    let mut hits = Vec::new();
    for cell in cells {
        if limit != 0 && hits.len() >= limit {
            break;
        }
        let (min, max) = cell.score_range();
        store.scan(min as f64, max as f64, &mut |score, member| {
            if let Some((dist_m, lon, lat)) = probe.test(score) {
                hits.push(Hit {
                    member: member.clone(),
                    score,
                    dist_m,
                    lon,
                    lat,
                });
            }
            if limit != 0 && hits.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
    }
    hits
}

/// How many levels below Redis's step the best-first search splits cells.
const SPLIT_LEVELS: u8 = 4;

/// A lower bound on the distance (metres) from the centre to any point of `area`:
/// the latitude gap, and the cross-track distance to the nearer bounding
/// meridian when the cell spans less than a quarter turn of longitude. Shrunk a
/// little so rounding can never make it exceed a true distance.
fn lower_bound(lon0: f64, lat0: f64, cos_lat0: f64, area: &Area) -> f64 {
    let dlat = if lat0 < area.lat.min {
        area.lat.min - lat0
    } else if lat0 > area.lat.max {
        lat0 - area.lat.max
    } else {
        0.0
    };
    // The longitude gap to the nearer edge, either way round the globe.
    let near = if lon0 < area.lon.min {
        (area.lon.min - lon0).min(lon0 + 360.0 - area.lon.max)
    } else if lon0 > area.lon.max {
        (lon0 - area.lon.max).min(area.lon.min + 360.0 - lon0)
    } else {
        0.0
    };
    let span = area.lon.max - area.lon.min;
    let by_lat = deg_rad(dlat);
    // The cross-track distance grows with the gap only up to a quarter turn.
    let by_lon = if near > 0.0 && near + span < 90.0 {
        (cos_lat0 * deg_rad(near).sin()).clamp(0.0, 1.0).asin()
    } else {
        0.0
    };
    let bound = by_lat.max(by_lon) * EARTH_RADIUS_M;
    (bound * (1.0 - 1e-9) - 1e-6).max(0.0)
}

#[derive(Debug, PartialEq)]
struct Pending {
    bound: f64,
    cell: Cell,
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        self.bound
            .total_cmp(&other.bound)
            .then(self.cell.bits.cmp(&other.cell.bits))
    }
}

/// A kept hit, ordered by (distance, score, member) so the worst is on top.
#[derive(Debug)]
struct Kept(Hit);

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Kept {}
impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Kept {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .dist_m
            .total_cmp(&other.0.dist_m)
            .then(self.0.score.total_cmp(&other.0.score))
            .then(self.0.member.cmp(&other.0.member))
    }
}

/// The `count` nearest (or farthest, for DESC) members among Redis's candidates.
fn nearest(
    store: &dyn GeoStore,
    shape: &Shape,
    cells: &[Cell],
    count: usize,
    sort: Sort,
) -> Vec<Hit> {
    if sort == Sort::Desc {
        // The farthest n need every candidate; no pruning applies.
        return scan_all(store, shape, cells, 0);
    }
    let probe = Probe::new(shape);
    let cos_lat0 = deg_rad(shape.lat).cos();
    let bound = |cell: Cell| lower_bound(shape.lon, shape.lat, cos_lat0, &decode_wgs84(cell));
    let max_dist = match shape.kind {
        ShapeKind::Radius(r) => r * shape.conversion,
        ShapeKind::Box { .. } => f64::INFINITY,
    };
    let leaf_step = cells.first().map_or(hash::STEP_MAX, |c| {
        (c.step + SPLIT_LEVELS).min(hash::STEP_MAX)
    });
    let mut frontier: BinaryHeap<Reverse<Pending>> = cells
        .iter()
        .map(|&cell| {
            Reverse(Pending {
                bound: bound(cell),
                cell,
            })
        })
        .collect();
    // COUNT is the client's number: the heap is sized by what exists, never by it.
    let mut best: BinaryHeap<Kept> = BinaryHeap::with_capacity(count.min(store.len()) + 1);
    while let Some(Reverse(Pending { bound: lb, cell })) = frontier.pop() {
        if lb > max_dist {
            break;
        }
        if best.len() >= count && best.peek().is_some_and(|worst| lb > worst.0.dist_m) {
            break;
        }
        if cell.step < leaf_step {
            for child in cell.children() {
                let lb = bound(child);
                if lb <= max_dist {
                    frontier.push(Reverse(Pending {
                        bound: lb,
                        cell: child,
                    }));
                }
            }
            continue;
        }
        let (min, max) = cell.score_range();
        store.scan(min as f64, max as f64, &mut |score, member| {
            if let Some((dist_m, lon, lat)) = probe.test(score) {
                // Compare before cloning the member: most candidates lose.
                let better = best.len() < count
                    || best.peek().is_some_and(|worst| {
                        dist_m
                            .total_cmp(&worst.0.dist_m)
                            .then(score.total_cmp(&worst.0.score))
                            .then(member.as_ref().cmp(worst.0.member.as_ref()))
                            .is_lt()
                    });
                if better {
                    if best.len() >= count {
                        best.pop();
                    }
                    best.push(Kept(Hit {
                        member: member.clone(),
                        score,
                        dist_m,
                        lon,
                        lat,
                    }));
                }
            }
            ControlFlow::Continue(())
        });
    }
    best.into_iter().map(|k| k.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::store::{AddMode, SortedGeoSet};
    use proptest::prelude::*;

    fn set_of(points: &[(f64, f64)]) -> SortedGeoSet {
        let mut set = SortedGeoSet::default();
        for (i, (lon, lat)) in points.iter().enumerate() {
            let score = hash::score_of(*lon, *lat).unwrap();
            set.add(Bytes::from(format!("m{i}")), score as f64, AddMode::Upsert);
        }
        set
    }

    #[test]
    fn a_huge_count_is_bounded_by_the_members() {
        let set = set_of(&[(-122.42, 37.77), (-122.41, 37.78), (-122.40, 37.76)]);
        let shape = Shape {
            lon: -122.42,
            lat: 37.77,
            kind: ShapeKind::Radius(5.0),
            conversion: 1000.0,
        };
        // Both used to size the result heap from COUNT: an abort for 10^9
        // (64 GB), a capacity-overflow panic for i64::MAX.
        for count in [1_000_000_000, i64::MAX as usize, usize::MAX - 1] {
            for sort in [Sort::Asc, Sort::Desc, Sort::None] {
                let hits = search(
                    &set,
                    &Query {
                        shape,
                        sort,
                        count,
                        any: false,
                    },
                );
                assert_eq!(hits.len(), 3, "COUNT {count} {sort:?}");
            }
            let hits = search(
                &set,
                &Query {
                    shape,
                    sort: Sort::None,
                    count,
                    any: true,
                },
            );
            assert_eq!(hits.len(), 3);
        }
    }

    proptest! {
        // The best-first path returns the same distances as Redis's plain scan
        // followed by a sort and a cut.
        #[test]
        fn best_first_equals_plain_scan(
            points in prop::collection::vec((-74.2f64..-73.8, 40.5f64..40.9), 1..400),
            center in (-74.2f64..-73.8, 40.5f64..40.9),
            radius in 10.0f64..20_000.0,
            boxed in any::<bool>(),
            count in 1usize..30,
        ) {
            let set = set_of(&points);
            let kind = if boxed {
                ShapeKind::Box { width: radius * 1.5, height: radius }
            } else {
                ShapeKind::Radius(radius)
            };
            let shape = Shape { lon: center.0, lat: center.1, kind, conversion: 1.0 };
            let cells = scanned_cells(&areas(&shape));
            let mut plain = scan_all(&set, &shape, &cells, 0);
            plain.sort_by(by_distance);
            plain.truncate(count);
            let fast = search(&set, &Query { shape, sort: Sort::Asc, count, any: false });
            let a: Vec<f64> = plain.iter().map(|h| h.dist_m).collect();
            let b: Vec<f64> = fast.iter().map(|h| h.dist_m).collect();
            prop_assert_eq!(a, b);
        }
    }
}
