//! The office and contact records, and the id lists they and the location
//! record carry (a location's offices, a contact's locations).

use apache_avro::types::Value;

use super::validate::{check_id, check_id_str, check_tenant, servicetrade_id};
use super::value::{opt, record, s, Rec};
use super::{AvroRecord, CodecError, RecordType};
use crate::model::{Contact, Id, Office};

/// A list of ServiceTrade ids as an Avro array of strings, each checked.
pub(super) fn id_list(record: &str, field: &str, ids: &[Id]) -> Result<Value, CodecError> {
    let mut items = Vec::with_capacity(ids.len());
    for id in ids {
        check_id(record, field, id)?;
        items.push(s(id.as_str()));
    }
    Ok(Value::Array(items))
}

/// Reads a [`id_list`] field.
pub(super) fn read_id_list(r: &mut Rec, record: &str, field: &str) -> Result<Vec<Id>, CodecError> {
    let mut out = Vec::new();
    for item in r.array(field)? {
        match item {
            Value::String(id) => {
                check_id_str(record, field, &id)?;
                out.push(servicetrade_id(id));
            }
            other => return Err(r.shape(field, "string items", &other)),
        }
    }
    Ok(out)
}

impl AvroRecord for Office {
    const TYPE: RecordType = RecordType::Office;

    fn to_value(&self, tenant: &str) -> Result<Value, CodecError> {
        check_tenant("Office", tenant)?;
        check_id("Office", "id", &self.id)?;
        Ok(record(vec![("tenant", s(tenant)), ("id", s(self.id.as_str())), ("name", s(&self.name))]))
    }

    fn from_value(value: Value) -> Result<(String, Self), CodecError> {
        let mut r = Rec::new("Office", value)?;
        let tenant = r.tenant()?;
        Ok((tenant, Office { id: r.st_id("id")?, name: r.string("name")? }))
    }
}

impl AvroRecord for Contact {
    const TYPE: RecordType = RecordType::Contact;

    fn to_value(&self, tenant: &str) -> Result<Value, CodecError> {
        const R: &str = "Contact";
        check_tenant(R, tenant)?;
        check_id(R, "id", &self.id)?;
        Ok(record(vec![
            ("tenant", s(tenant)),
            ("id", s(self.id.as_str())),
            ("name", s(&self.name)),
            ("email", opt(self.email.as_deref().map(s))),
            ("locations", id_list(R, "locations", &self.locations)?),
        ]))
    }

    fn from_value(value: Value) -> Result<(String, Self), CodecError> {
        const R: &str = "Contact";
        let mut r = Rec::new(R, value)?;
        let tenant = r.tenant()?;
        let contact = Contact {
            id: r.st_id("id")?,
            name: r.string("name")?,
            email: r.opt_string("email")?,
            locations: read_id_list(&mut r, R, "locations")?,
        };
        Ok((tenant, contact))
    }
}
