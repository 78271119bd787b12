//! [`RecordIndex`]: record offset -> (Raft index, position in the entry), in memory.
//!
//! Run-length encoded: one [`Run`] covers consecutive Raft entries that hold the same number of
//! records each, e.g. a stream of single-record Produce calls or of equal ProduceBatch calls. A
//! blank or membership entry (no records) or a batch of another size starts a new run. A steady
//! workload therefore costs a few runs, not one slot per entry. A record's run is found by binary
//! search; its entry and position follow by division. Pure data, no I/O.
//!
//! An entry of several calls' parts (group commit) where some parts got no offsets (duplicates,
//! refusals) indexes only the others: each stretch of indexed records is pushed with the
//! position of its first record in the entry ([`RecordIndex::push_at`]).

use std::collections::VecDeque;

/// Where a record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub raft_index: u64,
    /// Position of the record inside the entry's batch.
    pub position: u32,
    /// Records indexed from here on in this entry at consecutive positions, this one included:
    /// a read of the entry must stop there (what follows may be a part that got no offsets).
    pub stretch: u32,
}

/// The record is not readable here: the member holds `[first, next)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("offset {offset} is out of range: this member holds records [{first}, {next})")]
pub struct OutOfRange {
    pub offset: u64,
    pub first: u64,
    pub next: u64,
}

/// `entries` consecutive Raft entries from `raft_index`, each holding `per_entry` indexed
/// records from position `position` on, the first of which has offset `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    first: u64,
    raft_index: u64,
    per_entry: u32,
    position: u32,
    entries: u64,
}

impl Run {
    #[cfg(test)]
    fn next_record(&self) -> u64 {
        self.first + self.entries * u64::from(self.per_entry)
    }
}

/// Record offset -> Raft entry map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordIndex {
    /// Runs in increasing record offset and Raft index order.
    runs: VecDeque<Run>,
    /// The offset of the first readable record.
    first: u64,
    /// The offset the next record will get.
    next: u64,
}

impl RecordIndex {
    /// An empty index whose first record will get offset `next`.
    pub fn starting_at(next: u64) -> Self {
        RecordIndex {
            runs: VecDeque::new(),
            first: next,
            next,
        }
    }

    /// Adds an entry of `count` records at `raft_index`; returns its first record offset.
    pub fn push(&mut self, raft_index: u64, count: u32) -> u64 {
        self.push_at(raft_index, 0, count)
    }

    /// Adds `count` records of the entry at `raft_index`, from position `position` in it on
    /// (at or after the entry's records pushed before); returns the first one's offset.
    pub fn push_at(&mut self, raft_index: u64, position: u32, count: u32) -> u64 {
        let first = self.next;
        if count == 0 {
            return first;
        }
        match self.runs.back_mut() {
            Some(r)
                if r.per_entry == count
                    && r.position == position
                    && r.raft_index + r.entries == raft_index =>
            {
                r.entries += 1;
            }
            _ => self.runs.push_back(Run {
                first,
                raft_index,
                per_entry: count,
                position,
                entries: 1,
            }),
        }
        self.next += u64::from(count);
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
        let i = self.runs.partition_point(|r| r.first <= offset) - 1;
        let r = self.runs[i];
        let rel = offset - r.first;
        let per = u64::from(r.per_entry);
        Ok(Location {
            raft_index: r.raft_index + rel / per,
            position: r.position + (rel % per) as u32,
            stretch: r.per_entry - (rel % per) as u32,
        })
    }

    /// The last run (tests).
    #[cfg(test)]
    fn last_run(&self) -> Option<Run> {
        self.runs.back().copied()
    }

    /// Forgets entries below Raft index `raft_index` (they were dropped by retention).
    pub fn drop_below(&mut self, raft_index: u64) {
        while let Some(r) = self.runs.front_mut() {
            if r.raft_index >= raft_index {
                break;
            }
            let gone = raft_index - r.raft_index;
            if gone >= r.entries {
                self.runs.pop_front();
            } else {
                r.first += gone * u64::from(r.per_entry);
                r.raft_index = raft_index;
                r.entries -= gone;
                break;
            }
        }
        self.first = self.runs.front().map_or(self.next, |r| r.first);
    }

    /// Number of runs held (memory: 32 bytes each).
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Checks the invariants (tests).
    #[cfg(test)]
    fn check(&self) {
        let mut expect = self.first;
        for r in &self.runs {
            assert_eq!(r.first, expect);
            expect = r.next_record();
        }
        assert_eq!(expect, self.next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn locate_finds_records_inside_batches() {
        let mut ix = RecordIndex::starting_at(10);
        assert_eq!(ix.push(3, 2), 10);
        assert_eq!(ix.push(4, 0), 12);
        assert_eq!(ix.push(5, 3), 12);
        assert_eq!(ix.range(), (10, 15));
        let at = |raft_index, position, stretch| Location {
            raft_index,
            position,
            stretch,
        };
        assert_eq!(ix.locate(11).unwrap(), at(3, 1, 1));
        assert_eq!(ix.locate(12).unwrap(), at(5, 0, 3));
        assert_eq!(ix.locate(14).unwrap(), at(5, 2, 1));
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

    #[test]
    fn steady_single_record_entries_cost_one_run() {
        let mut ix = RecordIndex::starting_at(0);
        for i in 1..=1000 {
            ix.push(i, 1);
        }
        assert_eq!(ix.runs(), 1);
        ix.push(1001, 0); // blank entry of a new term
        for i in 1002..=2000 {
            ix.push(i, 1);
        }
        assert_eq!(ix.runs(), 2);
        assert_eq!(ix.locate(1500).unwrap().raft_index, 1502);
        ix.drop_below(500);
        assert_eq!(ix.range(), (499, 1999));
        assert_eq!(ix.locate(499).unwrap().raft_index, 500);
    }

    #[test]
    fn parts_of_an_entry_are_found_at_their_positions() {
        let mut ix = RecordIndex::starting_at(0);
        assert_eq!(ix.push(1, 2), 0);
        // Entry 2 holds 6 records; positions 2..4 were a duplicate and got no offsets.
        assert_eq!(ix.push_at(2, 0, 2), 2);
        assert_eq!(ix.push_at(2, 4, 2), 4);
        assert_eq!(ix.push(3, 2), 6);
        assert_eq!(ix.range(), (0, 8));
        let at = |raft_index, position, stretch| Location {
            raft_index,
            position,
            stretch,
        };
        // A read from offset 2 must stop after 2 records: positions 2..4 are not offsets 4, 5.
        assert_eq!(ix.locate(2).unwrap(), at(2, 0, 2));
        assert_eq!(ix.locate(3).unwrap(), at(2, 1, 1));
        assert_eq!(ix.locate(4).unwrap(), at(2, 4, 2));
        assert_eq!(ix.locate(5).unwrap(), at(2, 5, 1));
        assert_eq!(ix.locate(6).unwrap(), at(3, 0, 2));
        assert_eq!(ix.last_run().map(|r| r.position), Some(0));
        ix.check();
        ix.drop_below(2);
        assert_eq!(ix.locate(5).unwrap(), at(2, 5, 1));
        assert_eq!(ix.range(), (2, 8));
    }

    proptest! {
        /// The run-length index answers like a plain per-entry table.
        #[test]
        fn agrees_with_a_plain_table(
            counts in proptest::collection::vec(0u32..4, 1..200),
            drop_at in 0u64..220,
        ) {
            let mut ix = RecordIndex::starting_at(7);
            let mut table = Vec::new(); // (offset, raft index, position)
            let mut next = 7;
            for (i, &c) in counts.iter().enumerate() {
                let raft = i as u64 + 1;
                prop_assert_eq!(ix.push(raft, c), next);
                for p in 0..c {
                    table.push((next, raft, p));
                    next += 1;
                }
            }
            ix.check();
            ix.drop_below(drop_at);
            ix.check();
            for &(off, raft, pos) in &table {
                let got = ix.locate(off);
                if raft >= drop_at {
                    let want = Location { raft_index: raft, position: pos, stretch: counts[raft as usize - 1] - pos };
                    prop_assert_eq!(got, Ok(want));
                } else {
                    prop_assert!(got.is_err());
                }
            }
            prop_assert!(ix.locate(next).is_err());
        }
    }
}
