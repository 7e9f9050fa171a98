//! Event time: UTC milliseconds since the Unix epoch.

use std::fmt;

use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in event time, UTC, millisecond resolution. Serialized as
/// RFC 3339 (`2026-11-28T13:40:00Z`, fractional seconds only when non-zero).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ts(pub i64);

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum TsError {
    #[error("invalid RFC 3339 time {0:?}: {1}")]
    Parse(String, String),
}

impl Ts {
    pub const MIN: Ts = Ts(i64::MIN);
    pub const MAX: Ts = Ts(i64::MAX);

    pub fn from_millis(ms: i64) -> Ts {
        Ts(ms)
    }
    pub fn from_secs(s: i64) -> Ts {
        Ts(s.saturating_mul(1000))
    }
    pub fn millis(self) -> i64 {
        self.0
    }
    pub fn plus_millis(self, ms: i64) -> Ts {
        Ts(self.0.saturating_add(ms))
    }
    pub fn minus_millis(self, ms: i64) -> Ts {
        Ts(self.0.saturating_sub(ms))
    }

    /// Parses RFC 3339 with any offset, normalised to UTC.
    pub fn parse(s: &str) -> Result<Ts, TsError> {
        DateTime::parse_from_rfc3339(s.trim())
            .map(|d| Ts(d.timestamp_millis()))
            .map_err(|e| TsError::Parse(s.to_string(), e.to_string()))
    }

    pub fn to_rfc3339(self) -> String {
        match DateTime::from_timestamp_millis(self.0) {
            Some(d) => d.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            None => format!("@{}ms", self.0),
        }
    }
}

impl fmt::Display for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}
impl fmt::Debug for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Ts {
    /// RFC 3339, or `@{millis}ms` as [`Ts::to_rfc3339`] writes a time
    /// beyond chrono's range (`Ts::MAX`: an open pairing's end), so that
    /// every `Ts` survives a serde round trip.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Some(ms) = s.strip_prefix('@').and_then(|r| r.strip_suffix("ms")) {
            return ms.parse().map(Ts).map_err(serde::de::Error::custom);
        }
        Ts::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_beyond_chronos_range_survive_serde() {
        for t in [Ts::MAX, Ts::MIN, Ts(0)] {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<Ts>(&json).unwrap(), t, "{json}");
        }
    }

    #[test]
    fn round_trips_and_normalises_offsets() {
        let t = Ts::parse("2026-11-28T09:40:00-04:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-28T13:40:00Z");
        assert_eq!(Ts::parse("2026-11-28T13:40:00.250Z").unwrap().to_rfc3339(), "2026-11-28T13:40:00.250Z");
        assert!(Ts::parse("yesterday").is_err());
    }
}
