//! The map as GeoJSON (RFC 7946), which the page draws and a GIS tool can
//! open. Pure.
//!
//! Invariants:
//! - positions are `[longitude, latitude]` (RFC 7946 §3.1.1), rounded to
//!   7 decimals (about 1 cm);
//! - polygon rings are closed (first position repeated last) and exterior
//!   rings are counterclockwise (the right-hand rule, §3.1.6); a circle
//!   fence is a 64-gon whose vertices lie on the circle, with its exact
//!   `center` and `radius_m` in the properties (GeoJSON has no circles);
//! - every feature has a string `id` (`fence:ID`, `vehicle:ID`,
//!   `breadcrumb:ID`) and `properties.kind` (`fence`, `vehicle`,
//!   `breadcrumb`); the collection's foreign member `geoclock` carries the
//!   tenant, day, event time, count of late appointments and the view's
//!   `seq` (the live stream's order).
//!
//! Not handled: a fence crossing the antimeridian is not cut in two (§3.1.9);
//! service areas do not reach it.

use serde_json::{json, Map, Value};

use super::track::Fix;
use super::view::{FenceView, TenantView, VehicleView};
use crate::geo::{LatLon, Shape, EARTH_RADIUS_M};
use crate::model::Id;

/// Vertices of a circle fence's polygon.
pub const CIRCLE_VERTICES: usize = 64;

/// A vehicle's breadcrumbs, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Trail {
    pub vehicle: Id,
    pub fixes: Vec<Fix>,
}

fn round7(x: f64) -> f64 {
    (x * 1e7).round() / 1e7
}

fn position(p: LatLon) -> Value {
    json!([round7(p.lon), round7(p.lat)])
}

/// Twice the signed area of a ring in the lon/lat plane (shoelace):
/// positive when counterclockwise.
pub fn signed_area2(ring: &[[f64; 2]]) -> f64 {
    ring.iter().zip(ring.iter().cycle().skip(1)).map(|(a, b)| a[0] * b[1] - b[0] * a[1]).sum()
}

/// A closed, counterclockwise `[lon, lat]` ring from vertices in any
/// order and closed or not.
pub fn exterior_ring(vertices: &[LatLon]) -> Vec<[f64; 2]> {
    let mut ring: Vec<[f64; 2]> = vertices.iter().map(|p| [round7(p.lon), round7(p.lat)]).collect();
    if ring.len() > 1 && ring.first() == ring.last() {
        ring.pop();
    }
    if signed_area2(&ring) < 0.0 {
        ring.reverse();
    }
    if let Some(first) = ring.first().copied() {
        ring.push(first);
    }
    ring
}

/// The point `distance_m` from `from` on the initial bearing `bearing_deg`
/// (great circle on the sphere of [`EARTH_RADIUS_M`]).
pub fn destination(from: LatLon, bearing_deg: f64, distance_m: f64) -> LatLon {
    let (p1, l1) = (from.lat.to_radians(), from.lon.to_radians());
    let (b, d) = (bearing_deg.to_radians(), distance_m / EARTH_RADIUS_M);
    let p2 = (p1.sin() * d.cos() + p1.cos() * d.sin() * b.cos()).asin();
    let l2 = l1 + (b.sin() * d.sin() * p1.cos()).atan2(d.cos() - p1.sin() * p2.sin());
    LatLon::new(p2.to_degrees(), (l2.to_degrees() + 540.0).rem_euclid(360.0) - 180.0)
}

/// The polygon drawn for a circle.
pub fn circle_vertices(center: LatLon, radius_m: f64) -> Vec<LatLon> {
    (0..CIRCLE_VERTICES).map(|k| destination(center, 360.0 * k as f64 / CIRCLE_VERTICES as f64, radius_m)).collect()
}

fn geometry_of(shape: &Shape) -> Value {
    let vertices = match shape {
        Shape::Circle { center, radius_m } => circle_vertices(*center, *radius_m),
        Shape::Polygon { ring } => ring.clone(),
    };
    json!({"type": "Polygon", "coordinates": [exterior_ring(&vertices)]})
}

fn object(v: impl serde::Serialize) -> Map<String, Value> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// A fence and its appointment.
pub fn fence_feature(f: &FenceView) -> Value {
    let mut props = object(f);
    props.remove("shape");
    props.insert("kind".into(), json!("fence"));
    match &f.shape {
        Shape::Circle { center, radius_m } => {
            props.insert("shape".into(), json!("circle"));
            props.insert("center".into(), position(*center));
            props.insert("radius_m".into(), json!(radius_m));
        }
        Shape::Polygon { .. } => {
            props.insert("shape".into(), json!("polygon"));
            props.insert("center".into(), position(f.shape.center()));
        }
    }
    json!({"type": "Feature", "id": format!("fence:{}", f.appointment), "geometry": geometry_of(&f.shape), "properties": props})
}

/// A vehicle's newest position.
pub fn vehicle_feature(v: &VehicleView) -> Value {
    let mut props = object(v);
    props.remove("lat");
    props.remove("lon");
    props.insert("kind".into(), json!("vehicle"));
    json!({
        "type": "Feature",
        "id": format!("vehicle:{}", v.id),
        "geometry": {"type": "Point", "coordinates": position(LatLon::new(v.lat, v.lon))},
        "properties": props,
    })
}

/// A vehicle's breadcrumbs as a line (a single fix is a point), with the
/// fixes' times beside the coordinates.
pub fn trail_feature(t: &Trail) -> Value {
    let coords: Vec<Value> = t.fixes.iter().map(|f| position(f.pos())).collect();
    let geometry = match coords.len() {
        1 => json!({"type": "Point", "coordinates": coords[0]}),
        _ => json!({"type": "LineString", "coordinates": coords}),
    };
    let times: Vec<String> = t.fixes.iter().map(|f| f.time.to_rfc3339()).collect();
    json!({
        "type": "Feature",
        "id": format!("breadcrumb:{}", t.vehicle),
        "geometry": geometry,
        "properties": {"kind": "breadcrumb", "vehicle": t.vehicle, "times": times},
    })
}

/// The whole view, with the given breadcrumbs (trails with no fix are
/// left out).
pub fn feature_collection(view: &TenantView, trails: &[Trail]) -> Value {
    let mut features: Vec<Value> = view.fences.iter().map(fence_feature).collect();
    features.extend(view.vehicles.iter().map(vehicle_feature));
    features.extend(trails.iter().filter(|t| !t.fixes.is_empty()).map(trail_feature));
    json!({
        "type": "FeatureCollection",
        "geoclock": {"tenant": view.tenant, "day": view.day.to_string(), "now": view.now, "late": view.late, "seq": view.seq},
        "features": features,
    })
}

#[cfg(test)]
#[path = "geojson_tests.rs"]
mod tests;
