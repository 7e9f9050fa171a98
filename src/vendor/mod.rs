//! The vendors, one home each: [`servicetrade`] and [`azuga`] hold their
//! client (auth and session renewal, rate budget, the JSON shapes, the
//! rules the vendor enforces), used by the connectors, the sinks and the
//! simulators alike. What every vendor call shares is here: what an answer
//! means and when to try again ([`retry`], pure), and one tenant's calls
//! with their budget and waits ([`call`]).
//!
//! Invariants (argued in [`retry`]): an answer is success, refused, not
//! applied, or unknown — a call the vendor may have applied before failing
//! to answer is never repeated blindly by a caller that cannot repeat it;
//! waits are capped and interruptible; no URL, header or secret reaches an
//! error or a log line.

pub mod azuga;
pub mod call;
pub mod retry;
pub mod servicetrade;
