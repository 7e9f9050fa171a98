//! Fault injection for supervision tests: `GEOCLOCK_FAULT=sink_worker_error:N`
//! makes a sink worker fail (as a ledger write error would) after its N-th
//! decided batch; `GEOCLOCK_FAULT=sink_worker_stall:N` makes it hang there.
//! Unset (production), it costs one relaxed atomic load per batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use super::ledger::LedgerError;

static BATCHES: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy)]
enum Fault {
    Error(u64),
    Stall(u64),
}

fn fault() -> Option<Fault> {
    static AT: OnceLock<Option<Fault>> = OnceLock::new();
    *AT.get_or_init(|| {
        let v = std::env::var("GEOCLOCK_FAULT").ok()?;
        if let Some(n) = v.strip_prefix("sink_worker_error:") {
            return n.parse().ok().map(Fault::Error);
        }
        v.strip_prefix("sink_worker_stall:")?.parse().ok().map(Fault::Stall)
    })
}

/// Called after a worker decided a batch.
pub fn batch_decided(worker: &str) -> Result<(), LedgerError> {
    let Some(f) = fault() else { return Ok(()) };
    let nth = BATCHES.fetch_add(1, Ordering::Relaxed) + 1;
    match f {
        Fault::Error(n) if n == nth => {
            tracing::error!(worker, "GEOCLOCK_FAULT: failing the worker");
            Err(LedgerError::Io("injected fault".into()))
        }
        Fault::Stall(n) if n == nth => {
            tracing::error!(worker, "GEOCLOCK_FAULT: stalling the worker");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        _ => Ok(()),
    }
}
