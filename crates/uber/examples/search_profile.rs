//! In-process timing of GEOSEARCH's core over a loaded set, without the network:
//! `cargo run --release -p casebook-uber --example search_profile -- [MEMBERS] [QUERIES]`.
//! Prints the mean time per search and how many members the answers held.

use std::time::Instant;

use bytes::Bytes;
use casebook_uber::geo::hash::score_of;
use casebook_uber::geo::search::{Query, Shape, ShapeKind, Sort, search};
use casebook_uber::geo::store::{AddMode, GeoStore, SortedGeoSet};
use rand::{Rng, SeedableRng};

fn main() {
    let mut args = std::env::args().skip(1);
    let members: usize = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("members"));
    let queries: usize = args.next().map_or(20_000, |a| a.parse().expect("queries"));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut set = SortedGeoSet::default();
    let start = Instant::now();
    for i in 0..members {
        let lon = -74.0 + rng.random::<f64>();
        let lat = 40.0 + rng.random::<f64>();
        let score = score_of(lon, lat).expect("in range") as f64;
        set.add(Bytes::from(format!("driver:{i}")), score, AddMode::Upsert);
    }
    println!("loaded {} members in {:?}", set.len(), start.elapsed());
    for (label, count) in [("COUNT 10 ASC", 10), ("no COUNT (all, unsorted)", 0)] {
        let start = Instant::now();
        let mut found = 0;
        for _ in 0..queries {
            let shape = Shape {
                lon: -74.0 + rng.random::<f64>(),
                lat: 40.0 + rng.random::<f64>(),
                kind: ShapeKind::Radius(2.0),
                conversion: 1000.0,
            };
            let sort = if count > 0 { Sort::Asc } else { Sort::None };
            found += search(
                &set,
                &Query {
                    shape,
                    sort,
                    count,
                    any: false,
                },
            )
            .len();
        }
        let per = start.elapsed() / queries as u32;
        println!(
            "2 km {label}: {per:?} per search, {:.1} members per answer",
            found as f64 / queries as f64
        );
    }
}
