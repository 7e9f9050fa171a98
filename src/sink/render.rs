//! The Service Link email, rendered from the command: pure, no clock.
//!
//! Invariants: the window is shown in the location's IANA timezone when the
//! command names a valid one (the email sink fills in the tenant's zone when
//! the location has none), else in UTC (and says so); every value that
//! came from outside is HTML-escaped in the HTML part; the same command and
//! link always render the same bytes.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::engine::ServiceLink;
use crate::model::Ts;

/// A rendered email (addresses are checked by the transport).
#[derive(Debug, Clone, PartialEq)]
pub struct Email {
    pub subject: String,
    pub text: String,
    pub html: String,
}

fn utc(t: Ts) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.millis()).unwrap_or_default()
}

/// `Sat 28 Nov 2026, 9:00 AM – 11:00 AM EST` (both ends on one day) or
/// with the date repeated when the window spans days.
pub fn window_text(start: Option<Ts>, end: Option<Ts>, timezone: Option<&str>) -> String {
    let (Some(start), Some(end)) = (start, end) else { return "not scheduled".to_string() };
    match timezone.and_then(|z| z.parse::<Tz>().ok()) {
        Some(tz) => span(tz.from_utc_datetime(&utc(start).naive_utc()), tz.from_utc_datetime(&utc(end).naive_utc())),
        None => span(utc(start), utc(end)),
    }
}

fn span<Z: TimeZone>(a: DateTime<Z>, b: DateTime<Z>) -> String
where
    Z::Offset: std::fmt::Display,
{
    let day = "%a %-d %b %Y";
    let time = "%-I:%M %p";
    if a.date_naive() == b.date_naive() {
        format!("{}, {} – {} {}", a.format(day), a.format(time), b.format(time), b.format("%Z"))
    } else {
        format!("{}, {} – {}, {} {}", a.format(day), a.format(time), b.format(day), b.format(time), b.format("%Z"))
    }
}

pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The Service Link email for `link`, with the TrackMe `url` and, when
/// the tenant gives its pattern, ServiceTrade's own Service Link
/// (`servicetrade`).
pub fn service_link(link: &ServiceLink, url: &str, company: &str, servicetrade: Option<&str>) -> Email {
    let window = window_text(link.window_start, link.window_end, link.timezone.as_deref());
    let tech = if link.tech_name.trim().is_empty() { "Your technician" } else { link.tech_name.trim() };
    let job = link.job_number.as_ref().map(|j| format!(" (job {j})")).unwrap_or_default();
    let subject = format!("{tech} is on the way to {}", link.location_name);
    let st_text = servicetrade.map(|u| format!("Your appointment: {u}\n\n")).unwrap_or_default();
    let text = format!(
        "Hello,\n\n{tech} from {company} is on the way to {loc}{job}.\n\nAppointment window: {window}\n\nFollow the technician live: {url}\n\n{st_text}This link stops working after the appointment.\n",
        loc = link.location_name,
    );
    let e = escape_html;
    let st_html =
        servicetrade.map(|u| format!("<p><a href=\"{}\">Your appointment</a></p>\n", e(u))).unwrap_or_default();
    let html = format!(
        "<!doctype html>\n<html><body style=\"font-family:sans-serif\">\n<p>Hello,</p>\n<p><strong>{tech}</strong> from {company} is on the way to {loc}{job}.</p>\n<p>Appointment window: <strong>{window}</strong></p>\n<p><a href=\"{url}\">Follow the technician live</a></p>\n{st_html}<p style=\"color:#666\">This link stops working after the appointment.</p>\n</body></html>\n",
        tech = e(tech),
        company = e(company),
        loc = e(&link.location_name),
        job = e(&job),
        window = e(&window),
        url = e(url),
    );
    Email { subject, text, html }
}

/// Seconds the TrackMe link must live when created at `now`: until one
/// hour after the window ends (one hour from now at least; a day when the
/// appointment has no window).
pub fn trackme_ttl_s(link: &ServiceLink, now: Ts) -> i64 {
    let until = link.window_end.map_or(now.plus_millis(86_400_000), |e| e.plus_millis(3_600_000));
    ((until.millis() - now.millis()) / 1000).max(3600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::LatLon;

    fn link() -> ServiceLink {
        ServiceLink {
            user: "11".into(),
            tech_name: "Ann <Lee>".into(),
            vehicle: "v1".into(),
            vehicle_name: "Van 1".into(),
            to: "fm@plant.example".into(),
            location_name: "Plant 7 & Co".into(),
            job_number: Some("J-1001".into()),
            window_start: Some(Ts::parse("2026-11-28T14:00:00Z").unwrap()),
            window_end: Some(Ts::parse("2026-11-28T16:00:00Z").unwrap()),
            destination: Some(LatLon::new(35.2271, -80.8431)),
            timezone: Some("America/New_York".into()),
            enroute_at: Ts::parse("2026-11-28T13:10:00Z").unwrap(),
        }
    }

    #[test]
    fn window_in_the_locations_zone() {
        let l = link();
        assert_eq!(
            window_text(l.window_start, l.window_end, Some("America/New_York")),
            "Sat 28 Nov 2026, 9:00 AM – 11:00 AM EST"
        );
        assert_eq!(window_text(l.window_start, l.window_end, None), "Sat 28 Nov 2026, 2:00 PM – 4:00 PM UTC");
        assert_eq!(
            window_text(l.window_start, l.window_end, Some("Not/AZone")),
            "Sat 28 Nov 2026, 2:00 PM – 4:00 PM UTC"
        );
        assert_eq!(
            window_text(l.window_start, Ts::parse("2026-11-29T16:00:00Z").ok(), Some("Europe/Berlin")),
            "Sat 28 Nov 2026, 3:00 PM – Sun 29 Nov 2026, 5:00 PM CET"
        );
    }

    #[test]
    fn email_carries_link_window_and_escapes_html() {
        let m = service_link(&link(), "https://trackme.example/tm1?a=1&b=2", "Acme Field Service", None);
        assert_eq!(m.subject, "Ann <Lee> is on the way to Plant 7 & Co");
        assert!(m.text.contains("https://trackme.example/tm1?a=1&b=2"));
        assert!(m.text.contains("9:00 AM – 11:00 AM EST"));
        assert!(m.html.contains("Ann &lt;Lee&gt;") && m.html.contains("Plant 7 &amp; Co"));
        assert!(m.html.contains("href=\"https://trackme.example/tm1?a=1&amp;b=2\""));
        assert_eq!(m, service_link(&link(), "https://trackme.example/tm1?a=1&b=2", "Acme Field Service", None));
        assert!(!m.text.contains("Your appointment"));
        let st = "https://app.servicetrade.com/servicelink/7001?x=1&y=2";
        let m = service_link(&link(), "https://trackme.example/tm1", "Acme Field Service", Some(st));
        assert!(m.text.contains(&format!("Your appointment: {st}")), "{}", m.text);
        assert!(m.html.contains("href=\"https://app.servicetrade.com/servicelink/7001?x=1&amp;y=2\""), "{}", m.html);
    }

    #[test]
    fn trackme_covers_the_window() {
        let l = link();
        assert_eq!(trackme_ttl_s(&l, Ts::parse("2026-11-28T13:10:00Z").unwrap()), 3 * 3600 + 50 * 60);
        assert_eq!(trackme_ttl_s(&l, Ts::parse("2026-11-28T18:00:00Z").unwrap()), 3600);
    }
}
