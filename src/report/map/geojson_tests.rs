//! The GeoJSON checked against RFC 7946 by independent implementations:
//! the `geojson` crate parses it, the `geo` crate judges the winding.

use std::collections::BTreeSet;

use ::geo::Winding;

use super::*;
use crate::geo::haversine_m;
use crate::model::{MapSettings, Ts};
use crate::report::map::view::tests::{drive, engine, view_after, SCENARIO};

fn collection() -> Value {
    let mut e = engine(SCENARIO);
    let pings = drive("v1", 35.2271, -80.8431, 10_000.0, 50.0, Ts::parse("2026-11-28T13:40:00Z").unwrap(), 10);
    let view = view_after(&mut e, &pings, &MapSettings::default());
    let trail = Trail { vehicle: Id::text("v1"), fixes: pings.iter().map(Fix::from).collect() };
    feature_collection(&view, &[trail])
}

fn ring_of(feature: &Value) -> Vec<[f64; 2]> {
    let ring = &feature["geometry"]["coordinates"][0];
    ring.as_array().unwrap().iter().map(|p| [p[0].as_f64().unwrap(), p[1].as_f64().unwrap()]).collect()
}

#[test]
fn the_collection_is_rfc_7946_geojson() {
    let fc = collection();
    let text = serde_json::to_string(&fc).unwrap();
    let parsed: geojson::GeoJson = text.parse().expect("valid GeoJSON");
    let geojson::GeoJson::FeatureCollection(parsed) = parsed else { panic!("a FeatureCollection") };
    assert_eq!(parsed.features.len(), fc["features"].as_array().unwrap().len());

    let features = fc["features"].as_array().unwrap();
    let ids: BTreeSet<&str> = features.iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), features.len(), "ids are unique");
    let kinds: BTreeSet<&str> = features.iter().map(|f| f["properties"]["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, BTreeSet::from(["breadcrumb", "fence", "vehicle"]));
    for f in features {
        let mut positions: Vec<[f64; 2]> = Vec::new();
        let g = &f["geometry"];
        match g["type"].as_str().unwrap() {
            "Polygon" => {
                let ring = ring_of(f);
                assert!(ring.len() >= 4 && ring.first() == ring.last(), "a closed linear ring: {f}");
                let line = ::geo::LineString::from(ring.iter().map(|p| (p[0], p[1])).collect::<Vec<_>>());
                assert!(line.is_ccw(), "exterior rings counterclockwise (right-hand rule): {f}");
                assert_eq!(g["coordinates"].as_array().unwrap().len(), 1, "no holes");
                positions = ring;
            }
            "Point" => positions.push([g["coordinates"][0].as_f64().unwrap(), g["coordinates"][1].as_f64().unwrap()]),
            "LineString" => {
                for p in g["coordinates"].as_array().unwrap() {
                    positions.push([p[0].as_f64().unwrap(), p[1].as_f64().unwrap()]);
                }
                assert_eq!(
                    f["properties"]["times"].as_array().unwrap().len(),
                    positions.len(),
                    "a time per breadcrumb"
                );
            }
            other => panic!("unexpected geometry {other}"),
        }
        for [lon, lat] in positions {
            assert!((-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat), "{f}");
        }
    }
}

#[test]
fn positions_are_longitude_then_latitude() {
    let fc = collection();
    let features = fc["features"].as_array().unwrap();
    let plant = features.iter().find(|f| f["id"] == "fence:7001").unwrap();
    assert_eq!(plant["properties"]["center"], json!([-80.8431, 35.2271]));
    assert_eq!(plant["properties"]["radius_m"], json!(200.0));
    assert_eq!(plant["properties"]["label"], "Plant 7 | J-1 | 7001");
    assert_eq!(plant["properties"]["state"], "en_route");
    let centre = LatLon::new(35.2271, -80.8431);
    for [lon, lat] in ring_of(plant) {
        let d = haversine_m(centre, LatLon::new(lat, lon));
        assert!((d - 200.0).abs() < 0.1, "every vertex on the circle: {d}");
    }
    // The Mill's polygon was given clockwise as [lat, lon] pairs.
    let mill = features.iter().find(|f| f["id"] == "fence:7003").unwrap();
    let ring = ring_of(mill);
    assert!(ring.contains(&[-80.70, 35.30]) && ring.contains(&[-80.69, 35.31]));
    assert!(signed_area2(&ring) > 0.0);
    let truck = features.iter().find(|f| f["id"] == "vehicle:v1").unwrap();
    let c = &truck["geometry"]["coordinates"];
    assert!(c[0].as_f64().unwrap() < -80.0 && c[1].as_f64().unwrap() > 35.0, "{c}");
    assert_eq!(truck["properties"]["tech_name"], "Ann Lee");
    assert_eq!(fc["geoclock"]["day"], "2026-11-28");
}

#[test]
fn rings_are_closed_and_turned_counterclockwise_whatever_they_were_given() {
    let square = [LatLon::new(0.0, 0.0), LatLon::new(1.0, 0.0), LatLon::new(1.0, 1.0), LatLon::new(0.0, 1.0)];
    let cw = exterior_ring(&square);
    assert_eq!(cw.len(), 5);
    assert!(signed_area2(&cw) > 0.0);
    let mut ccw_closed: Vec<LatLon> = square.iter().rev().copied().collect();
    ccw_closed.push(ccw_closed[0]);
    assert_eq!(exterior_ring(&ccw_closed).len(), 5, "an already closed ring is not closed twice");
    assert!(signed_area2(&exterior_ring(&ccw_closed)) > 0.0);
    let p = destination(LatLon::new(0.0, 179.9999), 90.0, 1000.0);
    assert!(p.lon < -179.99, "wraps into [-180, 180]: {p:?}");
}
