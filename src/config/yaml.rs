//! The one YAML reader: scenario files, simulator seed files and the
//! processor's YAML tenants file all go through [`from_str`].
//!
//! It is `serde-saphyr` (a maintained, panic-free parser in safe Rust;
//! `serde_yaml` is unmaintained, RUSTSEC-2024-0320) with limits for hostile
//! input: at most [`MAX_BYTES`] of text, a bounded number of parser events,
//! anchors and alias replays (no "billion laughs"), duplicate keys refused.
//! Enums are written as one-key maps (`- ping: {...}`), the format
//! `tests/scenarios/` uses. An error names the line and column and says
//! what is wrong; the files it reads hold no secrets.

use serde::de::DeserializeOwned;

/// The largest YAML text accepted.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

/// Why a YAML text could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct YamlError(String);

/// Parses one YAML document into `T`.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    if text.len() > MAX_BYTES {
        return Err(YamlError(format!("{} bytes, more than the {MAX_BYTES} allowed", text.len())));
    }
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 4_000_000,
            max_aliases: 10_000,
            max_anchors: 10_000,
        },
        duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::Error,
    };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| YamlError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Ev {
        Ping { at: u32 },
        Tick(u32),
    }

    #[test]
    fn enums_are_one_key_maps_and_bad_input_is_named() {
        let v: Vec<Ev> = from_str("- ping: {at: 1}\n- tick: 5\n").unwrap();
        assert_eq!(v, vec![Ev::Ping { at: 1 }, Ev::Tick(5)]);
        let e = from_str::<Vec<Ev>>("- pong: {at: 1}\n").unwrap_err().to_string();
        assert!(e.contains("pong"), "{e}");
        assert!(from_str::<std::collections::HashMap<String, u32>>("a: 1\na: 2\n").is_err(), "duplicate keys");
        // An alias bomb stops at the budget instead of expanding.
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            bomb.push_str(&format!(
                "{}: &{} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n",
                (b'a' + i) as char,
                (b'a' + i) as char,
                p = (b'a' + i - 1) as char
            ));
        }
        assert!(from_str::<serde_json::Value>(&bomb).is_err());
    }
}
