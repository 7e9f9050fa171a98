//! Which tenants the processor serves, with each one's engine settings.
//!
//! Invariant: with a tenants file, only the tenants it lists are served.
//! A record naming any other tenant is dead-lettered (`unknown_tenant`) and
//! creates no engine, so a producer with access to the input topics cannot
//! make tenants up. Without a tenants file (tests, trying things by hand)
//! every tenant is served with the default settings ([`Tenants::any`]); a
//! YAML file may ask for that too (`any_tenant: true`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::model::{Settings, SettingsError};

#[derive(Debug, thiserror::Error)]
pub enum TenantsError {
    #[error("tenants file {path}: {error}")]
    File { path: String, error: String },
    #[error("settings of tenant {tenant}: {error}")]
    Settings { tenant: String, error: SettingsError },
}

/// Each tenant's engine settings, and whether unlisted tenants are served.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenants {
    /// Settings of a served tenant that is not listed (only with `any_tenant`).
    #[serde(default)]
    pub default: Settings,
    #[serde(default)]
    pub tenants: BTreeMap<String, Settings>,
    /// Serve every tenant a record names, not only the listed ones.
    #[serde(default)]
    pub any_tenant: bool,
}

impl Tenants {
    /// Every tenant, with default settings (no tenants file).
    pub fn any() -> Tenants {
        Tenants { any_tenant: true, ..Tenants::default() }
    }

    /// Reads a tenants file and validates every tenant's settings: the
    /// deployment's TOML file (`*.toml`, see [`crate::config::tenants`];
    /// its `settings` per tenant are used, its secrets are resolved too) or
    /// a YAML/JSON file with `tenants: {name: settings}` (and optionally
    /// `default:` with `any_tenant: true`).
    pub fn load(path: &Path) -> Result<Tenants, TenantsError> {
        let bad = |error: String| TenantsError::File { path: path.display().to_string(), error };
        if path.extension().is_some_and(|e| e == "toml") {
            let list = crate::config::tenants::load(path).map_err(|e| bad(e.to_string()))?;
            let tenants = list.into_iter().map(|t| (t.name, t.settings)).collect();
            return Ok(Tenants { tenants, ..Tenants::default() });
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let t: Tenants = crate::config::yaml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        t.validate()?;
        if t.tenants.is_empty() && !t.any_tenant {
            tracing::warn!(path = %path.display(), "the tenants file lists no tenant: every record will be dead-lettered");
        }
        Ok(t)
    }

    pub fn validate(&self) -> Result<(), TenantsError> {
        let default = std::iter::once(("(default)", &self.default));
        for (tenant, s) in default.chain(self.tenants.iter().map(|(t, s)| (t.as_str(), s))) {
            s.validate().map_err(|error| TenantsError::Settings { tenant: tenant.to_string(), error })?;
        }
        Ok(())
    }

    /// Whether records of `tenant` are processed.
    pub fn serves(&self, tenant: &str) -> bool {
        self.any_tenant || self.tenants.contains_key(tenant)
    }

    pub fn settings(&self, tenant: &str) -> Settings {
        self.tenants.get(tenant).unwrap_or(&self.default).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("geoclock-tenants-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn tenants_come_from_the_deployments_toml_file_too() {
        let path = temp("t.toml", "[[tenants]]\nname = \"acme\"\nsettings = { window_hours = 3 }\n");
        let t = Tenants::load(&path).unwrap();
        assert_eq!(t.settings("acme").window_hours, 3.0);
        assert!(t.serves("acme") && !t.serves("other"), "only the listed tenants");
        std::fs::write(&path, "[[tenants]]\nname = \"acme\"\nsettings = { window_hours = -3 }\n").unwrap();
        assert!(Tenants::load(&path).is_err());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_yaml_file_serves_its_tenants_or_any_when_it_says_so() {
        let path = temp("t.yaml", "tenants:\n  acme: {window_hours: 2}\n");
        let t = Tenants::load(&path).unwrap();
        assert!(t.serves("acme") && !t.serves("evil"));
        std::fs::write(&path, "default: {window_hours: 5}\nany_tenant: true\n").unwrap();
        let t = Tenants::load(&path).unwrap();
        assert!(t.serves("whoever"));
        assert_eq!(t.settings("whoever").window_hours, 5.0);
        assert!(Tenants::any().serves("x") && !Tenants::default().serves("x"));
        let _ = std::fs::remove_file(&path);
    }
}
