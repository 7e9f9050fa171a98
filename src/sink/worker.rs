//! One worker thread per tenant: takes the tenant's due commands, has the
//! executor attempt them, and decides, reschedules or gives up on each.
//!
//! Invariants:
//! - A tenant's worker waits only for its own vendors: its rate budgets,
//!   `Retry-After`s, outages and backoffs hold back its own queue and no
//!   other tenant's ([`TenantQueue`] per tenant, the runner only hands out).
//! - An outcome is written to the ledger (with its extras, atomically),
//!   then its result (and dead letter) is published and acknowledged, then
//!   it is marked reported, then its offset is released for commit
//!   ([`super::queue::Offsets`]). A crash anywhere re-delivers the command:
//!   decided ones are duplicates whose result is re-published with the same
//!   content.
//! - A worker acts only for partitions this process still owns, within the
//!   lease of its last poll ([`Fence`]): after a revocation, or while the
//!   process was frozen long enough to lose its partitions, it starts no
//!   call. Revocation waits for the batch in flight.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::effect::{Cx, Fence};
use super::ledger::Step;
use super::policy::{after_fault, After};
use super::runner::{Results, SinkError};
use super::{Decided, Executor, TenantCx, Verdict, Work};
use crate::kafka::records::Outcome;
use crate::vendor::retry::Fault;
use crate::vendor::retry::{jitter, Backoff};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Default)]
struct QueueState {
    waiting: Vec<Work>,
    /// Command ids waiting or in flight (a re-delivered copy is dropped).
    ids: HashSet<String>,
    /// Partitions of the batch in flight, with their command counts.
    in_flight: HashMap<i32, usize>,
}

/// One tenant's commands not yet decided.
#[derive(Default)]
pub struct TenantQueue {
    state: Mutex<QueueState>,
    cv: Condvar,
}

impl TenantQueue {
    /// Queues `work`; `false` when the same command is already here.
    pub fn push(&self, work: Work) -> bool {
        let mut s = lock(&self.state);
        if !s.ids.insert(work.command.id.clone()) {
            return false;
        }
        s.waiting.push(work);
        self.cv.notify_all();
        true
    }

    /// Waits (up to `max_wait`) for due work, then takes up to `max` due
    /// commands of partitions `fence` allows, in queue order — and with
    /// them every command never tried yet, still gathering (so commands of
    /// a bulk API that arrived close together go in one call).
    fn take(&self, fence: &Fence, max: usize, max_wait: Duration) -> Vec<Work> {
        let mut s = lock(&self.state);
        let now = now_ms();
        let due = |w: &Work| w.next_at <= now && fence.may_act(w.partition);
        if !s.waiting.iter().any(due) {
            let next =
                s.waiting.iter().map(|w| w.next_at).min().map_or(max_wait, |at| {
                    Duration::from_millis((at - now).clamp(1, max_wait.as_millis() as i64) as u64)
                });
            s = self.cv.wait_timeout(s, next.min(max_wait)).map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
        let now = now_ms();
        let any_due = s.waiting.iter().any(|w| w.next_at <= now && fence.may_act(w.partition));
        if !any_due {
            return Vec::new();
        }
        let mut taken = Vec::new();
        let mut rest = Vec::with_capacity(s.waiting.len());
        for w in std::mem::take(&mut s.waiting) {
            let ready = w.next_at <= now || w.first_try.is_none();
            if taken.len() < max && ready && fence.may_act(w.partition) {
                taken.push(w);
            } else {
                rest.push(w);
            }
        }
        s.waiting = rest;
        for w in &taken {
            *s.in_flight.entry(w.partition).or_default() += 1;
        }
        taken
    }

    /// The batch in flight is over: `retry` goes back (unless its partition
    /// was revoked meanwhile: the new owner has it), `decided` ids leave.
    fn finish(&self, fence: &Fence, batch_partitions: &[i32], mut retry: Vec<Work>, decided: &[String]) {
        let mut s = lock(&self.state);
        let (keep, gone): (Vec<Work>, Vec<Work>) = retry.drain(..).partition(|w| fence.owns(w.partition));
        for w in gone {
            s.ids.remove(&w.command.id);
        }
        let retry = keep;
        for p in batch_partitions {
            if let Some(n) = s.in_flight.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    s.in_flight.remove(p);
                }
            }
        }
        for id in decided {
            s.ids.remove(id);
        }
        s.waiting.extend(retry);
        s.waiting.sort_by_key(|w| (w.partition, w.offset));
        self.cv.notify_all();
    }

    /// Drops the waiting commands of `partitions` (another instance will
    /// have them) and waits up to `timeout` for their batch in flight.
    pub fn revoke(&self, partitions: &[i32], timeout: Duration) -> bool {
        let mut s = lock(&self.state);
        let gone: Vec<String> =
            s.waiting.iter().filter(|w| partitions.contains(&w.partition)).map(|w| w.command.id.clone()).collect();
        s.waiting.retain(|w| !partitions.contains(&w.partition));
        for id in gone {
            s.ids.remove(&id);
        }
        let deadline = Instant::now() + timeout;
        while partitions.iter().any(|p| s.in_flight.contains_key(p)) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self.cv.wait_timeout(s, left).map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
        true
    }

    /// `(waiting, of which outcome unknown)`.
    pub fn sizes(&self) -> (usize, usize) {
        let s = lock(&self.state);
        (s.waiting.len(), s.waiting.iter().filter(|w| w.unknown).count())
    }

    pub fn wake(&self) {
        self.cv.notify_all();
    }
}

/// What a worker needs beside its tenant.
pub struct WorkerEnv {
    pub cx: Arc<Cx>,
    pub executor: Arc<dyn Executor>,
    pub results: Arc<Results>,
    pub backoff: Backoff,
    pub max_age: Duration,
    pub batch: usize,
    /// Released offsets go here (the runner commits them).
    pub decided: Arc<dyn Fn(&[(i32, i64)]) + Send + Sync>,
    /// The partition for which this process does `tenant`'s housekeeping
    /// now, if it does.
    pub housekeeper: Arc<dyn Fn(&str) -> Option<i32> + Send + Sync>,
    pub heartbeat: Arc<dyn Fn(&str) + Send + Sync>,
}

/// Where one command stands after an attempt.
enum Settled {
    Decided(Decided),
    Retry { at_ms: i64, fault: String, unknown: bool, attempts: u32 },
}

/// The worker loop for one tenant, until the sink stops.
pub fn run(env: &WorkerEnv, t: &TenantCx, queue: &TenantQueue) -> Result<(), SinkError> {
    let name = format!("worker-{}", t.tenant.name);
    let sink = env.cx.sink;
    let mut housekeeping_at = Instant::now();
    while !env.cx.stop.is_stopped() {
        (env.heartbeat)(&name);
        if housekeeping_at <= Instant::now() {
            // Not the housekeeper (yet): look again soon.
            housekeeping_at = Instant::now() + Duration::from_secs(2);
            if let Some(partition) = (env.housekeeper)(&t.tenant.name) {
                housekeeping_at = Instant::now() + Duration::from_secs(60);
                let done = env.executor.housekeeping(&env.cx, t, partition)?;
                let tenant = t.tenant.name.clone();
                let refs: Vec<(String, &Decided, Option<&Work>)> =
                    done.iter().map(|d| (tenant.clone(), d, None)).collect();
                env.results.publish(&env.cx, &refs)?;
            }
        }
        let mut batch = queue.take(&env.cx.fence, env.batch, Duration::from_millis(500));
        if batch.is_empty() {
            continue;
        }
        let partitions: Vec<i32> = batch.iter().map(|w| w.partition).collect();
        let started = now_ms();
        for w in &mut batch {
            w.first_try.get_or_insert(started);
        }
        // Each verdict is settled as it comes: an outcome is in the ledger
        // before the next command's call, so a crash mid-batch leaves at
        // most the command in flight undecided.
        let mut settled: HashMap<String, Settled> = HashMap::new();
        env.executor.attempt(&env.cx, t, &mut batch, &mut |w: &Work, v: Verdict| {
            let now = now_ms();
            let outcome = match v {
                Verdict::Decided(d) => Settled::Decided(d),
                Verdict::Retry(fault) => match after_fault(w, &fault, now, &env.backoff, env.max_age, jitter()) {
                    After::Retry { at_ms } => {
                        if !matches!(fault, Fault::NotYet { .. } | Fault::Stopped { .. }) {
                            env.cx.metrics.retry(sink.name(), fault.api());
                            tracing::info!(sink = sink.name(), tenant = %w.tenant, command = %w.command.id, unknown = w.unknown, retry_in_ms = at_ms - now, error = %fault, "not decided; retrying later");
                        }
                        Settled::Retry { at_ms, fault: fault.to_string(), unknown: w.unknown, attempts: w.attempts }
                    }
                    After::GiveUp(why) => Settled::Decided(Decided::new(w.result(sink, Outcome::Failed, why, None))),
                },
            };
            if let Settled::Decided(d) = &outcome {
                let extras: Vec<(&str, &str, Option<serde_json::Value>)> =
                    d.extras.iter().map(|(k, v)| (w.tenant.as_str(), k.as_str(), v.clone())).collect();
                let step = Step::Done { result: d.result.clone(), reported: false };
                env.cx.ledger.record(&[(&w.tenant, &w.command.id, step)], &extras)?;
            }
            settled.insert(w.command.id.clone(), outcome);
            Ok(())
        })?;
        let mut decided: Vec<(Work, Decided)> = Vec::new();
        let mut retry = Vec::new();
        for mut w in batch {
            match settled.remove(&w.command.id) {
                Some(Settled::Decided(d)) => decided.push((w, d)),
                Some(Settled::Retry { at_ms, fault, unknown, attempts }) => {
                    (w.next_at, w.last_fault, w.unknown, w.attempts) = (at_ms, Some(fault), unknown, attempts);
                    retry.push(w);
                }
                // The executor said nothing of it: try again shortly.
                None => {
                    w.next_at = now_ms() + 100;
                    retry.push(w);
                }
            }
        }
        let refs: Vec<(String, &Decided, Option<&Work>)> =
            decided.iter().map(|(w, d)| (w.tenant.clone(), d, Some(w))).collect();
        env.results.publish(&env.cx, &refs)?;
        let released: Vec<(i32, i64)> = decided.iter().map(|(w, _)| (w.partition, w.offset)).collect();
        (env.decided)(&released);
        let ids: Vec<String> = decided.iter().map(|(w, _)| w.command.id.clone()).collect();
        queue.finish(&env.cx.fence, &partitions, retry, &ids);
        if !ids.is_empty() {
            super::fault::batch_decided(&name)?;
        }
    }
    Ok(())
}
