//! Merging a task's input partitions into one sequence by record time, the
//! way Kafka Streams picks the next record of a task.
//!
//! Invariants:
//! - Records leave in `(timestamp, input, offset)` order among those
//!   buffered, and each input's records leave in offset order.
//! - A record leaves only when every input either has a buffered record or
//!   is caught up (has delivered everything up to the high watermark the
//!   broker last reported). So for input that was already on the broker, the
//!   order does not depend on how fetches happened to interleave: a
//!   re-processing after a crash sees the same sequence.
//!
//! No I/O: the task feeds it records and high watermarks.

use std::collections::VecDeque;

/// One consumed record, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub input: usize,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Default)]
struct Input {
    buffered: VecDeque<Record>,
    /// Offset of the next record to hand out.
    next: i64,
    /// The latest high watermark seen (`None` before the first fetch).
    high: Option<i64>,
}

/// The inputs of one task, by index.
#[derive(Debug, Clone, Default)]
pub struct Merger {
    inputs: Vec<Input>,
}

impl Merger {
    /// `starts[i]` is the offset input `i` resumes from.
    pub fn new(starts: &[i64]) -> Merger {
        Merger { inputs: starts.iter().map(|s| Input { next: *s, ..Input::default() }).collect() }
    }

    pub fn push(&mut self, r: Record) {
        let input = &mut self.inputs[r.input];
        // Offsets below `next` were already handed out (a re-fetch).
        let tail = input.buffered.back().map_or(input.next, |b| b.offset + 1);
        if r.offset >= tail {
            input.buffered.push_back(r);
        }
    }

    pub fn set_high(&mut self, input: usize, high: i64) {
        self.inputs[input].high = Some(high);
    }

    fn caught_up(i: &Input) -> bool {
        i.buffered.is_empty() && i.high.is_some_and(|h| i.next >= h)
    }

    /// The next record in merged order, if it may leave now.
    pub fn pop(&mut self) -> Option<Record> {
        self.pop_before(i64::MAX, &[])
    }

    /// [`Merger::pop`], except that a record of an input `gated[i]` leaves
    /// only with a timestamp at or before `limit`; while the next record in
    /// merged order is such a record past the limit, nothing leaves.
    pub fn pop_before(&mut self, limit: i64, gated: &[bool]) -> Option<Record> {
        let mut best: Option<(i64, usize, i64)> = None;
        for (idx, i) in self.inputs.iter().enumerate() {
            match i.buffered.front() {
                Some(r) => {
                    let k = (r.timestamp, idx, r.offset);
                    if best.is_none_or(|b| k < b) {
                        best = Some(k);
                    }
                }
                None if Self::caught_up(i) => {}
                None => return None,
            }
        }
        let (ts, idx, _) = best?;
        if ts > limit && gated.get(idx).copied().unwrap_or(false) {
            return None;
        }
        let input = &mut self.inputs[idx];
        let r = input.buffered.pop_front()?;
        input.next = r.offset + 1;
        Some(r)
    }

    /// The next record of one input, whatever the others hold (replaying a
    /// recorded order).
    pub fn pop_input(&mut self, idx: usize) -> Option<Record> {
        let input = self.inputs.get_mut(idx)?;
        let r = input.buffered.pop_front()?;
        input.next = r.offset + 1;
        Some(r)
    }

    /// Offset of the next record to hand out, per input.
    pub fn positions(&self) -> impl Iterator<Item = i64> + '_ {
        self.inputs.iter().map(|i| i.next)
    }

    /// The first input holding the merge back: nothing buffered, not
    /// caught up. `(input, next offset, high watermark)`.
    pub fn blocked_on(&self) -> Option<(usize, i64, Option<i64>)> {
        self.inputs
            .iter()
            .enumerate()
            .find(|(_, i)| i.buffered.is_empty() && !Self::caught_up(i))
            .map(|(idx, i)| (idx, i.next, i.high))
    }

    /// Some input's high watermark was never reported.
    pub fn unknown_high(&self) -> bool {
        self.inputs.iter().any(|i| i.high.is_none())
    }

    /// Nothing buffered and every input caught up.
    pub fn idle(&self) -> bool {
        self.inputs.iter().all(Self::caught_up)
    }

    /// Records known on the broker but not yet handed out.
    pub fn lag(&self) -> i64 {
        self.inputs.iter().map(|i| i.high.map_or(0, |h| (h - i.next).max(0))).sum()
    }

    pub fn buffered(&self) -> usize {
        self.inputs.iter().map(|i| i.buffered.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(input: usize, offset: i64, timestamp: i64) -> Record {
        Record { input, offset, timestamp, key: None, value: None }
    }

    #[test]
    fn waits_for_every_input_then_goes_by_time() {
        let mut m = Merger::new(&[0, 0]);
        m.push(rec(0, 0, 20));
        assert_eq!(m.pop(), None, "input 1 has not reported yet");
        m.set_high(1, 1);
        assert_eq!(m.pop(), None, "input 1 has a record on the broker");
        m.push(rec(1, 0, 10));
        m.set_high(0, 1);
        assert_eq!(m.pop().map(|r| (r.input, r.timestamp)), Some((1, 10)));
        assert_eq!(m.pop().map(|r| (r.input, r.timestamp)), Some((0, 20)));
        assert_eq!(m.pop(), None);
        assert!(m.idle());
        assert_eq!(m.positions().collect::<Vec<_>>(), vec![1, 1]);
    }

    #[test]
    fn same_order_whatever_the_fetch_interleaving() {
        let a: Vec<Record> = (0..50).map(|o| rec(0, o, o * 3)).collect();
        let b: Vec<Record> = (0..50).map(|o| rec(1, o, o * 5 + 1)).collect();
        let run = |chunk_a: usize, chunk_b: usize| {
            let mut m = Merger::new(&[0, 0]);
            m.set_high(0, 50);
            m.set_high(1, 50);
            let (mut ia, mut ib, mut out) = (0, 0, Vec::new());
            while out.len() < 100 {
                for r in a.iter().skip(ia).take(chunk_a) {
                    m.push(r.clone());
                }
                ia = (ia + chunk_a).min(50);
                for r in b.iter().skip(ib).take(chunk_b) {
                    m.push(r.clone());
                }
                ib = (ib + chunk_b).min(50);
                while let Some(r) = m.pop() {
                    out.push((r.input, r.offset));
                }
            }
            out
        };
        assert_eq!(run(1, 7), run(13, 2));
        assert_eq!(run(50, 50), run(3, 3));
    }

    #[test]
    fn a_gated_input_waits_for_the_limit_and_holds_later_records_back() {
        let mut m = Merger::new(&[0, 0]);
        m.set_high(0, 2);
        m.set_high(1, 1);
        m.push(rec(0, 0, 10));
        m.push(rec(0, 1, 30));
        m.push(rec(1, 0, 20));
        let gated = [true, false];
        assert_eq!(m.pop_before(5, &gated), None, "the ping at 10 is past the limit");
        assert_eq!(m.pop_before(10, &gated).map(|r| r.timestamp), Some(10));
        assert_eq!(m.pop_before(10, &gated).map(|r| r.timestamp), Some(20), "ungated input goes on");
        assert_eq!(m.pop_before(25, &gated), None);
        assert_eq!(m.pop_before(i64::MAX, &gated).map(|r| r.timestamp), Some(30));
    }

    #[test]
    fn refetched_records_are_ignored() {
        let mut m = Merger::new(&[5]);
        m.set_high(0, 7);
        m.push(rec(0, 4, 1));
        m.push(rec(0, 5, 1));
        m.push(rec(0, 5, 1));
        m.push(rec(0, 6, 1));
        assert_eq!(m.pop().map(|r| r.offset), Some(5));
        assert_eq!(m.pop().map(|r| r.offset), Some(6));
        assert_eq!(m.pop(), None);
        assert_eq!(m.lag(), 0);
    }
}
