//! Who may see a tenant's report (and map): the one access check of the
//! report server, used by every route that shows a tenant's data.
//!
//! A request is let in when it presents, for a tenant of the tenants file
//! that has `email.report_token`, either
//! - the token in a header, `Authorization: Bearer TOKEN`, or
//! - a short-lived signed link for the resource it asks for (`expires` and
//!   `sig` in the query, see [`crate::config::link`]): a day's report takes
//!   a link of scope `report:{day}` or `map`, the map (page, GeoJSON,
//!   stream) one of scope `map` only. A map link opens the reports too
//!   because the map already shows every day's report rows, and its page
//!   links to them.
//!
//! A token in the URL (`?token=`) is not accepted: URLs land in browser
//! history, proxy logs and `Referer` headers.
//!
//! Every refusal is the same 401 (same body, same headers), whether the
//! tenant does not exist, has no token configured, or the token or link is
//! wrong or expired, so an answer never tells which tenants exist; and an
//! unknown tenant is checked against a stand-in token, so it costs the
//! same time. A client address (an IPv6 /64) that fails
//! [`MAX_FAILURES`] times within [`FAILURE_WINDOW`] gets 429 with
//! `Retry-After` for every request until the oldest failure leaves the
//! window ([`crate::http::throttle`]). Tokens never reach logs, metrics or
//! error texts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::config::link;
use crate::config::secret::Secret;
use crate::config::tenants::Tenant;
use crate::http::throttle::Throttle;

/// Failed attempts an address may make within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: usize = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most.
const MAX_ADDRESSES: usize = 100_000;

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

/// The token a request presents in `Authorization: Bearer`.
pub fn presented_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
}

/// A short plain-text answer that no cache keeps.
pub fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], text).into_response()
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Unknown tenant, no token configured, or a wrong token or link: one
    /// answer for all.
    Unauthorized,
    /// Too many failures from this address lately.
    Throttled { retry_after_s: u64 },
}

/// The answer to a refused request (see the module docs).
pub fn refusal(r: Refused) -> Response {
    match r {
        Refused::Unauthorized => {
            let mut r = plain(StatusCode::UNAUTHORIZED, "a valid report token or link is required\n");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"geoclock-report\""));
            r
        }
        Refused::Throttled { retry_after_s } => {
            let mut r = plain(StatusCode::TOO_MANY_REQUESTS, "too many failed attempts; try again later\n");
            if let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
    }
}

/// The access check, with its memory of failed attempts.
pub struct Access {
    throttle: Mutex<Throttle>,
    stand_in: Secret,
}

impl Default for Access {
    fn default() -> Self {
        Access::new(MAX_FAILURES, FAILURE_WINDOW)
    }
}

impl Access {
    pub fn new(max_failures: usize, window: Duration) -> Access {
        Access {
            throttle: Mutex::new(Throttle::new(max_failures, window, MAX_ADDRESSES)),
            stand_in: Secret::new(format!("stand-in-report-token-{:x}", std::process::id())),
        }
    }

    /// The tenant `segment` names (with the format its suffix asks for),
    /// when the request from `client` may see it: the token in the header,
    /// or a link for one of `scopes` (`report:{day}`, `map`). `now` for
    /// the throttle, `now_s` (unix seconds) for links.
    #[allow(clippy::too_many_arguments)]
    pub fn authorize<'a>(
        &self,
        tenants: &'a HashMap<String, Tenant>,
        segment: &str,
        scopes: &[&str],
        headers: &HeaderMap,
        query: &HashMap<String, String>,
        client: IpAddr,
        now: Instant,
        now_s: i64,
    ) -> Result<(&'a Tenant, Option<Format>), (Refused, Option<Format>)> {
        let resolved = resolve_tenant(tenants, segment);
        let suffix = resolved.and_then(|(_, s)| s);
        if let Err(wait) = self.throttle.lock().unwrap_or_else(|e| e.into_inner()).check(client, now) {
            return Err((Refused::Throttled { retry_after_s: wait.as_secs().max(1) }, suffix));
        }
        let configured = resolved.and_then(|(t, _)| t.email.as_ref()?.report_token.as_ref().map(|k| (t, k)));
        let (name, token) = match configured {
            Some((t, k)) => (t.name.as_str(), k),
            None => ("", &self.stand_in),
        };
        let by_header = presented_token(headers).is_some_and(|given| token.matches(given));
        let by_link = match (query.get("expires"), query.get("sig")) {
            // Every scope is checked, so the time does not tell which matched.
            (Some(e), Some(s)) => {
                scopes.iter().fold(false, |ok, scope| link::verify(token, name, scope, e, s, now_s).is_ok() | ok)
            }
            _ => false,
        };
        match configured {
            Some((t, _)) if by_header || by_link => Ok((t, suffix)),
            _ => {
                self.throttle.lock().unwrap_or_else(|e| e.into_inner()).failed(client, now);
                Err((Refused::Unauthorized, suffix))
            }
        }
    }
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
    fn tokens_come_from_the_bearer_header_only() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_token(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer  from-header "));
        assert_eq!(presented_token(&h), Some("from-header"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwYXNz"));
        assert_eq!(presented_token(&h), None, "other schemes are not tokens");
    }

    fn tenants() -> HashMap<String, Tenant> {
        let text = r#"
[[tenants]]
name = "acme"
[tenants.email]
from = "A <a@acme.example>"
report_token = { value = "t0ken" }
[[tenants]]
name = "quiet"
"#;
        crate::config::tenants::parse(text, "t.toml").unwrap().into_iter().map(|t| (t.name.clone(), t)).collect()
    }

    #[test]
    fn header_or_link_let_in_and_every_refusal_is_the_same() {
        let tenants = tenants();
        let access = Access::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let (now, now_s) = (Instant::now(), 1_800_000_000);
        let none = HashMap::new();
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t0ken"));
        let check = |seg: &str, scope: &str, h: &HeaderMap, q: &HashMap<String, String>| {
            access.authorize(&tenants, seg, &[scope], h, q, ip, now, now_s)
        };
        assert!(matches!(check("acme", "report:x", &bearer, &none), Ok((t, None)) if t.name == "acme"));
        assert!(matches!(check("acme.csv", "report:x", &bearer, &none), Ok((_, Some(Format::Csv)))));
        let token = Secret::new("t0ken");
        let exp = now_s + 3600;
        let link = |scope: &str| {
            HashMap::from([
                ("expires".to_string(), exp.to_string()),
                ("sig".to_string(), link::sign(&token, "acme", scope, exp)),
            ])
        };
        assert!(check("acme", "report:2026-11-27", &HeaderMap::new(), &link("report:2026-11-27")).is_ok());
        let report_or_map = ["report:2026-11-27", link::MAP_SCOPE];
        let by_map_link =
            access.authorize(&tenants, "acme", &report_or_map, &HeaderMap::new(), &link("map"), ip, now, now_s);
        assert!(by_map_link.is_ok(), "a map link opens the report");
        let h = HeaderMap::new();
        let refused = [
            check("acme", "report:2026-11-28", &h, &link("report:2026-11-27")),
            check("acme", "map", &h, &link("report:2026-11-27")),
            check("acme", "map", &h, &HashMap::from([("token".to_string(), "t0ken".to_string())])),
            check("quiet", "report:x", &bearer, &none),
            check("nobody", "report:x", &bearer, &none),
        ];
        for r in refused {
            assert_eq!(r.err().map(|e| e.0), Some(Refused::Unauthorized));
        }
        let a = refusal(Refused::Unauthorized);
        assert_eq!(a.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn the_eleventh_failure_in_a_minute_is_throttled() {
        let tenants = tenants();
        let access = Access::default();
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        let now = Instant::now();
        let mut wrong = HeaderMap::new();
        wrong.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer nope"));
        let mut right = HeaderMap::new();
        right.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t0ken"));
        let q = HashMap::new();
        for i in 0..10 {
            let r = access.authorize(&tenants, "acme", &["map"], &wrong, &q, ip, now + Duration::from_secs(i), 0);
            assert_eq!(r.err().map(|e| e.0), Some(Refused::Unauthorized), "attempt {}", i + 1);
        }
        let r = access.authorize(&tenants, "acme", &["map"], &right, &q, ip, now + Duration::from_secs(10), 0);
        assert!(matches!(r, Err((Refused::Throttled { retry_after_s: 50 }, _))), "{r:?}");
        let other: IpAddr = "198.51.100.10".parse().unwrap();
        assert!(access.authorize(&tenants, "acme", &["map"], &right, &q, other, now, 0).is_ok());
        let later = now + Duration::from_secs(61);
        assert!(access.authorize(&tenants, "acme", &["map"], &right, &q, ip, later, 0).is_ok());
    }
}
