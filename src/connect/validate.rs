//! Ping validation, pure: the checks a GPS fix passes before it is
//! published. The wall clock is an argument (`now_ms`), never read here.
//!
//! Rejected: a non-finite or out-of-range latitude/longitude, the null
//! island `(0, 0)`, a negative or non-finite speed, a time more than
//! `max_future_s` ahead of `now` or more than `max_age_s` behind it.
//! Duplicates are judged by the ledger ([`super::ledger::LedgerState::ping`]).

use crate::model::Ping;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PingLimits {
    pub now_ms: i64,
    pub max_age_s: i64,
    pub max_future_s: i64,
}

/// Why a ping was refused: the dead letter's `reason` (stable text).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PingRejection {
    #[error("latitude {0} is not a finite number in [-90, 90]")]
    Latitude(f64),
    #[error("longitude {0} is not a finite number in [-180, 180]")]
    Longitude(f64),
    #[error("position (0, 0) is a tracker without a fix")]
    NullIsland,
    #[error("speed {0} is not a finite number >= 0")]
    Speed(f64),
    #[error("time {time_ms} ms is more than {limit_s} s in the future")]
    Future { time_ms: i64, limit_s: i64 },
    #[error("time {time_ms} ms is more than {limit_s} s in the past")]
    Past { time_ms: i64, limit_s: i64 },
    #[error("a different position for the same vehicle and time was already published")]
    Conflict,
}

impl PingRejection {
    /// A short class for metrics labels.
    pub fn class(&self) -> &'static str {
        match self {
            PingRejection::Latitude(_) | PingRejection::Longitude(_) | PingRejection::NullIsland => "position",
            PingRejection::Speed(_) => "speed",
            PingRejection::Future { .. } | PingRejection::Past { .. } => "time",
            PingRejection::Conflict => "conflict",
        }
    }
}

pub fn check_ping(p: &Ping, limits: &PingLimits) -> Result<(), PingRejection> {
    if !(p.lat.is_finite() && (-90.0..=90.0).contains(&p.lat)) {
        return Err(PingRejection::Latitude(p.lat));
    }
    if !(p.lon.is_finite() && (-180.0..=180.0).contains(&p.lon)) {
        return Err(PingRejection::Longitude(p.lon));
    }
    if p.lat == 0.0 && p.lon == 0.0 {
        return Err(PingRejection::NullIsland);
    }
    if let Some(s) = p.speed_mph {
        if !(s.is_finite() && s >= 0.0) {
            return Err(PingRejection::Speed(s));
        }
    }
    let t = p.time.millis();
    if t > limits.now_ms.saturating_add(limits.max_future_s.saturating_mul(1000)) {
        return Err(PingRejection::Future { time_ms: t, limit_s: limits.max_future_s });
    }
    if t < limits.now_ms.saturating_sub(limits.max_age_s.saturating_mul(1000)) {
        return Err(PingRejection::Past { time_ms: t, limit_s: limits.max_age_s });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Id, Ts};

    #[test]
    fn rejects_what_no_tracker_means() {
        let now = 1_800_000_000_000;
        let l = PingLimits { now_ms: now, max_age_s: 3600, max_future_s: 60 };
        let p = |lat: f64, lon: f64, t: i64, speed: Option<f64>| Ping {
            vehicle: Id::text("v"),
            time: Ts(t),
            lat,
            lon,
            speed_mph: speed,
            accuracy_m: None,
        };
        assert_eq!(check_ping(&p(35.0, -80.0, now, Some(3.0)), &l), Ok(()));
        assert_eq!(check_ping(&p(f64::NAN, -80.0, now, None), &l).unwrap_err().class(), "position");
        assert!(matches!(check_ping(&p(91.0, 0.5, now, None), &l), Err(PingRejection::Latitude(_))));
        assert!(matches!(check_ping(&p(1.0, -181.0, now, None), &l), Err(PingRejection::Longitude(_))));
        assert_eq!(check_ping(&p(0.0, 0.0, now, None), &l), Err(PingRejection::NullIsland));
        assert!(matches!(check_ping(&p(1.0, 1.0, now, Some(-1.0)), &l), Err(PingRejection::Speed(_))));
        assert!(matches!(check_ping(&p(1.0, 1.0, now + 61_000, None), &l), Err(PingRejection::Future { .. })));
        assert!(matches!(check_ping(&p(1.0, 1.0, now - 3_601_000, None), &l), Err(PingRejection::Past { .. })));
        assert_eq!(check_ping(&p(1.0, 1.0, now - 3_600_000, None), &l), Ok(()));
    }
}
