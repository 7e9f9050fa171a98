//! A tenant's engine settings, with the defaults of the integration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::geo::{LatLon, Shape, MAX_RADIUS_M};

/// Per-tenant rules. Every field has a default, so `{}` is a valid value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Arrival counts within `[windowStart − h, windowEnd + h]`; fences are
    /// removed from Azuga once event time passes `windowEnd + h`.
    pub window_hours: f64,
    /// Radius of the circle fence around a location without its own polygon.
    pub fence_radius_m: f64,
    /// When > 0, arrival needs inside pings spanning this long with no
    /// outside ping between them; the arrival time is the first of them.
    pub min_dwell_s: u64,
    /// Exit hysteresis: leaving means a ping outside the fence grown by this.
    pub exit_buffer_m: f64,
    /// Email the Service Link when a technician clocks En Route in.
    pub service_link: bool,
    /// Arrival needs an open En Route clock-in at the ping's time.
    pub arrival_requires_enroute: bool,
    /// Clock On Site out when the vehicle leaves the (buffered) fence.
    pub auto_clock_out_on_exit: bool,
    /// Exit dwell: the vehicle's pings must stay beyond the exit buffer for
    /// this long (by ping time) before an automatic On Site clock-out, so a
    /// one-ping GPS jump does not end a visit; the clock-out is at the first
    /// of those pings. 0 clocks out on the first ping beyond the buffer.
    pub min_exit_dwell_s: u64,
    /// Ignore pings whose reported accuracy is worse than this (metres).
    pub max_accuracy_m: Option<f64>,
    /// Days an appointment's state (fence record, technicians' evidence) is
    /// kept after `windowEnd + window_hours` + 24 h; the Activity Report
    /// covers this span. Bounds the processor's state as days pass.
    pub retention_days: u32,
    /// Polygon fences from the tenants file: location id → its ring of
    /// `[lat, lon]` vertices (3 to 1000, not closed, not self-crossing).
    /// Such a location's appointments are fenced by the polygon, not by
    /// the circle around the location's point; Azuga, whose geomarks are
    /// circles, is sent the circle that covers it (the report says so).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub location_polygons: BTreeMap<String, Vec<[f64; 2]>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            window_hours: 8.0,
            fence_radius_m: 200.0,
            min_dwell_s: 0,
            exit_buffer_m: 50.0,
            service_link: true,
            arrival_requires_enroute: true,
            auto_clock_out_on_exit: false,
            min_exit_dwell_s: 120,
            max_accuracy_m: None,
            retention_days: 30,
            location_polygons: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum SettingsError {
    #[error("settings.{field} = {value} is out of range ({expected})")]
    OutOfRange { field: &'static str, value: f64, expected: &'static str },
    #[error("settings.location_polygons.{location}: {reason}")]
    Polygon { location: String, reason: String },
}

impl Settings {
    /// Checks ranges; the engine refuses settings that fail this.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let check = |field, value: f64, ok: bool, expected| {
            if ok && value.is_finite() {
                Ok(())
            } else {
                Err(SettingsError::OutOfRange { field, value, expected })
            }
        };
        check("window_hours", self.window_hours, (0.0..=24.0 * 30.0).contains(&self.window_hours), "0 to 720")?;
        check(
            "fence_radius_m",
            self.fence_radius_m,
            self.fence_radius_m > 0.0 && self.fence_radius_m <= MAX_RADIUS_M,
            "above 0, at most 16093.44 (10 miles)",
        )?;
        check(
            "exit_buffer_m",
            self.exit_buffer_m,
            (0.0..=MAX_RADIUS_M).contains(&self.exit_buffer_m),
            "0 to 16093.44",
        )?;
        check("min_dwell_s", self.min_dwell_s as f64, self.min_dwell_s <= 86_400, "0 to 86400")?;
        check("min_exit_dwell_s", self.min_exit_dwell_s as f64, self.min_exit_dwell_s <= 86_400, "0 to 86400")?;
        let days = self.retention_days;
        check("retention_days", days as f64, (1..=3650).contains(&days), "1 to 3650")?;
        if let Some(a) = self.max_accuracy_m {
            check("max_accuracy_m", a, a > 0.0, "above 0")?;
        }
        for (location, ring) in &self.location_polygons {
            let shape = Shape::Polygon { ring: ring.iter().map(|[lat, lon]| LatLon::new(*lat, *lon)).collect() };
            shape
                .validate()
                .map_err(|e| SettingsError::Polygon { location: location.clone(), reason: e.to_string() })?;
        }
        Ok(())
    }

    /// The polygon the tenants file gives `location`, if any (validated).
    pub fn location_polygon(&self, location: &str) -> Option<Shape> {
        let ring = self.location_polygons.get(location)?;
        Some(Shape::Polygon { ring: ring.iter().map(|[lat, lon]| LatLon::new(*lat, *lon)).collect() })
    }

    pub fn window_ms(&self) -> i64 {
        (self.window_hours * 3_600_000.0).round() as i64
    }

    pub fn retention_ms(&self) -> i64 {
        self.retention_days as i64 * 86_400_000
    }

    /// How long after an appointment's window ends the connectors still
    /// mirror it: past the engine's retirement of it (`window_hours`, a
    /// day and `retention_days` after it, [`crate::engine::retention`])
    /// and its forgetting of the retirement (`retention_days` later). An appointment older
    /// than that, changed or listed again, is not published (it would be
    /// revived as a new visit).
    pub fn mirror_horizon_ms(&self) -> i64 {
        self.window_ms() + 86_400_000 + 2 * self.retention_ms()
    }

    pub fn min_dwell_ms(&self) -> i64 {
        self.min_dwell_s as i64 * 1000
    }

    pub fn min_exit_dwell_ms(&self) -> i64 {
        self.min_exit_dwell_s as i64 * 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ranges_checked() {
        assert!(Settings::default().validate().is_ok());
        let bad = Settings { fence_radius_m: 20_000.0, ..Settings::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("fence_radius_m"));
        let nan = Settings { window_hours: f64::NAN, ..Settings::default() };
        assert!(nan.validate().is_err());
        let mut poly = Settings::default();
        poly.location_polygons.insert("5".into(), vec![[35.0, -80.0], [35.001, -80.0], [35.001, -80.001]]);
        assert!(poly.validate().is_ok());
        assert!(poly.location_polygon("5").is_some() && poly.location_polygon("6").is_none());
        poly.location_polygons.insert("6".into(), vec![[35.0, -80.0], [35.001, -80.0]]);
        let e = poly.validate().unwrap_err().to_string();
        assert!(e.starts_with("settings.location_polygons.6: "), "{e}");
    }
}
