//! Crash injection for tests: `GEOCLOCK_FAULT=after_commands:N` makes the
//! process abort (no unwinding, no cleanup — like SIGKILL) right after the
//! N-th batch that produced commands had them acknowledged, before its state
//! rows and offsets markers are produced. That is the crash point where a
//! restarted task must re-produce the same commands with the same ids and
//! contents. Unset (production), it costs one relaxed atomic load per batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static BATCHES: AtomicU64 = AtomicU64::new(0);

fn after_commands() -> Option<u64> {
    static AT: OnceLock<Option<u64>> = OnceLock::new();
    *AT.get_or_init(|| std::env::var("GEOCLOCK_FAULT").ok()?.strip_prefix("after_commands:")?.parse().ok())
}

/// Called after a batch's commands were acknowledged.
pub fn commands_acknowledged(partition: i32, commands: usize) {
    let Some(n) = after_commands() else { return };
    if commands == 0 {
        return;
    }
    if BATCHES.fetch_add(1, Ordering::Relaxed) + 1 == n {
        tracing::error!(partition, commands, "GEOCLOCK_FAULT: aborting after commands, before state");
        std::process::abort();
    }
}
