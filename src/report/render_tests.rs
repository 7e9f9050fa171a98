//! Tests of [`super`]: the report's HTML, CSV and JSON.

use super::*;
use crate::kafka::records::{Outcome, SinkResult};
use crate::report::join::join;
use crate::scenario::Scenario;
use std::collections::HashMap;

fn lines(file: &str) -> Vec<ReportLine> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios").join(file);
    let rows = Scenario::load(&path).unwrap().run().unwrap().report;
    join(rows, &[], &HashMap::new(), Some("https://st.example"))
}

fn ny() -> Tz {
    zone(Some("America/New_York"))
}

#[test]
fn days_are_local_to_the_tenant() {
    let t = Ts::parse("2026-11-28T03:00:00Z").unwrap();
    assert_eq!(local_day(t, zone(None)).to_string(), "2026-11-28");
    assert_eq!(local_day(t, ny()).to_string(), "2026-11-27");
    assert_eq!(zone(Some("Mars/Olympus")), chrono_tz::UTC);
    let mut rows: Vec<ReportRow> = lines("arrival_basic.yaml").into_iter().map(|l| l.row).collect();
    let day = local_day(rows[0].window_start.unwrap(), zone(None));
    assert_eq!(for_day(rows.clone(), day, zone(None)).len(), rows.len());
    assert!(for_day(rows.clone(), day.succ_opt().unwrap(), zone(None)).is_empty());
    // 03:00 UTC is the evening before in New York.
    rows[0].window_start = Some(t);
    assert_eq!(for_day(rows.clone(), NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(), ny()).len(), 1);
    assert!(for_day(rows.clone(), NaiveDate::from_ymd_opt(2026, 11, 28).unwrap(), ny()).is_empty());
    rows[0].window_start = None;
    assert!(!starts_on(&rows[0], day, zone(None)), "no window, no day");
}

#[test]
fn csv_is_rfc_4180_with_local_times_and_defused_formulas() {
    assert_eq!(csv_cell("a,b"), "\"a,b\"");
    assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
    assert_eq!(csv_cell("line\nbreak"), "\"line\nbreak\"");
    assert_eq!(csv_cell("=cmd()"), "'=cmd()");
    assert_eq!(csv_cell("-80.843100"), "-80.843100", "numbers stay numbers");
    assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
    let mut l = lines("arrival_basic.yaml");
    l[0].row.tech_name = Some("=HYPERLINK(\"x\")".into());
    l[0].sink_failures.push("Azuga rejected geofence: radius 5 m, minimum 50 m".into());
    let text = csv(&l, ny());
    let records: Vec<&str> = text.split_terminator("\r\n").collect();
    assert_eq!(records[0], csv_columns().join(","));
    assert!(records[0].starts_with("Appointment ID,Appointment Job ID,Quick Link,Appointment Status,Tech Name,Email,Tech Found in Azuga,Fence Created,Fence Result,Enroute Clock-Out,Enroute Clock-In,"));
    assert_eq!(records.len(), 1 + l.len());
    assert!(text.ends_with("\r\n"));
    assert!(records[1].contains("2026-11-28T09:00:00-05:00"), "window start in New York time: {}", records[1]);
    assert!(records[1].contains("\"'=HYPERLINK(\"\"x\"\")\""), "{}", records[1]);
    assert!(records[1].contains("minimum 50 m\""), "{}", records[1]);
}

#[test]
fn json_is_the_engine_row_plus_the_sink_columns() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/did_not_arrive.yaml");
    let rows = Scenario::load(&path).unwrap().run().unwrap().report;
    let failed = SinkResult {
        command_id: "f1".into(),
        appointment: rows[0].appointment.to_string(),
        kind: "create_geofence".into(),
        sink: "geofence".into(),
        outcome: Outcome::Failed,
        reason: "Azuga rejected geofence: HTTP 422".into(),
        remote_ref: None,
        attempts: 3,
        executed_at: Ts(1),
        command_time: Ts(0),
    };
    let l = join(rows.clone(), &[failed], &HashMap::new(), None);
    let v: Value = serde_json::from_str(&json("acme", &l)).unwrap();
    let got = v.as_array().unwrap();
    assert_eq!(got.len(), rows.len());
    let mut engine = serde_json::to_value(&rows[0]).unwrap();
    let mut codes = engine["failures"].as_array().unwrap().clone();
    assert!(!codes.is_empty());
    codes.push(json!("Azuga rejected geofence: HTTP 422"));
    assert_eq!(got[0]["failures"], Value::Array(codes.clone()));
    assert_eq!(got[0]["failure_reason"], codes[0]);
    assert_eq!(got[0]["fence_in_azuga"], "failed");
    assert_eq!((&got[0]["office"], &got[0]["office_name"]), (&Value::Null, &Value::Null), "always present");
    let mut row = got[0].clone();
    for k in [
        "failures",
        "failure_reason",
        "failure_texts",
        "sink_failures",
        "fence_in_azuga",
        "geomark_id",
        "service_link_delivered",
        "trackme_url",
        "clock_events_posted",
        "quick_link",
        "actions",
        "fence_shape",
        "explain",
        "office",
        "office_name",
    ] {
        row.as_object_mut().unwrap().remove(k);
        engine.as_object_mut().unwrap().remove(k);
    }
    assert_eq!(row, engine, "every engine column unchanged");
}

#[test]
fn html_has_the_sortable_table_links_highlights_and_escapes() {
    let mut l = lines("arrival_basic.yaml");
    l[0].sink_failures.push("Azuga rejected geofence: <b>\"x\"</b>".into());
    l[0].row.tech_name = Some("<script>alert(1)</script>".into());
    let day = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
    let page = html("acme", day, ny(), &l, true);
    assert!(page.contains("<table id=\"report\" data-sortable=\"pending\">"));
    assert!(page.contains("href=\"https://st.example/job/900\""));
    assert!(page.contains("<tr class=\"failed\">"));
    assert!(page.contains("&lt;b&gt;&quot;x&quot;&lt;/b&gt;") && !page.contains("<b>"));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert_eq!(page.matches("<script").count(), 1, "only the page's own script");
    assert_eq!(page.matches("<tr").count(), 1 + l.len(), "one header row and one row per line");
    assert_eq!(page.matches("<th ").count(), HTML_COLUMNS.len());
    assert!(page.contains("Times in America/New_York"));
    assert!(page.contains("href=\"?day=2026-11-27\"") && page.contains("href=\"?day=2026-11-29\""));
    // The arrival evidence: ping time, position, distance, with a map link.
    let a = l[0].row.arrival.as_ref().unwrap();
    assert!(page.contains(&format!("{} m from centre", a.distance_m)), "{page}");
    assert!(page.contains("openstreetmap.org"));
    // The policy allows exactly this script and style.
    let csp = content_security_policy();
    assert!(csp.contains(&sha256_source(SCRIPT)) && csp.contains("default-src 'none'"));
    assert!(page.contains(&format!("<script>{SCRIPT}</script>")));
    assert!(page.contains(&format!("<style>{STYLE}</style>")));
    assert!(!SCRIPT.contains("</") && !SCRIPT.contains("<tr"));
    let empty = html("acme", day, ny(), &[], true);
    let one_day = html("acme", day, ny(), &l, false);
    assert!(
        !one_day.contains("?day=2026-11-27") && !one_day.contains("?day=2026-11-29"),
        "a one-day link offers no other day"
    );
    assert!(empty.contains("No appointments start on this day."));
}
