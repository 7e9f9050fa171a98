//! Crash injection for tests: `GEOCLOCK_FAULT=after_commands:N` makes the
//! process abort (no unwinding, no cleanup — like SIGKILL) right after the
//! N-th batch that produced commands had them acknowledged, before its state
//! rows and offsets markers are produced. That is the crash point where a
//! restarted task must re-produce the same commands with the same ids and
//! contents. `GEOCLOCK_FAULT=stall_after_commands:N` instead stalls that
//! batch's commit for 3 s at the same point (a test stops the process
//! meanwhile, so that the batch's state writes land after another instance
//! took the partition over: a zombie's writes). Unset (production), it costs
//! one relaxed atomic load per batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static BATCHES: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy)]
enum Fault {
    Abort(u64),
    Stall(u64),
}

fn fault() -> Option<Fault> {
    static AT: OnceLock<Option<Fault>> = OnceLock::new();
    *AT.get_or_init(|| {
        let v = std::env::var("GEOCLOCK_FAULT").ok()?;
        if let Some(n) = v.strip_prefix("after_commands:") {
            return n.parse().ok().map(Fault::Abort);
        }
        v.strip_prefix("stall_after_commands:")?.parse().ok().map(Fault::Stall)
    })
}

/// Called after a batch's commands were acknowledged.
pub fn commands_acknowledged(task: &str, commands: usize) {
    let Some(f) = fault() else { return };
    if commands == 0 {
        return;
    }
    let nth = BATCHES.fetch_add(1, Ordering::Relaxed) + 1;
    match f {
        Fault::Abort(n) if n == nth => {
            tracing::error!(task = %task, commands, "GEOCLOCK_FAULT: aborting after commands, before state");
            std::process::abort();
        }
        Fault::Stall(n) if n == nth => {
            tracing::error!(task = %task, commands, "GEOCLOCK_FAULT: stalling after commands, before state");
            std::thread::sleep(std::time::Duration::from_secs(3));
            tracing::error!(task = %task, "GEOCLOCK_FAULT: stall over, writing state");
        }
        _ => {}
    }
}
