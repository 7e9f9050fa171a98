//! The sink result record ([`SinkResult`], `schemas/sink_result.avsc`).

use apache_avro::types::Value;

use super::validate::{check_tenant, check_ts, invalid};
use super::value::{opt, record, s, symbol, ts, Rec};
use super::AvroRecord;
use super::{CodecError, RecordType};
use crate::model::Ts;

/// What a sink did with one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Done,
    Superseded,
    Failed,
}

const OUTCOMES: [&str; 3] = ["done", "superseded", "failed"];

impl Outcome {
    pub fn as_str(self) -> &'static str {
        OUTCOMES[self as usize]
    }
}

/// One command's outcome, as the report reads it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SinkResult {
    pub command_id: String,
    pub appointment: String,
    pub kind: String,
    pub sink: String,
    pub outcome: Outcome,
    pub reason: String,
    pub remote_ref: Option<String>,
    pub attempts: u32,
    pub executed_at: Ts,
    pub command_time: Ts,
}

impl AvroRecord for SinkResult {
    const TYPE: RecordType = RecordType::SinkResult;

    fn to_value(&self, tenant: &str) -> Result<Value, CodecError> {
        const R: &str = "SinkResult";
        check_tenant(R, tenant)?;
        check_ts(R, "executed_at", self.executed_at.0)?;
        check_ts(R, "command_time", self.command_time.0)?;
        if self.command_id.is_empty() {
            return Err(invalid(R, "command_id", "is empty"));
        }
        let attempts = i32::try_from(self.attempts).map_err(|_| invalid(R, "attempts", "too large"))?;
        Ok(record(vec![
            ("tenant", s(tenant)),
            ("command_id", s(&self.command_id)),
            ("appointment", s(&self.appointment)),
            ("kind", s(&self.kind)),
            ("sink", s(&self.sink)),
            ("outcome", symbol(&OUTCOMES, self.outcome.as_str())),
            ("reason", s(&self.reason)),
            ("remote_ref", opt(self.remote_ref.as_deref().map(s))),
            ("attempts", Value::Int(attempts)),
            ("executed_at", ts(self.executed_at)),
            ("command_time", ts(self.command_time)),
        ]))
    }

    fn from_value(value: Value) -> Result<(String, Self), CodecError> {
        let mut r = Rec::new("SinkResult", value)?;
        let tenant = r.tenant()?;
        let command_id = r.string("command_id")?;
        let appointment = r.string("appointment")?;
        let kind = r.string("kind")?;
        let sink = r.string("sink")?;
        let outcome = match r.symbol("outcome")?.as_str() {
            "done" => Outcome::Done,
            "superseded" => Outcome::Superseded,
            "failed" => Outcome::Failed,
            other => return Err(r.unknown_symbol("outcome", other)),
        };
        let reason = r.string("reason")?;
        let remote_ref = r.opt_string("remote_ref")?;
        let attempts = u32::try_from(r.long("attempts")?).map_err(|_| invalid("SinkResult", "attempts", "negative"))?;
        let executed_at = r.ts("executed_at")?;
        let command_time = r.ts("command_time")?;
        Ok((
            tenant,
            SinkResult {
                command_id,
                appointment,
                kind,
                sink,
                outcome,
                reason,
                remote_ref,
                attempts,
                executed_at,
                command_time,
            },
        ))
    }
}
