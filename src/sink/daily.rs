//! The daily Activity Report email: once a tenant's local day is over (at
//! 01:00 the next local day), the email sink fetches that day's report from
//! the report server (CSV and JSON, with the tenant's report token in the
//! `Authorization` header) and mails a summary with the CSV attached to the
//! tenant's report recipients, with a signed link to the HTML report that
//! expires after [`LINK_TTL_S`] (the token itself is never in the email).
//!
//! Each office with its own recipients (`email.office_report_recipients`)
//! gets a report of its own rows only (`&office=ID`), whose link opens only
//! that office's rows (scope `report:D/office:ID`); the tenant's
//! `report_recipients` get every row.
//!
//! Idempotent per tenant, day and audience: the report's id is
//! `command_id([tenant, "daily_report", day])` (an office's:
//! [`office_report_id`]), and it goes through the same
//! ledger steps as a Service Link (intent, SMTP, done; a restart between the
//! last two re-sends with the same Message-ID). Its outcome is a result event
//! of kind `daily_report`.

use chrono::{DateTime, Duration as Days, NaiveDate, Utc};
use chrono_tz::Tz;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use serde_json::Value;

use super::effect::{attempt, Attempt, Cx, Tracked};
use super::email::{EmailSink, Smtp};
use super::ledger::{LedgerError, Step};
use super::{now, Decided, SinkKind, TenantCx};
use crate::config::link::{self, LINK_TTL_S};
use crate::config::tenants::EmailTenant;
use crate::engine::command::command_id;
use crate::http::client::{urlencode, Http};
use crate::kafka::records::{Outcome, SinkResult};
use crate::model::Ts;
use crate::vendor::call::{Caller, Request, VendorError};
use crate::vendor::retry::Fault;

/// The local day whose report is due at `now`: yesterday, once it is 01:00
/// today in `timezone` (UTC when absent or unknown).
pub fn due_day(now: Ts, timezone: Option<&str>) -> NaiveDate {
    let utc = DateTime::<Utc>::from_timestamp_millis(now.millis()).unwrap_or_default() - Days::hours(1);
    let local = match timezone.and_then(|z| z.parse::<Tz>().ok()) {
        Some(tz) => utc.with_timezone(&tz).date_naive(),
        None => utc.date_naive(),
    };
    local - Days::days(1)
}

/// The id of a tenant's report for `day`.
pub fn report_id(tenant: &str, day: NaiveDate) -> String {
    command_id(&[tenant, "daily_report", &day.to_string()])
}

/// The id of one office's report for `day`.
pub fn office_report_id(tenant: &str, day: NaiveDate, office: &str) -> String {
    command_id(&[tenant, "daily_report", &day.to_string(), "office", office])
}

/// Who gets one daily report: the tenant's recipients (every row, `office`
/// none), or one office's (its rows only).
#[derive(Debug, Clone, PartialEq)]
pub struct Audience<'a> {
    pub office: Option<&'a str>,
    pub recipients: &'a [String],
}

/// The tenant's audiences: its report recipients, then each office with
/// recipients (in office id order); none without any recipient.
pub fn audiences(cfg: &EmailTenant) -> Vec<Audience<'_>> {
    let all =
        (!cfg.report_recipients.is_empty()).then_some(Audience { office: None, recipients: &cfg.report_recipients });
    let offices = cfg
        .office_report_recipients
        .iter()
        .filter(|(_, r)| !r.is_empty())
        .map(|(o, r)| Audience { office: Some(o.as_str()), recipients: r.as_slice() });
    all.into_iter().chain(offices).collect()
}

/// `(appointments, arrived, with failures)` from the report's JSON rows.
pub fn summary(rows: &Value) -> (usize, usize, usize) {
    let rows = rows.as_array().map(Vec::as_slice).unwrap_or(&[]);
    let arrived = rows.iter().filter(|r| r["fence_result"] == "arrived").count();
    let failed = rows.iter().filter(|r| r["failures"].as_array().is_some_and(|f| !f.is_empty())).count();
    (rows.len(), arrived, failed)
}

/// One tenant's report for one day, as the effect protocol tracks it.
struct Report {
    tenant: String,
    id: String,
    partition: i32,
    unknown: bool,
    attempts: u32,
}

impl Tracked for Report {
    fn tenant(&self) -> &str {
        &self.tenant
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn partition(&self) -> i32 {
        self.partition
    }
    fn unknown(&mut self) -> &mut bool {
        &mut self.unknown
    }
    fn attempts(&mut self) -> &mut u32 {
        &mut self.attempts
    }
}

fn fetch(
    caller: &Caller,
    base: &str,
    tenant: &str,
    token: &str,
    day: NaiveDate,
    office: Option<&str>,
    format: &str,
) -> Result<String, VendorError> {
    let office = office.map(|o| format!("&office={}", urlencode(o))).unwrap_or_default();
    let req = Request {
        api: "GET /report",
        method: "GET",
        url: format!("{base}/report/{tenant}?day={day}{office}&format={format}"),
        headers: vec![("Authorization", format!("Bearer {token}"))],
        body: None,
    };
    caller.retrying(req.api, || caller.once(&req)).map(|a| a.body)
}

/// Why the report is not sent this round.
enum NotNow {
    /// Try again at the next round.
    Later(String),
    /// Decided failed.
    Fails(String),
}

/// Sends `tenant`'s reports for `day` (one per [`audiences`]) unless each
/// is decided already (a transient failure waits for the next round, until
/// two days after the day is over).
pub fn send(
    cx: &Cx,
    sink: &EmailSink,
    base: &str,
    t: &TenantCx,
    partition: i32,
    day: NaiveDate,
) -> Result<Vec<Decided>, LedgerError> {
    let Some(cfg) = &t.tenant.email else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for audience in audiences(cfg) {
        out.extend(send_one(cx, sink, base, t, partition, day, &audience)?);
    }
    Ok(out)
}

/// Sends one audience's report for `day` (see [`send`]).
fn send_one(
    cx: &Cx,
    sink: &EmailSink,
    base: &str,
    t: &TenantCx,
    partition: i32,
    day: NaiveDate,
    audience: &Audience,
) -> Result<Option<Decided>, LedgerError> {
    let Some(cfg) = &t.tenant.email else { return Ok(None) };
    let Some(token) = &cfg.report_token else { return Ok(None) };
    let tenant = t.tenant.name.as_str();
    let office = audience.office;
    let id = match office {
        None => report_id(tenant, day),
        Some(o) => office_report_id(tenant, day, o),
    };
    let mut report = Report { tenant: tenant.to_string(), id: id.clone(), partition, unknown: false, attempts: 0 };
    match cx.ledger.step(tenant, &id)? {
        Some(Step::Done { .. }) => return Ok(None),
        Some(Step::Intent { calls }) => (report.unknown, report.attempts) = (true, calls),
        None => {}
    }
    let outcome: Result<(), NotNow> = (|| {
        let smtp_url = sink.smtp_url(t).ok_or(NotNow::Fails("no SMTP relay: set email.smtp_url or --smtp".into()))?;
        let caller = Caller::new(Http::new(cx.timeout), cx.policy, 0, cx.stop.clone(), cx.observer());
        let get = |format| {
            fetch(&caller, base, tenant, token.expose(), day, office, format)
                .map_err(|e| NotNow::Later(format!("report server: {e}")))
        };
        let csv = get("csv")?;
        let json: Value = serde_json::from_str(&get("json")?)
            .map_err(|e| NotNow::Later(format!("report server answered invalid JSON: {e}")))?;
        let rows = if json.is_array() { json } else { json["rows"].clone() };
        let (n, arrived, failed) = summary(&rows);
        // One office's: named by the office's name when its rows carry it.
        let (whose, office_query, scope, file) = match office {
            None => (String::new(), String::new(), link::report_scope(&day.to_string()), String::new()),
            Some(o) => {
                let name = rows.as_array().and_then(|r| r.iter().find_map(|r| r["office_name"].as_str()));
                (
                    format!(" - {}", name.unwrap_or(o)),
                    format!("&office={}", urlencode(o)),
                    link::office_report_scope(&day.to_string(), o),
                    format!("-office-{}", urlencode(o)),
                )
            }
        };
        let subject = format!(
            "Activity Report {tenant}{whose} {day}: {n} appointments, {arrived} arrived, {failed} with failures"
        );
        let expires = now().millis().div_euclid(1000) + LINK_TTL_S;
        let url = format!(
            "{base}/report/{tenant}?day={day}{office_query}&format=html&{}",
            link::query(token, tenant, &scope, expires)
        );
        let until = DateTime::<Utc>::from_timestamp(expires, 0).unwrap_or_default().format("%Y-%m-%d %H:%M UTC");
        let text = format!(
            "Activity Report for {day} ({tenant}{whose}).\n\nAppointments and technicians: {n}\nArrived (clocked On Site by GPS): {arrived}\nWith a failure: {failed}\n\nThe full report is attached as CSV. View it online until {until}:\n{url}\n"
        );
        let from: Mailbox =
            cfg.from.parse().map_err(|_| NotNow::Fails(format!("invalid sender address {:?}", cfg.from)))?;
        let mut b = lettre::Message::builder()
            .from(from)
            .subject(subject)
            .message_id(Some(format!("<{id}.{tenant}@geoclock>")));
        for r in audience.recipients {
            b = b.to(r.parse::<Mailbox>().map_err(|_| NotNow::Fails(format!("invalid recipient address {r:?}")))?);
        }
        let ct = ContentType::parse("text/csv; charset=utf-8").map_err(|e| NotNow::Fails(e.to_string()))?;
        let attachment = Attachment::new(format!("activity-report-{tenant}-{day}{file}.csv")).body(csv, ct);
        let msg = b
            .multipart(MultiPart::mixed().singlepart(SinglePart::plain(text)).singlepart(attachment))
            .map_err(|e| NotNow::Fails(format!("cannot build the message: {e}")))?;
        let transport = sink.transport(&smtp_url).map_err(NotNow::Fails)?;
        match attempt(cx, &mut report, &Smtp { transport: &transport, message: &msg, metrics: &cx.metrics }) {
            Ok(Attempt::Done { .. }) => Ok(()),
            Ok(Attempt::Failed(f @ Fault::Refused { .. })) => Err(NotNow::Fails(f.to_string())),
            Ok(Attempt::Failed(f)) => Err(NotNow::Later(f.to_string())),
            Err(e) => Err(NotNow::Later(e.to_string())),
        }
    })();
    let (outcome, reason) = match outcome {
        Ok(()) => (Outcome::Done, String::new()),
        Err(NotNow::Fails(why)) => (Outcome::Failed, format!("daily report not sent: {why}")),
        Err(NotNow::Later(why)) => {
            let day_over =
                day.succ_opt().and_then(|d| d.and_hms_opt(0, 0, 0)).map_or(0, |d| d.and_utc().timestamp_millis());
            if now().millis() < day_over + 2 * 86_400_000 {
                tracing::warn!(tenant, %day, error = %why, "daily report not sent yet; retrying next round");
                return Ok(None);
            }
            (Outcome::Failed, format!("daily report not sent: gave up: {why}"))
        }
    };
    let result = SinkResult {
        command_id: id.clone(),
        appointment: String::new(),
        kind: "daily_report".into(),
        sink: SinkKind::Email.name().into(),
        outcome,
        reason,
        remote_ref: Some(match office {
            None => day.to_string(),
            Some(o) => link::office_report_scope(&day.to_string(), o).trim_start_matches("report:").to_string(),
        }),
        attempts: report.attempts,
        executed_at: now(),
        command_time: now(),
    };
    cx.ledger.record(&[(tenant, &id, Step::Done { result: result.clone(), reported: false })], &[])?;
    Ok(Some(Decided::new(result)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yesterday_is_due_from_one_in_the_morning_local_time() {
        let at = |s: &str| Ts::parse(s).unwrap();
        // 05:30 UTC = 00:30 in New York: the 26th is still not over + grace.
        assert_eq!(due_day(at("2026-11-28T05:30:00Z"), Some("America/New_York")).to_string(), "2026-11-26");
        assert_eq!(due_day(at("2026-11-28T06:30:00Z"), Some("America/New_York")).to_string(), "2026-11-27");
        assert_eq!(due_day(at("2026-11-28T01:00:00Z"), None).to_string(), "2026-11-27");
        assert_ne!(
            report_id("acme", due_day(at("2026-11-28T06:30:00Z"), None)),
            report_id("other", due_day(at("2026-11-28T06:30:00Z"), None))
        );
    }

    #[test]
    fn each_office_with_recipients_is_an_audience_of_its_own() {
        let mut cfg = EmailTenant {
            from: "Acme <s@acme.example>".into(),
            smtp_url: None,
            report_recipients: vec!["ops@acme.example".into()],
            office_report_recipients: [
                ("102".to_string(), vec!["south@acme.example".to_string()]),
                ("101".to_string(), vec!["north@acme.example".to_string()]),
                ("103".to_string(), vec![]),
            ]
            .into_iter()
            .collect(),
            report_token: None,
            servicetrade_web_url: None,
            admin_name: None,
            service_link_url: None,
        };
        let offices: Vec<Option<&str>> = audiences(&cfg).iter().map(|a| a.office).collect();
        assert_eq!(offices, vec![None, Some("101"), Some("102")]);
        assert_eq!(audiences(&cfg)[1].recipients, &["north@acme.example".to_string()][..]);
        let day = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        let ids = [report_id("acme", day), office_report_id("acme", day, "101"), office_report_id("acme", day, "102")];
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
        cfg.report_recipients.clear();
        cfg.office_report_recipients.clear();
        assert!(audiences(&cfg).is_empty());
    }

    #[test]
    fn summary_counts_rows_arrivals_and_failures() {
        let rows = serde_json::json!([
            {"fence_result": "arrived", "failures": []},
            {"fence_result": "not_arrived", "failures": ["no_tech_assigned"]},
            {"fence_result": "arrived", "failures": ["service link: invalid recipient"]},
        ]);
        assert_eq!(summary(&rows), (3, 2, 2));
    }
}
