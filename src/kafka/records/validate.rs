//! Validation: the range checks every record passes on the way in and out.
//!
//! Invariants:
//! - Ids travel as strings. ServiceTrade's ids are integers in its API, so a
//!   ServiceTrade id (users, locations, jobs, appointments, and the fields
//!   naming them) that is a canonical integer decodes as a number
//!   ([`servicetrade_id`]), keeping the vendor's form in output; every other
//!   id decodes as text. [`Id`] equality, hashing and lookups are by text
//!   either way, so the engine sees no difference. Ids and the tenant must not be blank; the tenant must be a valid
//!   tenant name ([`topics::valid_tenant`]).
//! - Times are `timestamp-millis` and must lie in `[0, MAX_TIME_MS]`
//!   (1970 to the end of year 9999); coordinates must be finite with
//!   `lat ∈ [-90, 90]`, `lon ∈ [-180, 180]`; speeds, accuracies and radii
//!   must be finite and `>= 0` (radii as
//!   [`Shape::validate`](crate::geo::Shape::validate) says). Any violation
//!   is [`CodecError::InvalidValue`].

use super::CodecError;
use crate::geo::LatLon;
use crate::kafka::topics;
use crate::model::{Id, Ts};

/// Latest accepted time: 9999-12-31T23:59:59.999Z.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

pub(super) fn invalid(rec: &str, field: &str, what: impl std::fmt::Display) -> CodecError {
    CodecError::InvalidValue(format!("{rec}.{field}: {what}"))
}

pub(super) fn check_tenant(rec: &str, tenant: &str) -> Result<(), CodecError> {
    if topics::valid_tenant(tenant) {
        Ok(())
    } else {
        Err(invalid(rec, "tenant", format_args!("{tenant:?} is not a tenant name (letters, digits, '_', '.', '-')")))
    }
}

pub(super) fn check_id_str(rec: &str, field: &str, id: &str) -> Result<(), CodecError> {
    if id.trim().is_empty() {
        Err(invalid(rec, field, "id must not be blank"))
    } else {
        Ok(())
    }
}

pub(super) fn check_id(rec: &str, field: &str, id: &Id) -> Result<(), CodecError> {
    check_id_str(rec, field, id.as_str())
}

pub(super) fn check_ts(rec: &str, field: &str, ms: i64) -> Result<Ts, CodecError> {
    if (0..=MAX_TIME_MS).contains(&ms) {
        Ok(Ts(ms))
    } else {
        Err(invalid(rec, field, format_args!("time {ms} ms is outside 1970..=9999")))
    }
}

/// A count that must fit a `u32` (revisions, generations), carried as a long.
pub(super) fn check_u32(rec: &str, field: &str, v: i64) -> Result<u32, CodecError> {
    u32::try_from(v).map_err(|_| invalid(rec, field, format_args!("{v} is not in 0..=4294967295")))
}

pub(super) fn check_lat(rec: &str, field: &str, lat: f64) -> Result<f64, CodecError> {
    if (-90.0..=90.0).contains(&lat) {
        Ok(lat)
    } else {
        Err(invalid(rec, field, format_args!("latitude {lat} is not finite in [-90, 90]")))
    }
}

pub(super) fn check_lon(rec: &str, field: &str, lon: f64) -> Result<f64, CodecError> {
    if (-180.0..=180.0).contains(&lon) {
        Ok(lon)
    } else {
        Err(invalid(rec, field, format_args!("longitude {lon} is not finite in [-180, 180]")))
    }
}

pub(super) fn check_nonneg(rec: &str, field: &str, v: f64) -> Result<f64, CodecError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(invalid(rec, field, format_args!("{v} is not finite and >= 0")))
    }
}

pub(super) fn check_latlon(rec: &str, field: &str, p: LatLon) -> Result<LatLon, CodecError> {
    check_lat(rec, field, p.lat)?;
    check_lon(rec, field, p.lon)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_tenant_is_the_topics_rule() {
        assert!(check_tenant("R", "").is_err());
        for b in 0..=255u8 {
            let t = String::from_utf8_lossy(&[b]).into_owned();
            assert_eq!(check_tenant("R", &t).is_ok(), topics::valid_tenant(&t), "byte {b}");
            let t = format!("acme{t}x");
            assert_eq!(check_tenant("R", &t).is_ok(), topics::valid_tenant(&t), "byte {b}");
        }
    }
}

/// A ServiceTrade id as decoded: a number when the text is a canonical
/// integer (`"42"`, `"-7"`; not `"042"` or `"+4"`), else text.
pub fn servicetrade_id(s: String) -> Id {
    match s.parse::<i64>() {
        Ok(n) if n.to_string() == s => Id::number(n),
        _ => Id::text(s),
    }
}

#[cfg(test)]
mod servicetrade_id_tests {
    use super::*;

    #[test]
    fn only_canonical_integers_are_numbers() {
        assert!(servicetrade_id("42".into()).is_numeric());
        assert!(servicetrade_id("-7".into()).is_numeric());
        for s in ["042", "+4", "4.0", "a1", "99999999999999999999", ""] {
            assert!(!servicetrade_id(s.into()).is_numeric(), "{s}");
        }
    }
}
