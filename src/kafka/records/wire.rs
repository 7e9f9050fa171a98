//! Avro binary primitives (zig-zag varints, little-endian floats), strict:
//! no reading past the end, no over-long varints.

use super::CodecError;

pub fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

pub fn put_opt_double(out: &mut Vec<u8>, v: Option<f64>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(2); // union branch 1, zig-zag encoded
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn eof(what: &str, at: usize) -> CodecError {
    CodecError::Decode(format!("datum ends inside {what} at byte {at}"))
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline]
    pub fn long(&mut self) -> Result<i64, CodecError> {
        let mut z: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&b) = self.buf.get(self.pos) else { return Err(eof("a varint", self.pos)) };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(CodecError::Decode(format!("varint overflows 64 bits at byte {}", self.pos - 1)));
            }
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
            shift += 7;
        }
    }

    pub fn int(&mut self) -> Result<i32, CodecError> {
        let at = self.pos;
        let v = self.long()?;
        i32::try_from(v).map_err(|_| CodecError::Decode(format!("int {v} out of range at byte {at}")))
    }

    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CodecError> {
        match self.buf.get(self.pos..self.pos.saturating_add(n)) {
            Some(s) if self.pos.checked_add(n).is_some() => {
                self.pos += n;
                Ok(s)
            }
            _ => Err(eof(what, self.pos)),
        }
    }

    #[inline]
    pub fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let at = self.pos;
        let len = self.long()?;
        let len =
            usize::try_from(len).map_err(|_| CodecError::Decode(format!("negative length {len} at byte {at}")))?;
        self.take(len, "a string or bytes")
    }

    #[inline]
    pub fn str(&mut self) -> Result<&'a str, CodecError> {
        let at = self.pos;
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| CodecError::Decode(format!("string at byte {at} is not UTF-8")))
    }

    #[inline]
    pub fn double(&mut self) -> Result<f64, CodecError> {
        let b = self.take(8, "a double")?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    pub fn float(&mut self) -> Result<f32, CodecError> {
        let b = self.take(4, "a float")?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(f32::from_le_bytes(a))
    }

    pub fn boolean(&mut self) -> Result<bool, CodecError> {
        let at = self.pos;
        match self.take(1, "a boolean")?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(CodecError::Decode(format!("boolean byte {b} at byte {at}"))),
        }
    }

    /// `["null", "double"]`.
    #[inline]
    pub fn opt_double(&mut self) -> Result<Option<f64>, CodecError> {
        let at = self.pos;
        match self.long()? {
            0 => Ok(None),
            1 => self.double().map(Some),
            i => Err(CodecError::Decode(format!("union branch {i} of [null, double] at byte {at}"))),
        }
    }

    pub fn finish(&self) -> Result<(), CodecError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(CodecError::Decode(format!("{} trailing bytes after the datum", self.buf.len() - self.pos)))
        }
    }
}
