//! The daily Activity Report email: once a tenant's local day is over (at
//! 01:00 the next local day), the email sink fetches that day's report from
//! the report server (CSV and JSON, with the tenant's report token) and
//! mails a summary with the CSV attached to the tenant's report recipients.
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
use lettre::Message;
use serde_json::Value;

use super::call::{Cx, Request};
use super::ledger::{LedgerError, Step};
use super::{now, Decided, SinkKind};
use crate::connect::tenants::Tenant;
use crate::engine::command::command_id;
use crate::kafka::records::{Outcome, SinkResult};
use crate::model::Ts;

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

fn fetch(
    cx: &Cx,
    base: &str,
    tenant: &Tenant,
    token: &str,
    day: NaiveDate,
    format: &str,
    attempts: &mut u32,
) -> Result<String, String> {
    let req = Request {
        api: "GET /report",
        method: "GET",
        url: format!("{base}/report/{}?day={day}&format={format}", tenant.name),
        headers: vec![("Authorization", format!("Bearer {token}"))],
        body: None,
        interval_ms: 0,
    };
    cx.call(&tenant.name, &req, attempts).map(|a| a.body).map_err(|e| format!("report server: {e}"))
}

/// Sends `tenant`'s report for `day` if it is not decided yet.
pub fn send(
    cx: &Cx,
    base: &str,
    tenant: &Tenant,
    day: NaiveDate,
    smtp: &dyn Fn(&str, &Message, &mut u32) -> Result<(), String>,
    default_smtp: Option<&str>,
) -> Result<Option<Decided>, LedgerError> {
    let Some(cfg) = &tenant.email else { return Ok(None) };
    let (Some(token), false) = (&cfg.report_token, cfg.report_recipients.is_empty()) else { return Ok(None) };
    let t = tenant.name.as_str();
    let id = report_id(t, day);
    let mut attempts = match cx.ledger.step(t, &id)? {
        Some(Step::Done { .. }) => return Ok(None),
        Some(Step::Intent { calls }) => calls,
        None => 0,
    };
    let smtp_url = cfg.smtp_url.as_ref().map(|s| s.expose().to_string()).or_else(|| default_smtp.map(str::to_string));
    let outcome = (|| {
        let smtp_url = smtp_url.ok_or("no SMTP relay: set email.smtp_url or --smtp")?;
        let csv = fetch(cx, base, tenant, token.expose(), day, "csv", &mut attempts)?;
        let json: Value = serde_json::from_str(&fetch(cx, base, tenant, token.expose(), day, "json", &mut attempts)?)
            .map_err(|e| format!("report server answered invalid JSON: {e}"))?;
        let rows = if json.is_array() { json } else { json["rows"].clone() };
        let (n, arrived, failed) = summary(&rows);
        let subject = format!("Activity Report {t} {day}: {n} appointments, {arrived} arrived, {failed} with failures");
        let text = format!(
            "Activity Report for {day} ({t}).\n\nAppointments and technicians: {n}\nArrived (clocked On Site by GPS): {arrived}\nWith a failure: {failed}\n\nThe full report is attached as CSV.\n"
        );
        let from: Mailbox = cfg.from.parse().map_err(|_| format!("invalid sender address {:?}", cfg.from))?;
        let mut b = Message::builder().from(from).subject(subject).message_id(Some(format!("<{id}.{t}@geoclock>")));
        for r in &cfg.report_recipients {
            b = b.to(r.parse::<Mailbox>().map_err(|_| format!("invalid recipient address {r:?}"))?);
        }
        let attachment = Attachment::new(format!("activity-report-{t}-{day}.csv"))
            .body(csv, ContentType::parse("text/csv; charset=utf-8").map_err(|e| e.to_string())?);
        let msg = b
            .multipart(MultiPart::mixed().singlepart(SinglePart::plain(text)).singlepart(attachment))
            .map_err(|e| format!("cannot build the message: {e}"))?;
        cx.ledger.record(&[(t, &id, Step::Intent { calls: attempts + 1 })], &[]).map_err(|e| e.to_string())?;
        smtp(&smtp_url, &msg, &mut attempts)
    })();
    let (outcome, reason) = match outcome {
        Ok(()) => (Outcome::Done, String::new()),
        Err(why) => (Outcome::Failed, format!("daily report not sent: {why}")),
    };
    let result = SinkResult {
        command_id: id.clone(),
        appointment: String::new(),
        kind: "daily_report".into(),
        sink: SinkKind::Email.name().into(),
        outcome,
        reason,
        remote_ref: Some(day.to_string()),
        attempts,
        executed_at: now(),
        command_time: now(),
    };
    cx.ledger.record(&[(t, &id, Step::Done { result: result.clone(), reported: false })], &[])?;
    Ok(Some(Decided { dead: outcome == Outcome::Failed, result }))
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
