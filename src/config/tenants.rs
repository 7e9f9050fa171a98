//! The tenants file (TOML): each tenant's vendor endpoints, credentials and
//! engine settings.
//!
//! ```toml
//! [[tenants]]
//! name = "acme"
//! timezone = "America/New_York"            # IANA; report days and times (default UTC)
//! settings = { window_hours = 8 }          # engine Settings, validated
//! [tenants.servicetrade]
//! base_url = "http://127.0.0.1:8081"      # the API is under {base_url}/api
//! username = "geoclock-admin"
//! password = { env = "ACME_ST_PASSWORD" } # or { file = "..." } or { value = "..." }
//! webhook_secret = { env = "ACME_ST_HOOK" }
//! webhook_auth = "hmac"                    # or "key"; see config::webhook
//! [tenants.azuga]
//! base_url = "http://127.0.0.1:8082"
//! api_key = { file = "/run/secrets/acme-azuga" }
//! webhook_secret = { env = "ACME_AZ_HOOK" }
//! webhook_auth = "basic"                   # or "key"
//! rate_limit_ms = 60000
//! [tenants.email]                          # Service Links and the daily report
//! from = "Acme Field Service <service@acme.example>"
//! smtp_url = { env = "ACME_SMTP_URL" }    # optional: smtp://user:pass@host:587?tls=required
//! report_recipients = ["ops@acme.example"]   # the daily report, every office's rows
//! office_report_recipients = { "101" = ["north@acme.example"] }   # per office id: its rows only
//! report_token = { env = "ACME_REPORT_TOKEN" }
//! servicetrade_web_url = "https://app.servicetrade.com"   # Quick Links' base (this is the default)
//! admin_name = "Dana Whitfield"            # Service Links' sender name (the activating admin)
//! service_link_url = "https://app.servicetrade.com/servicelink/{appointment}"   # ServiceTrade's own link
//! [tenants.map]                            # the live map (all optional; MapSettings)
//! tile_url = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"   # "": plain background
//! ```
//!
//! Invariants: tenant names are valid key prefixes and unique; every secret
//! is resolved when the file is loaded (a missing env var fails the load,
//! naming the variable, never a value); unknown keys are errors. No error
//! shows a secret: a malformed file's error gives the line and column and
//! the parser's message with every string the file holds as a value
//! replaced by `***` (serde's messages quote offending values, e.g.
//! ``unknown variant `hunter2` ``), never the offending line; an invalid
//! tenant name is named by its place in the file, not echoed; a vendor's
//! `base_url` is an http(s) URL with a host and no `user:password@` (the
//! credentials have their own secret fields).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::secret::{Secret, SecretError, SecretSource};
use super::webhook::{self, WebhookAuth};
use crate::kafka::topics::valid_tenant;
use crate::model::{MapSettings, MapSettingsError, Settings, SettingsError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tenants: Vec<RawTenant>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    name: String,
    timezone: Option<String>,
    #[serde(default)]
    settings: Settings,
    servicetrade: Option<RawServiceTrade>,
    azuga: Option<RawAzuga>,
    email: Option<RawEmail>,
    #[serde(default)]
    map: MapSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    from: String,
    smtp_url: Option<SecretSource>,
    #[serde(default)]
    report_recipients: Vec<String>,
    #[serde(default)]
    office_report_recipients: BTreeMap<String, Vec<String>>,
    report_token: Option<SecretSource>,
    servicetrade_web_url: Option<String>,
    admin_name: Option<String>,
    service_link_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceTrade {
    base_url: String,
    username: String,
    password: SecretSource,
    webhook_secret: SecretSource,
    webhook_auth: Option<WebhookAuth>,
    #[serde(default = "d_reconcile")]
    reconcile_interval_ms: u64,
    #[serde(default = "d_sweep")]
    full_sweep_every: u32,
    #[serde(default = "d_limit")]
    page_limit: u32,
    #[serde(default = "d_st_interval")]
    api_interval_ms: u64,
    #[serde(default = "d_overlap")]
    reconcile_overlap_s: i64,
    #[serde(default = "d_share")]
    max_delete_share: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAzuga {
    base_url: String,
    api_key: SecretSource,
    webhook_secret: SecretSource,
    webhook_auth: Option<WebhookAuth>,
    #[serde(default = "d_rate")]
    rate_limit_ms: u64,
    #[serde(default = "d_poll")]
    poll_interval_ms: u64,
    #[serde(default = "d_sync")]
    entity_sync_interval_ms: u64,
    #[serde(default = "d_history")]
    history_interval_ms: u64,
    #[serde(default = "d_history_overlap")]
    history_overlap_ms: i64,
    #[serde(default = "d_age")]
    max_ping_age_s: i64,
    #[serde(default = "d_future")]
    max_ping_future_s: i64,
    #[serde(default = "d_share")]
    max_delete_share: f64,
}

fn d_reconcile() -> u64 {
    300_000
}
fn d_sweep() -> u32 {
    12
}
fn d_limit() -> u32 {
    100
}
fn d_st_interval() -> u64 {
    100
}
fn d_overlap() -> i64 {
    60
}
fn d_share() -> f64 {
    crate::connect::sweep::MAX_SHARE
}
fn d_rate() -> u64 {
    60_000
}
fn d_poll() -> u64 {
    120_000
}
fn d_sync() -> u64 {
    600_000
}
fn d_history() -> u64 {
    300_000
}
fn d_history_overlap() -> i64 {
    3_600_000
}
fn d_age() -> i64 {
    7 * 86_400
}
fn d_future() -> i64 {
    600
}

#[derive(Debug, Clone)]
pub struct ServiceTradeTenant {
    pub base_url: String,
    pub username: String,
    pub password: Secret,
    pub webhook_secret: Secret,
    /// How the webhooks prove the secret (`None`: any header scheme, or the
    /// deprecated path secret; see [`webhook`]).
    pub webhook_auth: Option<WebhookAuth>,
    pub reconcile_interval_ms: u64,
    /// Every n-th reconciliation lists everything (finds deletes whose
    /// webhook was lost); the others ask only for `updatedAfter`.
    pub full_sweep_every: u32,
    pub page_limit: u32,
    /// Spacing of the sinks' calls to one ServiceTrade API (no documented
    /// limit; be polite).
    pub api_interval_ms: u64,
    /// Each reconciliation re-reads this far behind the last pass's start
    /// (clock differences, stamps in whole seconds).
    pub reconcile_overlap_s: i64,
    /// The share of a kind's entities one full sweep may tombstone without
    /// confirming each (see `connect::sweep`).
    pub max_delete_share: f64,
}

#[derive(Debug, Clone)]
pub struct EmailTenant {
    /// `Display Name <address>`: the sender of Service Links and reports.
    pub from: String,
    /// The tenant's own SMTP relay; the sink's `--smtp` when absent.
    pub smtp_url: Option<Secret>,
    pub report_recipients: Vec<String>,
    /// Per ServiceTrade office id: who gets that office's own daily report.
    pub office_report_recipients: BTreeMap<String, Vec<String>>,
    pub report_token: Option<Secret>,
    /// Base of the quick links to jobs in the report.
    pub servicetrade_web_url: Option<String>,
    /// The full name of the ServiceTrade admin who activated the
    /// integration: the Service Link's sender display name (the address
    /// stays `from`'s).
    pub admin_name: Option<String>,
    /// ServiceTrade's own Service Link URL for an appointment, as a pattern
    /// with `{appointment}` and `{job_number}`; the Service Link carries it
    /// beside the TrackMe link.
    pub service_link_url: Option<String>,
}

impl ServiceTradeTenant {
    /// What the inbox checks `tenant`'s ServiceTrade webhooks against.
    pub fn webhook_policy(&self, tenant: &str) -> webhook::Policy {
        webhook::Policy {
            tenant: tenant.to_string(),
            secret: self.webhook_secret.clone(),
            configured: self.webhook_auth,
            allowed: webhook::SERVICETRADE,
        }
    }
}

impl AzugaTenant {
    /// What the inbox checks `tenant`'s Azuga webhooks against.
    pub fn webhook_policy(&self, tenant: &str) -> webhook::Policy {
        webhook::Policy {
            tenant: tenant.to_string(),
            secret: self.webhook_secret.clone(),
            configured: self.webhook_auth,
            allowed: webhook::AZUGA,
        }
    }
}

impl EmailTenant {
    /// ServiceTrade's Service Link URL for an appointment, from the
    /// tenant's pattern (placeholders filled with `%`-encoded values).
    pub fn service_link_url(&self, appointment: &str, job_number: Option<&str>) -> Option<String> {
        let enc = crate::http::client::urlencode;
        let p = self.service_link_url.as_deref()?;
        if p.contains("{job_number}") && job_number.is_none() {
            return None;
        }
        Some(p.replace("{appointment}", &enc(appointment)).replace("{job_number}", &enc(job_number.unwrap_or(""))))
    }

    /// The display name of `from`, for the email body.
    pub fn company(&self) -> &str {
        match self.from.split_once('<') {
            Some((name, _)) if !name.trim().is_empty() => name.trim().trim_matches('"'),
            _ => self.from.trim(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AzugaTenant {
    pub base_url: String,
    pub api_key: Secret,
    pub webhook_secret: Secret,
    /// As for ServiceTrade (Basic or key).
    pub webhook_auth: Option<WebhookAuth>,
    pub rate_limit_ms: u64,
    pub poll_interval_ms: u64,
    pub entity_sync_interval_ms: u64,
    /// Location-history backfill period (recovers fixes whose webhook was
    /// lost or arrived while the connector was down).
    pub history_interval_ms: u64,
    /// Each backfill re-reads this far behind the newest fix it saw, for
    /// late (buffered) fixes.
    pub history_overlap_ms: i64,
    pub max_ping_age_s: i64,
    pub max_ping_future_s: i64,
    /// The share of a kind's entities one sync may tombstone without a
    /// second listing agreeing (see `connect::sweep`).
    pub max_delete_share: f64,
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    /// IANA zone for report days and times (`None`: UTC).
    pub timezone: Option<String>,
    pub settings: Settings,
    pub servicetrade: Option<ServiceTradeTenant>,
    pub azuga: Option<AzugaTenant>,
    pub email: Option<EmailTenant>,
    /// The live map's tiles and estimates.
    pub map: MapSettings,
}

/// Where a report's Quick Link points when the tenant names no
/// `email.servicetrade_web_url`: ServiceTrade's own web app.
pub const DEFAULT_SERVICETRADE_WEB_URL: &str = "https://app.servicetrade.com";

impl Tenant {
    /// The base of the report's Quick Links to jobs (`{base}/job/{id}`):
    /// the configured one, else ServiceTrade's web app.
    pub fn servicetrade_web_url(&self) -> &str {
        self.email.as_ref().and_then(|e| e.servicetrade_web_url.as_deref()).unwrap_or(DEFAULT_SERVICETRADE_WEB_URL)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TenantsError {
    #[error("cannot read tenants file {path}: {message}")]
    Read { path: String, message: String },
    #[error("malformed tenants file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("tenant {tenant:?}: {message}")]
    Invalid { tenant: String, message: String },
    #[error("tenant {tenant}: {field}: {error}")]
    Secret { tenant: String, field: &'static str, error: SecretError },
    #[error("tenant {tenant}: {error}")]
    Settings { tenant: String, error: SettingsError },
    #[error("tenant {tenant}: {error}")]
    Map { tenant: String, error: MapSettingsError },
}

fn resolve(tenant: &str, field: &'static str, s: &SecretSource) -> Result<Secret, TenantsError> {
    s.resolve().map_err(|error| TenantsError::Secret { tenant: tenant.to_string(), field, error })
}

fn share(tenant: &str, v: f64) -> Result<f64, TenantsError> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(TenantsError::Invalid {
            tenant: tenant.to_string(),
            message: format!("max_delete_share {v} is not in [0, 1]"),
        })
    }
}

fn auth(tenant: &str, vendor: &str, a: Option<WebhookAuth>, allowed: &[WebhookAuth]) -> Result<(), TenantsError> {
    match a {
        Some(a) if !allowed.contains(&a) => Err(TenantsError::Invalid {
            tenant: tenant.to_string(),
            message: format!(
                "{vendor}.webhook_auth {:?} is not one of {}",
                a.as_str(),
                allowed.iter().map(|a| format!("{:?}", a.as_str())).collect::<Vec<_>>().join(", ")
            ),
        }),
        _ => Ok(()),
    }
}

/// A vendor's `base_url` is an http(s) URL without credentials (they go
/// in the secret fields); the error does not echo the URL, which may hold
/// a password.
fn base_url(tenant: &str, vendor: &str, url: &str, secret_field: &str) -> Result<(), TenantsError> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let authority = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    match authority {
        Some(a) if !a.is_empty() && !a.contains('@') && !a.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Ok(())
        }
        _ => Err(TenantsError::Invalid {
            tenant: tenant.to_string(),
            message: format!(
                "{vendor}.base_url must be an http(s) URL with a host and no user:password@ \
                 (credentials go in {vendor}.{secret_field})"
            ),
        }),
    }
}

/// A TOML error as `line L, column C: message`, with every string value
/// of the file replaced by `***` in the message (see the module docs).
fn parse_error(text: &str, path: &str, e: &toml::de::Error) -> TenantsError {
    let at = e.span().map(|s| {
        let before = &text.as_bytes()[..s.start.min(text.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
        format!("line {line}, column {column}: ")
    });
    let values = string_values(text);
    TenantsError::Parse {
        path: path.into(),
        message: format!("{}{}", at.unwrap_or_default(), redact(e.message(), &values)),
    }
}

/// Every string the text holds as a value: from the parsed document when
/// it parses, else every quoted run of each line (a rough lexer, enough
/// to know what to hide).
fn string_values(text: &str) -> Vec<String> {
    fn walk(v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::String(s) => out.push(s.clone()),
            toml::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            toml::Value::Table(t) => t.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    match text.parse::<toml::Table>() {
        Ok(t) => t.values().for_each(|v| walk(v, &mut out)),
        Err(_) => {
            for line in text.lines() {
                let mut rest = line;
                while let Some(i) = rest.find(['"', '\'']) {
                    let q = rest[i..].chars().next().unwrap_or('"');
                    let after = &rest[i + 1..];
                    let end = after.find(q).unwrap_or(after.len());
                    out.push(after[..end].to_string());
                    rest = after.get(end + 1..).unwrap_or("");
                }
            }
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// `message` with each quoted part (`"…"`, `` `…` ``, `'…'`) that holds,
/// or is part of, one of `values` replaced by `***`.
fn redact(message: &str, values: &[String]) -> String {
    let hides = |part: &str| {
        !part.is_empty() && values.iter().any(|v| part.contains(v.as_str()) || (part.len() >= 3 && v.contains(part)))
    };
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(['"', '`', '\'']) {
        let q = rest[i..].chars().next().unwrap_or('"');
        out.push_str(&rest[..=i]);
        let after = &rest[i + 1..];
        match after.find(q) {
            Some(end) => {
                let part = &after[..end];
                out.push_str(if hides(part) { "***" } else { part });
                out.push(q);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(if hides(after) { "***" } else { after });
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Parses and resolves a tenants file's text.
pub fn parse(text: &str, path: &str) -> Result<Vec<Tenant>, TenantsError> {
    let file: File = toml::from_str(text).map_err(|e| parse_error(text, path, &e))?;
    let mut out: Vec<Tenant> = Vec::new();
    for (i, t) in file.tenants.into_iter().enumerate() {
        let invalid = |message: &str| TenantsError::Invalid { tenant: t.name.clone(), message: message.into() };
        if !valid_tenant(&t.name) {
            // Named by its place, not echoed: an invalid name may be any
            // text at all, a pasted credential included.
            return Err(TenantsError::Invalid {
                tenant: format!("#{} in the file", i + 1),
                message: format!("name ({} bytes) must use letters, digits, '_', '.', '-'", t.name.len()),
            });
        }
        if out.iter().any(|o| o.name == t.name) {
            return Err(invalid("listed twice"));
        }
        t.settings.validate().map_err(|error| TenantsError::Settings { tenant: t.name.clone(), error })?;
        t.map.validate().map_err(|error| TenantsError::Map { tenant: t.name.clone(), error })?;
        if let Some(z) = &t.timezone {
            if z.parse::<chrono_tz::Tz>().is_err() {
                return Err(invalid(&format!("timezone {z:?} is not an IANA zone name")));
            }
        }
        if let Some(s) = &t.servicetrade {
            auth(&t.name, "servicetrade", s.webhook_auth, webhook::SERVICETRADE)?;
            base_url(&t.name, "servicetrade", &s.base_url, "password")?;
        }
        if let Some(a) = &t.azuga {
            auth(&t.name, "azuga", a.webhook_auth, webhook::AZUGA)?;
            base_url(&t.name, "azuga", &a.base_url, "api_key")?;
        }
        let servicetrade = match &t.servicetrade {
            Some(s) => Some(ServiceTradeTenant {
                base_url: s.base_url.trim_end_matches('/').to_string(),
                username: s.username.clone(),
                password: resolve(&t.name, "servicetrade.password", &s.password)?,
                webhook_secret: resolve(&t.name, "servicetrade.webhook_secret", &s.webhook_secret)?,
                webhook_auth: s.webhook_auth,
                reconcile_interval_ms: s.reconcile_interval_ms.max(10),
                full_sweep_every: s.full_sweep_every.max(1),
                page_limit: s.page_limit.clamp(1, 1000),
                api_interval_ms: s.api_interval_ms,
                reconcile_overlap_s: s.reconcile_overlap_s.max(1),
                max_delete_share: share(&t.name, s.max_delete_share)?,
            }),
            None => None,
        };
        let azuga = match &t.azuga {
            Some(a) => Some(AzugaTenant {
                base_url: a.base_url.trim_end_matches('/').to_string(),
                api_key: resolve(&t.name, "azuga.api_key", &a.api_key)?,
                webhook_secret: resolve(&t.name, "azuga.webhook_secret", &a.webhook_secret)?,
                webhook_auth: a.webhook_auth,
                rate_limit_ms: a.rate_limit_ms,
                poll_interval_ms: a.poll_interval_ms.max(10),
                entity_sync_interval_ms: a.entity_sync_interval_ms.max(10),
                history_interval_ms: a.history_interval_ms.max(10),
                history_overlap_ms: a.history_overlap_ms.max(0),
                max_ping_age_s: a.max_ping_age_s,
                max_ping_future_s: a.max_ping_future_s,
                max_delete_share: share(&t.name, a.max_delete_share)?,
            }),
            None => None,
        };
        let email = match &t.email {
            Some(e) => Some(EmailTenant {
                from: e.from.clone(),
                smtp_url: e.smtp_url.as_ref().map(|s| resolve(&t.name, "email.smtp_url", s)).transpose()?,
                report_recipients: e.report_recipients.clone(),
                office_report_recipients: e.office_report_recipients.clone(),
                report_token: e.report_token.as_ref().map(|s| resolve(&t.name, "email.report_token", s)).transpose()?,
                servicetrade_web_url: e.servicetrade_web_url.as_ref().map(|u| u.trim_end_matches('/').to_string()),
                admin_name: e.admin_name.as_ref().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()),
                service_link_url: match &e.service_link_url {
                    Some(u) if !(u.starts_with("https://") || u.starts_with("http://")) || !u.contains('{') => {
                        return Err(TenantsError::Invalid {
                            tenant: t.name.clone(),
                            message: "email.service_link_url must be an http(s) URL pattern with {appointment} or {job_number}"
                                .into(),
                        })
                    }
                    other => other.clone(),
                },
            }),
            None => None,
        };
        out.push(Tenant {
            name: t.name,
            timezone: t.timezone,
            settings: t.settings,
            servicetrade,
            azuga,
            email,
            map: t.map,
        });
    }
    Ok(out)
}

pub fn load(path: &Path) -> Result<Vec<Tenant>, TenantsError> {
    let name = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| TenantsError::Read { path: name.clone(), message: e.to_string() })?;
    parse(&text, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[tenants]]
name = "acme"
settings = { window_hours = 4 }
[tenants.servicetrade]
base_url = "http://st/"
username = "admin"
password = { value = "pw-123" }
webhook_secret = { value = "hook-456" }
[tenants.azuga]
base_url = "http://az"
api_key = { value = "key-789" }
webhook_secret = { value = "hook-000" }
rate_limit_ms = 100
"#;

    #[test]
    fn parses_and_hides_secrets() {
        let t = parse(FILE, "t.toml").unwrap();
        assert_eq!(t[0].settings.window_hours, 4.0);
        let st = t[0].servicetrade.as_ref().unwrap();
        assert_eq!(st.base_url, "http://st");
        assert_eq!(st.password.expose(), "pw-123");
        let shown = format!("{t:?}");
        for s in ["pw-123", "hook-456", "key-789", "hook-000"] {
            assert!(!shown.contains(s), "{shown}");
        }
        assert_eq!(t[0].azuga.as_ref().unwrap().rate_limit_ms, 100);
    }

    #[test]
    fn an_invalid_name_or_a_base_url_with_credentials_is_refused_without_echoing_it() {
        let e = parse(&FILE.replace("name = \"acme\"", "name = \"x:pw-123@y\""), "t.toml").unwrap_err().to_string();
        assert_eq!(e, "tenant \"#1 in the file\": name (10 bytes) must use letters, digits, '_', '.', '-'");
        for url in ["http://admin:pw-123@st/", "st.example", "http://", "ftp://st", "http://st example/"] {
            let e = parse(&FILE.replace("http://st/", url), "t.toml").unwrap_err().to_string();
            assert!(e.contains("servicetrade.base_url must be an http(s) URL"), "{url}: {e}");
            assert!(!e.contains("pw-123"), "{e}");
        }
        let e = parse(&FILE.replace("http://az", "https://k:pw-123@az"), "t.toml").unwrap_err().to_string();
        assert!(e.contains("azuga.base_url") && e.contains("azuga.api_key") && !e.contains("pw-123"), "{e}");
        assert!(parse(&FILE.replace("http://st/", "https://st.example:8443/api?x=1"), "t.toml").is_ok());
    }

    #[test]
    fn service_link_sender_and_servicetrade_link_pattern() {
        let file = format!(
            "{FILE}[tenants.email]\nfrom = \"Acme <s@acme.example>\"\nadmin_name = \" Dana Whitfield \"\nservice_link_url = \"https://app.servicetrade.com/servicelink/{{appointment}}?job={{job_number}}\"\n"
        );
        let t = parse(&file, "t.toml").unwrap();
        let e = t[0].email.as_ref().unwrap();
        assert_eq!(e.admin_name.as_deref(), Some("Dana Whitfield"));
        assert_eq!(
            e.service_link_url("7001", Some("J 1")).as_deref(),
            Some("https://app.servicetrade.com/servicelink/7001?job=J%201")
        );
        assert_eq!(e.service_link_url("7001", None), None, "a pattern needing the job number, without one");
        let bad = file.replace("https://app.servicetrade.com/servicelink/{appointment}?job={job_number}", "ftp://x");
        assert!(parse(&bad, "t.toml").unwrap_err().to_string().contains("service_link_url"));
    }

    #[test]
    fn a_polygon_fence_per_location_comes_from_the_settings_table() {
        let file = FILE.replace("settings = { window_hours = 4 }\n", "")
            + "[tenants.settings]\nwindow_hours = 4\n[tenants.settings.location_polygons]\n\"5\" = [[35.2266, -80.8480], [35.2276, -80.8480], [35.2276, -80.8380]]\n";
        let t = parse(&file, "t.toml").unwrap();
        assert!(t[0].settings.location_polygon("5").is_some(), "{:?}", t[0].settings.location_polygons);
        let bad = file.replace("[35.2276, -80.8380]]", "[91.0, -80.8380]]");
        let e = parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(e.contains("location_polygons.5"), "{e}");
    }

    #[test]
    fn quick_links_default_to_servicetrade_web_app() {
        let t = parse(FILE, "t.toml").unwrap();
        assert_eq!(t[0].servicetrade_web_url(), "https://app.servicetrade.com");
        let own =
            format!("{FILE}[tenants.email]\nfrom = \"a@b.example\"\nservicetrade_web_url = \"https://st.example/\"\n");
        assert_eq!(parse(&own, "t.toml").unwrap()[0].servicetrade_web_url(), "https://st.example");
    }

    #[test]
    fn report_recipients_per_office() {
        let own = format!(
            "{FILE}[tenants.email]\nfrom = \"a@b.example\"\nreport_recipients = [\"ops@b.example\"]\n[tenants.email.office_report_recipients]\n\"101\" = [\"north@b.example\"]\n\"O-2\" = [\"south@b.example\", \"boss@b.example\"]\n"
        );
        let t = parse(&own, "t.toml").unwrap();
        let e = t[0].email.as_ref().unwrap();
        assert_eq!(e.report_recipients, vec!["ops@b.example".to_string()]);
        assert_eq!(e.office_report_recipients["101"], vec!["north@b.example".to_string()]);
        assert_eq!(e.office_report_recipients["O-2"].len(), 2);
        let none = format!("{FILE}[tenants.email]\nfrom = \"a@b.example\"\n");
        assert!(parse(&none, "t.toml").unwrap()[0].email.as_ref().unwrap().office_report_recipients.is_empty());
    }

    #[test]
    fn errors_name_the_source_not_the_value() {
        let bad =
            FILE.replace(r#"password = { value = "pw-123" }"#, r#"password = { env = "GEOCLOCK_TEST_UNSET_PW" }"#);
        let e = parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(e.contains("GEOCLOCK_TEST_UNSET_PW") && e.contains("servicetrade.password"), "{e}");
        let e = parse(&FILE.replace("name = \"acme\"", "name = \"a b\""), "t.toml").unwrap_err().to_string();
        assert!(e.contains("#1 in the file") && e.contains("name (3 bytes)") && !e.contains("a b"), "{e}");
        let e = parse(&FILE.replace("name = \"acme\"", "name = \"acme\"\ntimezone = \"Mars/Olympus\""), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Mars/Olympus"), "{e}");
        let e = parse(&FILE.replace("window_hours = 4", "window_hours = -1"), "t.toml").unwrap_err().to_string();
        assert!(e.contains("window_hours"), "{e}");
        assert!(parse(&FILE.replace("rate_limit_ms", "rate_limt_ms"), "t.toml").is_err());
        let e = parse(&FILE.replace("rate_limit_ms = 100", "rate_limit_ms = 100\nwebhook_auth = \"hmac\""), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("azuga.webhook_auth \"hmac\""), "Azuga does not sign: {e}");
    }

    #[test]
    fn malformed_files_never_show_a_secret() {
        let cases = [
            // A secret where a source table belongs: serde quotes it as an unknown variant.
            FILE.replace(r#"password = { value = "pw-123" }"#, r#"password = "pw-123""#),
            // A secret where a number belongs.
            FILE.replace("rate_limit_ms = 100", r#"rate_limit_ms = "key-789""#),
            // Syntax errors on the line that holds a secret.
            FILE.replace(r#"{ value = "hook-456" }"#, r#"{ value = "hook-456" "#),
            FILE.replace(r#"{ value = "hook-456" }"#, r#"{ value = "hook-456" } trailing"#),
            FILE.replace(r#"{ value = "key-789" }"#, r#"{ value = 'key-789 }"#),
            FILE.replace(r#"{ value = "key-789" }"#, r#"{ value = "key\q-789" }"#),
        ];
        for bad in cases {
            let e = parse(&bad, "t.toml").unwrap_err().to_string();
            for s in ["pw-123", "hook-456", "key-789", "hook-000", "key\\q"] {
                assert!(!e.contains(s), "{s} in {e}");
            }
            assert!(e.contains("line "), "{e}");
        }
        let e = parse(&FILE.replace("rate_limit_ms", "rate_limt_ms"), "t.toml").unwrap_err().to_string();
        assert!(e.contains("rate_limt_ms"), "a misspelt key is named: {e}");
    }
}
