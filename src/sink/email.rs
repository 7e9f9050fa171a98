//! The email sink: for `send_service_link`, creates a TrackMe link for the
//! vehicle (Azuga `POST /v1/trackme`, alive until an hour after the window)
//! and mails the Service Link to the job's contact over SMTP, plain text
//! and HTML, from the tenant's sender.
//!
//! Two effects per command, each through the protocol ([`super::effect`]):
//! 1. The TrackMe link, kept as `trackme/{id}` in the ledger before
//!    anything is mailed, so a retry or restart reuses it. When the outcome
//!    of a create is unknown, the account's TrackMe links are listed (once
//!    per batch) and the one for this vehicle, destination and window is
//!    adopted ([`crate::vendor::azuga::rules::trackme_matches`]).
//! 2. The email over SMTP. SMTP cannot be asked whether a message arrived:
//!    when that is unknown (a crash or a connection lost after the data),
//!    the message is sent again with the same `Message-ID`
//!    (`<{command id}.{tenant}@geoclock>`), which receivers collapse.
//! - An address the transport cannot parse and SMTP 5xx answers are
//!   permanent; 4xx answers were not delivered; anything else is unknown.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{Message, SmtpTransport, Transport};
use serde_json::{json, Value};

use super::effect::{attempt, on_fault, Attempt, Cx, Effect};
use super::ledger::LedgerError;
use super::render::{service_link, Email};
use super::{now, Decided, Executor, Settle, SinkKind, TenantCx, Verdict, Work};
use crate::engine::{Action, ServiceLink};
use crate::vendor::azuga::rules::{trackme_matches, trackme_request};
use crate::vendor::azuga::{Client, TrackMe};
use crate::vendor::retry::Fault;

pub struct EmailSink {
    /// `smtp://host:port` (or with `?tls=required`, or `smtps://`) for
    /// tenants without their own relay. Never logged.
    default_smtp: Option<String>,
    /// The report server the daily report is fetched from.
    report_url: Option<String>,
    transports: Mutex<HashMap<String, Arc<SmtpTransport>>>,
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

/// The Service Link's sender: the activating admin's full name, when the
/// tenant gives it, at `from`'s address; else `from` as it is.
pub fn link_sender(from: &str, admin_name: Option<&str>) -> String {
    match (admin_name, from.parse::<Mailbox>()) {
        (Some(name), Ok(m)) => Mailbox::new(Some(name.to_string()), m.email).to_string(),
        _ => from.to_string(),
    }
}

/// Sending one message over SMTP, as an effect the vendor cannot be asked about.
pub struct Smtp<'a> {
    pub transport: &'a SmtpTransport,
    pub message: &'a Message,
    pub metrics: &'a super::metrics::Metrics,
}

impl Effect for Smtp<'_> {
    type Out = ();
    const LOOKS_UP: bool = false;

    fn lookup(&self) -> Result<Option<()>, Fault> {
        Ok(None)
    }

    fn act(&self) -> Result<(), Fault> {
        let api = "SMTP";
        let r = self.transport.send(self.message);
        let (status, fault) = match r {
            Ok(_) => (250, None),
            Err(e) if e.is_permanent() => {
                let code = e.status().map_or_else(|| "5xx".to_string(), |c| c.to_string());
                (550, Some(Fault::Refused { api, status: 550, message: format!("SMTP refused the message ({code})") }))
            }
            Err(e) if e.is_transient() => {
                (450, Some(Fault::NotApplied { api, retry_after: None, message: "SMTP: temporary refusal".into() }))
            }
            Err(_) => (
                0,
                Some(Fault::Unknown { api, retry_after: None, message: "SMTP: connection or protocol error".into() }),
            ),
        };
        self.metrics.api_call("email", api, (status > 0).then_some(status));
        fault.map_or(Ok(()), Err)
    }
}

/// Creating a Service Link's TrackMe link; found again in the account's
/// links, listed at most once per batch.
struct TrackMeLink<'a> {
    client: &'a Client,
    link: &'a ServiceLink,
    listed: &'a RefCell<Option<Result<Vec<Value>, Fault>>>,
}

impl Effect for TrackMeLink<'_> {
    type Out = TrackMe;

    fn lookup(&self) -> Result<Option<TrackMe>, Fault> {
        let mut listed = self.listed.borrow_mut();
        let links = listed.get_or_insert_with(|| self.client.trackme_links(None)).clone()?;
        Ok(links.iter().find(|l| trackme_matches(l, self.link)).and_then(|l| {
            Some(TrackMe { token: l["token"].as_str()?.to_string(), url: l["url"].as_str()?.to_string() })
        }))
    }

    fn act(&self) -> Result<TrackMe, Fault> {
        self.client.create_trackme(&trackme_request(self.link, now()))
    }

    fn ready_in(&self) -> Duration {
        self.client.caller().ready_in("POST /v1/trackme")
    }
}

impl EmailSink {
    pub fn new(default_smtp: Option<String>, report_url: Option<String>) -> EmailSink {
        EmailSink { default_smtp, report_url, transports: Mutex::new(HashMap::new()) }
    }

    pub(crate) fn transport(&self, url: &str) -> Result<Arc<SmtpTransport>, String> {
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

    /// The tenant's SMTP relay URL (never logged).
    pub(crate) fn smtp_url(&self, t: &TenantCx) -> Option<String> {
        let cfg = t.tenant.email.as_ref()?;
        cfg.smtp_url.as_ref().map(|s| s.expose().to_string()).or_else(|| self.default_smtp.clone())
    }

    fn one(
        &self,
        cx: &Cx,
        t: &TenantCx,
        w: &mut Work,
        listed: &RefCell<Option<Result<Vec<Value>, Fault>>>,
    ) -> Result<Verdict, LedgerError> {
        let Action::SendServiceLink(mut link) = w.command.action.clone() else {
            return Ok(w.failed(SinkKind::Email, "not a send_service_link command".into()));
        };
        // The location's zone, else the tenant's, else UTC (named as such).
        if link.timezone.is_none() {
            link.timezone = t.tenant.timezone.clone();
        }
        let Some(cfg) = &t.tenant.email else {
            return Ok(w.failed(SinkKind::Email, "no [tenants.email] in the tenants file".into()));
        };
        let Some(smtp) = self.smtp_url(t) else {
            return Ok(w.failed(SinkKind::Email, "no SMTP relay: set email.smtp_url or --smtp".into()));
        };
        // Refuse a bad address before creating a TrackMe link for it.
        if link.to.trim().parse::<Mailbox>().is_err() {
            return Ok(w.failed(SinkKind::Email, format!("invalid recipient address {:?}", link.to)));
        }
        let key = format!("trackme/{}", w.command.id);
        let tenant = t.tenant.name.clone();
        let kept = cx.ledger.extra(&tenant, &key)?.and_then(|v| v["url"].as_str().map(str::to_string));
        let url = match kept {
            Some(url) => url,
            None => {
                let Some(client) = &t.azuga else {
                    return Ok(w.failed(SinkKind::Email, "no [tenants.azuga] in the tenants file".into()));
                };
                match attempt(cx, w, &TrackMeLink { client, link: &link, listed })? {
                    Attempt::Done { out, .. } => {
                        cx.ledger.record(&[], &[(&tenant, &key, Some(json!({"url": out.url, "token": out.token})))])?;
                        // The link exists now; what follows is the email.
                        w.unknown = false;
                        out.url
                    }
                    Attempt::Failed(f) => return Ok(on_fault(w, SinkKind::Email, "Azuga TrackMe link not created", f)),
                }
            }
        };
        let st_link =
            cfg.service_link_url(w.command.appointment.as_str(), link.job_number.as_ref().map(|j| j.as_str()));
        let email = service_link(&link, &url, cfg.company(), st_link.as_deref());
        let from = link_sender(&cfg.from, cfg.admin_name.as_deref());
        let msg = match message(&from, &link.to, &format!("<{}.{tenant}@geoclock>", w.command.id), &email) {
            Ok(m) => m,
            Err(why) => return Ok(w.failed(SinkKind::Email, why)),
        };
        let transport = match self.transport(&smtp) {
            Ok(t) => t,
            Err(why) => return Ok(w.failed(SinkKind::Email, why)),
        };
        if w.unknown {
            tracing::warn!(tenant = %tenant, command = %w.command.id, "re-sending a Service Link whose delivery is unknown (same Message-ID)");
        }
        Ok(match attempt(cx, w, &Smtp { transport: &transport, message: &msg, metrics: &cx.metrics })? {
            Attempt::Done { .. } => w.done(SinkKind::Email, Some(url), ""),
            Attempt::Failed(f) => on_fault(w, SinkKind::Email, "Service Link not sent", f),
        })
    }
}

impl Executor for EmailSink {
    fn attempt(&self, cx: &Cx, t: &TenantCx, batch: &mut [Work], settle: &mut Settle<'_>) -> Result<(), LedgerError> {
        let listed = RefCell::new(None);
        for w in batch.iter_mut() {
            let v = self.one(cx, t, w, &listed)?;
            settle(w, v)?;
        }
        Ok(())
    }

    fn housekeeping(&self, cx: &Cx, t: &TenantCx, partition: i32) -> Result<Vec<Decided>, LedgerError> {
        let Some(base) = &self.report_url else { return Ok(Vec::new()) };
        let day = super::daily::due_day(now(), t.tenant.timezone.as_deref());
        Ok(super::daily::send(cx, self, base, t, partition, day)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_activating_admin_names_the_service_links_sender() {
        let from = "Acme Field Service <service@acme.example>";
        assert_eq!(link_sender(from, Some("Dana Whitfield")), "Dana Whitfield <service@acme.example>");
        assert_eq!(link_sender(from, None), from);
        let quoted: Mailbox = link_sender("service@acme.example", Some("O'Neil, Pat")).parse().unwrap();
        assert_eq!(quoted.name.as_deref(), Some("O'Neil, Pat"));
        assert_eq!(quoted.email.to_string(), "service@acme.example");
    }
}
