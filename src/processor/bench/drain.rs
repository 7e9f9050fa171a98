//! The bare consumer's drain (the raw rate the processor is compared
//! with) and the sampling of a drain's progress.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{e, T};
use crate::kafka::client::{consumer_config, unless_transient};
use crate::processor::ProcessorError;

/// The part of a drain a sustained rate is taken over: from this fraction
/// of its records to that one (ramp-up and tail left out of both drains
/// alike).
pub const SUSTAINED: (f64, f64) = (0.1, 0.9);

/// A drain's progress sampled as it runs: (seconds since a fixed start,
/// records taken so far), in time order, counts never decreasing.
#[derive(Debug, Default)]
pub struct Samples(Vec<(f64, u64)>);

impl Samples {
    pub fn push(&mut self, at: Duration, records: u64) {
        self.0.push((at.as_secs_f64(), records));
    }

    /// When the count reached `n`, interpolated between the samples around
    /// it; `None` if it never did.
    fn time_of(&self, n: f64) -> Option<f64> {
        let i = self.0.iter().position(|&(_, c)| c as f64 >= n)?;
        let (t1, c1) = self.0[i];
        let Some(&(t0, c0)) = i.checked_sub(1).map(|j| &self.0[j]) else { return Some(t1) };
        Some(t0 + (t1 - t0) * (n - c0 as f64) / (c1 - c0) as f64)
    }

    /// Records per second between [`SUSTAINED`]'s fractions of `total`
    /// (0 when the samples cannot tell).
    pub fn sustained(&self, total: u64) -> f64 {
        let (a, b) = (total as f64 * SUSTAINED.0, total as f64 * SUSTAINED.1);
        match (self.time_of(a), self.time_of(b)) {
            (Some(ta), Some(tb)) if tb > ta => (b - a) / (tb - ta),
            _ => 0.0,
        }
    }
}

/// A thread's count of records read, alone on its cache line (written on
/// every record, read by the sampler).
#[repr(align(64))]
#[derive(Default)]
struct Counter(AtomicU64);

/// Drains every partition of `topic` with one bare consumer per partition;
/// returns the records read, the time from the first record to the last
/// (connection set-up excluded, as the processor's group join is), and the
/// drain's progress sampled every millisecond.
pub(crate) fn raw_consume(
    brokers: &str,
    topic: &str,
    partitions: i32,
    queue_kbytes: usize,
) -> Result<(u64, Duration, Samples), ProcessorError> {
    let first: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let counters: Vec<Arc<Counter>> = (0..partitions).map(|_| Arc::default()).collect();
    let handles: Vec<_> = (0..partitions)
        .map(|p| {
            let (brokers, topic, first) = (brokers.to_string(), topic.to_string(), first.clone());
            let counter = counters[p as usize].clone();
            std::thread::spawn(move || -> Result<u64, ProcessorError> {
                // The processor's consumer settings: the same fetching.
                let c: BaseConsumer = consumer_config(&brokers, "bench-raw")
                    .set("fetch.wait.max.ms", "50")
                    .set("queued.max.messages.kbytes", queue_kbytes.to_string())
                    .create()
                    .map_err(|x| e("consumer", x))?;
                let (low, high) = c.fetch_watermarks(&topic, p, T).map_err(|x| e("watermarks", x))?;
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&topic, p, Offset::Offset(low)).map_err(|x| e("assign", x))?;
                c.assign(&tpl).map_err(|x| e("assign", x))?;
                let mut n = 0u64;
                let mut next = low;
                while next < high {
                    let polled = c.poll(Duration::from_secs(10)).map(|r| unless_transient(r, "bench raw reader"));
                    match polled {
                        Some(Ok(Some(m))) => {
                            if n == 0 {
                                let mut f = first.lock().unwrap_or_else(|e| e.into_inner());
                                f.get_or_insert_with(Instant::now);
                            }
                            n += 1;
                            counter.0.store(n, Ordering::Relaxed);
                            next = m.offset() + 1;
                        }
                        Some(Ok(None)) => {}
                        Some(Err(x)) => return Err(e("consume", x)),
                        None => return Err(e("consume", "stalled")),
                    }
                }
                Ok(n)
            })
        })
        .collect();
    let started = Instant::now();
    let mut samples = Samples::default();
    loop {
        let finished = handles.iter().all(|h| h.is_finished());
        samples.push(started.elapsed(), counters.iter().map(|c| c.0.load(Ordering::Relaxed)).sum());
        if finished {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut total = 0;
    for h in handles {
        total += h.join().map_err(|_| e("consume", "thread panicked"))??;
    }
    let span = first.lock().unwrap_or_else(|e| e.into_inner()).map_or(Duration::ZERO, |f| f.elapsed());
    Ok((total, span, samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(points: &[(f64, u64)]) -> Samples {
        let mut s = Samples::default();
        for &(t, n) in points {
            s.push(Duration::from_secs_f64(t), n);
        }
        s
    }

    #[test]
    fn a_steady_drain_sustains_its_rate() {
        // 1 000 records/s, sampled every 10 ms.
        let s = samples(&(0..=100).map(|i| (i as f64 / 100.0, i * 10)).collect::<Vec<_>>());
        assert!((s.sustained(1000) - 1000.0).abs() < 1e-6);
    }

    #[test]
    fn ramp_up_and_tail_are_left_out() {
        // A slow first 5% and last 5%, 1 000/s in between.
        let s = samples(&[(0.0, 0), (1.0, 50), (1.9, 950), (3.0, 1000)]);
        assert!((s.sustained(1000) - 1000.0).abs() < 1e-6);
    }

    #[test]
    fn counts_between_samples_are_interpolated() {
        // Batches of 500 land at 1 s and 2 s.
        let s = samples(&[(0.0, 0), (1.0, 500), (2.0, 1000)]);
        // 10% (100) at 0.2 s, 90% (900) at 1.8 s.
        assert!((s.sustained(1000) - 800.0 / 1.6).abs() < 1e-6);
    }

    #[test]
    fn a_drain_that_never_got_there_has_no_rate() {
        assert_eq!(samples(&[(0.0, 0), (1.0, 10)]).sustained(1000), 0.0);
        assert_eq!(Samples::default().sustained(1000), 0.0);
        assert_eq!(samples(&[(0.5, 1000)]).sustained(1000), 0.0);
    }
}
