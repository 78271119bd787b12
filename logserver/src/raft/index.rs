//! [`RecordIndex`]: record offset -> (Raft index, position in the entry), in memory.
//!
//! One slot per normal entry that holds records: `(first record offset, raft index)`. A record's
//! entry is found by binary search; its position is `offset - first`. Pure data, no I/O.

use std::collections::VecDeque;

/// Where a record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub raft_index: u64,
    /// Position of the record inside the entry's batch.
    pub position: u32,
}

/// The record is not readable here: the member holds `[first, next)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("offset {offset} is out of range: this member holds records [{first}, {next})")]
pub struct OutOfRange {
    pub offset: u64,
    pub first: u64,
    pub next: u64,
}

/// Record offset -> Raft entry map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordIndex {
    /// `(first record offset, raft index)`, both strictly increasing.
    slots: VecDeque<(u64, u64)>,
    /// The offset of the first readable record.
    first: u64,
    /// The offset the next record will get.
    next: u64,
}

impl RecordIndex {
    /// An empty index whose first record will get offset `next`.
    pub fn starting_at(next: u64) -> Self {
        RecordIndex {
            slots: VecDeque::new(),
            first: next,
            next,
        }
    }

    /// Adds an entry of `count` records at `raft_index`; returns its first record offset.
    pub fn push(&mut self, raft_index: u64, count: u32) -> u64 {
        let first = self.next;
        if count > 0 {
            debug_assert!(self.slots.back().is_none_or(|&(_, i)| i < raft_index));
            self.slots.push_back((first, raft_index));
            self.next += u64::from(count);
        }
        first
    }

    /// The readable range `[first, next)`.
    pub fn range(&self) -> (u64, u64) {
        (self.first, self.next)
    }

    /// The offset the next record will get.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Finds the entry holding `offset`.
    pub fn locate(&self, offset: u64) -> Result<Location, OutOfRange> {
        if offset < self.first || offset >= self.next {
            return Err(OutOfRange {
                offset,
                first: self.first,
                next: self.next,
            });
        }
        let i = self.slots.partition_point(|&(first, _)| first <= offset) - 1;
        let (first, raft_index) = self.slots[i];
        Ok(Location {
            raft_index,
            position: (offset - first) as u32,
        })
    }

    /// Forgets entries below Raft index `raft_index` (they were dropped by retention).
    pub fn drop_below(&mut self, raft_index: u64) {
        while let Some(&(_, i)) = self.slots.front() {
            if i >= raft_index {
                break;
            }
            self.slots.pop_front();
        }
        self.first = self.slots.front().map_or(self.next, |&(first, _)| first);
    }

    /// Number of slots (normal entries with records).
    pub fn slots(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_finds_records_inside_batches() {
        let mut ix = RecordIndex::starting_at(10);
        assert_eq!(ix.push(3, 2), 10);
        assert_eq!(ix.push(4, 0), 12);
        assert_eq!(ix.push(5, 3), 12);
        assert_eq!(ix.range(), (10, 15));
        assert_eq!(
            ix.locate(11).unwrap(),
            Location {
                raft_index: 3,
                position: 1
            }
        );
        assert_eq!(
            ix.locate(14).unwrap(),
            Location {
                raft_index: 5,
                position: 2
            }
        );
        assert_eq!(
            ix.locate(15),
            Err(OutOfRange {
                offset: 15,
                first: 10,
                next: 15
            })
        );
        assert!(ix.locate(9).is_err());
        ix.drop_below(5);
        assert_eq!(ix.range(), (12, 15));
        assert!(ix.locate(11).is_err());
        ix.drop_below(100);
        assert_eq!(ix.range(), (15, 15));
    }
}
