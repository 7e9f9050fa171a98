//! The Activity Report as HTML, CSV and JSON, for one tenant and local day.
//! Pure: the lines, the day and the time zone are passed in.
//!
//! Invariants:
//! - a line belongs to the local day (in the tenant's zone) its appointment
//!   window starts on; a line without a window belongs to no day;
//! - HTML and CSV show times in the tenant's zone (CSV as RFC 3339 with the
//!   local offset, so it stays unambiguous across DST changes); JSON keeps
//!   the engine's RFC 3339 UTC;
//! - JSON is an array with one object per line: the engine's row exactly
//!   as [`super::rows`] serialises it, except that `failures` continues with
//!   the sink failures (sentences) after the engine's reason codes and
//!   `failure_reason` is the first of them, plus the sink columns
//!   (`fence_in_azuga`, `geomark_id`, `service_link_delivered`,
//!   `trackme_url`, `clock_events_posted`, `sink_failures`,
//!   `failure_texts`, `quick_link`, `actions` and `fence_shape`:
//!   [`super::actions`]), `office` and `office_name` (null when the
//!   appointment has no office) and `explain`, the path of the row's
//!   explanation (`/report/{tenant}/explain/{appointment}?tech={tech}`);
//!   the evidence of each failure is in the engine row's fields
//!   (`closest_approach`, `outside_window_ping`, `inside_before_enroute`,
//!   `pairing_gap`; see [`super::rows`]);
//! - CSV and HTML show that evidence as a sentence (`evidence`), and HTML
//!   links each row to its explanation (`Why`), after the other columns;
//! - CSV and HTML lead with the integration article's eleven columns in
//!   its order ([`ARTICLE_COLUMNS`]), the three action columns as statuses
//!   in words; the evidence columns follow;
//! - CSV is RFC 4180 (header row, CRLF, quotes doubled); a text cell that a
//!   spreadsheet would run as a formula (leading `=`, `+`, `-`, `@`, tab or
//!   CR, and not a number) is prefixed with `'`;
//! - HTML escapes every value; the page is self-contained (inline style and
//!   script, whose hashes [`content_security_policy`] allows, and nothing
//!   else); the table has exactly one header row and one row per line.

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::actions::fence_shape_text;
use super::join::ReportLine;
use super::ReportRow;
use crate::http::client::urlencode as encode;
use crate::model::Ts;

/// The zone named `name` (IANA), UTC when absent or unknown (the tenants
/// file validates names at load).
pub fn zone(name: Option<&str>) -> Tz {
    name.and_then(|z| z.parse::<Tz>().ok()).unwrap_or(chrono_tz::UTC)
}

fn at(t: Ts, tz: Tz) -> DateTime<Tz> {
    DateTime::<Utc>::from_timestamp_millis(t.millis()).unwrap_or_default().with_timezone(&tz)
}

/// The local date of `t` in `tz`.
pub fn local_day(t: Ts, tz: Tz) -> NaiveDate {
    at(t, tz).date_naive()
}

/// Whether `row`'s window starts on `day` in `tz`.
pub fn starts_on(row: &ReportRow, day: NaiveDate, tz: Tz) -> bool {
    row.window_start.is_some_and(|w| local_day(w, tz) == day)
}

/// The rows whose window starts on `day` in `tz`, in their order.
pub fn for_day(rows: Vec<ReportRow>, day: NaiveDate, tz: Tz) -> Vec<ReportRow> {
    rows.into_iter().filter(|r| starts_on(r, day, tz)).collect()
}

fn code<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn opt<T: ToString>(v: Option<&T>) -> String {
    v.map(ToString::to_string).unwrap_or_default()
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

// ------------------------------------------------------------------ JSON

/// The path of a row's explanation on the report server.
pub fn explain_path(tenant: &str, row: &ReportRow) -> String {
    let tech = row.tech.as_ref().map(|t| format!("?tech={}", encode(t.as_str()))).unwrap_or_default();
    format!("/report/{}/explain/{}{tech}", encode(tenant), encode(row.appointment.as_str()))
}

/// The evidence behind a row's failures, as a sentence (empty when none).
pub fn evidence_text(r: &ReportRow, tz: Tz) -> String {
    let ping = |e: &crate::engine::Evidence| {
        format!("{} {} m from the centre ({})", local_time(e.time, tz), e.distance_m, e.vehicle)
    };
    let mut parts = Vec::new();
    if let Some(e) = &r.closest_approach {
        parts.push(format!("closest approach {}", ping(e)));
    }
    if let Some(e) = &r.outside_window_ping {
        parts.push(format!("inside only outside the window: {}", ping(e)));
    }
    if let Some(e) = &r.inside_before_enroute {
        parts.push(format!("inside without an open En Route clock-in: {}", ping(e)));
    }
    if let Some(g) = &r.pairing_gap {
        let mut s = format!(
            "driver {} had no vehicle from {} to {}",
            g.driver,
            at(g.from, tz).format("%b %-d %H:%M"),
            at(g.to, tz).format("%b %-d %H:%M")
        );
        if let Some(b) = &g.before {
            s.push_str(&format!(
                "; before: {} until {}",
                b.vehicle,
                b.to.map_or("open".to_string(), |t| at(t, tz).format("%b %-d %H:%M").to_string())
            ));
        }
        if let Some(a) = &g.after {
            s.push_str(&format!("; after: {} from {}", a.vehicle, at(a.from, tz).format("%b %-d %H:%M")));
        }
        parts.push(s);
    }
    parts.join("; ")
}

fn json_line(tenant: &str, l: &ReportLine) -> Value {
    let mut v = serde_json::to_value(&l.row).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("explain".into(), json!(explain_path(tenant, &l.row)));
        m.entry("office").or_insert(Value::Null);
        m.entry("office_name").or_insert(Value::Null);
        let failures = l.failures();
        m.insert("failure_reason".into(), failures.first().map_or(Value::Null, |f| Value::String(f.clone())));
        m.insert("failures".into(), json!(failures));
        m.insert("failure_texts".into(), json!(l.failure_texts()));
        m.insert("sink_failures".into(), json!(l.sink_failures));
        m.insert("fence_in_azuga".into(), json!(l.fence_in_azuga.as_str()));
        m.insert("geomark_id".into(), json!(l.geomark_id));
        m.insert("service_link_delivered".into(), json!(l.service_link_delivered));
        m.insert("trackme_url".into(), json!(l.trackme_url));
        m.insert("clock_events_posted".into(), json!(l.clock_events_posted));
        m.insert("quick_link".into(), json!(l.quick_link));
        m.insert("actions".into(), json!(l.actions));
        m.insert("fence_shape".into(), json!(l.row.fence_shape.as_ref().map(fence_shape_text)));
    }
    v
}

/// The lines of `tenant` as a JSON array (see the module docs).
pub fn json(tenant: &str, lines: &[ReportLine]) -> String {
    let all = Value::Array(lines.iter().map(|l| json_line(tenant, l)).collect());
    serde_json::to_string_pretty(&all).unwrap_or_else(|_| "[]".into())
}

// ------------------------------------------------------------------- CSV

/// The integration article's eleven columns, in its order: what every
/// Activity Report leads with (the action columns: [`super::actions`]).
pub const ARTICLE_COLUMNS: [&str; 11] = [
    "Appointment ID",
    "Appointment Job ID",
    "Quick Link",
    "Appointment Status",
    "Tech Name",
    "Email",
    "Tech Found in Azuga",
    "Fence Created",
    "Fence Result",
    "Enroute Clock-Out",
    "Enroute Clock-In",
];

/// The evidence columns that follow the article's, in order.
pub const EVIDENCE_COLUMNS: [&str; 29] = [
    "job_number",
    "location",
    "location_name",
    "office",
    "office_name",
    "window_start",
    "window_end",
    "tech",
    "vehicle",
    "fence_name",
    "fence_shape",
    "fence_in_azuga",
    "geomark_id",
    "service_link_sent",
    "service_link_delivered",
    "enroute_clock_in",
    "enroute_clock_out",
    "onsite_clock_in",
    "onsite_clock_out",
    "clock_events_posted",
    "arrival_time",
    "arrival_vehicle",
    "arrival_lat",
    "arrival_lon",
    "arrival_distance_m",
    "passed_through",
    "failure_reason",
    "failures",
    "evidence",
];

/// The CSV header, in column order.
pub fn csv_columns() -> Vec<&'static str> {
    ARTICLE_COLUMNS.iter().chain(EVIDENCE_COLUMNS.iter()).copied().collect()
}

fn csv_time(t: Option<Ts>, tz: Tz) -> String {
    t.map(|t| at(t, tz).to_rfc3339_opts(chrono::SecondsFormat::Secs, false)).unwrap_or_default()
}

fn csv_record(l: &ReportLine, tz: Tz) -> [String; 40] {
    let r = &l.row;
    let a = r.arrival.as_ref();
    let texts = l.failure_texts();
    [
        r.appointment.to_string(),
        opt(r.job.as_ref()),
        l.quick_link.clone().unwrap_or_default(),
        r.status.to_string(),
        r.tech_name.clone().unwrap_or_default(),
        r.tech_email.clone().unwrap_or_default(),
        yes_no(r.tech_found_in_azuga).into(),
        l.actions.fence.text(tz),
        code(&r.fence_result),
        l.actions.enroute_clock_out.text(tz),
        l.actions.onsite_clock_in.text(tz),
        // Evidence.
        opt(r.job_number.as_ref()),
        opt(r.location.as_ref()),
        r.location_name.clone().unwrap_or_default(),
        opt(r.office.as_ref()),
        r.office_name.clone().unwrap_or_default(),
        csv_time(r.window_start, tz),
        csv_time(r.window_end, tz),
        opt(r.tech.as_ref()),
        opt(r.vehicle.as_ref()),
        r.fence_name.clone().unwrap_or_default(),
        r.fence_shape.as_ref().map(fence_shape_text).unwrap_or_default(),
        l.fence_in_azuga.as_str().into(),
        l.geomark_id.clone().unwrap_or_default(),
        csv_time(r.service_link_sent, tz),
        l.service_link_delivered.map(|d| yes_no(d).to_string()).unwrap_or_default(),
        csv_time(r.enroute_clock_in, tz),
        csv_time(r.enroute_clock_out, tz),
        csv_time(r.onsite_clock_in, tz),
        csv_time(r.onsite_clock_out, tz),
        l.clock_events_posted.to_string(),
        csv_time(a.map(|a| a.time), tz),
        opt(a.map(|a| &a.vehicle)),
        a.map(|a| format!("{:.6}", a.lat)).unwrap_or_default(),
        a.map(|a| format!("{:.6}", a.lon)).unwrap_or_default(),
        a.map(|a| a.distance_m.to_string()).unwrap_or_default(),
        r.passed_through
            .as_ref()
            .map(|p| format!("{} to {} ({})", csv_time(Some(p.from), tz), csv_time(Some(p.to), tz), p.vehicle))
            .unwrap_or_default(),
        texts.first().cloned().unwrap_or_default(),
        texts.join("; "),
        evidence_text(r, tz),
    ]
}

/// One CSV field: formula-like text defused, quoted when needed.
pub fn csv_cell(s: &str) -> String {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']) && s.parse::<f64>().is_err();
    let s = if formula { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The lines as CSV (see the module docs).
pub fn csv(lines: &[ReportLine], tz: Tz) -> String {
    let mut out = csv_columns().join(",");
    out.push_str("\r\n");
    for l in lines {
        let cells: Vec<String> = csv_record(l, tz).iter().map(|c| csv_cell(c)).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

// ------------------------------------------------------------------ HTML

/// Escapes text for HTML content and quoted attribute values (the one
/// escaper the emails use too).
pub use crate::sink::render::escape_html as escape;

/// `(key, heading)` of the HTML table's columns, in order. The key is what
/// `#sort=KEY` (or `#sort=-KEY`, descending) in the page URL sorts by.
pub const HTML_COLUMNS: [(&str, &str); 29] = [
    ("appointment", "Appointment ID"),
    ("job", "Appointment Job ID"),
    ("quick_link", "Quick Link"),
    ("status", "Appointment Status"),
    ("tech_name", "Tech Name"),
    ("tech_email", "Email"),
    ("tech_found_in_azuga", "Tech Found in Azuga"),
    ("fence_created", "Fence Created"),
    ("fence_result", "Fence Result"),
    ("enroute_clock_out_action", "Enroute Clock-Out"),
    ("onsite_clock_in_action", "Enroute Clock-In"),
    // Evidence.
    ("job_number", "Job no."),
    ("location", "Location"),
    ("office", "Office"),
    ("window_start", "Window start"),
    ("window_end", "Window end"),
    ("tech", "Tech id"),
    ("vehicle", "Vehicle"),
    ("fence_in_azuga", "Fence at Azuga"),
    ("service_link", "Service Link"),
    ("enroute_clock_in", "En Route in"),
    ("enroute_clock_out", "En Route out"),
    ("onsite_clock_in", "On Site in"),
    ("onsite_clock_out", "On Site out"),
    ("clock_events_posted", "Clock events posted"),
    ("arrival", "Arrival evidence"),
    ("failures", "Failures"),
    ("evidence", "Evidence"),
    ("explain", "Why"),
];

/// One table cell: its text, and optionally a sort key, a tooltip and a link.
#[derive(Default)]
struct Cell {
    text: String,
    sort: Option<String>,
    title: Option<String>,
    link: Option<String>,
    class: Option<&'static str>,
    /// The link is on this server and needs the page's token (the script
    /// adds it).
    keep_token: bool,
}

fn text(s: impl Into<String>) -> Cell {
    Cell { text: s.into(), ..Cell::default() }
}

/// A time: `HH:MM` on the report day, `Mon D HH:MM` otherwise; sorted by
/// instant, the full local time as tooltip.
fn time_cell(t: Option<Ts>, day: NaiveDate, tz: Tz) -> Cell {
    let Some(t) = t else { return Cell::default() };
    let local = at(t, tz);
    let shown = if local.date_naive() == day { local.format("%H:%M") } else { local.format("%b %-d %H:%M") };
    Cell {
        text: shown.to_string(),
        sort: Some(t.millis().to_string()),
        title: Some(local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)),
        ..Cell::default()
    }
}

fn html_cells(tenant: &str, l: &ReportLine, day: NaiveDate, tz: Tz) -> [Cell; 29] {
    let r = &l.row;
    let mut job = text(opt(r.job.as_ref()));
    job.link = l.quick_link.clone().filter(|_| r.job.is_some());
    let quick = match &l.quick_link {
        Some(url) => Cell { link: Some(url.clone()), ..text("open in ServiceTrade") },
        None => Cell::default(),
    };
    let action =
        |a: &super::actions::ActionStatus| Cell { class: a.is_failed().then_some("failures"), ..text(a.text(tz)) };
    let service_link = match (r.service_link_sent, l.service_link_delivered) {
        (None, _) => Cell::default(),
        (Some(t), delivered) => {
            let mut c = time_cell(Some(t), day, tz);
            c.text = match delivered {
                Some(true) => format!("sent {}, delivered", c.text),
                Some(false) => format!("sent {}, not delivered", c.text),
                None => format!("sent {}", c.text),
            };
            c
        }
    };
    let arrival = match (&r.arrival, &r.passed_through) {
        (Some(a), _) => {
            let mut c = time_cell(Some(a.time), day, tz);
            c.text = format!(
                "{} · {:.5}, {:.5} · {} m from centre · {}",
                local_time(a.time, tz),
                a.lat,
                a.lon,
                a.distance_m,
                a.vehicle
            );
            c.link = Some(format!(
                "https://www.openstreetmap.org/?mlat={:.6}&mlon={:.6}#map=18/{:.6}/{:.6}",
                a.lat, a.lon, a.lat, a.lon
            ));
            c
        }
        (None, Some(p)) => {
            let mut c = time_cell(Some(p.from), day, tz);
            c.text = format!(
                "drove through between {} and {} · {}",
                local_time(p.from, tz),
                local_time(p.to, tz),
                p.vehicle
            );
            c
        }
        (None, None) => Cell::default(),
    };
    let texts = l.failure_texts();
    let failures = Cell {
        sort: Some(format!("{:03}{}", texts.len(), texts.join("; "))),
        text: texts.join("\n"),
        class: Some("failures"),
        ..Cell::default()
    };
    [
        text(r.appointment.to_string()),
        job,
        quick,
        text(r.status),
        text(r.tech_name.clone().unwrap_or_default()),
        text(r.tech_email.clone().unwrap_or_default()),
        text(yes_no(r.tech_found_in_azuga)),
        Cell { title: r.fence_shape.as_ref().map(fence_shape_text), ..action(&l.actions.fence) },
        text(code(&r.fence_result).replace('_', " ")),
        action(&l.actions.enroute_clock_out),
        action(&l.actions.onsite_clock_in),
        // Evidence.
        text(opt(r.job_number.as_ref())),
        text(r.location_name.clone().unwrap_or_else(|| opt(r.location.as_ref()))),
        text(r.office_name.clone().unwrap_or_else(|| opt(r.office.as_ref()))),
        time_cell(r.window_start, day, tz),
        time_cell(r.window_end, day, tz),
        text(opt(r.tech.as_ref())),
        text(opt(r.vehicle.as_ref())),
        text(l.fence_in_azuga.as_str()),
        service_link,
        time_cell(r.enroute_clock_in, day, tz),
        time_cell(r.enroute_clock_out, day, tz),
        time_cell(r.onsite_clock_in, day, tz),
        time_cell(r.onsite_clock_out, day, tz),
        text(l.clock_events_posted.to_string()),
        arrival,
        failures,
        text(evidence_text(r, tz)),
        Cell { link: Some(explain_path(tenant, r)), keep_token: true, ..text("why") },
    ]
}

fn local_time(t: Ts, tz: Tz) -> String {
    at(t, tz).format("%H:%M:%S").to_string()
}

fn push_cell(out: &mut String, c: &Cell) {
    out.push_str("<td");
    if let Some(class) = c.class {
        out.push_str(&format!(" class=\"{class}\""));
    }
    if let Some(s) = &c.sort {
        out.push_str(&format!(" data-sort=\"{}\"", escape(s)));
    }
    if let Some(t) = &c.title {
        out.push_str(&format!(" title=\"{}\"", escape(t)));
    }
    out.push('>');
    let body = escape(&c.text).replace('\n', "<br>");
    match &c.link {
        Some(href) if c.keep_token => {
            out.push_str(&format!("<a class=\"keep-token\" href=\"{}\">{body}</a>", escape(href)))
        }
        Some(href) => out.push_str(&format!(
            "<a href=\"{}\" rel=\"noreferrer noopener\" target=\"_blank\">{body}</a>",
            escape(href)
        )),
        None => out.push_str(&body),
    }
    out.push_str("</td>");
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.3em}nav a{margin-right:1em}\
table{border-collapse:collapse;font-size:13px}\
th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left}\
th{background:#eee;cursor:pointer;position:sticky;top:0;white-space:nowrap}\
th[aria-sort=ascending]::after{content:' \\25B2'}th[aria-sort=descending]::after{content:' \\25BC'}\
tr.failed td{background:#fdecea}td.failures{color:#8a1c1c;min-width:18em}\
table.only-failed tbody tr:not(.failed){display:none}";

const SCRIPT: &str = r#"(function () {
  'use strict';
  var table = document.getElementById('report');
  var body = table.tBodies[0];
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var number = /^-?\d+(\.\d+)?$/;
  function key(row, i) {
    var c = row.cells[i];
    return c.hasAttribute('data-sort') ? c.getAttribute('data-sort') : c.textContent.trim();
  }
  function compare(a, b) {
    if (number.test(a) && number.test(b)) return parseFloat(a) - parseFloat(b);
    return a.localeCompare(b, undefined, { numeric: true, sensitivity: 'base' });
  }
  function sortBy(i, ascending) {
    heads.forEach(function (h) { h.removeAttribute('aria-sort'); });
    heads[i].setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
    var rows = Array.prototype.slice.call(body.rows).map(function (r, n) { return { k: key(r, i), n: n, r: r }; });
    rows.sort(function (x, y) {
      if ((x.k === '') !== (y.k === '')) return x.k === '' ? 1 : -1;
      var c = x.k === '' ? 0 : compare(x.k, y.k);
      return (ascending ? c : -c) || x.n - y.n;
    });
    rows.forEach(function (x) { body.appendChild(x.r); });
  }
  heads.forEach(function (th, i) {
    th.tabIndex = 0;
    function toggle() { sortBy(i, th.getAttribute('aria-sort') !== 'ascending'); }
    th.addEventListener('click', toggle);
    th.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); toggle(); }
    });
  });
  var only = document.getElementById('only-failed');
  only.addEventListener('change', function () { table.classList.toggle('only-failed', only.checked); });
  // A page opened by a signed link carries it (and its day) to its links.
  var here = new URLSearchParams(location.search);
  if (here.get('sig')) {
    document.querySelectorAll('a.keep-token').forEach(function (a) {
      var u = new URL(a.getAttribute('href'), location.href);
      ['expires', 'sig'].forEach(function (k) { u.searchParams.set(k, here.get(k)); });
      ['day', 'office'].forEach(function (k) {
        if (!u.searchParams.get(k) && here.get(k)) u.searchParams.set(k, here.get(k));
      });
      a.href = u.toString();
    });
  }
  var wanted = /^#sort=(-?)([a-z_]+)$/.exec(location.hash);
  if (wanted) {
    heads.forEach(function (th, i) {
      if (th.getAttribute('data-key') === wanted[2]) sortBy(i, wanted[1] !== '-');
    });
  }
  table.setAttribute('data-sortable', 'ready');
})();"#;

fn sha256_source(s: &str) -> String {
    format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s.as_bytes())))
}

/// The `Content-Security-Policy` for [`html`] pages: its own inline style
/// and script (by hash), nothing else loaded, no framing.
pub fn content_security_policy() -> String {
    format!(
        "default-src 'none'; script-src {}; style-src {}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        sha256_source(SCRIPT),
        sha256_source(STYLE)
    )
}

/// The report page for `tenant` and local `day` (see the module docs);
/// `other_days`: links to the previous and next day (not for a page opened
/// by a one-day link, which would not open them).
pub fn html(tenant: &str, day: NaiveDate, tz: Tz, lines: &[ReportLine], other_days: bool) -> String {
    let e = escape;
    let arrived = lines.iter().filter(|l| l.row.fence_result == super::FenceResult::Arrived).count();
    let failed = lines.iter().filter(|l| l.has_failures()).count();
    let nav_day = |d: Option<NaiveDate>, label: &str| {
        d.filter(|_| other_days)
            .map(|d| format!("<a class=\"keep-token\" href=\"?day={d}\">{label}</a>"))
            .unwrap_or_default()
    };
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"referrer\" content=\"no-referrer\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Activity Report · {t} · {day}</title>\n<style>{STYLE}</style></head>\n<body>\n\
<h1>Activity Report: {t}, {weekday} {day}</h1>\n\
<nav>{prev}{next}<a class=\"keep-token\" href=\"?day={day}&amp;format=csv\">CSV</a>\
<a class=\"keep-token\" href=\"?day={day}&amp;format=json\">JSON</a></nav>\n\
<p>{n} appointment {rows_word}, {arrived} arrived, {failed} with failures. Times in {z}. \
Click a heading to sort. <label><input type=\"checkbox\" id=\"only-failed\"> only rows with failures</label></p>\n\
<table id=\"report\" data-sortable=\"pending\">\n<thead><tr>",
        t = e(tenant),
        weekday = day.format("%A"),
        prev = nav_day(day.pred_opt(), "&larr; previous day"),
        next = nav_day(day.succ_opt(), "next day &rarr;"),
        n = lines.len(),
        rows_word = if lines.len() == 1 { "row" } else { "rows" },
        z = e(tz.name()),
    );
    for (key, heading) in HTML_COLUMNS {
        out.push_str(&format!("<th data-key=\"{key}\" scope=\"col\">{}</th>", e(heading)));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for l in lines {
        out.push_str(if l.has_failures() { "<tr class=\"failed\">" } else { "<tr>" });
        for c in html_cells(tenant, l, day, tz).iter() {
            push_cell(&mut out, c);
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
    if lines.is_empty() {
        out.push_str("<p>No appointments start on this day.</p>\n");
    }
    out.push_str("<script>");
    out.push_str(SCRIPT);
    out.push_str("</script>\n</body></html>\n");
    out
}

/// Carries the page's signed link (`expires`, `sig`, `day`, `office`) over to its
/// links (as the report page's script does).
const EXPLAIN_SCRIPT: &str = r#"(function () {
  'use strict';
  var here = new URLSearchParams(location.search);
  if (!here.get('sig')) return;
  document.querySelectorAll('a.keep-token').forEach(function (a) {
    var u = new URL(a.getAttribute('href'), location.href);
    ['expires', 'sig'].forEach(function (k) { u.searchParams.set(k, here.get(k)); });
    ['day', 'office'].forEach(function (k) {
      if (!u.searchParams.get(k) && here.get(k)) u.searchParams.set(k, here.get(k));
    });
    a.href = u.toString();
  });
})();"#;

/// The `Content-Security-Policy` of [`explain_html`] pages: their own
/// inline script (by hash), nothing else.
pub fn explain_security_policy() -> String {
    format!(
        "default-src 'none'; script-src {}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        sha256_source(EXPLAIN_SCRIPT)
    )
}

/// An explanation as a page: its text, and links to its JSON and to the
/// report of the appointment's day.
pub fn explain_html(tenant: &str, e: &crate::audit::Explanation) -> String {
    let day = e.window.as_ref().map(|w| at(w.start, chrono_tz::UTC).date_naive().to_string());
    let back = day
        .map(|d| format!("<a class=\"keep-token\" href=\"/report/{}?day={d}\">report of {d}</a> · ", encode(tenant)));
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"referrer\" content=\"no-referrer\">\
<title>Why · appointment {a} · {t}</title></head>\n<body>\n\
<h1>Appointment {a}: why</h1>\n<p>{back}<a class=\"keep-token\" href=\"?{tech}format=json\">JSON</a> · \
<a class=\"keep-token\" href=\"?{tech}format=text\">text</a></p>\n\
<pre>{body}</pre>\n<script>{EXPLAIN_SCRIPT}</script>\n</body></html>\n",
        tech = match e.technicians.as_slice() {
            [one] => format!("tech={}&amp;", encode(one.user.as_str())),
            _ => String::new(),
        },
        a = escape(e.appointment.as_str()),
        t = escape(tenant),
        back = back.unwrap_or_default(),
        body = escape(&e.text()),
    )
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
