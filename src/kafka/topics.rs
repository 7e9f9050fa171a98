//! The topic catalogue: every topic geoclock reads or writes, in one place,
//! with its partitioning, compaction and key format.
//!
//! Invariants:
//! - Co-partitioned topics have the same partition count, checked before
//!   anything runs ([`check`]): pings, the fence repartition topic and the
//!   vehicle-state changelog (all keyed by tenant + vehicle) must meet on the
//!   same partition number; appointments, clock events and the
//!   appointment-state changelog (keyed by tenant + appointment) likewise.
//! - Entity topics and changelogs are compacted (latest value per key wins;
//!   a null value is a delete); pings, clock events, commands, results and
//!   dead letters are time-retained logs.
//! - What an audit re-derives from is kept for `audit_days` ([`Retention`]):
//!   pings, clock events, ticks, commands and results by time retention;
//!   the entity topics keep every version that long before compaction may
//!   remove it (`min.compaction.lag.ms`, and `delete.retention.ms` for
//!   deletes), and the latest version of each key after (why, in
//!   [`crate::audit`]).
//! - Keys are `tenant/id` in UTF-8. Tenant names are restricted to
//!   `[A-Za-z0-9_.-]`, so the first `/` always ends the tenant; ids may
//!   contain anything.

use std::collections::BTreeMap;

/// Every topic, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Topic {
    Users,
    Locations,
    Jobs,
    Appointments,
    /// ServiceTrade offices (vendor locations).
    Offices,
    /// ServiceTrade contacts (a location's primary contact).
    Contacts,
    Drivers,
    Vehicles,
    Pairings,
    ClockEvents,
    Pings,
    Ticks,
    FenceRoutes,
    Commands,
    Results,
    DeadLetters,
    AppointmentStateChangelog,
    VehicleStateChangelog,
    /// Which sink instance last claimed each commands partition, per group
    /// (see `sink::runner`).
    SinkClaims,
}

/// Which topics must share a partition count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CoPartition {
    /// Keyed by tenant + vehicle.
    Vehicle,
    /// Keyed by tenant + appointment.
    Appointment,
}

impl Topic {
    pub const ALL: [Topic; 19] = [
        Topic::Users,
        Topic::Locations,
        Topic::Jobs,
        Topic::Appointments,
        Topic::Offices,
        Topic::Contacts,
        Topic::Drivers,
        Topic::Vehicles,
        Topic::Pairings,
        Topic::ClockEvents,
        Topic::Pings,
        Topic::Ticks,
        Topic::FenceRoutes,
        Topic::Commands,
        Topic::Results,
        Topic::DeadLetters,
        Topic::AppointmentStateChangelog,
        Topic::VehicleStateChangelog,
        Topic::SinkClaims,
    ];

    /// The name without the deployment prefix.
    pub fn suffix(self) -> &'static str {
        match self {
            Topic::Users => "servicetrade.users",
            Topic::Locations => "servicetrade.locations",
            Topic::Jobs => "servicetrade.jobs",
            Topic::Appointments => "servicetrade.appointments",
            Topic::Offices => "servicetrade.offices",
            Topic::Contacts => "servicetrade.contacts",
            Topic::ClockEvents => "servicetrade.clock-events",
            Topic::Drivers => "azuga.drivers",
            Topic::Vehicles => "azuga.vehicles",
            Topic::Pairings => "azuga.pairings",
            Topic::Pings => "azuga.pings",
            Topic::Ticks => "processor.ticks",
            Topic::FenceRoutes => "processor.fence-routes",
            Topic::Commands => "commands",
            Topic::Results => "results",
            Topic::DeadLetters => "dead-letters",
            Topic::AppointmentStateChangelog => "processor.appointment-state-changelog",
            Topic::VehicleStateChangelog => "processor.vehicle-state-changelog",
            Topic::SinkClaims => "sinks.claims",
        }
    }

    pub fn compacted(self) -> bool {
        matches!(
            self,
            Topic::Users
                | Topic::Locations
                | Topic::Jobs
                | Topic::Appointments
                | Topic::Offices
                | Topic::Contacts
                | Topic::Drivers
                | Topic::Vehicles
                | Topic::Pairings
                | Topic::AppointmentStateChangelog
                | Topic::VehicleStateChangelog
                | Topic::SinkClaims
        )
    }

    /// Kept for the audit horizon by time ([`Retention`]): the inputs the
    /// audit replays that are not entities, and what it compares with.
    pub fn time_audited(self) -> bool {
        matches!(self, Topic::Pings | Topic::ClockEvents | Topic::Ticks | Topic::Commands | Topic::Results)
    }

    /// An entity topic: compacted, every version kept for the audit horizon.
    pub fn entity(self) -> bool {
        self.compacted() && !matches!(self, Topic::AppointmentStateChangelog | Topic::VehicleStateChangelog)
    }

    pub fn co_partition(self) -> Option<CoPartition> {
        match self {
            Topic::Pings | Topic::FenceRoutes | Topic::VehicleStateChangelog => Some(CoPartition::Vehicle),
            Topic::Appointments | Topic::ClockEvents | Topic::AppointmentStateChangelog => {
                Some(CoPartition::Appointment)
            }
            _ => None,
        }
    }
}

/// One topic as it should exist.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSpec {
    pub topic: Topic,
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    pub compacted: bool,
}

impl TopicSpec {
    /// Topic configs to create it with.
    pub fn configs(&self, retention: &Retention) -> Vec<(&'static str, String)> {
        let mut c = vec![("cleanup.policy", if self.compacted { "compact" } else { "delete" }.to_string())];
        c.extend(self.retention_configs(retention));
        c
    }

    /// The configs [`Retention`] decides (what `topics create` brings
    /// existing topics to).
    pub fn retention_configs(&self, retention: &Retention) -> Vec<(&'static str, String)> {
        let ms = retention.ms().to_string();
        if self.topic.time_audited() {
            vec![("retention.ms", ms)]
        } else if self.topic.entity() {
            vec![("min.compaction.lag.ms", ms.clone()), ("delete.retention.ms", ms)]
        } else {
            Vec::new()
        }
    }
}

/// How long the topics keep what an audit needs: one setting,
/// `audit_days`, at least the longest `retention_days` of the tenants (the
/// span the Activity Report covers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub audit_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { audit_days: Retention::DEFAULT_AUDIT_DAYS }
    }
}

impl Retention {
    pub const DEFAULT_AUDIT_DAYS: u32 = 35;

    pub fn ms(&self) -> i64 {
        i64::from(self.audit_days) * 86_400_000
    }

    /// Refuses a horizon shorter than the tenants' longest
    /// `retention_days` or outside 1 to 3650 days.
    pub fn check(&self, longest_retention_days: u32) -> Result<(), TopicError> {
        if !(1..=3650).contains(&self.audit_days) || self.audit_days < longest_retention_days {
            return Err(TopicError::AuditDays { audit_days: self.audit_days, retention_days: longest_retention_days });
        }
        Ok(())
    }
}

/// Deployment-wide topic settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalogue {
    /// Prepended to every name with a dot: `geoclock.azuga.pings`.
    pub prefix: String,
    /// Partitions of every topic (entity topics included, for simplicity).
    pub partitions: i32,
    pub replication: i32,
}

impl Default for Catalogue {
    fn default() -> Self {
        Catalogue { prefix: "geoclock".into(), partitions: 6, replication: 1 }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TopicError {
    #[error("co-partitioned topics disagree on partition count ({group:?}): {found}; they must be equal, recreate or repartition them")]
    PartitionMismatch { group: CoPartition, found: String },
    #[error("tenant name {0:?} is invalid: use letters, digits, '_', '.', '-'")]
    InvalidTenant(String),
    #[error("key {0:?} is not `tenant/id`")]
    InvalidKey(String),
    #[error("audit_days = {audit_days} must be 1 to 3650 and at least the tenants' longest retention_days ({retention_days}): the audit must reach as far back as the report")]
    AuditDays { audit_days: u32, retention_days: u32 },
}

impl Catalogue {
    pub fn name(&self, topic: Topic) -> String {
        if self.prefix.is_empty() {
            topic.suffix().to_string()
        } else {
            format!("{}.{}", self.prefix, topic.suffix())
        }
    }

    pub fn specs(&self) -> Vec<TopicSpec> {
        Topic::ALL
            .iter()
            .map(|t| TopicSpec {
                topic: *t,
                name: self.name(*t),
                partitions: self.partitions,
                replication: self.replication,
                compacted: t.compacted(),
            })
            .collect()
    }
}

/// Checks co-partitioning given the partition counts that exist (by topic
/// name; topics absent from `existing` are not checked).
pub fn check(catalogue: &Catalogue, existing: &BTreeMap<String, i32>) -> Result<(), TopicError> {
    let mut groups: BTreeMap<CoPartition, Vec<(String, i32)>> = BTreeMap::new();
    for spec in catalogue.specs() {
        if let (Some(g), Some(n)) = (spec.topic.co_partition(), existing.get(&spec.name)) {
            groups.entry(g).or_default().push((spec.name, *n));
        }
    }
    for (group, members) in groups {
        if members.windows(2).any(|w| w[0].1 != w[1].1) {
            let found = members.iter().map(|(n, p)| format!("{n}={p}")).collect::<Vec<_>>().join(", ");
            return Err(TopicError::PartitionMismatch { group, found });
        }
    }
    Ok(())
}

pub fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty() && tenant.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The record key `tenant/id`.
pub fn key(tenant: &str, id: &str) -> Result<Vec<u8>, TopicError> {
    if !valid_tenant(tenant) {
        return Err(TopicError::InvalidTenant(tenant.to_string()));
    }
    let mut k = Vec::with_capacity(tenant.len() + 1 + id.len());
    k.extend_from_slice(tenant.as_bytes());
    k.push(b'/');
    k.extend_from_slice(id.as_bytes());
    Ok(k)
}

/// Splits a key into `(tenant, id)`.
pub fn parse_key(key: &[u8]) -> Result<(&str, &str), TopicError> {
    let s = std::str::from_utf8(key).map_err(|_| TopicError::InvalidKey(String::from_utf8_lossy(key).into()))?;
    match s.split_once('/') {
        Some((t, id)) if valid_tenant(t) && !id.is_empty() => Ok((t, id)),
        _ => Err(TopicError::InvalidKey(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_unique() {
        let c = Catalogue::default();
        let mut names: Vec<String> = c.specs().into_iter().map(|s| s.name).collect();
        assert_eq!(c.name(Topic::Pings), "geoclock.azuga.pings");
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Topic::ALL.len());
    }

    #[test]
    fn mismatched_co_partitions_are_refused() {
        let c = Catalogue::default();
        let mut existing = BTreeMap::new();
        existing.insert(c.name(Topic::Pings), 6);
        existing.insert(c.name(Topic::FenceRoutes), 6);
        existing.insert(c.name(Topic::Commands), 1);
        assert_eq!(check(&c, &existing), Ok(()));
        existing.insert(c.name(Topic::VehicleStateChangelog), 3);
        let err = check(&c, &existing).unwrap_err().to_string();
        assert!(err.contains("geoclock.processor.vehicle-state-changelog=3"), "{err}");
    }

    #[test]
    fn retention_keeps_the_audit_horizon() {
        let c = Catalogue::default();
        let r = Retention { audit_days: 35 };
        let spec = |t: Topic| c.specs().into_iter().find(|s| s.topic == t).unwrap();
        let ms = (35i64 * 86_400_000).to_string();
        for t in [Topic::Pings, Topic::ClockEvents, Topic::Ticks, Topic::Commands, Topic::Results] {
            assert_eq!(spec(t).configs(&r), vec![("cleanup.policy", "delete".into()), ("retention.ms", ms.clone())]);
        }
        let appts = spec(Topic::Appointments).configs(&r);
        assert_eq!(appts[0], ("cleanup.policy", "compact".into()));
        assert!(appts.contains(&("min.compaction.lag.ms", ms.clone())) && appts.contains(&("delete.retention.ms", ms)));
        assert_eq!(spec(Topic::AppointmentStateChangelog).configs(&r), vec![("cleanup.policy", "compact".into())]);
        assert!(spec(Topic::FenceRoutes).retention_configs(&r).is_empty());
        assert!(r.check(30).is_ok());
        assert!(Retention { audit_days: 20 }.check(30).unwrap_err().to_string().contains("retention_days (30)"));
        assert!(Retention { audit_days: 0 }.check(0).is_err());
    }

    #[test]
    fn keys_round_trip_and_reject_bad_tenants() {
        let k = key("acme", "7001/a").unwrap();
        assert_eq!(parse_key(&k).unwrap(), ("acme", "7001/a"));
        assert!(key("ac me", "1").is_err());
        assert!(parse_key(b"noslash").is_err());
        assert!(parse_key(&[0xff, b'/', b'1']).is_err());
    }
}
