//! A tenant's live-map settings (`[tenants.map]` in the tenants file): the
//! raster tiles behind the map, when a fix counts as stale, and how the
//! running-late estimate reads distance and speed.

use serde::{Deserialize, Serialize};

/// Per-tenant map settings. Every field has a default, so `{}` is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MapSettings {
    /// Raster tiles, `{z}`, `{x}` and `{y}` replaced (an `http(s)://`
    /// URL); empty: no tiles, fences and vehicles on a plain background.
    pub tile_url: String,
    /// Shown over the map whenever tiles are.
    pub tile_attribution: String,
    /// A vehicle whose newest fix is older than this (event time) is dimmed.
    pub stale_after_s: u64,
    /// Road distance ÷ straight-line distance, for the ETA (1–5).
    pub road_factor: f64,
    /// The vehicle's recent speed and course are read over this span.
    pub speed_window_s: u64,
    /// A parked vehicle is assumed to set off now at this speed (km/h).
    pub typical_speed_kmh: f64,
}

impl Default for MapSettings {
    fn default() -> Self {
        MapSettings {
            tile_url: "https://tile.openstreetmap.org/{z}/{x}/{y}.png".into(),
            tile_attribution: "© OpenStreetMap contributors".into(),
            stale_after_s: 600,
            road_factor: 1.3,
            speed_window_s: 600,
            typical_speed_kmh: 40.0,
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum MapSettingsError {
    #[error("map.{field}: {message}")]
    Invalid { field: &'static str, message: String },
}

impl MapSettings {
    /// Checks ranges and the tile template.
    pub fn validate(&self) -> Result<(), MapSettingsError> {
        let bad = |field, message: &str| Err(MapSettingsError::Invalid { field, message: message.into() });
        if !(1.0..=5.0).contains(&self.road_factor) {
            return bad("road_factor", "must be between 1 and 5");
        }
        if !(self.typical_speed_kmh > 0.0 && self.typical_speed_kmh <= 200.0) {
            return bad("typical_speed_kmh", "must be above 0 and at most 200");
        }
        if !(60..=7200).contains(&self.speed_window_s) {
            return bad("speed_window_s", "must be between 60 and 7200");
        }
        if self.stale_after_s == 0 {
            return bad("stale_after_s", "must be above 0");
        }
        if !self.tile_url.is_empty() {
            if self.tile_origin().is_none() {
                return bad("tile_url", "must be an http:// or https:// URL with a host");
            }
            if !["{z}", "{x}", "{y}"].iter().all(|p| self.tile_url.contains(p)) {
                return bad("tile_url", "must contain {z}, {x} and {y}");
            }
            if self.tile_url.contains(['"', '\'', ' ', ';', '<', '>', '\\']) {
                return bad("tile_url", "must not contain quotes, spaces, ';', '<', '>' or '\\'");
            }
        }
        Ok(())
    }

    /// `scheme://host[:port]` of the tile server (what the page's
    /// Content-Security-Policy allows images from); `None` without tiles.
    pub fn tile_origin(&self) -> Option<String> {
        let (scheme, rest) = self.tile_url.split_once("://")?;
        if !matches!(scheme, "http" | "https") {
            return None;
        }
        let host = rest.split(['/', '?', '#']).next()?;
        let valid = !host.is_empty()
            && !host.contains('{')
            && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        valid.then(|| format!("{scheme}://{host}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_name_the_tile_origin() {
        let d = MapSettings::default();
        assert_eq!(d.validate(), Ok(()));
        assert_eq!(d.tile_origin().as_deref(), Some("https://tile.openstreetmap.org"));
        let none = MapSettings { tile_url: String::new(), ..d.clone() };
        assert_eq!(none.validate(), Ok(()));
        assert_eq!(none.tile_origin(), None);
        let local = MapSettings { tile_url: "http://127.0.0.1:8099/t/{z}/{x}/{y}.png".into(), ..d.clone() };
        assert_eq!(local.tile_origin().as_deref(), Some("http://127.0.0.1:8099"));
    }

    #[test]
    fn bad_values_name_their_field() {
        let d = MapSettings::default();
        for (s, field) in [
            (MapSettings { road_factor: 0.5, ..d.clone() }, "road_factor"),
            (MapSettings { typical_speed_kmh: 0.0, ..d.clone() }, "typical_speed_kmh"),
            (MapSettings { speed_window_s: 5, ..d.clone() }, "speed_window_s"),
            (MapSettings { stale_after_s: 0, ..d.clone() }, "stale_after_s"),
            (MapSettings { tile_url: "ftp://x/{z}/{x}/{y}".into(), ..d.clone() }, "tile_url"),
            (MapSettings { tile_url: "https://x/{z}/{x}".into(), ..d.clone() }, "tile_url"),
            (MapSettings { tile_url: "https://{s}.x/{z}/{x}/{y}".into(), ..d.clone() }, "tile_url"),
            (MapSettings { tile_url: "https://x/{z}/{x}/{y}.png' ; img-src *".into(), ..d.clone() }, "tile_url"),
        ] {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.starts_with(&format!("map.{field}:")), "{e}");
        }
    }
}
