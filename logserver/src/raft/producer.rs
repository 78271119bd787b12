//! The idempotent producer table: per producer id, its epoch, the next sequence it may send and a
//! window of its last committed batches with their offsets. Pure data, no I/O; the state machine
//! owns one and changes it only in `apply`, so every member (a new leader, a restarted member, a
//! member restored from a snapshot) decides exactly as the old leader did.
//!
//! - A producer id is the Raft index of the `InitProducer` entry that created it: unique in the
//!   cluster, whoever leads. Re-initialising a known id bumps its epoch and restarts its
//!   sequences at 0; batches of an older epoch are then refused (`StaleEpoch`).
//! - A batch `(id, epoch, first_seq, count)` is new when `first_seq` is the next sequence
//!   expected; it is a duplicate when it equals one of the last [`WINDOW`] batches (the caller
//!   gets the original offsets, nothing is appended); anything else is refused.
//! - Time is log time: the largest leader timestamp written in an entry so far ([`Self::advance`]),
//!   never a member's own clock. A producer not seen for [`IDLE_EXPIRY_MS`] of log time is
//!   forgotten, and so is the least recently seen one beyond [`MAX_PRODUCERS`]; both depend only
//!   on the log, so every member forgets the same producers at the same entry.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

/// Batches remembered per producer (as Kafka: five in-flight batches).
pub const WINDOW: usize = 5;
/// A producer that sent nothing for this long (log time, ms) is forgotten: 24 h.
pub const IDLE_EXPIRY_MS: u64 = 24 * 60 * 60 * 1000;
/// At most this many producers are kept; beyond it the least recently seen is forgotten.
pub const MAX_PRODUCERS: usize = 100_000;

/// What an idempotent batch claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerKey {
    pub id: u64,
    pub epoch: u32,
    pub first_seq: u64,
}

/// Why a batch was refused (nothing was appended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("producer {id} is not known here (never initialised, or idle for more than 24 h and forgotten): initialise a new producer")]
    UnknownProducer { id: u64 },
    #[error("producer {id}: epoch {got} is not the current epoch {current} (a newer session of this producer took over)")]
    StaleEpoch { id: u64, got: u32, current: u32 },
    #[error("producer {id} epoch {epoch}: sequence {got} is out of order, {expected} comes next")]
    OutOfOrder {
        id: u64,
        epoch: u32,
        got: u64,
        expected: u64,
    },
    #[error("producer {id} epoch {epoch}: sequence {got} was committed but is older than the last {WINDOW} batches, so its offsets are no longer known")]
    TooOld { id: u64, epoch: u32, got: u64 },
    #[error("producer {id} epoch {epoch}: sequence {got} was committed with a different number of records")]
    Reused { id: u64, epoch: u32, got: u64 },
}

impl Refusal {
    /// The short name clients match on (`proglog-producer-error` metadata).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::UnknownProducer { .. } => "unknown-producer",
            Refusal::StaleEpoch { .. } => "stale-epoch",
            Refusal::OutOfOrder { .. } => "out-of-order",
            Refusal::TooOld { .. } => "too-old",
            Refusal::Reused { .. } => "reused",
        }
    }
}

/// What the table says of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Append it, then [`ProducerTable::record`] its offset.
    New,
    /// Already committed at this first offset: append nothing.
    Duplicate {
        first_offset: u64,
    },
    Refused(Refusal),
}

/// One committed batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub first_seq: u64,
    pub count: u32,
    pub first_offset: u64,
}

/// One producer's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Producer {
    pub epoch: u32,
    pub next_seq: u64,
    /// Log time (ms) of its last batch or initialisation.
    pub last_seen_ms: u64,
    /// Its last committed batches, oldest first, at most [`WINDOW`].
    pub window: VecDeque<Sent>,
}

/// Every known producer, and the log clock.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProducerTable {
    /// Log time in ms: the largest leader timestamp applied so far.
    clock_ms: u64,
    producers: BTreeMap<u64, Producer>,
    /// `(last_seen_ms, id)` of every producer, oldest first (derived; rebuilt after decoding).
    #[serde(skip)]
    by_age: BTreeSet<(u64, u64)>,
}

impl PartialEq for ProducerTable {
    fn eq(&self, other: &Self) -> bool {
        self.clock_ms == other.clock_ms && self.producers == other.producers
    }
}

impl Eq for ProducerTable {}

impl ProducerTable {
    /// Rebuilds the derived age index (after deserialising).
    pub fn reindex(&mut self) {
        self.by_age = self
            .producers
            .iter()
            .map(|(id, p)| (p.last_seen_ms, *id))
            .collect();
    }

    /// Log time in ms.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Number of producers held.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// True when no producer is held.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// A producer's state.
    pub fn get(&self, id: u64) -> Option<&Producer> {
        self.producers.get(&id)
    }

    /// Moves log time to `timestamp_ms` (never back) and forgets producers idle since before
    /// `clock - IDLE_EXPIRY_MS`.
    pub fn advance(&mut self, timestamp_ms: u64) {
        self.clock_ms = self.clock_ms.max(timestamp_ms);
        let horizon = self.clock_ms.saturating_sub(IDLE_EXPIRY_MS);
        while let Some(&(seen, id)) = self.by_age.first() {
            if seen >= horizon {
                break;
            }
            self.by_age.pop_first();
            self.producers.remove(&id);
        }
    }

    /// What to do with a batch of `count` records claiming `key`. Read-only.
    pub fn check(&self, key: ProducerKey, count: u32) -> Check {
        let ProducerKey {
            id,
            epoch,
            first_seq,
        } = key;
        let Some(p) = self.producers.get(&id) else {
            return Check::Refused(Refusal::UnknownProducer { id });
        };
        if epoch != p.epoch {
            return Check::Refused(Refusal::StaleEpoch {
                id,
                got: epoch,
                current: p.epoch,
            });
        }
        if first_seq == p.next_seq {
            return Check::New;
        }
        if first_seq > p.next_seq {
            return Check::Refused(Refusal::OutOfOrder {
                id,
                epoch,
                got: first_seq,
                expected: p.next_seq,
            });
        }
        match p.window.iter().find(|s| s.first_seq == first_seq) {
            Some(s) if s.count == count => Check::Duplicate {
                first_offset: s.first_offset,
            },
            Some(_) => Check::Refused(Refusal::Reused {
                id,
                epoch,
                got: first_seq,
            }),
            None if p.window.front().is_none_or(|s| first_seq < s.first_seq) => {
                Check::Refused(Refusal::TooOld {
                    id,
                    epoch,
                    got: first_seq,
                })
            }
            None => Check::Refused(Refusal::Reused {
                id,
                epoch,
                got: first_seq,
            }),
        }
    }

    /// Records a batch that [`Self::check`] found new, committed at `first_offset`.
    pub fn record(&mut self, key: ProducerKey, count: u32, first_offset: u64) {
        let clock = self.clock_ms;
        let Some(p) = self.producers.get_mut(&key.id) else {
            return;
        };
        p.window.push_back(Sent {
            first_seq: key.first_seq,
            count,
            first_offset,
        });
        if p.window.len() > WINDOW {
            p.window.pop_front();
        }
        p.next_seq = key.first_seq + u64::from(count);
        self.touch(key.id, clock);
    }

    /// Marks a producer as seen now (a duplicate keeps it alive too).
    pub fn seen(&mut self, id: u64) {
        self.touch(id, self.clock_ms);
    }

    fn touch(&mut self, id: u64, now: u64) {
        if let Some(p) = self.producers.get_mut(&id) {
            self.by_age.remove(&(p.last_seen_ms, id));
            p.last_seen_ms = now;
            self.by_age.insert((now, id));
        }
    }

    /// Applies an `InitProducer` entry at Raft index `index`: bumps the epoch of `requested` if
    /// it is known (and its epoch can grow), else creates producer `index`. Returns
    /// `(id, epoch)`.
    pub fn init(&mut self, index: u64, requested: u64) -> (u64, u32) {
        let now = self.clock_ms;
        if let Some(p) = self.producers.get_mut(&requested) {
            if let Some(epoch) = p.epoch.checked_add(1) {
                p.epoch = epoch;
                p.next_seq = 0;
                p.window.clear();
                self.touch(requested, now);
                return (requested, epoch);
            }
        }
        if let Some(old) = self.producers.get(&index) {
            // NB: cannot happen (an index creates at most one producer); kept consistent anyway.
            self.by_age.remove(&(old.last_seen_ms, index));
        }
        self.producers.insert(
            index,
            Producer {
                epoch: 0,
                next_seq: 0,
                last_seen_ms: now,
                window: VecDeque::new(),
            },
        );
        self.by_age.insert((now, index));
        while self.producers.len() > MAX_PRODUCERS {
            let Some((_, id)) = self.by_age.pop_first() else {
                break;
            };
            self.producers.remove(&id);
        }
        (index, 0)
    }
}

/// Raft indexes of applied entries whose records got no offsets (duplicates and refusals), as
/// known completely for every index from `from` on. An index rebuilt from the log skips them, and
/// starts no lower than `from`. An entry of several calls' parts (group commit) where only some
/// parts got no offsets is listed in `parts`, with the numbers of those parts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub from: u64,
    pub entries: BTreeSet<u64>,
    /// Raft index -> the parts (numbered from 0 in the entry) that got no offsets.
    #[serde(default)]
    pub parts: BTreeMap<u64, BTreeSet<u32>>,
}

impl Skipped {
    /// True when the entry at `index` got no offsets.
    pub fn contains(&self, index: u64) -> bool {
        self.entries.contains(&index)
    }

    /// The parts of the entry at `index` that got no offsets, when only some did not.
    pub fn parts_of(&self, index: u64) -> Option<&BTreeSet<u32>> {
        self.parts.get(&index)
    }

    /// Records that the entry at `index` got no offsets.
    pub fn insert(&mut self, index: u64) {
        self.entries.insert(index);
    }

    /// Records that these parts of the entry at `index` got no offsets (and the others did).
    pub fn insert_parts(&mut self, index: u64, parts: BTreeSet<u32>) {
        self.parts.insert(index, parts);
    }

    /// Forgets entries below `first` (no longer scanned).
    pub fn prune_below(&mut self, first: u64) {
        self.from = self.from.max(first);
        self.entries = self.entries.split_off(&self.from);
        self.parts = self.parts.split_off(&self.from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u64, epoch: u32, first_seq: u64) -> ProducerKey {
        ProducerKey {
            id,
            epoch,
            first_seq,
        }
    }

    /// Applies a batch as the state machine does; returns the offsets the caller gets.
    fn apply(t: &mut ProducerTable, next: &mut u64, k: ProducerKey, n: u32) -> Check {
        let c = t.check(k, n);
        match c {
            Check::New => {
                t.record(k, n, *next);
                *next += u64::from(n);
            }
            Check::Duplicate { .. } => t.seen(k.id),
            Check::Refused(_) => {}
        }
        c
    }

    #[test]
    fn retries_get_the_original_offsets_and_append_nothing() {
        let mut t = ProducerTable::default();
        let mut next = 100;
        assert_eq!(t.init(7, 0), (7, 0));
        assert_eq!(apply(&mut t, &mut next, key(7, 0, 0), 3), Check::New);
        assert_eq!(apply(&mut t, &mut next, key(7, 0, 3), 1), Check::New);
        assert_eq!(next, 104);
        assert_eq!(
            apply(&mut t, &mut next, key(7, 0, 0), 3),
            Check::Duplicate { first_offset: 100 }
        );
        assert_eq!(
            apply(&mut t, &mut next, key(7, 0, 3), 1),
            Check::Duplicate { first_offset: 103 }
        );
        assert_eq!(next, 104, "duplicates append nothing");
        assert_eq!(t.get(7).unwrap().next_seq, 4);
    }

    #[test]
    fn gaps_stale_epochs_unknown_ids_and_reuse_are_refused() {
        let mut t = ProducerTable::default();
        let mut next = 0;
        t.init(3, 0);
        apply(&mut t, &mut next, key(3, 0, 0), 2);
        assert_eq!(
            t.check(key(3, 0, 5), 1),
            Check::Refused(Refusal::OutOfOrder {
                id: 3,
                epoch: 0,
                got: 5,
                expected: 2
            })
        );
        assert_eq!(
            t.check(key(3, 0, 0), 1),
            Check::Refused(Refusal::Reused {
                id: 3,
                epoch: 0,
                got: 0
            })
        );
        assert_eq!(
            t.check(key(9, 0, 0), 1),
            Check::Refused(Refusal::UnknownProducer { id: 9 })
        );
        // Re-initialising bumps the epoch and fences the old one.
        assert_eq!(t.init(20, 3), (3, 1));
        assert_eq!(
            t.check(key(3, 0, 2), 1),
            Check::Refused(Refusal::StaleEpoch {
                id: 3,
                got: 0,
                current: 1
            })
        );
        assert_eq!(t.check(key(3, 1, 0), 1), Check::New);
        // An expired or unknown id asked for gets a new id.
        assert_eq!(t.init(21, 99), (21, 0));
    }

    #[test]
    fn the_window_is_bounded() {
        let mut t = ProducerTable::default();
        let mut next = 0;
        t.init(1, 0);
        for s in 0..(WINDOW as u64 + 2) {
            assert_eq!(apply(&mut t, &mut next, key(1, 0, s), 1), Check::New);
        }
        assert_eq!(t.get(1).unwrap().window.len(), WINDOW);
        // The two oldest fell out of the window; the newest five are still answered.
        for s in 0..2 {
            assert!(matches!(
                t.check(key(1, 0, s), 1),
                Check::Refused(Refusal::TooOld { .. })
            ));
        }
        for s in 2..(WINDOW as u64 + 2) {
            assert_eq!(
                t.check(key(1, 0, s), 1),
                Check::Duplicate { first_offset: s }
            );
        }
    }

    #[test]
    fn idle_producers_expire_by_log_time_only() {
        let mut t = ProducerTable::default();
        let mut next = 0;
        t.advance(1_000);
        t.init(1, 0);
        t.init(2, 0);
        t.advance(1_000 + IDLE_EXPIRY_MS / 2);
        // 2 is seen again; then a leader whose clock is behind does not move log time back.
        apply(&mut t, &mut next, key(2, 0, 0), 1);
        t.advance(5);
        assert_eq!(t.clock_ms(), 1_000 + IDLE_EXPIRY_MS / 2);
        t.advance(1_000 + IDLE_EXPIRY_MS);
        assert_eq!(t.len(), 2, "exactly at the horizon it is kept");
        t.advance(1_001 + IDLE_EXPIRY_MS);
        assert!(t.get(1).is_none(), "idle for longer than the expiry");
        assert!(t.get(2).is_some());
        assert_eq!(
            t.check(key(1, 0, 0), 1),
            Check::Refused(Refusal::UnknownProducer { id: 1 })
        );
    }

    #[test]
    fn serde_round_trip_keeps_state_and_rebuilds_the_age_index() {
        let mut t = ProducerTable::default();
        let mut next = 0;
        t.advance(10);
        t.init(4, 0);
        apply(&mut t, &mut next, key(4, 0, 0), 2);
        let json = serde_json::to_vec(&t).unwrap();
        let mut back: ProducerTable = serde_json::from_slice(&json).unwrap();
        back.reindex();
        assert_eq!(back, t);
        assert_eq!(
            back.check(key(4, 0, 0), 2),
            Check::Duplicate { first_offset: 0 }
        );
        back.advance(11 + IDLE_EXPIRY_MS);
        assert!(back.is_empty(), "the rebuilt age index expires it");
    }
}
