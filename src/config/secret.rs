//! Credentials that never show: [`Secret`]'s `Debug` and `Display` print
//! `***`, so a secret inside a config, an error or a log field stays hidden.
//! The value is read only through [`Secret::expose`], at the point of use
//! (an HTTP header, a signature).
//!
//! Comparing a candidate with a secret ([`Secret::matches`]) takes time
//! independent of the secret: the secret's SHA-256 digest is computed once,
//! when it is made; a comparison hashes the candidate (time that depends
//! only on the candidate, which the caller already knows) and compares the
//! two 32-byte digests with `subtle`'s constant-time equality. So neither
//! where a guess differs nor how long the secret is shows in the answer's
//! timing.

use std::fmt;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Clone)]
pub struct Secret {
    value: String,
    digest: [u8; 32],
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.digest.ct_eq(&other.digest).into()
    }
}

impl Eq for Secret {}

/// The SHA-256 digest of `bytes`.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        let value = value.into();
        let digest = digest(value.as_bytes());
        Secret { value, digest }
    }

    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Whether `candidate` is this secret, in time independent of the
    /// secret's contents and length (see the module docs).
    pub fn matches(&self, candidate: &str) -> bool {
        self.matches_digest(&digest(candidate.as_bytes()))
    }

    /// [`Secret::matches`] for a candidate already hashed with [`digest`].
    pub fn matches_digest(&self, candidate: &[u8; 32]) -> bool {
        self.digest.ct_eq(candidate).into()
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
        String::deserialize(d).map(Secret::new)
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
        Ok(Secret::new(value))
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
