//! Replay for audit: re-derive every decision from the input topics, diff
//! it against what was emitted and done, and explain any one of them.
//!
//! - [`input`]: the processor's input order ([`input::Position`]) and the
//!   merge of input partitions into it;
//! - [`replay`]: the processor's two stages for every tenant, fed that
//!   order (pure);
//! - [`diff`]: derived commands against the commands topic and the sinks'
//!   results: matched, missing, extra, differs, not done (pure);
//! - [`whatif`]: the same input under other settings, and what would
//!   change (pure);
//! - [`trace`], [`explain`], [`explain_text`]: one appointment's decisions
//!   and what led to each (pure);
//! - [`bench`]: `geoclock bench audit`, the audit's rate on the bench day;
//! - [`kafka`]: the thin reader that feeds them from a broker. It reads
//!   with `assign()` only, under a throwaway group id it never commits or
//!   joins with: an audit writes nothing to the production topics or
//!   groups.
//!
//! # The processor's order
//!
//! Stage-one task `p` merges `appointments[p]`, `clock-events[p]` and every
//! partition of the global tables and ticks; stage-two task `q` merges
//! `pings[q]` and the routes stage one wrote to `fence-routes[q]` (stamped
//! with the record time of the input that caused them). Each merge takes
//! lane fronts (a lane: one partition, read in offset order) by (record
//! time, input, lane, offset) ([`crate::processor::merge`]). The replay
//! merges every input partition the same way, ranking inputs of equal
//! record time by [`input::INPUTS`] (pings first: a stage-two task lists
//! them before the routes). Restricted to one task's lanes, that merge is
//! the task's own merge (a lane outside a subset never decides between two
//! inside it), and stage-one tasks share nothing but the global tables,
//! so one stage-one engine per tenant sees, for every appointment, the
//! sequence its task saw. The routes it decides go at once to the
//! stage-two engine of the partition the processor's producer puts them
//! on, so each stage-two engine sees its pings and routes in the order the
//! task merged them. This equals the processor's order for input appended
//! in record-time order per partition (what connectors produce: records
//! stamped when produced) and for scenario and bench topics (strictly
//! increasing stamps). Where a partition holds records out of record-time
//! order, the processor's stage two merges routes whose fronts the replay
//! does not see, and may order a ping and a route differently; the engine's
//! decisions are built to be order-robust (late pings and late clock
//! events decide at their own time), so this rarely changes a command, and
//! when it does the audit shows it.
//!
//! # What history the audit needs, and how long it is kept
//!
//! `geoclock topics create` keeps every input for `audit_days` (default
//! 35, at least the longest `retention_days`; see
//! [`crate::kafka::topics::Retention`]): pings, clock events, ticks,
//! commands and results by time retention, and the entity topics by
//! compaction that may not touch a record younger than `audit_days`
//! (`min.compaction.lag.ms`; deletes likewise, `delete.retention.ms`). An
//! append-only history topic beside each entity topic would hold the same
//! versions twice and need a second writer kept consistent with the
//! first; time retention instead of compaction would lose the entities
//! that never change (a location mirrored once, years ago), which the
//! processor and the audit both need. With the compaction lag, the entity
//! topic itself is the history: every version written in the last
//! `audit_days` days, and the latest version of everything older. So an
//! appointment rescheduled after its arrival was decided keeps the version
//! the arrival was decided on for `audit_days`, and the audit re-derives
//! the original decision.
//!
//! At the start of the retained history the audit cannot know what came
//! before: a clock-in deleted by retention, an entity version superseded
//! and compacted away, the fence revisions an appointment had. So when the
//! topics lost records ([`diff::Boundary`]), the judged span starts a day
//! ([`kafka::WARM_UP`]) after the oldest record every time-retained topic
//! still holds, the records before are replayed but not judged, and the
//! discrepancies of appointments whose fence history began earlier are
//! listed apart ([`diff`]'s `carried_in`) rather than counted.
//!
//! # Settings
//!
//! The replay judges each tenant by the settings in the tenants file given
//! (as `geoclock process --tenants`); a span during which a tenant's
//! settings changed is judged by the current ones, and the decisions taken
//! under the old ones show as discrepancies.

pub mod bench;
pub mod diff;
pub mod explain;
pub mod explain_text;
pub mod input;
pub mod kafka;
pub mod replay;
pub mod trace;
pub mod whatif;

pub use diff::{Comparison, Findings, Ledger, Span};
pub use explain::Explanation;
pub use replay::Replay;
pub use trace::{Trace, Tracer};
