//! Cities and the regions they belong to: which regional replica owns a point.
//!
//! A [`RegionMap`] is a list of cities (name, centre, radius, region) checked
//! against the topology's region names. [`RegionMap::region_of`] is total: a point
//! belongs to the region of the nearest city (by great-circle distance to the
//! centre, ties to the first listed), so a pickup in the middle of the Atlantic
//! still has an owner. [`RegionMap::city_of`] answers only inside a city's radius.

use serde::{Deserialize, Serialize};

use crate::index::LatLng;

/// Most cities one map may hold (a linear scan per lookup stays cheap).
pub const MAX_CITIES: usize = 256;

/// One city as configured (`[[uber.cities]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CityConfig {
    /// Its name, unique in the map (`[a-z0-9-]`, 1-64 characters).
    pub name: String,
    /// Centre latitude, degrees.
    pub lat: f64,
    /// Centre longitude, degrees.
    pub lng: f64,
    /// Radius in kilometres (what counts as "in" the city).
    pub radius_km: f64,
    /// The topology region it belongs to.
    pub region: String,
}

impl CityConfig {
    fn new(name: &str, lat: f64, lng: f64, radius_km: f64, region: &str) -> Self {
        Self {
            name: name.to_owned(),
            lat,
            lng,
            radius_km,
            region: region.to_owned(),
        }
    }
}

/// The default cities, on the default topology's regions (the workload and the
/// tests use San Francisco).
pub fn default_cities() -> Vec<CityConfig> {
    vec![
        CityConfig::new("san-francisco", 37.7749, -122.4194, 60.0, "us-east"),
        CityConfig::new("chicago", 41.8781, -87.6298, 60.0, "us-east"),
        CityConfig::new("new-york", 40.7128, -74.0060, 60.0, "us-east"),
        CityConfig::new("london", 51.5074, -0.1278, 60.0, "eu-west"),
        CityConfig::new("paris", 48.8566, 2.3522, 50.0, "eu-west"),
        CityConfig::new("mumbai", 19.0760, 72.8777, 50.0, "ap-south"),
        CityConfig::new("bangalore", 12.9716, 77.5946, 50.0, "ap-south"),
    ]
}

/// A validated city.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct City {
    pub name: String,
    pub lat: f64,
    pub lng: f64,
    pub radius_km: f64,
    pub region: String,
    #[serde(skip)]
    centre: LatLng,
}

/// Why a city list was refused; the message starts with the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegionError {
    #[error("cities: at least one city is needed")]
    NoCities,
    #[error("cities: {count} cities, at most {MAX_CITIES}")]
    TooManyCities { count: usize },
    #[error("cities[{index}].name: {name:?} must be 1-64 characters from [a-z0-9-]")]
    BadName { index: usize, name: String },
    #[error("cities[{index}].name: {name:?} is listed twice")]
    Duplicate { index: usize, name: String },
    #[error("cities[{index}].{field}: {reason}")]
    BadCoordinate {
        index: usize,
        field: &'static str,
        reason: String,
    },
    #[error("cities[{index}].radius_km: {radius} must be a finite number in (0, 2000]")]
    BadRadius { index: usize, radius: f64 },
    #[error("cities[{index}].region: {region:?} is not a topology region (known: {known})")]
    UnknownRegion {
        index: usize,
        region: String,
        known: String,
    },
}

/// Cities → regions, validated against the topology's regions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionMap {
    cities: Vec<City>,
    regions: Vec<String>,
}

impl RegionMap {
    /// Checks every city against `regions` (the topology's, in order).
    pub fn new(cities: &[CityConfig], regions: &[String]) -> Result<Self, RegionError> {
        if cities.is_empty() {
            return Err(RegionError::NoCities);
        }
        if cities.len() > MAX_CITIES {
            return Err(RegionError::TooManyCities {
                count: cities.len(),
            });
        }
        let mut out: Vec<City> = Vec::with_capacity(cities.len());
        for (index, c) in cities.iter().enumerate() {
            let name_ok = (1..=64).contains(&c.name.len())
                && c.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !name_ok {
                return Err(RegionError::BadName {
                    index,
                    name: c.name.clone(),
                });
            }
            if out.iter().any(|o| o.name == c.name) {
                return Err(RegionError::Duplicate {
                    index,
                    name: c.name.clone(),
                });
            }
            let centre = LatLng::new(c.lat, c.lng).map_err(|e| RegionError::BadCoordinate {
                index,
                field: if (-90.0..=90.0).contains(&c.lat) {
                    "lng"
                } else {
                    "lat"
                },
                reason: e.to_string(),
            })?;
            if !(c.radius_km.is_finite() && c.radius_km > 0.0 && c.radius_km <= 2000.0) {
                return Err(RegionError::BadRadius {
                    index,
                    radius: c.radius_km,
                });
            }
            if !regions.contains(&c.region) {
                return Err(RegionError::UnknownRegion {
                    index,
                    region: c.region.clone(),
                    known: regions.join(", "),
                });
            }
            out.push(City {
                name: c.name.clone(),
                lat: c.lat,
                lng: c.lng,
                radius_km: c.radius_km,
                region: c.region.clone(),
                centre,
            });
        }
        Ok(Self {
            cities: out,
            regions: regions.to_vec(),
        })
    }

    /// The cities, in configuration order.
    pub fn cities(&self) -> &[City] {
        &self.cities
    }

    /// The topology's regions, in order (a region may have no city).
    pub fn regions(&self) -> &[String] {
        &self.regions
    }

    /// The nearest city to `at` (ties: the first listed).
    pub fn nearest_city(&self, at: LatLng) -> &City {
        let mut best = &self.cities[0];
        let mut best_m = at.distance_m(&best.centre);
        for c in &self.cities[1..] {
            let d = at.distance_m(&c.centre);
            if d < best_m {
                best = c;
                best_m = d;
            }
        }
        best
    }

    /// The region owning `at`: its nearest city's. Total.
    pub fn region_of(&self, at: LatLng) -> &str {
        &self.nearest_city(at).region
    }

    /// The city `at` is in (within its radius), if any.
    pub fn city_of(&self, at: LatLng) -> Option<&City> {
        let c = self.nearest_city(at);
        (at.distance_m(&c.centre) <= c.radius_km * 1000.0).then_some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions() -> Vec<String> {
        ["us-east", "eu-west", "ap-south"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }

    fn at(lat: f64, lng: f64) -> LatLng {
        LatLng::new(lat, lng).unwrap()
    }

    #[test]
    fn points_go_to_the_region_of_the_nearest_city() {
        let map = RegionMap::new(&default_cities(), &regions()).unwrap();
        assert_eq!(map.region_of(at(37.78, -122.41)), "us-east");
        assert_eq!(
            map.city_of(at(37.78, -122.41)).unwrap().name,
            "san-francisco"
        );
        assert_eq!(map.region_of(at(51.5, -0.1)), "eu-west");
        assert_eq!(map.region_of(at(19.1, 72.9)), "ap-south");
        // Mid-Atlantic: in no city, still owned (nearest is New York... or London).
        let mid = at(45.0, -40.0);
        assert!(map.city_of(mid).is_none());
        assert!(regions().iter().any(|r| r == map.region_of(mid)));
        // Reykjavik is closer to London than to New York.
        assert_eq!(map.region_of(at(64.1, -21.9)), "eu-west");
    }

    #[test]
    fn bad_city_lists_are_refused_naming_the_field() {
        let r = regions();
        assert_eq!(RegionMap::new(&[], &r).unwrap_err(), RegionError::NoCities);
        let mut c = default_cities();
        c[1].name = "san-francisco".into();
        let e = RegionMap::new(&c, &r).unwrap_err().to_string();
        assert!(
            e.starts_with("cities[1].name:") && e.contains("twice"),
            "{e}"
        );
        let mut c = default_cities();
        c[0].region = "mars".into();
        let e = RegionMap::new(&c, &r).unwrap_err().to_string();
        assert!(
            e.starts_with("cities[0].region:") && e.contains("us-east, eu-west, ap-south"),
            "{e}"
        );
        let mut c = default_cities();
        c[2].lat = 91.0;
        let e = RegionMap::new(&c, &r).unwrap_err().to_string();
        assert!(e.starts_with("cities[2].lat:"), "{e}");
        let mut c = default_cities();
        c[2].lng = f64::NAN;
        let e = RegionMap::new(&c, &r).unwrap_err().to_string();
        assert!(e.starts_with("cities[2].lng:"), "{e}");
        let mut c = default_cities();
        c[3].radius_km = 0.0;
        let e = RegionMap::new(&c, &r).unwrap_err().to_string();
        assert!(e.starts_with("cities[3].radius_km:"), "{e}");
        let mut c = default_cities();
        c[3].name = "London".into();
        let e = RegionMap::new(&c, &r).unwrap_err().to_string();
        assert!(e.starts_with("cities[3].name:"), "{e}");
    }
}
