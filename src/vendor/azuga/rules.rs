//! What Azuga accepts, as JSON geoclock sends it: geomarks ("geofences")
//! and TrackMe links. Pure. The simulator enforces the same rules, so a
//! geomark the sink checks locally is one the API takes, and one bad fence
//! never sinks a bulk call.
//!
//! - Geomarks are circles (`fenceType: "Circular"`), radius at most ten
//!   miles ([`crate::geo::MAX_RADIUS_M`]), a name, coordinates in range. A
//!   polygon fence is sent as the smallest circle around its vertices'
//!   bounding box centre (the processor still tests the exact polygon).
//! - A TrackMe link lives until an hour after the appointment window (an
//!   hour at least; a day when there is no window). It is found again by
//!   vehicle, destination and expiry ([`trackme_matches`]): Azuga gives a
//!   link no key of ours.

use serde_json::{json, Value};

use crate::engine::{FenceChange, ServiceLink};
use crate::geo::{haversine_m, LatLon, Shape, MAX_RADIUS_M};
use crate::model::Ts;

/// The circle Azuga is sent for `shape`: (centre, radius m).
pub fn circle_of(shape: &Shape) -> (LatLon, f64) {
    match shape {
        Shape::Circle { center, radius_m } => (*center, *radius_m),
        Shape::Polygon { ring } => {
            let (mut lo, mut hi) = (LatLon::new(90.0, 180.0), LatLon::new(-90.0, -180.0));
            for p in ring {
                lo = LatLon::new(lo.lat.min(p.lat), lo.lon.min(p.lon));
                hi = LatLon::new(hi.lat.max(p.lat), hi.lon.max(p.lon));
            }
            let c = LatLon::new((lo.lat + hi.lat) / 2.0, (lo.lon + hi.lon) / 2.0);
            let r = ring.iter().map(|p| haversine_m(c, *p)).fold(0.0, f64::max);
            (c, (r * 10.0).ceil() / 10.0)
        }
    }
}

/// The geomark for a fence (without `id`).
pub fn geomark(f: &FenceChange) -> Value {
    let (c, r) = circle_of(&f.shape);
    json!({
        "name": f.name, "latitude": c.lat, "longitude": c.lon, "address": "",
        "fenceType": "Circular", "geofenceRadius": r, "radiusUnit": "meters", "alertType": "BOTH",
        "activationDate": f.active_from.millis(), "inActivationDate": f.active_to.millis(),
    })
}

/// Whether a geomark Azuga holds is the one `want` describes.
pub fn same_geomark(remote: &Value, want: &Value) -> bool {
    ["name", "latitude", "longitude", "geofenceRadius", "activationDate", "inActivationDate"]
        .iter()
        .all(|k| remote.get(*k) == want.get(*k))
}

/// Whether a geomark's name is the fence of `appointment`: names are
/// `{locationName} | {jobNumber} | {appointmentId}`, and the location's
/// name may have changed since the geomark was made.
pub fn names_appointment(name: &str, appointment: &str) -> bool {
    name.rsplit_once(" | ").is_some_and(|(_, id)| id == appointment)
}

/// Checks one geomark; the reason Azuga would refuse it.
pub fn check_geomark(g: &Value) -> Result<(), String> {
    let num = |k: &str| g.get(k).and_then(Value::as_f64);
    if g.get("name").and_then(Value::as_str).is_none_or(|n| n.trim().is_empty()) {
        return Err("name is required".into());
    }
    match (num("latitude"), num("longitude")) {
        (Some(la), Some(lo)) if (-90.0..=90.0).contains(&la) && (-180.0..=180.0).contains(&lo) => {}
        _ => return Err("latitude/longitude missing or out of range".into()),
    }
    if g.get("fenceType").and_then(Value::as_str) != Some("Circular") {
        return Err("fenceType must be Circular".into());
    }
    let unit = match g.get("radiusUnit").and_then(Value::as_str).unwrap_or("meters") {
        "meters" | "m" => 1.0,
        "feet" | "ft" => 0.3048,
        "km" => 1000.0,
        "miles" | "mi" => 1609.344,
        other => return Err(format!("radiusUnit {other:?} is not meters, feet, km or miles")),
    };
    match num("geofenceRadius") {
        Some(r) if r > 0.0 && r * unit <= MAX_RADIUS_M + 1e-6 => Ok(()),
        _ => Err("geofenceRadius must be above 0 and at most 10 miles".into()),
    }
}

/// When a Service Link's TrackMe link should stop working, if it is made
/// at `now`: an hour after the window ends (an hour from now at least; a
/// day from now without a window).
pub fn trackme_expiry(link: &ServiceLink, now: Ts) -> Ts {
    let until = link.window_end.map_or(now.plus_millis(86_400_000), |e| e.plus_millis(3_600_000));
    Ts(until.millis().max(now.millis() + 3_600_000))
}

/// The TrackMe request for a Service Link made at `now`.
pub fn trackme_request(link: &ServiceLink, now: Ts) -> Value {
    let ttl_s = (trackme_expiry(link, now).millis() - now.millis()) / 1000;
    let mut body = json!({
        "vehicleId": link.vehicle, "ttl": ttl_s,
        "message": format!("{} is on the way to {}", link.tech_name, link.location_name),
    });
    // Without a destination the page shows the vehicle only.
    if let Some(d) = link.destination {
        body["latitude"] = json!(d.lat);
        body["longitude"] = json!(d.lon);
        body["destLatitude"] = json!(d.lat);
        body["destLongitude"] = json!(d.lon);
    }
    body
}

/// Whether a TrackMe link Azuga holds (`vehicleId`, `destLatitude`,
/// `destLongitude`, `expiresAt` ms, `createdAt` ms) is the one made for
/// `link`: same vehicle and destination (or both none), and expiring when this link would
/// (an hour after the window, within five minutes, or an hour after it was
/// made when that is later) — or, without a window, made within a day of
/// going En Route (not more than [`CLOCK_SKEW_MS`] before it).
///
/// With a window, Azuga's `createdAt` is not compared with ServiceTrade's
/// En Route time: the two come from different clocks, and a vendor clock
/// running behind ours would hide a link we made and double it.
pub fn trackme_matches(item: &Value, link: &ServiceLink) -> bool {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let same_vehicle = text(&item["vehicleId"]) == link.vehicle.as_str();
    let close = |k: &str, want: f64| item[k].as_f64().is_some_and(|v| (v - want).abs() < 1e-7);
    let same_destination = match link.destination {
        Some(d) => close("destLatitude", d.lat) && close("destLongitude", d.lon),
        None => item["destLatitude"].is_null() && item["destLongitude"].is_null(),
    };
    let created = item["createdAt"].as_i64().unwrap_or(i64::MIN);
    let expiry_fits = match (link.window_end, item["expiresAt"].as_i64()) {
        (Some(end), Some(exp)) => {
            let want = end.millis() + 3_600_000;
            (exp - want).abs() <= 300_000 || (exp > want && exp - created <= 3_600_000 + 300_000)
        }
        (None, _) => {
            let enroute = link.enroute_at.millis();
            created >= enroute - CLOCK_SKEW_MS && created <= enroute + 86_400_000
        }
        (Some(_), None) => false,
    };
    same_vehicle && same_destination && expiry_fits
}

/// How far Azuga's clock may be from the one that stamped the En Route
/// clock event when a link without a window is matched by its `createdAt`.
pub const CLOCK_SKEW_MS: i64 = 10 * 60_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Id;

    #[test]
    fn polygons_go_to_azuga_as_the_circle_around_them() {
        let ring = vec![
            LatLon::new(35.0, -80.0),
            LatLon::new(35.0, -79.99),
            LatLon::new(35.01, -79.99),
            LatLon::new(35.01, -80.0),
        ];
        let (c, r) = circle_of(&Shape::Polygon { ring: ring.clone() });
        assert!((c.lat - 35.005).abs() < 1e-9 && (c.lon + 79.995).abs() < 1e-9);
        for p in ring {
            assert!(haversine_m(c, p) <= r);
        }
        let (c2, r2) = circle_of(&Shape::Circle { center: LatLon::new(1.0, 2.0), radius_m: 150.0 });
        assert_eq!((c2, r2), (LatLon::new(1.0, 2.0), 150.0));
    }

    #[test]
    fn geomark_names_are_matched_by_their_appointment() {
        assert!(names_appointment("Plant 7 | J-1001 | 7001", "7001"));
        assert!(names_appointment("A | B | C | 7001", "7001"));
        assert!(!names_appointment("Plant 7 | J-1001 | 17001", "7001"));
        assert!(!names_appointment("7001", "7001"));
    }

    fn link() -> ServiceLink {
        ServiceLink {
            user: Id::number(11),
            tech_name: "Ann Lee".into(),
            vehicle: Id::text("v1"),
            vehicle_name: "Truck 1".into(),
            to: "fm@plant.example".into(),
            location_name: "Plant 7".into(),
            job_number: None,
            window_start: Some(Ts::parse("2026-11-28T14:00:00Z").unwrap()),
            window_end: Some(Ts::parse("2026-11-28T16:00:00Z").unwrap()),
            destination: Some(LatLon::new(35.2271, -80.8431)),
            timezone: None,
            enroute_at: Ts::parse("2026-11-28T13:10:00Z").unwrap(),
        }
    }

    #[test]
    fn a_trackme_link_is_found_again_by_vehicle_destination_and_window() {
        let l = link();
        let now = Ts::parse("2026-11-28T13:11:00Z").unwrap();
        let req = trackme_request(&l, now);
        assert_eq!(req["ttl"].as_i64(), Some(3 * 3600 + 49 * 60));
        let mut held = req.clone();
        held["createdAt"] = json!(now.millis());
        held["expiresAt"] = json!(now.millis() + req["ttl"].as_i64().unwrap() * 1000);
        assert!(trackme_matches(&held, &l));
        // A retry a minute later makes the same link: found.
        let later = Ts(now.millis() + 60_000);
        held["createdAt"] = json!(later.millis());
        assert!(trackme_matches(&held, &l));
        let mut other = held.clone();
        other["vehicleId"] = json!("v2");
        assert!(!trackme_matches(&other, &l));
        let mut earlier = held.clone();
        earlier["createdAt"] = json!(l.enroute_at.millis() - 86_400_000);
        earlier["expiresAt"] = json!(l.window_end.unwrap().millis() + 3_600_000 - 86_400_000);
        assert!(!trackme_matches(&earlier, &l), "a link for yesterday's window is not this one");
        // Azuga's clock four minutes behind the one that stamped En Route.
        let mut skewed = held.clone();
        skewed["createdAt"] = json!(now.millis() - 240_000);
        skewed["expiresAt"] = json!(now.millis() - 240_000 + req["ttl"].as_i64().unwrap() * 1000);
        assert!(trackme_matches(&skewed, &l), "found whatever Azuga's clock says");
        let mut open = l.clone();
        open.window_end = None;
        let mut made = held.clone();
        made["createdAt"] = json!(l.enroute_at.millis() - 5 * 60_000);
        assert!(trackme_matches(&made, &open), "no window: made within the skew of En Route");
        made["createdAt"] = json!(l.enroute_at.millis() - 3_600_000);
        assert!(!trackme_matches(&made, &open), "no window: an earlier trip's link is not this one");
        // An hour at least: created after the window closed.
        let late = Ts::parse("2026-11-28T18:00:00Z").unwrap();
        assert_eq!(trackme_request(&l, late)["ttl"].as_i64(), Some(3600));
    }

    #[test]
    fn a_link_without_a_destination_is_made_and_found_without_one() {
        let mut l = link();
        l.destination = None;
        let now = Ts::parse("2026-11-28T13:11:00Z").unwrap();
        let req = trackme_request(&l, now);
        for k in ["latitude", "longitude", "destLatitude", "destLongitude"] {
            assert!(req.get(k).is_none(), "{k} in {req}");
        }
        let mut held = req.clone();
        held["createdAt"] = json!(now.millis());
        held["expiresAt"] = json!(now.millis() + req["ttl"].as_i64().unwrap() * 1000);
        assert!(trackme_matches(&held, &l));
        assert!(!trackme_matches(&held, &link()), "a link with a destination is another link");
        let with = trackme_request(&link(), now);
        let mut other = with.clone();
        other["createdAt"] = json!(now.millis());
        other["expiresAt"] = held["expiresAt"].clone();
        assert!(!trackme_matches(&other, &l), "and the other way round");
    }

    #[test]
    fn geomarks_over_ten_miles_or_unnamed_are_refused() {
        let mut g =
            json!({"name": "x", "latitude": 1.0, "longitude": 2.0, "fenceType": "Circular", "geofenceRadius": 100.0});
        assert!(check_geomark(&g).is_ok());
        g["geofenceRadius"] = json!(20_000.0);
        assert!(check_geomark(&g).is_err());
        g["geofenceRadius"] = json!(10.0);
        g["radiusUnit"] = json!("miles");
        assert!(check_geomark(&g).is_ok());
        g["name"] = json!(" ");
        assert!(check_geomark(&g).is_err());
    }
}
