//! Framing: the Confluent wire format.
//!
//! Every record value is `[0x00][schema id: u32 big-endian][Avro binary
//! datum]` ([`frame`], [`unframe`]): magic byte 0, the writer schema's
//! registry id, then exactly one datum and nothing after it. Keys are not
//! Avro: they are `tenant/id` in UTF-8 (see [`crate::kafka::topics`]).

use super::CodecError;

/// The Confluent wire format's magic byte.
pub const MAGIC: u8 = 0;
/// Magic byte plus schema id.
pub const HEADER_LEN: usize = 5;

/// Frames an Avro datum: magic byte, big-endian schema id, datum.
pub fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// Splits a framed value into schema id and datum.
pub fn unframe(bytes: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    match bytes {
        [] => Err(CodecError::Framing("empty value".into())),
        [m, ..] if *m != MAGIC => Err(CodecError::Framing(format!("magic byte {m:#04x}, expected 0x00"))),
        [_, a, b, c, d, datum @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        short => Err(CodecError::Framing(format!("{} bytes, shorter than the 5-byte header", short.len()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        let f = frame(0x01020304, b"xy");
        assert_eq!(f, [0, 1, 2, 3, 4, b'x', b'y']);
        assert_eq!(unframe(&f).unwrap(), (0x01020304, &b"xy"[..]));
        assert_eq!(unframe(&[0, 0, 0, 0, 9]).unwrap(), (9, &[][..]));
        assert_eq!(unframe(&[]).unwrap_err().kind(), "framing");
        assert_eq!(unframe(&[0, 1, 2]).unwrap_err().kind(), "framing");
        assert_eq!(unframe(&[1, 0, 0, 0, 1, 2]).unwrap_err().kind(), "framing");
    }
}
