//! Vendor identifiers that may arrive as numbers or strings.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use compact_str::CompactString;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An entity id. Equality, hashing and lookups use the text alone; `numeric`
/// only remembers whether it arrived as a JSON/YAML integer so that output
/// can echo it in the same form. Ids up to 24 bytes are stored inline (no
/// heap pointer to chase when a hash map compares keys on the ping path). Ordering is numeric between numeric ids,
/// textual otherwise, numbers first.
#[derive(Clone)]
pub struct Id {
    text: CompactString,
    numeric: bool,
}

impl Id {
    /// An id given as text (its form in output is a string).
    pub fn text(s: impl AsRef<str>) -> Self {
        Id { text: CompactString::new(s.as_ref()), numeric: false }
    }

    /// An id given as an integer (its form in output is a number).
    pub fn number(n: i64) -> Self {
        Id { text: CompactString::from(n.to_string()), numeric: true }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn is_numeric(&self) -> bool {
        self.numeric
    }
}

/// Orders two canonical integer texts (as [`Id::number`] writes them: no
/// leading zeros or `+`) numerically, without parsing them.
fn cmp_canonical_integers(a: &str, b: &str) -> Ordering {
    match (a.starts_with('-'), b.starts_with('-')) {
        (false, false) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
        (true, true) => b.len().cmp(&a.len()).then_with(|| b.cmp(a)),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}
impl Eq for Id {}

impl Hash for Id {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.as_str().hash(state)
    }
}

impl Borrow<str> for Id {
    fn borrow(&self) -> &str {
        &self.text
    }
}

impl Ord for Id {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.text == other.text {
            return Ordering::Equal;
        }
        // Numeric ids are only built by `Id::number`, so their text is a
        // canonical integer and compares numerically without parsing.
        match (self.numeric, other.numeric) {
            (true, true) => cmp_canonical_integers(&self.text, &other.text),
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => self.text.cmp(&other.text),
        }
    }
}
impl PartialOrd for Id {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.text.as_str(), f)
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id::text(s)
    }
}
impl From<i64> for Id {
    fn from(n: i64) -> Self {
        Id::number(n)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.text.parse::<i64>() {
            Ok(n) if self.numeric => s.serialize_i64(n),
            _ => s.serialize_str(&self.text),
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an id (a string or an integer)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                Ok(Id::number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                i64::try_from(v).map(Id::number).map_err(|_| E::custom("id integer out of range"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                if v.trim().is_empty() {
                    return Err(E::custom("id must not be empty"));
                }
                Ok(Id::text(v))
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_strings_match_by_text() {
        assert_eq!(Id::number(11), Id::text("11"));
        let mut m = std::collections::HashMap::new();
        m.insert(Id::number(11), 1);
        assert_eq!(m.get("11"), Some(&1));
    }

    #[test]
    fn numeric_order_then_text() {
        let mut v = vec![Id::text("b"), Id::number(100), Id::number(9), Id::text("a")];
        v.sort();
        assert_eq!(v, vec![Id::number(9), Id::number(100), Id::text("a"), Id::text("b")]);
    }

    proptest::proptest! {
        #[test]
        fn numeric_ids_order_as_their_numbers(a: i64, b: i64) {
            proptest::prop_assert_eq!(Id::number(a).cmp(&Id::number(b)), a.cmp(&b));
        }
    }

    #[test]
    fn serializes_in_the_form_it_arrived() {
        let ids: Vec<Id> = serde_json::from_str(r#"[7001, "d1"]"#).unwrap();
        assert_eq!(serde_json::to_string(&ids).unwrap(), r#"[7001,"d1"]"#);
        assert!(serde_json::from_str::<Id>("1.5").is_err());
        assert!(serde_json::from_str::<Id>(r#""  ""#).is_err());
    }
}
