//! What-if on history: the same input re-derived under other settings, and
//! what would change. Pure.
//!
//! The settings file (`geoclock audit --settings FILE`, YAML or JSON)
//! overrides the production settings rather than replacing them: its
//! top-level keys apply to every tenant (`fence_radius_m: 100`), or it
//! names tenants (`tenants: {acme: {min_dwell_s: 60}}`, with an optional
//! `default:` for the others). Unknown keys and out-of-range values are
//! errors, as in the tenants file.
//!
//! Commands of the two runs are matched by id (ids name the decision, not
//! the settings): a clock change only the what-if run decides is
//! `gained`, one only production decides is `lost`, one both decide at
//! another time or place is `changed`; likewise for every other kind.
//! Arrivals are the On Site clock-ins among them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::diff::{digest, Digest, Key, Span};
use crate::engine::{Action, Command};
use crate::model::{Activity, ClockAction, Id, Settings, Ts};
use crate::processor::Tenants;

#[derive(Debug, thiserror::Error)]
pub enum WhatIfError {
    #[error("what-if settings {path}: {error}")]
    File { path: String, error: String },
    #[error("what-if settings for {tenant}: {error}")]
    Settings { tenant: String, error: String },
}

/// Parsed overrides: for every tenant, and per tenant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub default: serde_json::Map<String, Value>,
    pub tenants: BTreeMap<String, serde_json::Map<String, Value>>,
}

impl Overrides {
    pub fn load(path: &Path) -> Result<Overrides, WhatIfError> {
        let bad = |error: String| WhatIfError::File { path: path.display().to_string(), error };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        Overrides::parse(&text).map_err(bad)
    }

    pub fn parse(text: &str) -> Result<Overrides, String> {
        let v: Value = crate::config::yaml::from_str(text).map_err(|e| e.to_string())?;
        let Value::Object(mut top) = v else { return Err("expected a map of settings".into()) };
        let object = |v: Value, what: &str| match v {
            Value::Object(m) => Ok(m),
            _ => Err(format!("`{what}` must be a map of settings")),
        };
        if !top.contains_key("tenants") && !top.contains_key("default") {
            return Ok(Overrides { default: top, tenants: BTreeMap::new() });
        }
        let default = top.remove("default").map(|v| object(v, "default")).transpose()?.unwrap_or_default();
        let mut tenants = BTreeMap::new();
        if let Some(t) = top.remove("tenants") {
            for (name, v) in object(t, "tenants")? {
                let m = object(v, &format!("tenants.{name}"))?;
                tenants.insert(name, m);
            }
        }
        if let Some(k) = top.keys().next() {
            return Err(format!("unknown key `{k}` beside `default`/`tenants`"));
        }
        Ok(Overrides { default, tenants })
    }

    /// `base` with this file's overrides for `tenant`.
    pub fn apply(&self, tenant: &str, base: &Settings) -> Result<Settings, WhatIfError> {
        let bad = |error: String| WhatIfError::Settings { tenant: tenant.to_string(), error };
        let Value::Object(mut m) = serde_json::to_value(base).map_err(|e| bad(e.to_string()))? else {
            return Err(bad("settings are not a map".into()));
        };
        let own = self.tenants.get(tenant).unwrap_or(&self.default);
        for (k, v) in own {
            m.insert(k.clone(), v.clone());
        }
        let s: Settings = serde_json::from_value(Value::Object(m)).map_err(|e| bad(e.to_string()))?;
        s.validate().map_err(|e| bad(e.to_string()))?;
        Ok(s)
    }

    /// The what-if tenants: production's, overridden, for the tenants
    /// production names and every tenant the file names.
    pub fn tenants(&self, production: &Tenants) -> Result<Tenants, WhatIfError> {
        let mut out = Tenants {
            default: self.apply("(default)", &production.default)?,
            any_tenant: production.any_tenant,
            ..Tenants::default()
        };
        // `(default)` takes the file's `default` (there is no such tenant).
        for name in production.tenants.keys().chain(self.tenants.keys()) {
            out.tenants.insert(name.clone(), self.apply(name, &production.settings(name))?);
        }
        Ok(out)
    }
}

/// What one run decided about one command id.
#[derive(Debug, Clone)]
struct Brief {
    appointment: Id,
    kind: &'static str,
    digest: Digest,
    time: i64,
    clock: Option<(Id, Activity, ClockAction, Ts)>,
}

fn brief(c: &Command, time: i64) -> Brief {
    let clock = match &c.action {
        Action::Clock(k) => Some((k.user.clone(), k.activity, k.action, k.time)),
        _ => None,
    };
    Brief { appointment: c.appointment.clone(), kind: c.action.kind(), digest: digest(c), time, clock }
}

/// Collects both runs' commands.
#[derive(Debug, Default)]
pub struct Collector {
    base: HashMap<Key, Brief>,
    alt: HashMap<Key, Brief>,
}

/// One change the what-if settings would make.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub tenant: String,
    pub appointment: Id,
    pub id: String,
    pub kind: String,
    /// `gained`, `lost` or `changed`.
    pub change: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock: Option<String>,
    /// The clock time production decided (clock changes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub production_time: Option<Ts>,
    /// The clock time the what-if settings decide.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub what_if_time: Option<Ts>,
}

/// What would change, per appointment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WhatIf {
    pub arrivals_gained: u64,
    pub arrivals_lost: u64,
    pub arrivals_moved: u64,
    /// Every changed command, by tenant, appointment, then id.
    pub changes: Vec<Change>,
}

impl Collector {
    pub fn production(&mut self, tenant: &str, c: &Command, time: i64) {
        self.base.entry((tenant.to_string(), c.id.clone())).or_insert_with(|| brief(c, time));
    }

    pub fn what_if(&mut self, tenant: &str, c: &Command, time: i64) {
        self.alt.entry((tenant.to_string(), c.id.clone())).or_insert_with(|| brief(c, time));
    }

    pub fn finish(self, span: Span) -> WhatIf {
        let mut w = WhatIf::default();
        let mut keys: Vec<&Key> = self.base.keys().chain(self.alt.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let (b, a) = (self.base.get(key), self.alt.get(key));
            let change = match (b, a) {
                (Some(b), Some(a)) if b.digest == a.digest => continue,
                (Some(_), Some(_)) => "changed",
                (Some(_), None) => "lost",
                (None, Some(_)) => "gained",
                (None, None) => continue,
            };
            let any = b.or(a).map(|x| x.clone());
            let Some(any) = any else { continue };
            if !span.contains(b.map_or(i64::MAX, |x| x.time).min(a.map_or(i64::MAX, |x| x.time))) {
                continue;
            }
            let arrival = matches!(any.clock, Some((_, Activity::Onsite, ClockAction::In, _)));
            if arrival {
                match change {
                    "gained" => w.arrivals_gained += 1,
                    "lost" => w.arrivals_lost += 1,
                    _ => w.arrivals_moved += 1,
                }
            }
            w.changes.push(Change {
                tenant: key.0.clone(),
                appointment: any.appointment.clone(),
                id: key.1.clone(),
                kind: any.kind.to_string(),
                change,
                user: any.clock.as_ref().map(|c| c.0.clone()),
                clock: any.clock.as_ref().map(|c| format!("{} {}", c.1.as_str(), c.2.as_str())),
                production_time: b.and_then(|x| x.clock.as_ref().map(|c| c.3)),
                what_if_time: a.and_then(|x| x.clock.as_ref().map(|c| c.3)),
            });
        }
        w.changes.sort_by(|x, y| (&x.tenant, &x.appointment, &x.id).cmp(&(&y.tenant, &y.appointment, &y.id)));
        w
    }
}

impl WhatIf {
    pub fn summary(&self) -> String {
        let mut out = format!(
            "What-if: {} arrivals gained, {} lost, {} moved; {} commands change\n",
            self.arrivals_gained,
            self.arrivals_lost,
            self.arrivals_moved,
            self.changes.len()
        );
        for c in &self.changes {
            let times = match (c.production_time, c.what_if_time) {
                (Some(p), Some(w)) => format!(" {} → {}", p.to_rfc3339(), w.to_rfc3339()),
                (Some(p), None) => format!(" was {}", p.to_rfc3339()),
                (None, Some(w)) => format!(" at {}", w.to_rfc3339()),
                (None, None) => String::new(),
            };
            out.push_str(&format!(
                "  {:<7} {} appointment {} {}{}{}\n",
                c.change,
                c.tenant,
                c.appointment,
                c.clock.as_deref().map_or(c.kind.clone(), |k| format!("{} {k}", c.kind)),
                c.user.as_ref().map(|u| format!(" (technician {u})")).unwrap_or_default(),
                times
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_on_top_of_production() {
        let prod = Tenants {
            any_tenant: true,
            default: Settings::default(),
            tenants: [("acme".to_string(), Settings { window_hours: 2.0, ..Settings::default() })].into(),
        };
        let all = Overrides::parse("fence_radius_m: 100\n").unwrap();
        let t = all.tenants(&prod).unwrap();
        assert_eq!(t.settings("acme").fence_radius_m, 100.0);
        assert_eq!(t.settings("acme").window_hours, 2.0, "production's own value kept");
        assert_eq!(t.settings("zeta").fence_radius_m, 100.0);
        let one = Overrides::parse("tenants:\n  acme: {min_dwell_s: 60}\n").unwrap();
        let t = one.tenants(&prod).unwrap();
        assert_eq!(t.settings("acme").min_dwell_s, 60);
        assert_eq!(t.settings("zeta"), Settings::default());
        let typo = Overrides::parse("fence_radius: 100\n").unwrap();
        assert!(typo.tenants(&prod).unwrap_err().to_string().contains("unknown field"));
        let range = Overrides::parse("fence_radius_m: -1\n").unwrap();
        assert!(range.tenants(&prod).unwrap_err().to_string().contains("fence_radius_m"));
        assert!(Overrides::parse("tenants: 3\n").is_err());
        assert!(Overrides::parse("default: {}\nextra: 1\n").is_err());
    }
}
