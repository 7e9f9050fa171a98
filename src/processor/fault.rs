//! Crash injection for tests: `GEOCLOCK_FAULT=after_commands:N` makes the
//! process abort (no unwinding, no cleanup — like SIGKILL) right after the
//! N-th batch that produced commands had them acknowledged, before its state
//! rows and offsets markers are produced. That is the crash point where a
//! restarted task must re-produce the same commands with the same ids and
//! contents. `GEOCLOCK_FAULT=stall_after_commands:N` instead stalls that
//! batch's commit for 3 s at the same point (a test stops the process
//! meanwhile, so that the batch's state writes land after another instance
//! took the partition over: a zombie's writes).
//! `GEOCLOCK_FAULT=hold_stage_one:PATH` holds every stage-one task (it
//! fetches and processes nothing) while the file `PATH` exists, so stage
//! two's gates stay shut and its backlog builds up behind them; in-process
//! runs (the bench) flip the same switch with [`set_stage_one_held`].
//! Unset (production), each costs a relaxed atomic load per batch or loop.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

static BATCHES: AtomicU64 = AtomicU64::new(0);

static HELD: AtomicBool = AtomicBool::new(false);

#[derive(Clone)]
enum Fault {
    Abort(u64),
    Stall(u64),
    Hold(PathBuf),
}

fn fault() -> Option<&'static Fault> {
    static AT: OnceLock<Option<Fault>> = OnceLock::new();
    AT.get_or_init(|| {
        let v = std::env::var("GEOCLOCK_FAULT").ok()?;
        if let Some(n) = v.strip_prefix("after_commands:") {
            return n.parse().ok().map(Fault::Abort);
        }
        if let Some(path) = v.strip_prefix("hold_stage_one:") {
            return Some(Fault::Hold(PathBuf::from(path)));
        }
        v.strip_prefix("stall_after_commands:")?.parse().ok().map(Fault::Stall)
    })
    .as_ref()
}

/// Holds (or releases) every stage-one task of this process.
pub fn set_stage_one_held(held: bool) {
    HELD.store(held, Ordering::SeqCst);
}

/// Whether stage-one tasks are held now (the hold file is looked at no
/// more than every 100 ms).
pub fn stage_one_held() -> bool {
    if HELD.load(Ordering::Relaxed) {
        return true;
    }
    let Some(Fault::Hold(path)) = fault() else { return false };
    static SEEN: Mutex<Option<(Instant, bool)>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    match *seen {
        Some((at, held)) if at.elapsed() < Duration::from_millis(100) => held,
        _ => {
            let held = path.exists();
            *seen = Some((Instant::now(), held));
            held
        }
    }
}

/// Called after a batch's commands were acknowledged.
pub fn commands_acknowledged(task: &str, commands: usize) {
    let Some(f) = fault() else { return };
    if commands == 0 || matches!(f, Fault::Hold(_)) {
        return;
    }
    let nth = BATCHES.fetch_add(1, Ordering::Relaxed) + 1;
    match *f {
        Fault::Abort(n) if n == nth => {
            tracing::error!(task = %task, commands, "GEOCLOCK_FAULT: aborting after commands, before state");
            std::process::abort();
        }
        Fault::Stall(n) if n == nth => {
            tracing::error!(task = %task, commands, "GEOCLOCK_FAULT: stalling after commands, before state");
            std::thread::sleep(Duration::from_secs(3));
            tracing::error!(task = %task, "GEOCLOCK_FAULT: stall over, writing state");
        }
        _ => {}
    }
}
