//! How a vendor's webhook proves it knows the tenant's webhook secret.
//!
//! Neither vendor signs its webhooks by default, so the connector gives the
//! vendor a per-tenant secret when it registers the hook, and the vendor
//! sends it back with every delivery, in a header:
//!
//! - [`WebhookAuth::Key`]: `X-Geoclock-Key: SECRET` (ServiceTrade, Azuga);
//! - [`WebhookAuth::Hmac`]: `X-Geoclock-Signature: sha256=HEX`, the
//!   HMAC-SHA256 of the raw body under the secret (ServiceTrade). The secret
//!   never travels with a delivery;
//! - [`WebhookAuth::Basic`]: `Authorization: Basic base64(TENANT:SECRET)`
//!   (Azuga).
//!
//! The hook URL is `/webhook/{tenant}`: it names the tenant and holds no
//! secret, so vendors' webhook lists and proxies' access logs hold none.
//!
//! The tenants file picks one scheme per vendor and tenant
//! (`webhook_auth = "key" | "hmac" | "basic"`): then only that scheme is
//! accepted. Without `webhook_auth` (files written before header auth),
//! every header scheme of the vendor is accepted, and so is the old form,
//! the secret as a path segment (`/webhook/{tenant}/{secret}`), which is
//! deprecated: the inbox logs a warning the first time a tenant uses it.
//! Once `webhook_auth` is set, a secret in the path is refused.
//!
//! Every comparison is [`Secret::matches`] (constant time, no length
//! leak); a signature is compared with `subtle`. Everything here is pure:
//! the caller passes what the request presented ([`Presented`]).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::secret::Secret;

/// The shared-secret header.
pub const KEY_HEADER: &str = "x-geoclock-key";
/// The body signature header: `sha256=` and the lowercase hex HMAC-SHA256.
pub const SIGNATURE_HEADER: &str = "x-geoclock-signature";

/// One way of proving the secret (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookAuth {
    Key,
    Hmac,
    Basic,
}

impl WebhookAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookAuth::Key => "key",
            WebhookAuth::Hmac => "hmac",
            WebhookAuth::Basic => "basic",
        }
    }
}

/// The schemes ServiceTrade's hooks can use, the first being what the
/// connector registers when the tenants file names none.
pub const SERVICETRADE: &[WebhookAuth] = &[WebhookAuth::Key, WebhookAuth::Hmac];
/// The same for Azuga (it supports Basic or a key).
pub const AZUGA: &[WebhookAuth] = &[WebhookAuth::Basic, WebhookAuth::Key];

/// What one request presented. Header values as received; `path` is the
/// deprecated path segment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    pub path: Option<&'a str>,
    pub key: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated by a header.
    Accepted,
    /// Authenticated by the deprecated path secret.
    AcceptedFromPath,
    /// Not authenticated: why, for the operator's log and metric (never
    /// sent to the caller, who gets a bare 401).
    Refused(&'static str),
}

/// A tenant's webhook settings, as the inbox checks them.
#[derive(Debug, Clone)]
pub struct Policy {
    pub tenant: String,
    pub secret: Secret,
    /// `None`: any of `allowed`, or the path secret (deprecated).
    pub configured: Option<WebhookAuth>,
    /// The vendor's schemes ([`SERVICETRADE`], [`AZUGA`]).
    pub allowed: &'static [WebhookAuth],
}

impl Policy {
    fn accepts(&self, scheme: WebhookAuth) -> bool {
        match self.configured {
            Some(c) => c == scheme,
            None => self.allowed.contains(&scheme),
        }
    }

    /// Whether checking `p` needs the body (an HMAC signature is to be
    /// verified).
    pub fn needs_body(&self, p: &Presented<'_>) -> bool {
        p.signature.is_some() && self.accepts(WebhookAuth::Hmac)
    }

    /// The scheme the connector registers the hook with.
    pub fn registered(&self) -> WebhookAuth {
        self.configured.unwrap_or(self.allowed[0])
    }
}

/// The HMAC-SHA256 of `body` under `secret`, as `sha256=HEX`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex(&mac(secret, body)))
}

fn mac(secret: &str, body: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    m.update(body);
    m.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// `Authorization: Basic base64(user:secret)`.
pub fn basic(user: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}")))
}

/// Checks one request against `policy`. `body` is needed only when
/// [`Policy::needs_body`] says so (else pass `None`).
pub fn verify(policy: &Policy, p: &Presented<'_>, body: Option<&[u8]>) -> Verdict {
    let mut presented_any = false;
    if let Some(key) = p.key {
        presented_any = true;
        if policy.accepts(WebhookAuth::Key) && policy.secret.matches(key) {
            return Verdict::Accepted;
        }
    }
    if let Some(sig) = p.signature {
        presented_any = true;
        if let (true, Some(body)) = (policy.accepts(WebhookAuth::Hmac), body) {
            let given = sig.trim().strip_prefix("sha256=").and_then(unhex);
            let expected = mac(policy.secret.expose(), body);
            // Compared whatever the given value (a missing or malformed one
            // compares against zeros), so both take the same time.
            let ok: bool = given.unwrap_or([0; 32]).ct_eq(&expected).into();
            if ok && given.is_some() {
                return Verdict::Accepted;
            }
        }
    }
    if let Some(auth) = p.authorization {
        presented_any = true;
        if policy.accepts(WebhookAuth::Basic) {
            let decoded = auth
                .trim()
                .strip_prefix("Basic ")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
                .and_then(|d| String::from_utf8(d).ok());
            if let Some((user, pass)) = decoded.as_deref().and_then(|t| t.split_once(':')) {
                // Both compared, always, so a wrong user costs what a wrong password does.
                let pass_ok = policy.secret.matches(pass);
                if pass_ok && user == policy.tenant {
                    return Verdict::Accepted;
                }
            }
        }
    }
    if let Some(path) = p.path {
        presented_any = true;
        let ok = policy.secret.matches(path);
        if policy.configured.is_some() {
            return Verdict::Refused("secret in the path refused: header auth is configured");
        }
        if ok {
            return Verdict::AcceptedFromPath;
        }
    }
    if presented_any {
        Verdict::Refused("wrong secret")
    } else {
        Verdict::Refused("no credentials")
    }
}

/// What the connector gives the vendor when it registers a hook: the URL
/// (no secret in it), the headers to send with each delivery, or the
/// secret to sign each body with.
#[derive(Clone)]
pub struct Registration {
    pub url: String,
    pub scheme: WebhookAuth,
    pub headers: Vec<(String, Secret)>,
    pub signing_secret: Option<Secret>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("url", &self.url).field("scheme", &self.scheme).finish_non_exhaustive()
    }
}

impl Registration {
    /// The registration of `policy`'s hook at `{public}/webhook/{tenant}`.
    pub fn new(public: &str, policy: &Policy) -> Registration {
        let url = format!("{}/webhook/{}", public.trim_end_matches('/'), policy.tenant);
        let secret = policy.secret.expose();
        let scheme = policy.registered();
        let (headers, signing_secret) = match scheme {
            WebhookAuth::Key => (vec![("X-Geoclock-Key".to_string(), Secret::new(secret))], None),
            WebhookAuth::Basic => {
                (vec![("Authorization".to_string(), Secret::new(basic(&policy.tenant, secret)))], None)
            }
            WebhookAuth::Hmac => (Vec::new(), Some(policy.secret.clone())),
        };
        Registration { url, scheme, headers, signing_secret }
    }

    /// The JSON fields a vendor's hook registration carries for it:
    /// `headers` (name → value) and `signingSecret`.
    pub fn json_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        if !self.headers.is_empty() {
            let h: serde_json::Map<String, serde_json::Value> =
                self.headers.iter().map(|(k, v)| (k.clone(), v.expose().into())).collect();
            m.insert("headers".into(), h.into());
        }
        if let Some(s) = &self.signing_secret {
            m.insert("signingSecret".into(), s.expose().into());
            m.insert("signatureHeader".into(), "X-Geoclock-Signature".into());
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(configured: Option<WebhookAuth>, allowed: &'static [WebhookAuth]) -> Policy {
        Policy { tenant: "acme".into(), secret: Secret::new("s3cret-hook"), configured, allowed }
    }

    #[test]
    fn each_scheme_accepts_its_header_only() {
        let body = br#"{"messageId":"m1"}"#;
        let key = Presented { key: Some("s3cret-hook"), ..Default::default() };
        let sig = sign("s3cret-hook", body);
        let signed = Presented { signature: Some(&sig), ..Default::default() };
        let basic_ok = basic("acme", "s3cret-hook");
        let basic = Presented { authorization: Some(&basic_ok), ..Default::default() };
        let path = Presented { path: Some("s3cret-hook"), ..Default::default() };

        let st = policy(Some(WebhookAuth::Hmac), SERVICETRADE);
        assert!(st.needs_body(&signed));
        assert_eq!(verify(&st, &signed, Some(body)), Verdict::Accepted);
        assert_eq!(verify(&st, &signed, Some(b"{}")), Verdict::Refused("wrong secret"), "another body");
        assert_eq!(verify(&st, &key, None), Verdict::Refused("wrong secret"), "key not configured");
        assert!(matches!(verify(&st, &path, None), Verdict::Refused(r) if r.contains("path")));

        let az = policy(Some(WebhookAuth::Basic), AZUGA);
        assert_eq!(verify(&az, &basic, None), Verdict::Accepted);
        let other_user = super::basic("other", "s3cret-hook");
        assert!(matches!(
            verify(&az, &Presented { authorization: Some(&other_user), ..Default::default() }, None),
            Verdict::Refused(_)
        ));
        assert!(matches!(verify(&az, &path, None), Verdict::Refused(_)));

        let legacy = policy(None, AZUGA);
        assert_eq!(verify(&legacy, &key, None), Verdict::Accepted);
        assert_eq!(verify(&legacy, &basic, None), Verdict::Accepted);
        assert_eq!(verify(&legacy, &path, None), Verdict::AcceptedFromPath);
        assert_eq!(verify(&legacy, &signed, Some(body)), Verdict::Refused("wrong secret"), "Azuga does not sign");
        assert_eq!(
            verify(&legacy, &Presented { path: Some("nope"), ..Default::default() }, None),
            Verdict::Refused("wrong secret")
        );
        assert_eq!(verify(&legacy, &Presented::default(), None), Verdict::Refused("no credentials"));
    }

    #[test]
    fn registrations_carry_no_secret_in_the_url_and_hide_it_in_debug() {
        let r = Registration::new("http://inbox:8090/", &policy(None, SERVICETRADE));
        assert_eq!(r.url, "http://inbox:8090/webhook/acme");
        assert_eq!(r.scheme, WebhookAuth::Key);
        assert!(!format!("{r:?}").contains("s3cret"));
        assert_eq!(r.json_fields()["headers"]["X-Geoclock-Key"], "s3cret-hook");
        let r = Registration::new("http://x", &policy(Some(WebhookAuth::Hmac), SERVICETRADE));
        assert!(r.headers.is_empty() && r.json_fields()["signingSecret"] == "s3cret-hook");
        let r = Registration::new("http://x", &policy(None, AZUGA));
        assert_eq!(r.json_fields()["headers"]["Authorization"], basic("acme", "s3cret-hook"));
    }

    #[test]
    fn signatures_are_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"g".repeat(64)), None);
    }
}
