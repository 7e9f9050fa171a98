//! The Activity Report as HTML, CSV and JSON, for one tenant and local day.
//! Pure: the lines, the day and the timezone are passed in.
//!
//! Invariants: a line belongs to the local day its window starts on (lines
//! without a window belong to no day); HTML and CSV show times in the
//! tenant's zone, JSON in RFC 3339 UTC; every value is escaped for its
//! format (HTML entities; CSV quoting per RFC 4180, and a leading `=`, `+`,
//! `-` or `@` is prefixed with `'` so spreadsheets do not run it).

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use super::join::ReportLine;
use crate::model::Ts;
use crate::sink::render::escape_html;

fn zone(tz: Option<&str>) -> Tz {
    tz.and_then(|z| z.parse::<Tz>().ok()).unwrap_or(chrono_tz::UTC)
}

/// The local date of `t` in `tz`.
pub fn local_day(t: Ts, tz: Option<&str>) -> NaiveDate {
    let utc = DateTime::<Utc>::from_timestamp_millis(t.millis()).unwrap_or_default();
    zone(tz).from_utc_datetime(&utc.naive_utc()).date_naive()
}

/// The lines whose window starts on `day` in `tz`.
pub fn for_day(lines: Vec<ReportLine>, day: NaiveDate, tz: Option<&str>) -> Vec<ReportLine> {
    lines.into_iter().filter(|l| l.row.window_start.is_some_and(|w| local_day(w, tz) == day)).collect()
}

fn local(t: Option<Ts>, tz: Option<&str>) -> String {
    let Some(t) = t else { return String::new() };
    let utc = DateTime::<Utc>::from_timestamp_millis(t.millis()).unwrap_or_default();
    zone(tz).from_utc_datetime(&utc.naive_utc()).format("%Y-%m-%d %H:%M").to_string()
}

const COLUMNS: [&str; 21] = [
    "appointment",
    "job",
    "job_number",
    "location",
    "status",
    "window_start",
    "window_end",
    "tech",
    "tech_name",
    "tech_email",
    "tech_found_in_azuga",
    "vehicle",
    "fence_created",
    "fence_in_azuga",
    "fence_result",
    "service_link",
    "enroute_in",
    "enroute_out",
    "onsite_in",
    "onsite_out",
    "arrival",
];

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

fn yes_no(v: Option<bool>) -> String {
    match v {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => String::new(),
    }
}

fn enum_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn cells(l: &ReportLine, tz: Option<&str>) -> Vec<String> {
    let r = &l.row;
    let service_link = match (r.service_link_sent, l.service_link_delivered) {
        (Some(t), Some(false)) => format!("{} (not delivered)", local(Some(t), tz)),
        (Some(t), _) => local(Some(t), tz),
        _ => String::new(),
    };
    let arrival = r.arrival.as_ref().map_or(String::new(), |a| {
        format!(
            "{} at {:.5},{:.5}, {} m from centre ({})",
            local(Some(a.time), tz),
            a.lat,
            a.lon,
            a.distance_m,
            a.vehicle
        )
    });
    vec![
        r.appointment.to_string(),
        opt(&r.job),
        opt(&r.job_number),
        r.location_name.clone().unwrap_or_else(|| opt(&r.location)),
        r.status.to_string(),
        local(r.window_start, tz),
        local(r.window_end, tz),
        opt(&r.tech),
        opt(&r.tech_name),
        opt(&r.tech_email),
        if r.tech_found_in_azuga { "yes".into() } else { "no".into() },
        opt(&r.vehicle),
        if r.fence_created { "yes".into() } else { "no".into() },
        yes_no(l.fence_in_azuga),
        enum_text(&r.fence_result),
        service_link,
        local(r.enroute_clock_in, tz),
        local(r.enroute_clock_out, tz),
        local(r.onsite_clock_in, tz),
        local(r.onsite_clock_out, tz),
        arrival,
    ]
}

fn failures(l: &ReportLine) -> Vec<String> {
    let mut f: Vec<String> = l.row.failures.iter().map(enum_text).collect();
    f.extend(l.sink_failures.iter().cloned());
    f
}

fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

pub fn csv(lines: &[ReportLine], tz: Option<&str>) -> String {
    let mut out = String::new();
    let header: Vec<&str> = COLUMNS.iter().copied().chain(["failures", "quick_link"]).collect();
    out.push_str(&header.join(","));
    out.push_str("\r\n");
    for l in lines {
        let mut c = cells(l, tz);
        c.push(failures(l).join("; "));
        c.push(l.quick_link.clone().unwrap_or_default());
        out.push_str(&c.iter().map(|s| csv_cell(s)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    out
}

pub fn json(lines: &[ReportLine]) -> String {
    serde_json::to_string_pretty(lines).unwrap_or_else(|_| "[]".into())
}

const SCRIPT: &str = r#"<script>
(function () {
  var t = document.getElementById('report');
  var dir = {};
  t.querySelectorAll('th').forEach(function (th, i) {
    th.addEventListener('click', function () {
      var rows = Array.prototype.slice.call(t.tBodies[0].rows);
      dir[i] = !dir[i];
      rows.sort(function (a, b) {
        var x = a.cells[i].innerText, y = b.cells[i].innerText;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return dir[i] ? c : -c;
      });
      rows.forEach(function (r) { t.tBodies[0].appendChild(r); });
    });
  });
  t.setAttribute('data-sortable', 'ready');
})();
</script>"#;

pub fn html(tenant: &str, day: NaiveDate, tz: Option<&str>, lines: &[ReportLine]) -> String {
    let e = escape_html;
    let zone_name = zone(tz).name().to_string();
    let arrived = lines.iter().filter(|l| enum_text(&l.row.fence_result) == "arrived").count();
    let failed = lines.iter().filter(|l| !failures(l).is_empty()).count();
    let mut out = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Activity Report {t} {day}</title>\n<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;font-size:13px}}th,td{{border:1px solid #ccc;padding:3px 6px;vertical-align:top}}th{{background:#eee;cursor:pointer}}tr.failed td{{background:#fde8e8}}td.failures{{color:#a00}}</style></head>\n<body>\n<h1>Activity Report: {t}, {day}</h1>\n<p>{n} appointment rows, {arrived} arrived, {failed} with failures. Times in {z}. Click a heading to sort.</p>\n<table id=\"report\" data-sortable=\"no\">\n<thead><tr>",
        t = e(tenant),
        n = lines.len(),
        z = e(&zone_name),
    );
    for c in COLUMNS.iter().chain(["failures"].iter()) {
        out.push_str(&format!("<th>{}</th>", e(c)));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for l in lines {
        let f = failures(l);
        out.push_str(if f.is_empty() { "<tr>" } else { "<tr class=\"failed\">" });
        for (i, c) in cells(l, tz).iter().enumerate() {
            match (i, &l.quick_link) {
                (1, Some(link)) if !c.is_empty() => {
                    out.push_str(&format!("<td><a href=\"{}\">{}</a></td>", e(link), e(c)))
                }
                _ => out.push_str(&format!("<td>{}</td>", e(c))),
            }
        }
        out.push_str(&format!("<td class=\"failures\">{}</td></tr>\n", e(&f.join("; "))));
    }
    out.push_str("</tbody></table>\n");
    out.push_str(SCRIPT);
    out.push_str("\n</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::join::join;
    use crate::scenario::Scenario;
    use std::collections::HashMap;

    fn lines() -> Vec<ReportLine> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/arrival_basic.yaml");
        let rows = Scenario::load(&path).unwrap().run().unwrap().report;
        join(rows, &HashMap::new(), &HashMap::new(), Some("https://st.example"))
    }

    #[test]
    fn days_are_local() {
        let t = Ts::parse("2026-11-28T03:00:00Z").unwrap();
        assert_eq!(local_day(t, None).to_string(), "2026-11-28");
        assert_eq!(local_day(t, Some("America/New_York")).to_string(), "2026-11-27");
        let l = lines();
        let day = local_day(l[0].row.window_start.unwrap(), None);
        assert_eq!(for_day(l.clone(), day, None).len(), l.len());
        assert!(for_day(l, day.succ_opt().unwrap(), None).is_empty());
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=cmd()"), "'=cmd()");
        let text = csv(&lines(), Some("America/New_York"));
        let mut it = text.split("\r\n");
        assert!(it.next().unwrap().starts_with("appointment,job,job_number"));
        assert_eq!(text.split("\r\n").filter(|l| !l.is_empty()).count(), 1 + lines().len());
    }

    #[test]
    fn html_has_the_sortable_table_links_and_escapes() {
        let mut l = lines();
        l[0].sink_failures.push("Azuga rejected geofence: <b>".into());
        let page = html("acme", NaiveDate::from_ymd_opt(2026, 11, 28).unwrap(), None, &l);
        assert!(page.contains("<table id=\"report\""));
        assert!(page.contains("href=\"https://st.example/job/900\""));
        assert!(page.contains("class=\"failed\"") && page.contains("&lt;b&gt;"));
        assert!(!page.contains("<b>"));
    }
}
