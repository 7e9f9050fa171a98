//! The processor's input order, without Kafka: where each input record
//! sits ([`Position`]), the merge of the input partitions into that order
//! ([`merge_lanes`], [`Merge`]), and the partition a keyed record lands on
//! ([`partition_of`]).
//!
//! The order is the processor's ([`crate::processor::merge`]): each
//! partition of each input topic is a lane read in offset order, and the
//! next record is the lane front with the smallest `(record time, class,
//! partition, offset)`, where the class ranks the inputs as the tasks list
//! them ([`INPUTS`]). See [`super`] for why one merge over every input
//! gives each processor task the sequence it saw.

use crate::engine::Event;
use crate::kafka::topics::Topic;
use crate::model::Ping;

/// The input topics in the order a task's merge takes records of equal
/// record time: pings before the routes their stage-one records cause
/// (stage two lists pings first), then stage one's inputs as
/// [`crate::processor::task`] lists them (own partitions, then the global
/// tables in [`crate::processor::task::GLOBAL_INPUTS`] order, then ticks).
pub const INPUTS: [Topic; 12] = [
    Topic::Pings,
    Topic::Appointments,
    Topic::ClockEvents,
    Topic::Users,
    Topic::Locations,
    Topic::Jobs,
    Topic::Drivers,
    Topic::Vehicles,
    Topic::Pairings,
    Topic::Offices,
    Topic::Contacts,
    Topic::Ticks,
];

/// The rank of an input topic in [`INPUTS`].
pub fn class(topic: Topic) -> Option<u8> {
    INPUTS.iter().position(|t| *t == topic).map(|i| i as u8)
}

/// Where a record sits in the merged input: ordered as the processor
/// takes lane fronts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Position {
    /// The record's timestamp (ms): its time in the processor's merge.
    pub time: i64,
    /// [`class`] of its topic.
    pub class: u8,
    pub partition: i32,
    pub offset: i64,
}

impl Position {
    pub fn topic(&self) -> Topic {
        INPUTS[self.class as usize % INPUTS.len()]
    }
}

/// One decoded input record of a tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub at: Position,
    pub tenant: String,
    pub event: Event,
}

/// One decoded ping record (the hot path keeps it apart from [`Input`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PingInput {
    pub at: Position,
    pub tenant: compact_str::CompactString,
    pub ping: Ping,
}

/// Merges lanes (each in offset order) by their fronts' positions: the
/// processor's merge over data already on the broker. Restricted to any
/// subset of lanes it is the merge of that subset (the front of a lane
/// outside the subset never decides between two inside it), which is why
/// one merge serves every task.
pub fn merge_lanes<T>(lanes: Vec<Vec<T>>, at: impl Fn(&T) -> Position) -> Vec<T> {
    let total = lanes.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total);
    let mut lanes: Vec<std::iter::Peekable<std::vec::IntoIter<T>>> =
        lanes.into_iter().map(|l| l.into_iter().peekable()).collect();
    // A heap of (front position, lane): O(log lanes) per record.
    let mut heap = std::collections::BinaryHeap::new();
    for (i, l) in lanes.iter_mut().enumerate() {
        if let Some(r) = l.peek() {
            heap.push(std::cmp::Reverse((at(r), i)));
        }
    }
    while let Some(std::cmp::Reverse((_, i))) = heap.pop() {
        if let Some(r) = lanes[i].next() {
            out.push(r);
        }
        if let Some(r) = lanes[i].peek() {
            heap.push(std::cmp::Reverse((at(r), i)));
        }
    }
    out
}

/// What comes next in the merge of a few streamed lanes (pings, one per
/// partition) with one pre-merged sequence (every other input): pass each
/// lane's front and the sequence's; returns the index of the smallest
/// (`fronts.len()` for the sequence), `None` when all are empty.
pub fn next_of(fronts: &[Option<Position>], rest: Option<Position>) -> Option<usize> {
    let mut best: Option<(Position, usize)> = rest.map(|p| (p, fronts.len()));
    for (i, f) in fronts.iter().enumerate() {
        if let Some(p) = f {
            if best.is_none_or(|(b, _)| *p < b) {
                best = Some((*p, i));
            }
        }
    }
    best.map(|(_, i)| i)
}

/// The partition librdkafka's default partitioner (`consistent_random`)
/// puts a record with this non-empty key on: CRC-32 (IEEE) of the key
/// modulo the partition count. The processor keys fence routes by
/// `tenant/vehicle` with it, so a vehicle's routes meet its pings.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    if partitions <= 1 {
        return 0;
    }
    (crc32(key) % partitions as u32) as i32
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`).
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for b in bytes {
        c = TABLE[((c ^ *b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::core::GLOBAL_INPUTS;

    fn pos(time: i64, class: u8, partition: i32, offset: i64) -> Position {
        Position { time, class, partition, offset }
    }

    #[test]
    fn classes_follow_the_tasks_input_order() {
        assert_eq!(&INPUTS[3..11], &GLOBAL_INPUTS[..]);
        assert_eq!(class(Topic::Pings), Some(0));
        assert_eq!(class(Topic::Ticks), Some(11));
        assert_eq!(class(Topic::Commands), None);
        assert_eq!(pos(0, 2, 0, 0).topic(), Topic::ClockEvents);
    }

    #[test]
    fn lanes_merge_by_fronts_and_keep_their_own_order() {
        // Lane 0 holds a record stamped earlier than the one before it.
        let lanes = vec![vec![pos(10, 1, 0, 0), pos(1, 1, 0, 1)], vec![pos(5, 3, 0, 0), pos(20, 3, 0, 1)]];
        let merged = merge_lanes(lanes, |p| *p);
        let times: Vec<i64> = merged.iter().map(|p| p.time).collect();
        assert_eq!(times, vec![5, 10, 1, 20]);
        // Restricted to a subset of lanes it is that subset's merge.
        let three = vec![
            vec![pos(10, 1, 0, 0), pos(1, 1, 0, 1)],
            vec![pos(5, 3, 0, 0), pos(20, 3, 0, 1)],
            vec![pos(7, 4, 0, 0), pos(0, 4, 0, 1)],
        ];
        let all = merge_lanes(three, |p| *p);
        let without: Vec<Position> = all.into_iter().filter(|p| p.class != 4).collect();
        assert_eq!(without, merged);
    }

    #[test]
    fn equal_times_go_by_class_then_partition_then_offset() {
        let lanes = vec![vec![pos(5, 9, 0, 3)], vec![pos(5, 0, 1, 7)], vec![pos(5, 0, 0, 9)], vec![pos(5, 1, 0, 1)]];
        let merged: Vec<(u8, i32)> = merge_lanes(lanes, |p| *p).iter().map(|p| (p.class, p.partition)).collect();
        assert_eq!(merged, vec![(0, 0), (0, 1), (1, 0), (9, 0)]);
        assert_eq!(next_of(&[Some(pos(5, 0, 0, 1)), None], Some(pos(4, 3, 0, 0))), Some(2));
        assert_eq!(next_of(&[Some(pos(5, 0, 1, 1)), Some(pos(5, 0, 0, 1))], None), Some(1));
        assert_eq!(next_of(&[None], None), None);
    }

    #[test]
    fn crc32_is_zlibs() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
        assert_eq!(partition_of(b"acme/v1", 1), 0);
        assert!((0..6).contains(&partition_of(b"acme/v1", 6)));
    }
}
