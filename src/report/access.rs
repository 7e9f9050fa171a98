//! Who may see a tenant's report and map: the one access check of the
//! report server, used by every route that shows a tenant's data.
//!
//! Checked in this order before anything else is looked at: a tenant not
//! in the tenants file → 404 (the answer names no tenant); a tenant
//! without `email.report_token` → 403 (its report and map are disabled);
//! no token or a wrong one → 401. The token is `Authorization: Bearer
//! TOKEN` or `?token=TOKEN`; both are compared through their SHA-256
//! digests, in time independent of where they differ and of their
//! lengths. Tokens never reach logs, metrics or error texts.

use std::collections::HashMap;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::config::tenants::Tenant;

/// The report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Csv,
    Json,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "html" => Some(Format::Html),
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
}

/// The tenant a `/report/{segment}` names, and the format its suffix asks
/// for: `acme` or `acme.csv` (a tenant named `acme.csv` wins over the
/// suffix).
pub fn resolve_tenant<'a, T>(tenants: &'a HashMap<String, T>, segment: &str) -> Option<(&'a T, Option<Format>)> {
    if let Some(t) = tenants.get(segment) {
        return Some((t, None));
    }
    let (stem, suffix) = segment.rsplit_once('.')?;
    Some((tenants.get(stem)?, Some(Format::parse(suffix)?)))
}

/// The token a request presents: the `Authorization: Bearer` header, else
/// the `token` query parameter.
pub fn presented_token<'a>(headers: &'a HeaderMap, query: &'a HashMap<String, String>) -> Option<&'a str> {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    bearer.or(query.get("token").map(String::as_str)).filter(|t| !t.is_empty())
}

/// Compares two tokens in time independent of their contents and lengths.
pub fn token_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(expected.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A short plain-text answer that no cache keeps.
pub fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], text).into_response()
}

/// Why a request was refused, as [`refusal`] answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    NoSuchTenant,
    Disabled,
    BadToken,
}

/// The answer to a refused request (see the module docs).
pub fn refusal(r: Refused) -> Response {
    match r {
        Refused::NoSuchTenant => plain(StatusCode::NOT_FOUND, "no such report\n"),
        Refused::Disabled => plain(StatusCode::FORBIDDEN, "report disabled for this tenant\n"),
        Refused::BadToken => {
            let mut r = plain(StatusCode::UNAUTHORIZED, "a valid report token is required\n");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"geoclock-report\""));
            r
        }
    }
}

/// The access check: the tenant `segment` names (with the format its
/// suffix asks for) when the request presents its token.
pub fn authorize<'a>(
    tenants: &'a HashMap<String, Tenant>,
    segment: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(&'a Tenant, Option<Format>), (Refused, Option<Format>)> {
    let Some((tenant, suffix)) = resolve_tenant(tenants, segment) else {
        return Err((Refused::NoSuchTenant, None));
    };
    let Some(expected) = tenant.email.as_ref().and_then(|e| e.report_token.as_ref()) else {
        return Err((Refused::Disabled, suffix));
    };
    if !presented_token(headers, query).is_some_and(|given| token_matches(given, expected.expose())) {
        return Err((Refused::BadToken, suffix));
    }
    Ok((tenant, suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_resolve_with_or_without_a_format_suffix() {
        let tenants: HashMap<String, u8> = HashMap::from([("acme".into(), 1), ("odd.csv".into(), 2)]);
        assert_eq!(resolve_tenant(&tenants, "acme"), Some((&1, None)));
        assert_eq!(resolve_tenant(&tenants, "acme.csv"), Some((&1, Some(Format::Csv))));
        assert_eq!(resolve_tenant(&tenants, "acme.json"), Some((&1, Some(Format::Json))));
        assert_eq!(resolve_tenant(&tenants, "odd.csv"), Some((&2, None)), "a tenant's own name wins");
        assert_eq!(resolve_tenant(&tenants, "acme.pdf"), None);
        assert_eq!(resolve_tenant(&tenants, "nobody"), None);
        assert_eq!(resolve_tenant(&tenants, ""), None);
    }

    #[test]
    fn tokens_come_from_the_bearer_header_or_the_query() {
        let mut h = HeaderMap::new();
        let mut q = HashMap::new();
        assert_eq!(presented_token(&h, &q), None);
        q.insert("token".to_string(), "from-query".to_string());
        assert_eq!(presented_token(&h, &q), Some("from-query"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer  from-header "));
        assert_eq!(presented_token(&h, &q), Some("from-header"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwYXNz"));
        assert_eq!(presented_token(&h, &q), Some("from-query"), "other schemes are not tokens");
        q.insert("token".to_string(), String::new());
        assert_eq!(presented_token(&h, &q), None, "an empty token is none");
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("s3creT", "s3cret"));
        assert!(!token_matches("", "s3cret"));
    }

    #[test]
    fn the_check_runs_tenant_then_token_configured_then_token() {
        let text = r#"
[[tenants]]
name = "acme"
[tenants.email]
from = "A <a@acme.example>"
report_token = { value = "t0ken" }
[[tenants]]
name = "quiet"
"#;
        let tenants: HashMap<String, Tenant> =
            crate::config::tenants::parse(text, "t.toml").unwrap().into_iter().map(|t| (t.name.clone(), t)).collect();
        let h = HeaderMap::new();
        let q = |t: &str| HashMap::from([("token".to_string(), t.to_string())]);
        assert!(matches!(authorize(&tenants, "acme", &h, &q("t0ken")), Ok((t, None)) if t.name == "acme"));
        assert!(matches!(authorize(&tenants, "acme.csv", &h, &q("t0ken")), Ok((_, Some(Format::Csv)))));
        assert_eq!(authorize(&tenants, "acme", &h, &q("nope")).err(), Some((Refused::BadToken, None)));
        assert_eq!(authorize(&tenants, "quiet", &h, &q("t0ken")).err(), Some((Refused::Disabled, None)));
        assert_eq!(authorize(&tenants, "nobody", &h, &q("t0ken")).err(), Some((Refused::NoSuchTenant, None)));
        assert_eq!(refusal(Refused::BadToken).status(), StatusCode::UNAUTHORIZED);
    }
}
