//! Report lines: engine rows joined with what the sinks did. Pure.
//!
//! Invariants: every row of the engine is a line (the join never drops
//! one); a sink failure lands on the rows it concerns (fence results on
//! every technician of the appointment, clock and Service Link results on
//! the technician the command named); the latest result per command id wins
//! (results are re-published with the same content).

use std::collections::HashMap;

use serde::Serialize;

use super::ReportRow;
use crate::kafka::records::{Outcome, SinkResult};

/// What the report knows about one command it did not decide itself.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandInfo {
    pub appointment: String,
    /// The technician a clock change or Service Link is for.
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportLine {
    #[serde(flatten)]
    pub row: ReportRow,
    /// The geomark exists at Azuga (`None`: no fence result yet).
    pub fence_in_azuga: Option<bool>,
    /// The Service Link email was delivered (`None`: none sent for this row).
    pub service_link_delivered: Option<bool>,
    /// Clock events posted to ServiceTrade for this row.
    pub clock_events_posted: usize,
    /// Sink failures, readable ("Azuga rejected geofence: …").
    pub sink_failures: Vec<String>,
    /// `{servicetrade_web_url}/job/{job}`.
    pub quick_link: Option<String>,
}

fn text(id: &impl ToString) -> String {
    id.to_string()
}

/// Joins `rows` with the sinks' `results` (by command id, with `commands`
/// saying which appointment and technician each is for).
pub fn join(
    rows: Vec<ReportRow>,
    results: &HashMap<String, SinkResult>,
    commands: &HashMap<String, CommandInfo>,
    servicetrade_web_url: Option<&str>,
) -> Vec<ReportLine> {
    // Results by appointment, in executed order.
    let mut by_appt: HashMap<&str, Vec<&SinkResult>> = HashMap::new();
    for r in results.values() {
        by_appt.entry(r.appointment.as_str()).or_default().push(r);
    }
    for v in by_appt.values_mut() {
        v.sort_by_key(|r| (r.executed_at, r.command_id.clone()));
    }
    rows.into_iter()
        .map(|row| {
            let appt = text(&row.appointment);
            let tech = row.tech.as_ref().map(text);
            let mut line = ReportLine {
                quick_link: match (servicetrade_web_url, &row.job) {
                    (Some(base), Some(job)) => Some(format!("{base}/job/{job}")),
                    _ => None,
                },
                row,
                fence_in_azuga: None,
                service_link_delivered: None,
                clock_events_posted: 0,
                sink_failures: Vec::new(),
            };
            for r in by_appt.get(appt.as_str()).map(Vec::as_slice).unwrap_or(&[]) {
                let for_user = commands.get(&r.command_id).and_then(|c| c.user.clone());
                let mine = for_user.is_none() || for_user == tech;
                if !mine {
                    continue;
                }
                let done = r.outcome == Outcome::Done;
                match r.kind.as_str() {
                    "create_geofence" | "update_geofence" => line.fence_in_azuga = Some(done),
                    "delete_geofence" if done => line.fence_in_azuga = Some(false),
                    "send_service_link" => line.service_link_delivered = Some(done),
                    "clock" if done => line.clock_events_posted += 1,
                    _ => {}
                }
                if r.outcome == Outcome::Failed {
                    let what = match r.kind.as_str() {
                        "send_service_link" => "Service Link email not sent: ",
                        _ => "",
                    };
                    line.sink_failures.push(format!("{what}{}", r.reason));
                }
            }
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Ts;
    use crate::scenario::Scenario;

    fn result(id: &str, appt: &str, kind: &str, outcome: Outcome, reason: &str, at: i64) -> SinkResult {
        SinkResult {
            command_id: id.into(),
            appointment: appt.into(),
            kind: kind.into(),
            sink: "x".into(),
            outcome,
            reason: reason.into(),
            remote_ref: None,
            attempts: 1,
            executed_at: Ts(at),
            command_time: Ts(0),
        }
    }

    #[test]
    fn sink_outcomes_land_on_the_rows_they_concern() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/multi_tech.yaml");
        let s = Scenario::load(&path).unwrap();
        let engine_rows = s.run().unwrap().report;
        assert_eq!(engine_rows.len(), 2);
        let mut results = HashMap::new();
        results.insert(
            "f1".into(),
            result("f1", "7001", "create_geofence", Outcome::Failed, "Azuga rejected geofence: radius", 1),
        );
        results.insert("c1".into(), result("c1", "7001", "clock", Outcome::Done, "", 2));
        results.insert(
            "l1".into(),
            result("l1", "7001", "send_service_link", Outcome::Failed, "invalid recipient address", 3),
        );
        let mut commands = HashMap::new();
        commands.insert("c1".into(), CommandInfo { appointment: "7001".into(), user: Some("11".into()) });
        commands.insert("l1".into(), CommandInfo { appointment: "7001".into(), user: Some("12".into()) });
        let lines = join(engine_rows, &results, &commands, Some("https://st.example"));
        let ann = lines.iter().find(|l| l.row.tech.as_ref().is_some_and(|t| t.to_string() == "11")).unwrap();
        let bob = lines.iter().find(|l| l.row.tech.as_ref().is_some_and(|t| t.to_string() == "12")).unwrap();
        assert_eq!(ann.fence_in_azuga, Some(false));
        assert_eq!(ann.sink_failures, vec!["Azuga rejected geofence: radius".to_string()]);
        assert_eq!(ann.clock_events_posted, 1);
        assert_eq!(bob.clock_events_posted, 0);
        assert_eq!(bob.service_link_delivered, Some(false));
        assert!(bob.sink_failures.iter().any(|f| f == "Service Link email not sent: invalid recipient address"));
        assert_eq!(ann.quick_link.as_deref(), Some("https://st.example/job/900"));
    }
}
