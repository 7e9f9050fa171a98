//! Re-driving dead-lettered commands after a fix (`geoclock dlq replay`).
//!
//! A sink that decides a command failed dead-letters it with the command
//! record itself. Re-driving puts that record back on the commands topic,
//! under its original key, with the [`REDRIVE_HEADER`]: a sink then treats
//! a command it had decided failed as undecided and **unknown** (looked up
//! before acting, [`super::effect`]), and one it had decided done as the
//! duplicate it is. So replaying twice, or replaying a command that was
//! meanwhile done another way, never doubles an effect: deduplication is by
//! command id, like everything else. Only the newest dead letter of each
//! command is replayed; dead letters that are not sink failures (records
//! that could not be decoded) are counted and left alone.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::runner::REDRIVE_HEADER;
use crate::kafka::codec::{Codec, CodecError};
use crate::kafka::produce::{producer_config, Outgoing, ProduceError, SyncProducer};
use crate::kafka::read::{read_topic, Read, ReadError};
use crate::kafka::topics::{self, Catalogue, Topic};

/// Which dead letters to re-drive.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub tenant: Option<String>,
    /// Only those dead-lettered at or after this instant (ms).
    pub since_ms: Option<i64>,
    /// Only this sink's (`clock`, `geofence`, `email`).
    pub sink: Option<String>,
}

/// One command to re-drive.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replay {
    pub tenant: String,
    pub id: String,
    pub appointment: String,
    pub kind: String,
    pub reason: String,
    #[serde(skip)]
    pub key: Vec<u8>,
    #[serde(skip)]
    pub value: Vec<u8>,
}

/// What a run found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Dead letters read.
    pub dead_letters: usize,
    /// Dead letters that are not sink failures (left alone).
    pub other: usize,
    pub commands: Vec<Replay>,
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// The commands to re-drive among `dead` (pure).
pub fn plan(codec: &Codec, dead: &[Read], filter: &Filter) -> Report {
    let mut report = Report { dead_letters: dead.len(), ..Report::default() };
    let mut newest: BTreeMap<(String, String), Replay> = BTreeMap::new();
    for r in dead {
        let Some(dl) = r.value.as_deref().and_then(|v| codec.decode_dead_letter(v).ok()) else {
            report.other += 1;
            continue;
        };
        let from_sink = dl.component.strip_prefix("sink-");
        let Some((sink, value)) = from_sink.zip(dl.value.as_ref()).filter(|_| dl.kind == "failed") else {
            report.other += 1;
            continue;
        };
        let Ok(tc) = codec.decode_command(value) else {
            report.other += 1;
            continue;
        };
        let wanted = filter.tenant.as_ref().is_none_or(|t| *t == tc.tenant)
            && filter.sink.as_ref().is_none_or(|s| s == sink)
            && filter.since_ms.is_none_or(|s| r.timestamp_ms.unwrap_or(0) >= s);
        if !wanted {
            continue;
        }
        let Ok(key) = topics::key(&tc.tenant, tc.command.appointment.as_str()) else { continue };
        let replay = Replay {
            tenant: tc.tenant.clone(),
            id: tc.command.id.clone(),
            appointment: tc.command.appointment.to_string(),
            kind: tc.command.action.kind().to_string(),
            reason: dl.reason.clone(),
            key,
            value: value.clone(),
        };
        newest.insert((tc.tenant, tc.command.id), replay);
    }
    report.commands = newest.into_values().collect();
    report
}

/// Reads the dead letters, and unless `dry_run` re-produces the chosen
/// commands with the re-drive header; waits for the acknowledgements.
pub fn run(
    brokers: &str,
    catalogue: &Catalogue,
    codec: &Codec,
    filter: &Filter,
    dry_run: bool,
) -> Result<Report, RedriveError> {
    let dead = read_topic(brokers, &catalogue.name(Topic::DeadLetters), Duration::from_secs(120))?;
    let mut report = plan(codec, &dead, filter);
    if dry_run || report.commands.is_empty() {
        return Ok(report);
    }
    let producer = SyncProducer::new(&producer_config(brokers, "geoclock-dlq-replay"), catalogue.clone(), "dlq")?;
    let records: Vec<(Outgoing, Option<i32>)> = report
        .commands
        .iter()
        .map(|c| {
            let mut o = Outgoing::new(Topic::Commands, c.key.clone(), Some(c.value.clone()));
            o.headers.push((REDRIVE_HEADER, b"1".to_vec()));
            (o, None)
        })
        .collect();
    producer.send_all(&records, Duration::from_secs(60))?;
    report.replayed = true;
    Ok(report)
}
