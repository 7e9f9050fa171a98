//! Merging a task's input partitions into one sequence by record time, the
//! way Kafka Streams picks the next record of a task.
//!
//! Invariants:
//! - Records leave in `(timestamp, input, lane, offset)` order among those
//!   buffered, and each lane's records leave in offset order. An input has
//!   one lane, or one per source when several sources write it in
//!   interleaved record time (stage two's routes: one lane per stage-one
//!   task), so one source's later record never holds back another's
//!   earlier one.
//! - A lane's position (stored with the state) is its first record not
//!   handed out; the input is re-fetched from its lowest lane position and
//!   each lane drops what it handed out before, so nothing is processed
//!   twice or skipped.
//! - A record leaves only when every input either has a buffered record or
//!   is caught up (has delivered everything up to the high watermark the
//!   broker last reported). So for input that was already on the broker, the
//!   order does not depend on how fetches happened to interleave: a
//!   re-processing after a crash sees the same sequence.
//!
//! - It knows how much it holds ([`Merger::bytes`], per input
//!   [`Merger::input_bytes`]): the task pauses fetching of inputs whose
//!   records wait here while the total is over its bound, so memory stays
//!   bounded under any backlog; pausing never reorders a partition (its
//!   consumer resumes after the last record delivered).
//!
//! No I/O: the task feeds it records and high watermarks.

use std::collections::VecDeque;

use compact_str::CompactString;

use crate::model::Ping;

/// One consumed record, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub input: usize,
    /// The lane of `input` it belongs to (0 for an input with one lane).
    pub lane: usize,
    pub offset: i64,
    pub timestamp: i64,
    pub body: Body,
}

/// What a record holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// Its bytes, decoded when processed.
    Raw { key: Option<Vec<u8>>, value: Option<Vec<u8>> },
    /// A ping in the current schema, decoded when fetched (the hot path:
    /// no heap allocation for ids of up to 24 bytes).
    Ping { tenant: CompactString, ping: Ping },
}

impl Record {
    /// About what the record holds in memory, in bytes (its struct and the
    /// heap bytes of a raw record's key and value).
    pub fn weight(&self) -> usize {
        let heap = match &self.body {
            Body::Raw { key, value } => {
                key.as_ref().map_or(0, |k| k.capacity() + 16) + value.as_ref().map_or(0, |v| v.capacity() + 16)
            }
            Body::Ping { .. } => 0,
        };
        std::mem::size_of::<Record>() + heap
    }

    /// The key of a raw record.
    pub fn key(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Raw { key, .. } => key.as_deref(),
            Body::Ping { .. } => None,
        }
    }
}

/// Records of one input that keep their order among themselves; an input
/// written by several sources in interleaved record time has a lane per
/// source, each merged on its own.
#[derive(Debug, Clone, Default)]
struct Lane {
    buffered: VecDeque<Record>,
    /// Records of this lane below this offset were handed out.
    next: i64,
}

#[derive(Debug, Clone, Default)]
struct Input {
    lanes: Vec<Lane>,
    /// The offset after the last record fetched.
    fetched: i64,
    /// The latest high watermark seen (`None` before the first fetch).
    high: Option<i64>,
    /// [`Record::weight`] of what its lanes hold.
    bytes: usize,
    /// Records its lanes hold.
    held: usize,
}

impl Input {
    fn caught_up(&self, lane: &Lane) -> bool {
        lane.buffered.is_empty() && self.high.is_some_and(|h| self.fetched >= h)
    }

    /// Where the lane resumes: its first record not handed out.
    fn position(&self, lane: &Lane) -> i64 {
        match lane.buffered.front() {
            Some(r) => r.offset,
            // Every record of the lane fetched so far was handed out.
            None => lane.next.max(self.fetched),
        }
    }
}

/// The inputs of one task, by index.
#[derive(Debug, Clone, Default)]
pub struct Merger {
    inputs: Vec<Input>,
    /// The number of each input's first lane in [`Merger::lanes`].
    first_lane: Vec<usize>,
    /// [`Record::weight`] of everything buffered.
    bytes: usize,
}

impl Merger {
    /// `starts[i]` is the offset input `i` (one lane) resumes from.
    pub fn new(starts: &[i64]) -> Merger {
        Merger::with_lanes(&starts.iter().map(|s| vec![*s]).collect::<Vec<_>>())
    }

    /// `starts[i][l]` is the offset lane `l` of input `i` resumes from: its
    /// records below it are dropped. The input is fetched from the lowest.
    pub fn with_lanes(starts: &[Vec<i64>]) -> Merger {
        let inputs = starts
            .iter()
            .map(|lanes| Input {
                lanes: lanes.iter().map(|s| Lane { next: *s, ..Lane::default() }).collect(),
                fetched: lanes.iter().copied().min().unwrap_or(0),
                high: None,
                bytes: 0,
                held: 0,
            })
            .collect();
        let first_lane = starts
            .iter()
            .scan(0, |n, lanes| {
                let first = *n;
                *n += lanes.len();
                Some(first)
            })
            .collect();
        Merger { inputs, first_lane, bytes: 0 }
    }

    pub fn push(&mut self, r: Record) {
        let input = &mut self.inputs[r.input];
        input.fetched = input.fetched.max(r.offset + 1);
        let Some(lane) = input.lanes.get_mut(r.lane) else { return };
        // Offsets below `next` were already handed out (a re-fetch).
        let tail = lane.buffered.back().map_or(lane.next, |b| b.offset + 1);
        if r.offset >= tail {
            let w = r.weight();
            input.bytes += w;
            input.held += 1;
            self.bytes += w;
            lane.buffered.push_back(r);
        }
    }

    pub fn set_high(&mut self, input: usize, high: i64) {
        self.inputs[input].high = Some(high);
    }

    /// The next record in merged order, if it may leave now.
    pub fn pop(&mut self) -> Option<Record> {
        self.pop_before(i64::MAX, &[])
    }

    /// [`Merger::pop`], except that a record of an input `gated[i]` leaves
    /// only with a timestamp at or before `limit`; while the next record in
    /// merged order is such a record past the limit, nothing leaves.
    pub fn pop_before(&mut self, limit: i64, gated: &[bool]) -> Option<Record> {
        let (idx, l) = self.next_before(limit, gated)?;
        self.pop_lane(idx, l)
    }

    /// Which lane [`Merger::pop_before`] would take from: `(input, lane)`.
    pub fn next_before(&self, limit: i64, gated: &[bool]) -> Option<(usize, usize)> {
        let mut best: Option<(i64, usize, usize, i64)> = None;
        for (idx, i) in self.inputs.iter().enumerate() {
            for (l, lane) in i.lanes.iter().enumerate() {
                match lane.buffered.front() {
                    Some(r) => {
                        let k = (r.timestamp, idx, l, r.offset);
                        if best.is_none_or(|b| k < b) {
                            best = Some(k);
                        }
                    }
                    None if i.caught_up(lane) => {}
                    None => return None,
                }
            }
        }
        let (ts, idx, l, _) = best?;
        if ts > limit && gated.get(idx).copied().unwrap_or(false) {
            return None;
        }
        Some((idx, l))
    }

    /// The next record of one lane, left in place.
    pub fn peek_lane(&self, input: usize, lane: usize) -> Option<&Record> {
        self.inputs.get(input)?.lanes.get(lane)?.buffered.front()
    }

    /// The next record of one lane, whatever the others hold (replaying a
    /// recorded order).
    pub fn pop_lane(&mut self, input: usize, lane: usize) -> Option<Record> {
        let input = self.inputs.get_mut(input)?;
        let lane = input.lanes.get_mut(lane)?;
        let r = lane.buffered.pop_front()?;
        lane.next = r.offset + 1;
        let w = r.weight();
        input.bytes -= w;
        input.held -= 1;
        self.bytes -= w;
        Some(r)
    }

    /// Lanes numbered across inputs, in input order: `(input, lane)`.
    pub fn lanes(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.inputs.iter().enumerate().flat_map(|(i, input)| (0..input.lanes.len()).map(move |l| (i, l)))
    }

    /// The number of lane `(input, lane)` in [`Merger::lanes`].
    pub fn lane_number(&self, input: usize, lane: usize) -> usize {
        self.first_lane[input] + lane
    }

    /// The lane numbered `n` in [`Merger::lanes`]: `(input, lane)`.
    pub fn lane_at(&self, n: usize) -> Option<(usize, usize)> {
        let input = self.first_lane.partition_point(|first| *first <= n).checked_sub(1)?;
        let lane = n - self.first_lane[input];
        (lane < self.inputs[input].lanes.len()).then_some((input, lane))
    }

    /// Where each lane resumes, in [`Merger::lanes`] order: the offset of
    /// its first record not handed out (what is stored with the state).
    pub fn positions(&self) -> impl Iterator<Item = i64> + '_ {
        self.inputs.iter().flat_map(|i| i.lanes.iter().map(move |l| i.position(l)))
    }

    /// The offset after each lane's last record handed out, in
    /// [`Merger::lanes`] order (independent of how far fetches ran ahead).
    pub fn handed_out(&self) -> impl Iterator<Item = i64> + '_ {
        self.inputs.iter().flat_map(|i| i.lanes.iter().map(|l| l.next))
    }

    /// The first input holding the merge back: a lane with nothing
    /// buffered, the input not caught up. `(input, fetched to, high
    /// watermark)`.
    pub fn blocked_on(&self) -> Option<(usize, i64, Option<i64>)> {
        self.inputs
            .iter()
            .enumerate()
            .find(|(_, i)| i.lanes.iter().any(|l| !i.caught_up(l) && l.buffered.is_empty()))
            .map(|(idx, i)| (idx, i.fetched, i.high))
    }

    /// Some input's high watermark was never reported.
    pub fn unknown_high(&self) -> bool {
        self.inputs.iter().any(|i| i.high.is_none())
    }

    /// Nothing buffered and every input caught up.
    pub fn idle(&self) -> bool {
        self.inputs.iter().all(|i| i.lanes.iter().all(|l| i.caught_up(l)))
    }

    /// Records known on the broker but not yet fetched.
    pub fn lag(&self) -> i64 {
        self.inputs.iter().map(|i| i.high.map_or(0, |h| (h - i.fetched).max(0))).sum()
    }

    pub fn buffered(&self) -> usize {
        self.inputs.iter().map(|i| i.held).sum()
    }

    /// [`Record::weight`] of every record buffered.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// [`Record::weight`] of input `input`'s buffered records.
    pub fn input_bytes(&self, input: usize) -> usize {
        self.inputs.get(input).map_or(0, |i| i.bytes)
    }

    /// Records of input `input` buffered.
    pub fn input_held(&self, input: usize) -> usize {
        self.inputs.get(input).map_or(0, |i| i.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(input: usize, offset: i64, timestamp: i64) -> Record {
        Record { input, lane: 0, offset, timestamp, body: Body::Raw { key: None, value: None } }
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

    fn lane(input: usize, lane: usize, offset: i64, timestamp: i64) -> Record {
        Record { lane, ..rec(input, offset, timestamp) }
    }

    #[test]
    fn lanes_of_one_input_merge_by_time_and_resume_each_at_its_own_offset() {
        // Input 1 is written by two sources: source 1's record at t=7 sits
        // behind source 0's at t=14.
        let written = [lane(1, 0, 0, 14), lane(1, 1, 1, 7), lane(1, 0, 2, 20)];
        let mut m = Merger::with_lanes(&[vec![0], vec![0, 0]]);
        m.set_high(0, 1);
        m.set_high(1, 3);
        m.push(rec(0, 0, 9));
        for r in &written {
            m.push(r.clone());
        }
        let t = |m: &mut Merger| m.pop().map(|r| r.timestamp);
        assert_eq!(t(&mut m), Some(7));
        assert_eq!(t(&mut m), Some(9), "the ping at 9 comes after source 1's record at 7");
        assert_eq!(t(&mut m), Some(14));
        let positions: Vec<i64> = m.positions().collect();
        assert_eq!(positions, vec![1, 2, 3], "source 0 resumes at 2, source 1 has nothing left");

        // Resumed from those positions, the input is fetched from offset 2
        // and only the record not yet handed out comes again.
        let mut again = Merger::with_lanes(&[vec![1], vec![2, 3]]);
        again.set_high(0, 1);
        again.set_high(1, 3);
        for r in &written {
            again.push(r.clone());
        }
        assert_eq!(again.pop().map(|r| (r.lane, r.offset)), Some((0, 2)));
        assert_eq!(again.pop(), None);
        assert!(again.idle());
        assert_eq!(again.lanes().collect::<Vec<_>>(), vec![(0, 0), (1, 0), (1, 1)]);
        assert_eq!(again.lane_number(1, 1), 2);
        assert_eq!(again.lane_at(2), Some((1, 1)));
        assert_eq!(again.lane_at(3), None);
    }

    #[test]
    fn a_lane_with_nothing_waits_until_its_input_is_caught_up() {
        let mut m = Merger::with_lanes(&[vec![0], vec![0, 0]]);
        m.set_high(0, 1);
        m.set_high(1, 2);
        m.push(rec(0, 0, 30));
        m.push(lane(1, 0, 0, 10));
        assert_eq!(m.pop(), None, "offset 1 of input 1 may be lane 1's, and earlier");
        m.push(lane(1, 0, 1, 40));
        assert_eq!(m.pop().map(|r| r.timestamp), Some(10));
        assert_eq!(m.pop().map(|r| r.timestamp), Some(30));
        assert_eq!(m.lag(), 0);
    }

    #[test]
    fn it_counts_what_it_holds_per_input() {
        let mut m = Merger::new(&[0, 0]);
        m.set_high(0, 3);
        m.set_high(1, 1);
        let raw = |input, offset, ts, n: usize| Record {
            body: Body::Raw { key: None, value: Some(vec![0; n]) },
            ..rec(input, offset, ts)
        };
        m.push(raw(0, 0, 10, 100));
        m.push(raw(0, 1, 30, 100));
        m.push(raw(0, 1, 30, 100)); // a re-fetch: not held twice
        m.push(raw(1, 0, 20, 1000));
        assert_eq!(m.input_held(0), 2);
        assert_eq!(m.bytes(), m.input_bytes(0) + m.input_bytes(1));
        assert!(m.input_bytes(1) > 1000 && m.input_bytes(0) > 200);
        assert_eq!(m.next_before(i64::MAX, &[]), Some((0, 0)));
        assert_eq!(m.peek_lane(0, 0).map(|r| r.timestamp), Some(10));
        while m.pop().is_some() {}
        assert_eq!((m.bytes(), m.buffered(), m.input_bytes(1)), (0, 0, 0));
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
