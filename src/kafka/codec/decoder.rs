//! The datum decoder: reads one Avro binary datum with a schema into an
//! apache-avro [`Value`].
//!
//! Nothing here panics on any input bytes. The datum decoder is this
//! module's own, strict one (apache-avro 0.21's reads a datum cut short at a
//! string, boolean or union as null, and reserves memory for a claimed array
//! length before reading it): it never reads past the end, accepts no
//! over-long varint, bounds nesting depth, and never reserves more than the
//! input could hold. apache-avro parses schemas, checks compatibility,
//! resolves values and encodes.
//!
//! Allocation per datum is bounded ([`Budget`]): every array item and map
//! entry costs its value's size, every string and byte run its length,
//! against at most [`MAX_DATUM_ALLOC`] bytes; and items that take no input
//! bytes at all (`null`, empty records: the only way a small datum can
//! declare many values) are limited to [`MAX_ZERO_SIZE_ITEMS`] per datum,
//! however many blocks declare them. A crafted datum declaring 2^31 nulls
//! in a thousand blocks is refused after a few kilobytes.

use std::collections::HashMap;

use apache_avro::schema::{Name, Namespace, ResolvedSchema, Schema};
use apache_avro::types::Value;

use super::CodecError;
use crate::kafka::records::wire::Cursor;

/// Nesting limit for the datum decoder (records, arrays, maps, unions).
const MAX_DEPTH: u32 = 32;

/// The most a datum's decoded values may take, in bytes (roughly: the
/// size of each array item or map entry plus string and byte lengths).
pub const MAX_DATUM_ALLOC: usize = 64 * 1024 * 1024;

/// Array items and map entries that took no input bytes, per datum.
pub const MAX_ZERO_SIZE_ITEMS: usize = 4096;

/// What one datum may still allocate.
struct Budget {
    bytes: usize,
    zero_size: usize,
}

impl Budget {
    fn new() -> Budget {
        Budget { bytes: MAX_DATUM_ALLOC, zero_size: MAX_ZERO_SIZE_ITEMS }
    }

    fn spend(&mut self, bytes: usize, at: usize) -> Result<(), CodecError> {
        self.bytes = self.bytes.checked_sub(bytes).ok_or_else(|| {
            CodecError::Decode(format!("datum needs more than {MAX_DATUM_ALLOC} bytes decoded (at byte {at})"))
        })?;
        Ok(())
    }

    /// Accounts for one item that took `consumed` input bytes.
    fn item(&mut self, consumed: usize, at: usize) -> Result<(), CodecError> {
        self.spend(std::mem::size_of::<Value>(), at)?;
        if consumed == 0 {
            self.zero_size = self.zero_size.checked_sub(1).ok_or_else(|| {
                CodecError::Decode(format!(
                    "more than {MAX_ZERO_SIZE_ITEMS} items of no size (at byte {at}): refusing to expand"
                ))
            })?;
        }
        Ok(())
    }

    /// How many items of an `n`-item block to reserve room for at once.
    fn reserve(&self, n: usize, remaining: usize) -> usize {
        n.min(remaining.saturating_add(1)).min(self.bytes / std::mem::size_of::<Value>().max(1)).min(1 << 16)
    }
}

/// Named types of a schema, by full name, for `Schema::Ref`.
pub(super) type Names = HashMap<Name, Schema>;

pub(super) fn names_of(schema: &Schema) -> Result<Names, String> {
    let rs = ResolvedSchema::try_from(schema).map_err(|e| e.to_string())?;
    Ok(rs.get_names().iter().map(|(n, s)| (n.clone(), (*s).clone())).collect())
}

/// Reads exactly one datum of `schema` from `datum`.
pub fn read_datum_with(schema: &Schema, datum: &[u8]) -> Result<Value, CodecError> {
    let names = names_of(schema).map_err(CodecError::Decode)?;
    read_datum(schema, &names, datum)
}

pub(super) fn read_datum(schema: &Schema, names: &Names, datum: &[u8]) -> Result<Value, CodecError> {
    let mut c = Cursor::new(datum);
    let mut budget = Budget::new();
    let v = read_value(&mut c, schema, names, &None, 0, &mut budget)?;
    c.finish()?;
    Ok(v)
}

/// Block item count of an array or map; 0 ends it.
fn block_len(c: &mut Cursor<'_>) -> Result<usize, CodecError> {
    let at = c.pos();
    let n = c.long()?;
    let n = if n < 0 {
        let _block_bytes = c.long()?;
        n.checked_neg().ok_or_else(|| CodecError::Decode(format!("block count overflows at byte {at}")))?
    } else {
        n
    };
    let n = usize::try_from(n).map_err(|_| CodecError::Decode(format!("block count {n} at byte {at}")))?;
    // Every item but of a zero-sized type takes a byte; allow a little slack
    // for those and refuse counts the input cannot hold.
    if n > c.remaining().saturating_add(4096) {
        return Err(CodecError::Decode(format!(
            "block of {n} items at byte {at} but only {} bytes left",
            c.remaining()
        )));
    }
    Ok(n)
}

fn read_value(
    c: &mut Cursor<'_>,
    schema: &Schema,
    names: &Names,
    ns: &Namespace,
    depth: u32,
    budget: &mut Budget,
) -> Result<Value, CodecError> {
    if depth > MAX_DEPTH {
        return Err(CodecError::Decode(format!("nested deeper than {MAX_DEPTH}")));
    }
    Ok(match schema {
        Schema::Null => Value::Null,
        Schema::Boolean => Value::Boolean(c.boolean()?),
        Schema::Int => Value::Int(c.int()?),
        Schema::Long => Value::Long(c.long()?),
        Schema::Float => Value::Float(c.float()?),
        Schema::Double => Value::Double(c.double()?),
        Schema::Bytes => {
            let b = c.bytes()?;
            budget.spend(b.len(), c.pos())?;
            Value::Bytes(b.to_vec())
        }
        Schema::String => {
            let s = c.str()?;
            budget.spend(s.len(), c.pos())?;
            Value::String(s.to_string())
        }
        Schema::Date => Value::Date(c.int()?),
        Schema::TimeMillis => Value::TimeMillis(c.int()?),
        Schema::TimeMicros => Value::TimeMicros(c.long()?),
        Schema::TimestampMillis => Value::TimestampMillis(c.long()?),
        Schema::TimestampMicros => Value::TimestampMicros(c.long()?),
        Schema::TimestampNanos => Value::TimestampNanos(c.long()?),
        Schema::LocalTimestampMillis => Value::LocalTimestampMillis(c.long()?),
        Schema::LocalTimestampMicros => Value::LocalTimestampMicros(c.long()?),
        Schema::LocalTimestampNanos => Value::LocalTimestampNanos(c.long()?),
        Schema::Fixed(f) => Value::Fixed(f.size, c.take(f.size, "a fixed")?.to_vec()),
        // The logical types below never occur in geoclock's reader schemas,
        // so their values only ever get skipped by resolution: read them in
        // their physical form.
        Schema::Duration => Value::Fixed(12, c.take(12, "a duration")?.to_vec()),
        Schema::Uuid | Schema::BigDecimal => Value::Bytes(c.bytes()?.to_vec()),
        Schema::Decimal(d) => read_value(c, &d.inner, names, ns, depth + 1, budget)?,
        Schema::Enum(e) => {
            let at = c.pos();
            let i = c.long()?;
            match usize::try_from(i).ok().and_then(|i| e.symbols.get(i)) {
                Some(sym) => Value::Enum(i as u32, sym.clone()),
                None => return Err(CodecError::Decode(format!("enum index {i} at byte {at} out of range"))),
            }
        }
        Schema::Union(u) => {
            let at = c.pos();
            let i = c.long()?;
            match usize::try_from(i).ok().and_then(|i| u.variants().get(i)) {
                Some(variant) => {
                    Value::Union(i as u32, Box::new(read_value(c, variant, names, ns, depth + 1, budget)?))
                }
                None => return Err(CodecError::Decode(format!("union branch {i} at byte {at} out of range"))),
            }
        }
        Schema::Array(a) => {
            let mut items = Vec::new();
            loop {
                let n = block_len(c)?;
                if n == 0 {
                    break;
                }
                items.reserve(budget.reserve(n, c.remaining()));
                for _ in 0..n {
                    let at = c.pos();
                    let v = read_value(c, &a.items, names, ns, depth + 1, budget)?;
                    budget.item(c.pos() - at, at)?;
                    items.push(v);
                }
            }
            Value::Array(items)
        }
        Schema::Map(m) => {
            let mut items = HashMap::new();
            loop {
                let n = block_len(c)?;
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    let at = c.pos();
                    let k = c.str()?.to_string();
                    let v = read_value(c, &m.types, names, ns, depth + 1, budget)?;
                    budget.item(c.pos() - at, at)?;
                    budget.spend(k.len(), at)?;
                    items.insert(k, v);
                }
            }
            Value::Map(items)
        }
        Schema::Record(r) => {
            let inner_ns = r.name.fully_qualified_name(ns).namespace;
            let mut fields = Vec::with_capacity(r.fields.len());
            for f in &r.fields {
                fields.push((f.name.clone(), read_value(c, &f.schema, names, &inner_ns, depth + 1, budget)?));
            }
            Value::Record(fields)
        }
        Schema::Ref { name } => {
            let full = name.fully_qualified_name(ns);
            match names.get(&full) {
                Some(s) => read_value(c, s, names, &full.namespace, depth + 1, budget)?,
                None => {
                    return Err(CodecError::Decode(format!("schema refers to unknown type {}", full.fullname(None))))
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::records;

    #[test]
    fn the_datum_decoder_refuses_absurd_lengths_and_depth() {
        let array = Schema::parse_str(r#"{"type":"array","items":"long"}"#).unwrap();
        // Claims 2^40 items in 6 bytes.
        let mut d = Vec::new();
        records::wire::put_long(&mut d, 1 << 40);
        assert_eq!(read_datum_with(&array, &d).unwrap_err().kind(), "decode");
        // Negative count with a block size, then end.
        let mut d = Vec::new();
        records::wire::put_long(&mut d, -2);
        records::wire::put_long(&mut d, 2);
        d.extend([2, 4, 0]);
        assert_eq!(read_datum_with(&array, &d).unwrap(), Value::Array(vec![Value::Long(1), Value::Long(2)]));
        let s = Schema::parse_str(r#""string""#).unwrap();
        assert_eq!(
            read_datum_with(&s, &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02]).unwrap_err().kind(),
            "decode"
        );
        assert_eq!(read_datum_with(&s, &[1]).unwrap_err().kind(), "decode"); // length -1
        assert_eq!(read_datum_with(&s, &[4, b'a']).unwrap_err().kind(), "decode"); // cut short
        assert_eq!(read_datum_with(&s, &[2, 0xff]).unwrap_err().kind(), "decode"); // not UTF-8
        let list = Schema::parse_str(r#"{"type":"record","name":"L","fields":[{"name":"next","type":["null","L"]}]}"#)
            .unwrap();
        let deep = vec![2u8; 1000];
        assert_eq!(read_datum_with(&list, &deep).unwrap_err().kind(), "decode");
        let mut shallow = vec![2u8; 5];
        shallow.push(0);
        assert!(read_datum_with(&list, &shallow).is_ok());
    }

    /// 2^31 nulls declared in blocks of 4096 (each block's count fits the
    /// bytes left, so no single block is absurd).
    pub(crate) fn nulls_datum(total: u64) -> Vec<u8> {
        let mut d = Vec::new();
        let mut left = total;
        while left > 0 {
            let n = left.min(4096);
            records::wire::put_long(&mut d, n as i64);
            left -= n;
        }
        records::wire::put_long(&mut d, 0);
        d
    }

    #[test]
    fn zero_size_items_are_bounded_across_blocks() {
        let nulls = Schema::parse_str(r#"{"type":"array","items":"null"}"#).unwrap();
        let e = read_datum_with(&nulls, &nulls_datum(1 << 31)).unwrap_err();
        assert!(e.to_string().contains("no size"), "{e}");
        assert_eq!(read_datum_with(&nulls, &nulls_datum(100)).unwrap(), Value::Array(vec![Value::Null; 100]));
        let empty = Schema::parse_str(r#"{"type":"map","values":{"type":"record","name":"E","fields":[]}}"#).unwrap();
        let mut d = Vec::new();
        records::wire::put_long(&mut d, 3);
        for _ in 0..3 {
            records::wire::put_long(&mut d, 0); // empty key: takes a byte
        }
        records::wire::put_long(&mut d, 0);
        assert!(read_datum_with(&empty, &d).is_ok());
    }
}
