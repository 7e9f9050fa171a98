//! Pings: the hot path.
//!
//! Invariant:
//! - Pings have a hand-written encoder and decoder for the current
//!   `ping.avsc` (the hot path); tests pin them byte for byte to
//!   apache-avro's encoder and decoder.

use apache_avro::types::Value;

use super::validate::{check_id, check_lat, check_lon, check_nonneg, check_tenant, check_ts};
use super::value::{opt, record, s, ts, Rec};
use super::{wire, AvroRecord};
use super::{CodecError, RecordType};
use crate::model::{Id, Ping, Ts};

fn check_ping(tenant: &str, p: &Ping) -> Result<(), CodecError> {
    const R: &str = "Ping";
    check_tenant(R, tenant)?;
    check_id(R, "vehicle", &p.vehicle)?;
    check_ts(R, "time", p.time.0)?;
    check_lat(R, "lat", p.lat)?;
    check_lon(R, "lon", p.lon)?;
    if let Some(v) = p.speed_mph {
        check_nonneg(R, "speed_mph", v)?;
    }
    if let Some(v) = p.accuracy_m {
        check_nonneg(R, "accuracy_m", v)?;
    }
    Ok(())
}

impl AvroRecord for Ping {
    const TYPE: RecordType = RecordType::Ping;

    fn to_value(&self, tenant: &str) -> Result<Value, CodecError> {
        check_ping(tenant, self)?;
        Ok(record(vec![
            ("tenant", s(tenant)),
            ("vehicle", s(self.vehicle.as_str())),
            ("time", ts(self.time)),
            ("lat", Value::Double(self.lat)),
            ("lon", Value::Double(self.lon)),
            ("speed_mph", opt(self.speed_mph.map(Value::Double))),
            ("accuracy_m", opt(self.accuracy_m.map(Value::Double))),
        ]))
    }

    fn from_value(value: Value) -> Result<(String, Self), CodecError> {
        let mut r = Rec::new("Ping", value)?;
        let tenant = r.string("tenant")?;
        let p = Ping {
            vehicle: Id::text(r.string("vehicle")?),
            time: Ts(r.long("time")?),
            lat: r.double("lat")?,
            lon: r.double("lon")?,
            speed_mph: r.opt_double("speed_mph")?,
            accuracy_m: r.opt_double("accuracy_m")?,
        };
        check_ping(&tenant, &p)?;
        Ok((tenant, p))
    }

    fn write_datum(&self, tenant: &str, out: &mut Vec<u8>) -> Option<Result<(), CodecError>> {
        Some(write_ping_datum(tenant, self, out))
    }

    fn read_datum(datum: &[u8]) -> Option<Result<(String, Self), CodecError>> {
        Some(read_ping_datum(datum))
    }
}

/// Appends the Avro binary datum of a ping in the current `ping.avsc`.
pub fn write_ping_datum(tenant: &str, p: &Ping, out: &mut Vec<u8>) -> Result<(), CodecError> {
    check_ping(tenant, p)?;
    wire::put_str(out, tenant);
    wire::put_str(out, p.vehicle.as_str());
    wire::put_long(out, p.time.0);
    out.extend_from_slice(&p.lat.to_le_bytes());
    out.extend_from_slice(&p.lon.to_le_bytes());
    wire::put_opt_double(out, p.speed_mph);
    wire::put_opt_double(out, p.accuracy_m);
    Ok(())
}

/// Reads a ping datum written with exactly the current `ping.avsc`: every
/// byte must be consumed, and the ping must be valid.
pub fn read_ping_datum(datum: &[u8]) -> Result<(String, Ping), CodecError> {
    read_ping_borrowed(datum).map(|(tenant, p)| (tenant.to_string(), p))
}

/// [`read_ping_datum`] with the tenant borrowed from the datum: no heap
/// allocation for ids of up to 24 bytes.
pub fn read_ping_borrowed(datum: &[u8]) -> Result<(&str, Ping), CodecError> {
    let mut c = wire::Cursor::new(datum);
    let tenant = c.str()?;
    let vehicle = c.str()?;
    let time = c.long()?;
    let lat = c.double()?;
    let lon = c.double()?;
    let speed_mph = c.opt_double()?;
    let accuracy_m = c.opt_double()?;
    c.finish()?;
    let p = Ping { vehicle: Id::text(vehicle), time: Ts(time), lat, lon, speed_mph, accuracy_m };
    check_ping(tenant, &p)?;
    Ok((tenant, p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::records::tests::{ping, schema};
    use crate::kafka::records::tests_support::*;
    use proptest::prelude::*;

    #[test]
    fn hand_written_ping_codec_matches_apache_avro() {
        let sc = schema(RecordType::Ping);
        let mut mine = Vec::new();
        write_ping_datum("acme", &ping(), &mut mine).unwrap();
        let theirs = apache_avro::to_avro_datum(&sc, ping().to_value("acme").unwrap()).unwrap();
        assert_eq!(mine, theirs);
        assert_eq!(read_ping_datum(&theirs).unwrap(), ("acme".to_string(), ping()));
    }

    #[test]
    fn validation_refuses_out_of_range_values_both_ways() {
        let mut p = ping();
        p.lat = f64::NAN;
        assert_eq!(p.to_value("acme").unwrap_err().kind(), "invalid_value");
        p.lat = 95.0;
        assert!(matches!(write_ping_datum("acme", &p, &mut Vec::new()), Err(CodecError::InvalidValue(_))));
        let mut p = ping();
        p.time = Ts(-1);
        assert_eq!(p.to_value("acme").unwrap_err().kind(), "invalid_value");
        let mut p = ping();
        p.vehicle = Id::text(" ");
        assert_eq!(p.to_value("acme").unwrap_err().kind(), "invalid_value");
        assert_eq!(ping().to_value("ac me").unwrap_err().kind(), "invalid_value");
        let mut p = ping();
        p.speed_mph = Some(f64::INFINITY);
        assert_eq!(p.to_value("acme").unwrap_err().kind(), "invalid_value");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn ping_wire_matches_apache(t in tenant(), p in ping_strategy()) {
            let sc = schema(RecordType::Ping);
            let mut mine = Vec::new();
            write_ping_datum(&t, &p, &mut mine).unwrap();
            let theirs = apache_avro::to_avro_datum(&sc, p.to_value(&t).unwrap()).unwrap();
            prop_assert_eq!(&mine, &theirs);
            let generic = Ping::from_value(apache_avro::from_avro_datum(&sc, &mut &theirs[..], None).unwrap()).unwrap();
            prop_assert_eq!(read_ping_datum(&mine).unwrap(), generic);
        }

        #[test]
        fn the_hand_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = read_ping_datum(&bytes);
        }
    }
}
