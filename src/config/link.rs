//! Short-lived signed links to a tenant's report (or map): a URL that
//! carries `expires` (unix seconds) and `sig`, the HMAC-SHA256 of
//! `"{tenant}\n{scope}\n{expires}"` under the tenant's report token, instead
//! of the token itself.
//!
//! Whoever holds the token (the report server, the email sink) can make
//! links; a link opens only its tenant and scope (`report:2026-11-27`,
//! `report:2026-11-27/office:12`, `map`), only until it expires, and never for longer than
//! [`MAX_LINK_TTL_S`] from when it is checked (a link made with a far
//! expiry is refused). The token never appears in a URL, so a forwarded
//! email or a proxy log leaks a few days' read access to one report at
//! most, not the token. Pure: the clock is an argument.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::secret::Secret;

/// How long the links geoclock makes stay valid (the daily report email's).
pub const LINK_TTL_S: i64 = 3 * 86_400;
/// The longest validity accepted.
pub const MAX_LINK_TTL_S: i64 = 7 * 86_400;

fn mac(token: &str, tenant: &str, scope: &str, expires: i64) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes()).unwrap_or_else(|_| unreachable!());
    m.update(format!("{tenant}\n{scope}\n{expires}").as_bytes());
    m.finalize().into_bytes().into()
}

/// The `sig` of a link (lowercase hex).
pub fn sign(token: &Secret, tenant: &str, scope: &str, expires: i64) -> String {
    mac(token.expose(), tenant, scope, expires).iter().map(|b| format!("{b:02x}")).collect()
}

/// The query parameters of a link: `expires=…&sig=…`.
pub fn query(token: &Secret, tenant: &str, scope: &str, expires: i64) -> String {
    format!("expires={expires}&sig={}", sign(token, tenant, scope, expires))
}

/// The scope of a tenant's live map (its page, GeoJSON and event stream,
/// any day).
pub const MAP_SCOPE: &str = "map";

/// The scope of one day's report.
pub fn report_scope(day: &str) -> String {
    format!("report:{day}")
}

/// The scope of one office's rows of one day's report (`?office=`): what a
/// link mailed to that office's recipients opens. A link of the whole
/// day's report opens any office's rows too.
pub fn office_report_scope(day: &str, office: &str) -> String {
    format!("report:{day}/office:{office}")
}

/// Why a link is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    Malformed,
    Expired,
    TooLong,
    BadSignature,
}

/// Checks a link's `expires` and `sig` for `tenant` and `scope` at `now_s`.
/// The signature is compared in constant time, and always computed.
pub fn verify(
    token: &Secret,
    tenant: &str,
    scope: &str,
    expires: &str,
    sig: &str,
    now_s: i64,
) -> Result<(), LinkError> {
    let exp = expires.parse::<i64>().ok();
    let expected = mac(token.expose(), tenant, scope, exp.unwrap_or(0));
    let given = unhex(sig);
    let same: bool = given.unwrap_or([0; 32]).ct_eq(&expected).into();
    let exp = exp.ok_or(LinkError::Malformed)?;
    if given.is_none() {
        return Err(LinkError::Malformed);
    }
    if !same {
        return Err(LinkError::BadSignature);
    }
    if exp <= now_s {
        return Err(LinkError::Expired);
    }
    if exp - now_s > MAX_LINK_TTL_S {
        return Err(LinkError::TooLong);
    }
    Ok(())
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let d = |c: u8| (c as char).to_digit(16);
        out[i] = (d(pair[0])? * 16 + d(pair[1])?) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_open_their_tenant_and_scope_until_they_expire() {
        let token = Secret::new("t0ken");
        let now = 1_800_000_000;
        let exp = now + LINK_TTL_S;
        let sig = sign(&token, "acme", "report:2026-11-27", exp);
        let e = exp.to_string();
        assert_eq!(verify(&token, "acme", "report:2026-11-27", &e, &sig, now), Ok(()));
        assert_eq!(verify(&token, "acme", "report:2026-11-28", &e, &sig, now), Err(LinkError::BadSignature));
        assert_eq!(verify(&token, "other", "report:2026-11-27", &e, &sig, now), Err(LinkError::BadSignature));
        assert_eq!(
            verify(&Secret::new("t0ken2"), "acme", "report:2026-11-27", &e, &sig, now),
            Err(LinkError::BadSignature)
        );
        assert_eq!(verify(&token, "acme", "report:2026-11-27", &e, &sig, exp), Err(LinkError::Expired));
        let far = now + MAX_LINK_TTL_S + 1;
        let far_sig = sign(&token, "acme", "map", far);
        assert_eq!(verify(&token, "acme", "map", &far.to_string(), &far_sig, now), Err(LinkError::TooLong));
        assert_eq!(verify(&token, "acme", "map", "soon", &far_sig, now), Err(LinkError::Malformed));
        assert_eq!(verify(&token, "acme", "map", &e, "abc", now), Err(LinkError::Malformed));
        assert!(!query(&token, "acme", "map", exp).contains("t0ken"));
    }
}
