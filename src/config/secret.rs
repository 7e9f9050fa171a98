//! Credentials that never show: [`Secret`]'s `Debug` and `Display` print
//! `***`, so a secret inside a config, an error or a log field stays hidden.
//! The value is read only through [`Secret::expose`], at the point of use
//! (an HTTP header, a comparison).

use std::fmt;

use serde::Deserialize;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares without stopping at the first differing byte.
    pub fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), candidate.as_bytes());
        let mut diff = a.len() ^ b.len();
        for i in 0..a.len().max(b.len()) {
            diff |= (a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0)) as usize;
        }
        diff == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret comes from, in the tenants file: `{env = "NAME"}`,
/// `{file = "/path"}` (trailing newline trimmed) or `{value = "..."}`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum SecretSource {
    Env(String),
    File(String),
    Value(Secret),
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(n) => write!(f, "env:{n}"),
            SecretSource::File(p) => write!(f, "file:{p}"),
            SecretSource::Value(_) => f.write_str("value:***"),
        }
    }
}

/// Why a secret could not be read. Names the source, never the value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SecretError {
    #[error("environment variable {0} is not set (or not UTF-8)")]
    Env(String),
    #[error("cannot read secret file {path}: {message}")]
    File { path: String, message: String },
    #[error("secret from {0:?} is empty")]
    Empty(SecretSource),
}

impl SecretSource {
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let value = match self {
            SecretSource::Env(name) => std::env::var(name).map_err(|_| SecretError::Env(name.clone()))?,
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| SecretError::File { path: path.clone(), message: e.kind().to_string() })?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            SecretSource::Value(s) => s.expose().to_string(),
        };
        if value.is_empty() {
            return Err(SecretError::Empty(self.clone()));
        }
        Ok(Secret(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        let src = SecretSource::Value(s.clone());
        assert!(!format!("{src:?}").contains("hunter2"));
        assert!(s.matches("hunter2") && !s.matches("hunter") && !s.matches("hunter22"));
        assert_eq!(
            SecretSource::Env("GEOCLOCK_NO_SUCH_VAR".into()).resolve(),
            Err(SecretError::Env("GEOCLOCK_NO_SUCH_VAR".into()))
        );
    }
}
