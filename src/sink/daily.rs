//! The daily Activity Report email: once a tenant's local day is over (at
//! 01:00 the next local day), the email sink fetches that day's report from
//! the report server (CSV and JSON, with the tenant's report token in the
//! `Authorization` header) and mails a summary with the CSV attached to the
//! tenant's report recipients, with a signed link to the HTML report that
//! expires after [`LINK_TTL_S`] (the token itself is never in the email).
//!
//! Idempotent per tenant and day: the report's id is
//! `command_id([tenant, "daily_report", day])`, and it goes through the same
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
use crate::engine::command::command_id;
use crate::http::client::Http;
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
    format: &str,
) -> Result<String, VendorError> {
    let req = Request {
        api: "GET /report",
        method: "GET",
        url: format!("{base}/report/{tenant}?day={day}&format={format}"),
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

/// Sends `tenant`'s report for `day` unless it is decided already (a
/// transient failure waits for the next round, until two days after the
/// day is over).
pub fn send(
    cx: &Cx,
    sink: &EmailSink,
    base: &str,
    t: &TenantCx,
    partition: i32,
    day: NaiveDate,
) -> Result<Option<Decided>, LedgerError> {
    let Some(cfg) = &t.tenant.email else { return Ok(None) };
    let (Some(token), false) = (&cfg.report_token, cfg.report_recipients.is_empty()) else { return Ok(None) };
    let tenant = t.tenant.name.as_str();
    let id = report_id(tenant, day);
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
            fetch(&caller, base, tenant, token.expose(), day, format)
                .map_err(|e| NotNow::Later(format!("report server: {e}")))
        };
        let csv = get("csv")?;
        let json: Value = serde_json::from_str(&get("json")?)
            .map_err(|e| NotNow::Later(format!("report server answered invalid JSON: {e}")))?;
        let rows = if json.is_array() { json } else { json["rows"].clone() };
        let (n, arrived, failed) = summary(&rows);
        let subject =
            format!("Activity Report {tenant} {day}: {n} appointments, {arrived} arrived, {failed} with failures");
        let expires = now().millis().div_euclid(1000) + LINK_TTL_S;
        let url = format!(
            "{base}/report/{tenant}?day={day}&format=html&{}",
            link::query(token, tenant, &link::report_scope(&day.to_string()), expires)
        );
        let until = DateTime::<Utc>::from_timestamp(expires, 0).unwrap_or_default().format("%Y-%m-%d %H:%M UTC");
        let text = format!(
            "Activity Report for {day} ({tenant}).\n\nAppointments and technicians: {n}\nArrived (clocked On Site by GPS): {arrived}\nWith a failure: {failed}\n\nThe full report is attached as CSV. View it online until {until}:\n{url}\n"
        );
        let from: Mailbox =
            cfg.from.parse().map_err(|_| NotNow::Fails(format!("invalid sender address {:?}", cfg.from)))?;
        let mut b = lettre::Message::builder()
            .from(from)
            .subject(subject)
            .message_id(Some(format!("<{id}.{tenant}@geoclock>")));
        for r in &cfg.report_recipients {
            b = b.to(r.parse::<Mailbox>().map_err(|_| NotNow::Fails(format!("invalid recipient address {r:?}")))?);
        }
        let ct = ContentType::parse("text/csv; charset=utf-8").map_err(|e| NotNow::Fails(e.to_string()))?;
        let attachment = Attachment::new(format!("activity-report-{tenant}-{day}.csv")).body(csv, ct);
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
        remote_ref: Some(day.to_string()),
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
    fn summary_counts_rows_arrivals_and_failures() {
        let rows = serde_json::json!([
            {"fence_result": "arrived", "failures": []},
            {"fence_result": "not_arrived", "failures": ["no_tech_assigned"]},
            {"fence_result": "arrived", "failures": ["service link: invalid recipient"]},
        ]);
        assert_eq!(summary(&rows), (3, 2, 2));
    }
}
