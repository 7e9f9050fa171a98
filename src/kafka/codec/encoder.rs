//! The datum encoder: writes one apache-avro [`Value`] as the Avro binary
//! datum of a schema whose named types are already resolved.
//!
//! apache-avro 0.21's `to_avro_datum` validates the value and re-resolves
//! every named type of the schema on each call, which made encoding a
//! command cost more than deciding it. This writes the same bytes (a test
//! checks it against apache-avro for every record type) with the names the
//! codec resolved once per schema, and refuses, rather than guesses at, a
//! value that does not fit the schema.

use apache_avro::schema::{Namespace, Schema};
use apache_avro::types::Value;

use super::decoder::Names;
use super::CodecError;
use crate::kafka::records::wire::{put_long, put_str};

/// Appends the datum of `value` as `schema` to `out`.
pub(super) fn write_datum(value: &Value, schema: &Schema, names: &Names, out: &mut Vec<u8>) -> Result<(), CodecError> {
    write_value(value, schema, names, &None, out)
}

fn mismatch(value: &Value, schema: &Schema) -> CodecError {
    let kind = format!("{value:?}");
    let kind: String = kind.chars().take(60).collect();
    CodecError::Encode(format!("value {kind} does not fit schema {:?}", apache_avro::schema::SchemaKind::from(schema)))
}

fn write_value(
    value: &Value,
    schema: &Schema,
    names: &Names,
    ns: &Namespace,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    match (schema, value) {
        (Schema::Ref { name }, _) => {
            let full = name.fully_qualified_name(ns);
            let Some(s) = names.get(&full) else {
                return Err(CodecError::Encode(format!("schema refers to unknown type {}", full.fullname(None))));
            };
            write_value(value, s, names, &full.namespace, out)
        }
        (Schema::Null, Value::Null) => Ok(()),
        (Schema::Boolean, Value::Boolean(b)) => {
            out.push(u8::from(*b));
            Ok(())
        }
        (Schema::Int, Value::Int(i)) => {
            put_long(out, i64::from(*i));
            Ok(())
        }
        (Schema::Long, Value::Long(i) | Value::TimestampMillis(i))
        | (Schema::TimestampMillis, Value::TimestampMillis(i) | Value::Long(i)) => {
            put_long(out, *i);
            Ok(())
        }
        (Schema::Float, Value::Float(f)) => {
            out.extend_from_slice(&f.to_le_bytes());
            Ok(())
        }
        (Schema::Double, Value::Double(f)) => {
            out.extend_from_slice(&f.to_le_bytes());
            Ok(())
        }
        (Schema::Bytes, Value::Bytes(b)) => {
            put_long(out, b.len() as i64);
            out.extend_from_slice(b);
            Ok(())
        }
        (Schema::String, Value::String(s)) => {
            put_str(out, s);
            Ok(())
        }
        (Schema::Fixed(f), Value::Fixed(n, b)) if *n == f.size && b.len() == f.size => {
            out.extend_from_slice(b);
            Ok(())
        }
        (Schema::Enum(e), Value::Enum(i, sym)) if e.symbols.get(*i as usize) == Some(sym) => {
            put_long(out, i64::from(*i));
            Ok(())
        }
        (Schema::Union(u), Value::Union(i, inner)) => match u.variants().get(*i as usize) {
            Some(variant) => {
                put_long(out, i64::from(*i));
                write_value(inner, variant, names, ns, out)
            }
            None => Err(mismatch(value, schema)),
        },
        (Schema::Array(a), Value::Array(items)) => {
            if !items.is_empty() {
                put_long(out, items.len() as i64);
                for item in items {
                    write_value(item, &a.items, names, ns, out)?;
                }
            }
            out.push(0);
            Ok(())
        }
        (Schema::Map(m), Value::Map(items)) => {
            if !items.is_empty() {
                put_long(out, items.len() as i64);
                for (k, v) in items {
                    put_str(out, k);
                    write_value(v, &m.types, names, ns, out)?;
                }
            }
            out.push(0);
            Ok(())
        }
        (Schema::Record(r), Value::Record(fields)) => {
            let inner_ns = r.name.fully_qualified_name(ns).namespace;
            for (i, f) in r.fields.iter().enumerate() {
                // Values are built in schema order; look up by name otherwise.
                let v = match fields.get(i) {
                    Some((name, v)) if *name == f.name => v,
                    _ => match fields.iter().find(|(name, _)| *name == f.name) {
                        Some((_, v)) => v,
                        None => {
                            return Err(CodecError::Encode(format!("record {} has no field {}", r.name.name, f.name)))
                        }
                    },
                };
                write_value(v, &f.schema, names, &inner_ns, out)?;
            }
            Ok(())
        }
        _ => Err(mismatch(value, schema)),
    }
}
