//! Report lines: the engine's rows joined with what the sinks did. Pure.
//!
//! Inputs: the engine's rows ([`super::rows`]), the sinks' results for the
//! rows' appointments ([`SinkResult`], one per command id) and, for clock
//! changes and Service Links, which technician each command was for
//! ([`CommandInfo`], from the commands topic; a result does not name it).
//!
//! Invariants:
//! - every engine row is exactly one line, in the same order (the join
//!   never drops, adds or reorders one);
//! - geofence results concern every technician of their appointment; clock
//!   and Service Link results concern the technician their command names.
//!   A clock or Service Link result whose command was never seen (the
//!   commands topic kept less than the results topic) is counted for no
//!   technician, but a failure of it is shown on every row of its
//!   appointment, so no failure is lost;
//! - results are applied in execution order (`executed_at`, then command
//!   id); `superseded` outcomes change nothing;
//! - a geofence failure stands until a later geofence result of the same
//!   appointment succeeds (Azuga then holds what was commanded); clock and
//!   Service Link failures always stand (each command is one effect);
//! - failure texts are readable sentences; a sink's reason is kept as is
//!   when it already says what failed ("Azuga rejected geofence: …"), else
//!   it is prefixed with what did not happen ("Service Link email not sent:
//!   invalid recipient address");
//! - each line carries the status of its automated actions
//!   ([`super::actions`]): a clock result counts for the action its command
//!   made ([`CommandInfo::clock`]; a result of a command recorded before
//!   that field existed counts for none).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::actions::{self, Actions, ClockOutcome, ClockStep};
use super::ReportRow;
use crate::engine::Reason;
use crate::kafka::records::{Outcome, SinkResult};

/// What the report needs of a command it did not decide itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandInfo {
    pub appointment: String,
    /// The technician a clock change or Service Link is for.
    pub user: Option<String>,
    /// The clock change a clock command makes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockStep>,
}

/// Whether Azuga holds the appointment's geofence, as far as the geofence
/// sink reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FenceInAzuga {
    /// Created or updated as commanded.
    Yes,
    /// Never commanded, or deleted.
    No,
    /// The latest create or update failed.
    Failed,
    /// Commanded, no result yet.
    Pending,
}

impl FenceInAzuga {
    pub fn as_str(self) -> &'static str {
        match self {
            FenceInAzuga::Yes => "yes",
            FenceInAzuga::No => "no",
            FenceInAzuga::Failed => "failed",
            FenceInAzuga::Pending => "pending",
        }
    }
}

/// One report line: an engine row and the sinks' side of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportLine {
    pub row: ReportRow,
    pub fence_in_azuga: FenceInAzuga,
    /// Azuga's id of the geomark (the last successful create or update).
    pub geomark_id: Option<String>,
    /// The Service Link email was delivered (`None`: no result for one).
    pub service_link_delivered: Option<bool>,
    /// The TrackMe link the delivered Service Link carried.
    pub trackme_url: Option<String>,
    /// Clock events posted to ServiceTrade for this technician.
    pub clock_events_posted: usize,
    /// Sink failures that stand, as sentences, in execution order.
    pub sink_failures: Vec<String>,
    /// `{servicetrade_web_url}/job/{job}`.
    pub quick_link: Option<String>,
    /// What became of the automated actions.
    pub actions: Actions,
}

impl ReportLine {
    /// Every failure: the engine's reasons as codes (as in the engine's
    /// row), then the sink failures as sentences.
    pub fn failures(&self) -> Vec<String> {
        let codes = self.row.failures.iter().map(|r| reason_code(*r).to_string());
        codes.chain(self.sink_failures.iter().cloned()).collect()
    }

    /// Every failure as a sentence.
    pub fn failure_texts(&self) -> Vec<String> {
        let texts = self.row.failures.iter().map(|r| reason_text(*r).to_string());
        texts.chain(self.sink_failures.iter().cloned()).collect()
    }

    pub fn has_failures(&self) -> bool {
        !self.row.failures.is_empty() || !self.sink_failures.is_empty()
    }
}

/// The engine's code for a reason (its JSON form).
pub fn reason_code(r: Reason) -> &'static str {
    r.code()
}

/// A reason in words.
pub fn reason_text(r: Reason) -> &'static str {
    r.text()
}

/// What did not happen when a command of `kind` failed, and the openings
/// of sink reasons that already say so.
fn headline(kind: &str) -> (&'static str, &'static [&'static str]) {
    match kind {
        "create_geofence" => ("Geofence not created in Azuga", &["Azuga", "Geofence"]),
        "update_geofence" => ("Geofence not updated in Azuga", &["Azuga", "Geofence"]),
        "delete_geofence" => ("Geofence not removed from Azuga", &["Azuga", "Geofence"]),
        "send_service_link" => ("Service Link email not sent", &["Service Link"]),
        "clock" => ("ServiceTrade clock event not created", &["ServiceTrade clock event"]),
        _ => ("Command failed", &[]),
    }
}

/// A failed result as a sentence.
pub fn sink_failure_text(r: &SinkResult) -> String {
    let (what, openings) = headline(&r.kind);
    let reason = r.reason.trim();
    if reason.is_empty() {
        what.to_string()
    } else if openings.iter().any(|o| reason.starts_with(o)) {
        reason.to_string()
    } else {
        format!("{what}: {reason}")
    }
}

/// `{base}/job/{job}`, or `None` without a base or a job.
pub fn quick_link(base: Option<&str>, job: Option<&impl std::fmt::Display>) -> Option<String> {
    let base = base.map(|b| b.trim_end_matches('/')).filter(|b| !b.is_empty())?;
    let job = job?.to_string();
    let safe = crate::http::client::urlencode(&job);
    Some(format!("{base}/job/{safe}"))
}

fn is_fence(kind: &str) -> bool {
    matches!(kind, "create_geofence" | "update_geofence" | "delete_geofence")
}

/// Joins `rows` with the sinks' `results` (see the module docs).
pub fn join(
    rows: Vec<ReportRow>,
    results: &[SinkResult],
    commands: &HashMap<String, CommandInfo>,
    servicetrade_web_url: Option<&str>,
) -> Vec<ReportLine> {
    // One result per command id (the last given), by appointment, in
    // execution order.
    let mut by_id: HashMap<&str, &SinkResult> = HashMap::new();
    for r in results {
        by_id.insert(r.command_id.as_str(), r);
    }
    let mut by_appt: HashMap<&str, Vec<&SinkResult>> = HashMap::new();
    for r in by_id.into_values() {
        by_appt.entry(r.appointment.as_str()).or_default().push(r);
    }
    for v in by_appt.values_mut() {
        v.sort_by(|a, b| (a.executed_at, &a.command_id).cmp(&(b.executed_at, &b.command_id)));
    }
    rows.into_iter()
        .map(|row| {
            let appt = row.appointment.to_string();
            let mine = by_appt.get(appt.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            line(row, mine, commands, servicetrade_web_url)
        })
        .collect()
}

fn line(
    row: ReportRow,
    results: &[&SinkResult],
    commands: &HashMap<String, CommandInfo>,
    web: Option<&str>,
) -> ReportLine {
    let tech = row.tech.as_ref().map(ToString::to_string);
    let mut l = ReportLine {
        quick_link: quick_link(web, row.job.as_ref()),
        fence_in_azuga: if row.fence_created { FenceInAzuga::Pending } else { FenceInAzuga::No },
        row,
        geomark_id: None,
        service_link_delivered: None,
        trackme_url: None,
        clock_events_posted: 0,
        sink_failures: Vec::new(),
        actions: Actions {
            fence: actions::ActionStatus::Pending,
            enroute_clock_out: actions::ActionStatus::Pending,
            onsite_clock_in: actions::ActionStatus::Pending,
        },
    };
    // Geofence failures wait here until a later success clears them.
    let mut fence_failures: Vec<String> = Vec::new();
    let mut clocks: HashMap<ClockStep, ClockOutcome> = HashMap::new();
    for r in results {
        if r.outcome == Outcome::Superseded {
            continue;
        }
        let done = r.outcome == Outcome::Done;
        if is_fence(&r.kind) {
            match (r.kind.as_str(), done) {
                ("delete_geofence", true) => l.fence_in_azuga = FenceInAzuga::No,
                ("delete_geofence", false) => {}
                (_, true) => {
                    l.fence_in_azuga = FenceInAzuga::Yes;
                    l.geomark_id = r.remote_ref.clone().or(l.geomark_id.take());
                }
                (_, false) => l.fence_in_azuga = FenceInAzuga::Failed,
            }
            if done {
                fence_failures.clear();
            } else {
                fence_failures.push(sink_failure_text(r));
            }
            continue;
        }
        let info = commands.get(&r.command_id);
        let user = info.and_then(|c| c.user.as_ref());
        let for_this_row = match user {
            Some(u) => Some(u) == tech.as_ref(),
            // Unknown technician: only its failure is shown (module docs).
            None => !done,
        };
        if !for_this_row {
            continue;
        }
        match (r.kind.as_str(), done, user.is_some()) {
            ("clock", true, true) => l.clock_events_posted += 1,
            ("send_service_link", true, true) => {
                l.service_link_delivered = Some(true);
                l.trackme_url = r.remote_ref.clone();
            }
            ("send_service_link", false, true) => l.service_link_delivered = Some(false),
            _ => {}
        }
        if let (Some(step), Some(_)) = (info.and_then(|c| c.clock), user) {
            clocks.insert(step, if done { Ok(()) } else { Err(sink_failure_text(r)) });
        }
        if !done {
            l.sink_failures.push(sink_failure_text(r));
        }
    }
    l.actions = Actions {
        fence: actions::fence(&l.row, l.fence_in_azuga, fence_failures.last().map(String::as_str)),
        enroute_clock_out: actions::clock(&l.row, actions::ENROUTE_OUT, clocks.get(&actions::ENROUTE_OUT)),
        onsite_clock_in: actions::clock(&l.row, actions::ONSITE_IN, clocks.get(&actions::ONSITE_IN)),
    };
    // Fence failures first: the fence comes first in the pipeline.
    fence_failures.append(&mut l.sink_failures);
    l.sink_failures = fence_failures;
    l
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

    fn rows(file: &str) -> Vec<ReportRow> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios").join(file);
        Scenario::load(&path).unwrap().run().unwrap().report
    }

    fn tech<'a>(lines: &'a [ReportLine], id: &str) -> &'a ReportLine {
        lines.iter().find(|l| l.row.tech.as_ref().is_some_and(|t| t.to_string() == id)).unwrap()
    }

    fn cmd(user: &str) -> CommandInfo {
        CommandInfo { appointment: "7001".into(), user: Some(user.into()), clock: None }
    }

    #[test]
    fn clock_results_become_the_action_statuses_of_their_technician() {
        let engine_rows = rows("arrival_basic.yaml");
        let id = engine_rows[0].appointment.to_string();
        let user = engine_rows[0].tech.as_ref().unwrap().to_string();
        let step = |s: ClockStep| CommandInfo { appointment: id.clone(), user: Some(user.clone()), clock: Some(s) };
        let commands = HashMap::from([
            ("out".to_string(), step(actions::ENROUTE_OUT)),
            ("in".to_string(), step(actions::ONSITE_IN)),
        ]);
        let results = vec![
            result("out", &id, "clock", Outcome::Done, "", 1),
            result("in", &id, "clock", Outcome::Failed, "HTTP 422: appointment 7001 is locked", 2),
        ];
        let lines = join(engine_rows.clone(), &results, &commands, None);
        let a = &lines[0].actions;
        assert!(matches!(a.enroute_clock_out, actions::ActionStatus::Done { at: Some(_) }), "{a:?}");
        assert_eq!(
            a.onsite_clock_in,
            actions::ActionStatus::Failed {
                reason: "ServiceTrade clock event not created: HTTP 422: appointment 7001 is locked".into()
            }
        );
        assert_eq!(a.fence, actions::ActionStatus::Pending, "the fence was commanded; no result yet");
        // Without results, both clock changes the engine decided are pending.
        let lines = join(engine_rows, &[], &HashMap::new(), None);
        assert_eq!(lines[0].actions.enroute_clock_out, actions::ActionStatus::Pending);
        assert_eq!(lines[0].actions.onsite_clock_in, actions::ActionStatus::Pending);
    }

    #[test]
    fn sink_outcomes_land_on_the_rows_they_concern() {
        let engine_rows = rows("multi_tech.yaml");
        assert_eq!(engine_rows.len(), 2);
        let results = vec![
            result("f1", "7001", "create_geofence", Outcome::Failed, "Azuga rejected geofence: HTTP 422: radius", 1),
            result("c1", "7001", "clock", Outcome::Done, "", 2),
            result("c2", "7001", "clock", Outcome::Done, "", 3),
            result("c3", "7001", "clock", Outcome::Failed, "HTTP 500: boom", 4),
            result("l1", "7001", "send_service_link", Outcome::Failed, "invalid recipient address", 5),
            result("l2", "7001", "send_service_link", Outcome::Done, "", 6),
            result("x1", "9999", "clock", Outcome::Failed, "other appointment", 7),
        ];
        let commands = HashMap::from([
            ("c1".to_string(), cmd("11")),
            ("c2".to_string(), cmd("11")),
            ("c3".to_string(), cmd("12")),
            ("l1".to_string(), cmd("12")),
            ("l2".to_string(), cmd("11")),
        ]);
        let lines = join(engine_rows.clone(), &results, &commands, Some("https://st.example/"));
        assert_eq!(lines.iter().map(|l| l.row.clone()).collect::<Vec<_>>(), engine_rows, "rows kept, in order");
        let (ann, bob) = (tech(&lines, "11"), tech(&lines, "12"));
        assert_eq!(ann.fence_in_azuga, FenceInAzuga::Failed);
        assert_eq!(bob.fence_in_azuga, FenceInAzuga::Failed);
        assert_eq!(ann.sink_failures, vec!["Azuga rejected geofence: HTTP 422: radius".to_string()]);
        assert_eq!((ann.clock_events_posted, bob.clock_events_posted), (2, 0));
        assert_eq!((ann.service_link_delivered, bob.service_link_delivered), (Some(true), Some(false)));
        assert_eq!(
            bob.sink_failures,
            vec![
                "Azuga rejected geofence: HTTP 422: radius".to_string(),
                "ServiceTrade clock event not created: HTTP 500: boom".to_string(),
                "Service Link email not sent: invalid recipient address".to_string(),
            ]
        );
        assert_eq!(ann.quick_link.as_deref(), Some("https://st.example/job/900"));
        assert!(ann.has_failures() && bob.failures().len() == bob.row.failures.len() + 3);
    }

    #[test]
    fn a_later_fence_success_clears_the_failure_and_a_delete_removes_the_fence() {
        let engine_rows = rows("arrival_basic.yaml");
        let id = engine_rows[0].appointment.to_string();
        let none = HashMap::new();
        let lines = join(engine_rows.clone(), &[], &none, None);
        assert_eq!(lines[0].fence_in_azuga, FenceInAzuga::Pending, "commanded, no result yet");
        assert_eq!(lines[0].quick_link, None);

        let mut ok = result("f2", &id, "update_geofence", Outcome::Done, "", 2);
        ok.remote_ref = Some("gm-1".into());
        let failed = result("f1", &id, "create_geofence", Outcome::Failed, "HTTP 503", 1);
        let stale = result("f0", &id, "update_geofence", Outcome::Superseded, "revision 1 not above 2", 3);
        let lines = join(engine_rows.clone(), &[ok.clone(), failed.clone(), stale], &none, None);
        assert_eq!(lines[0].fence_in_azuga, FenceInAzuga::Yes);
        assert_eq!(lines[0].geomark_id.as_deref(), Some("gm-1"));
        assert!(lines[0].sink_failures.is_empty(), "{:?}", lines[0].sink_failures);

        let lines = join(engine_rows.clone(), std::slice::from_ref(&failed), &none, None);
        assert_eq!(lines[0].sink_failures, vec!["Geofence not created in Azuga: HTTP 503".to_string()]);

        let deleted = result("f3", &id, "delete_geofence", Outcome::Done, "", 4);
        let lines = join(engine_rows, &[ok, deleted], &none, None);
        assert_eq!(lines[0].fence_in_azuga, FenceInAzuga::No);
    }

    #[test]
    fn results_of_unknown_commands_show_failures_on_every_row_and_count_for_none() {
        let engine_rows = rows("multi_tech.yaml");
        let results = vec![
            result("c1", "7001", "clock", Outcome::Done, "", 1),
            result("c2", "7001", "clock", Outcome::Failed, "", 2),
        ];
        let lines = join(engine_rows, &results, &HashMap::new(), None);
        for l in &lines {
            assert_eq!(l.clock_events_posted, 0);
            assert_eq!(l.sink_failures, vec!["ServiceTrade clock event not created".to_string()]);
        }
    }

    #[test]
    fn reasons_read_as_sentences_and_codes_match_the_engine_json() {
        let all = [
            Reason::NotScheduled,
            Reason::NoJob,
            Reason::NoLocationCoordinates,
            Reason::NoTechAssigned,
            Reason::TechNotFoundInAzuga,
            Reason::TechNotPaired,
            Reason::NoEnrouteClockIn,
            Reason::VehicleDidNotArrive,
            Reason::ArrivedOutsideWindow,
            Reason::NoLocationEmail,
        ];
        for r in all {
            assert_eq!(serde_json::to_value(r).unwrap(), reason_code(r), "{r:?}");
            assert!(reason_text(r).chars().next().is_some_and(char::is_uppercase));
        }
        let r = result("x", "1", "delete_geofence", Outcome::Failed, "Geofence not removed from Azuga: gone", 0);
        assert_eq!(sink_failure_text(&r), "Geofence not removed from Azuga: gone", "not said twice");
        assert_eq!(quick_link(Some("https://st"), Some(&"a b/c")).as_deref(), Some("https://st/job/a%20b%2Fc"));
        assert_eq!(quick_link(Some(""), Some(&"1")), None);
    }
}
