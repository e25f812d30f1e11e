//! Real trips: pickups and dropoffs read from a CSV, and the city box around them.

use super::generators::CityBox;
use super::{WorkloadError, bad};
use crate::index::LatLng;

/// Rows read from a trips CSV at most.
pub const MAX_TRIPS: usize = 10_000_000;

/// Splits one CSV line, honouring double quotes (`""` inside quotes is a quote).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// The trips of a CSV with `pickup_latitude`, `pickup_longitude`,
/// `dropoff_latitude` and `dropoff_longitude` columns (the Chicago taxi sample's
/// names), at most `max` of them. Rows with an empty, unparsable or out-of-range
/// coordinate are skipped — the sample leaves them empty when the trip left
/// Chicago; the count of skipped rows is returned with the trips.
pub fn parse_trips_csv(
    text: &str,
    max: usize,
) -> Result<(Vec<(LatLng, LatLng)>, usize), WorkloadError> {
    let max = max.min(MAX_TRIPS);
    let mut lines = text.lines();
    let header = csv_fields(lines.next().unwrap_or_default());
    let column = |name: &'static str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| bad("trips_csv", format!("no {name} column in the header")))
    };
    let cols = [
        column("pickup_latitude")?,
        column("pickup_longitude")?,
        column("dropoff_latitude")?,
        column("dropoff_longitude")?,
    ];
    let mut trips = Vec::new();
    let mut skipped = 0;
    for line in lines {
        if trips.len() >= max {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let fields = csv_fields(line);
        let v: Vec<Option<f64>> = cols
            .iter()
            .map(|&c| fields.get(c).and_then(|f| f.trim().parse::<f64>().ok()))
            .collect();
        let point = |lat: Option<f64>, lng: Option<f64>| LatLng::new(lat?, lng?).ok();
        match (point(v[0], v[1]), point(v[2], v[3])) {
            (Some(pickup), Some(dropoff)) => trips.push((pickup, dropoff)),
            _ => skipped += 1,
        }
    }
    if trips.is_empty() {
        return Err(bad(
            "trips_csv",
            format!("no usable trip ({skipped} rows skipped)"),
        ));
    }
    Ok((trips, skipped))
}

impl CityBox {
    /// The smallest box holding every pickup and dropoff, widened by ~1 km.
    pub fn around(trips: &[(LatLng, LatLng)]) -> Option<Self> {
        let mut points = trips.iter().flat_map(|&(a, b)| [a, b]);
        let first = points.next()?;
        let mut b = Self {
            south: first.lat(),
            north: first.lat(),
            west: first.lon(),
            east: first.lon(),
        };
        for p in points {
            b.south = b.south.min(p.lat());
            b.north = b.north.max(p.lat());
            b.west = b.west.min(p.lon());
            b.east = b.east.max(p.lon());
        }
        Some(Self {
            south: (b.south - 0.01).max(-90.0),
            north: (b.north + 0.01).min(90.0),
            west: (b.west - 0.01).max(-180.0),
            east: (b.east + 0.01).min(180.0),
        })
    }
}
