//! The email sink: for `send_service_link`, creates a TrackMe link for the
//! vehicle (Azuga `POST /v1/trackme`, alive until an hour after the window)
//! and mails the Service Link to the job's contact over SMTP, plain text
//! and HTML, from the tenant's sender.
//!
//! Steps per command id (see [`super::ledger`]):
//! 1. TrackMe link created and kept as `trackme/{id}` before anything is
//!    mailed, so a retry or restart reuses it instead of creating another
//!    (a crash inside the TrackMe call itself can leave one unused link,
//!    which expires with its TTL: Azuga offers no lookup to check).
//! 2. Intent, then SMTP, then done. A crash between the server's `250` and
//!    the done step re-sends on restart with the same `Message-ID`
//!    (`<{command id}.{tenant}@geoclock>`): SMTP has no way to ask whether a
//!    message arrived, and receivers collapse repeats by that header.
//! - An address the transport cannot parse and SMTP 5xx answers are
//!   permanent; connection failures and 4xx are retried with backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{Message, SmtpTransport, Transport};
use serde_json::{json, Value};

use super::call::{azuga_auth, azuga_interval_ms, Cx, Request};
use super::ledger::{LedgerError, Step};
use super::policy::Verdict;
use super::render::{service_link, trackme_ttl_s, Email};
use super::{now, Decided, Executor, Pending, SinkKind};
use crate::connect::tenants::Tenant;
use crate::engine::{Action, ServiceLink};
use crate::kafka::records::Outcome;

pub struct EmailSink {
    /// `smtp://host:port` (or with `?tls=required`, or `smtps://`) for
    /// tenants without their own relay. Never logged.
    default_smtp: Option<String>,
    /// The report server the daily report is fetched from.
    report_url: Option<String>,
    transports: Mutex<HashMap<String, Arc<SmtpTransport>>>,
}

impl EmailSink {
    pub fn new(default_smtp: Option<String>, report_url: Option<String>) -> EmailSink {
        EmailSink { default_smtp, report_url, transports: Mutex::new(HashMap::new()) }
    }

    fn transport(&self, url: &str) -> Result<Arc<SmtpTransport>, String> {
        let mut t = self.transports.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tr) = t.get(url) {
            return Ok(tr.clone());
        }
        let url_full = if url.contains("://") { url.to_string() } else { format!("smtp://{url}") };
        let tr = SmtpTransport::from_url(&url_full)
            .map_err(|_| "the SMTP URL is not valid (smtp://host:port, smtps://…)".to_string())?
            .timeout(Some(Duration::from_secs(15)))
            .build();
        let tr = Arc::new(tr);
        t.insert(url.to_string(), tr.clone());
        Ok(tr)
    }
}

/// The message for `email`, or why it cannot be addressed.
pub fn message(from: &str, to: &str, message_id: &str, email: &Email) -> Result<Message, String> {
    let from: Mailbox = from.parse().map_err(|_| format!("invalid sender address {from:?}"))?;
    let to: Mailbox = to.trim().parse().map_err(|_| format!("invalid recipient address {to:?}"))?;
    let part = |ct: ContentType, body: &str| {
        SinglePart::builder().header(ct).header(ContentTransferEncoding::Base64).body(body.to_string())
    };
    Message::builder()
        .from(from)
        .to(to)
        .subject(email.subject.clone())
        .message_id(Some(message_id.to_string()))
        .multipart(
            MultiPart::alternative()
                .singlepart(part(ContentType::TEXT_PLAIN, &email.text))
                .singlepart(part(ContentType::TEXT_HTML, &email.html)),
        )
        .map_err(|e| format!("cannot build the message: {e}"))
}

impl EmailSink {
    fn trackme(
        &self,
        cx: &Cx,
        tenant: &Tenant,
        p: &Pending,
        link: &ServiceLink,
        attempts: &mut u32,
    ) -> Result<String, String> {
        let t = tenant.name.as_str();
        let key = format!("trackme/{}", p.command.id);
        if let Some(url) =
            cx.ledger.extra(t, &key).map_err(|e| e.to_string())?.and_then(|v| v["url"].as_str().map(str::to_string))
        {
            return Ok(url);
        }
        let Some(az) = &tenant.azuga else { return Err("no [tenants.azuga] in the tenants file".into()) };
        let body = json!({
            "latitude": link.destination.lat, "longitude": link.destination.lon,
            "destLatitude": link.destination.lat, "destLongitude": link.destination.lon,
            "vehicleId": link.vehicle, "ttl": trackme_ttl_s(link, now()),
            "message": format!("{} is on the way to {}", link.tech_name, link.location_name),
        });
        let req = Request {
            api: "POST /v1/trackme",
            method: "POST",
            url: format!("{}/v1/trackme", az.base_url),
            headers: vec![azuga_auth(az)],
            body: Some(body.to_string()),
            interval_ms: azuga_interval_ms(az),
        };
        let a = cx.call(t, &req, attempts).map_err(|e| format!("Azuga TrackMe link not created: {e}"))?;
        let v: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
        let url = v["data"]["url"].as_str().ok_or("Azuga TrackMe answer has no data.url")?.to_string();
        cx.ledger
            .record(&[], &[(t, &key, Some(json!({"url": url, "token": v["data"]["token"]})))])
            .map_err(|e| e.to_string())?;
        Ok(url)
    }

    fn send(&self, cx: &Cx, url: &str, msg: &Message, attempts: &mut u32) -> Result<(), String> {
        let tr = self.transport(url)?;
        let mut tries = 0;
        loop {
            tries += 1;
            *attempts += 1;
            let r = tr.send(msg);
            let (verdict, why) = match &r {
                Ok(_) => (Verdict::Success, String::new()),
                Err(e) if e.is_permanent() => (
                    Verdict::Permanent,
                    format!(
                        "SMTP refused the message ({})",
                        e.status().map_or_else(|| "5xx".to_string(), |c| c.to_string())
                    ),
                ),
                Err(e) => (
                    Verdict::Transient { rate_limited: false },
                    format!(
                        "SMTP failed: {}",
                        if e.is_transient() { "temporary refusal" } else { "connection or protocol error" }
                    ),
                ),
            };
            cx.metrics.api_call(
                "email",
                "SMTP",
                Some(if r.is_ok() {
                    250
                } else if verdict == Verdict::Permanent {
                    550
                } else {
                    450
                }),
            );
            match verdict {
                Verdict::Success => return Ok(()),
                Verdict::Permanent => return Err(why),
                _ if tries >= cx.backoff.max_attempts => return Err(format!("{why} (after {tries} attempts)")),
                _ => {
                    cx.metrics.retry("email", "SMTP");
                    std::thread::sleep(cx.backoff.delay(tries, 0.5));
                }
            }
        }
    }

    fn one(&self, cx: &Cx, tenant: &Tenant, p: &Pending) -> Result<Decided, LedgerError> {
        let (t, id) = (tenant.name.as_str(), p.command.id.as_str());
        let fail = |why: String, attempts: u32| Decided {
            result: p.result(SinkKind::Email, Outcome::Failed, why, None, attempts, now()),
            dead: true,
        };
        let Action::SendServiceLink(link) = &p.command.action else {
            return Ok(fail("not a send_service_link command".into(), 0));
        };
        let Some(cfg) = &tenant.email else { return Ok(fail("no [tenants.email] in the tenants file".into(), 0)) };
        let smtp = cfg.smtp_url.as_ref().map(|s| s.expose().to_string()).or_else(|| self.default_smtp.clone());
        let Some(smtp) = smtp else { return Ok(fail("no SMTP relay: set email.smtp_url or --smtp".into(), 0)) };
        let mut attempts = match cx.ledger.step(t, id)? {
            Some(Step::Intent { calls }) => {
                tracing::warn!(
                    tenant = t,
                    command = id,
                    "re-sending a Service Link whose delivery was not recorded (same Message-ID)"
                );
                calls
            }
            _ => 0,
        };
        let decided = (|| {
            // Refuse a bad address before creating a TrackMe link for it.
            link.to.trim().parse::<Mailbox>().map_err(|_| format!("invalid recipient address {:?}", link.to))?;
            let url = self.trackme(cx, tenant, p, link, &mut attempts)?;
            let email = service_link(link, &url, cfg.company());
            let msg = message(&cfg.from, &link.to, &format!("<{id}.{t}@geoclock>"), &email)?;
            cx.ledger.record(&[(t, id, Step::Intent { calls: attempts + 1 })], &[]).map_err(|e| e.to_string())?;
            self.send(cx, &smtp, &msg, &mut attempts)?;
            Ok::<_, String>(url)
        })();
        let decided = match decided {
            Ok(url) => Decided {
                result: p.result(SinkKind::Email, Outcome::Done, String::new(), Some(url), attempts, now()),
                dead: false,
            },
            Err(why) => fail(why, attempts),
        };
        cx.ledger.record(&[(t, id, Step::Done { result: decided.result.clone(), reported: false })], &[])?;
        Ok(decided)
    }
}

impl Executor for EmailSink {
    fn execute(&self, cx: &Cx, tenant: &Tenant, batch: Vec<Pending>) -> Result<Vec<Decided>, LedgerError> {
        batch.iter().map(|p| self.one(cx, tenant, p)).collect()
    }

    fn housekeeping(&self, cx: &Cx, tenants: &[Tenant]) -> Result<Vec<(String, Decided)>, LedgerError> {
        let Some(base) = &self.report_url else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for t in tenants {
            let day = super::daily::due_day(now(), t.timezone.as_deref());
            let smtp = |url: &str, msg: &Message, attempts: &mut u32| self.send(cx, url, msg, attempts);
            if let Some(d) = super::daily::send(cx, base, t, day, &smtp, self.default_smtp.as_deref())? {
                out.push((t.name.clone(), d));
            }
        }
        Ok(out)
    }
}
