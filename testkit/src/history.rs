//! The history checker: what producers attempted (each attempt acknowledged, definitely not
//! committed, or of unknown outcome) against what every member's whole log holds after the faults
//! healed. Pure: it reads values, it does no I/O.
//!
//! Checks, each a [`Violation`] when broken:
//! - every member's offsets are dense from its first offset, and every member holds the same
//!   records at the same offsets (same length too: the history is taken after healing);
//! - every acknowledged value is at its acknowledged offset (on every member);
//! - no offset was acknowledged for two values;
//! - every value in the log was sent by some attempt;
//! - a value occurs at most as often as the attempts that may have written it (acknowledged or
//!   unknown); a value whose every attempt was refused as not committed never occurs.
//!
//! Duplicates (a value at more than one offset, possible when an attempt of unknown outcome
//! committed and was retried) are not violations; they are counted and attributed to the
//! unknown attempts of that value.

use std::collections::{BTreeMap, HashMap};

/// What became of one produce attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Outcome {
    /// Acknowledged at this offset.
    Ok(u64),
    /// Refused before it was proposed (`proglog-write-outcome: not-committed`, or the member was
    /// unreachable before the call started): it never commits.
    Failed,
    /// Anything else (timeout, connection lost mid-call, proposed but not seen to commit).
    Unknown,
}

/// One produce attempt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attempt {
    pub value: Vec<u8>,
    pub outcome: Outcome,
}

/// One member's whole log: its first offset and the values from there on, in offset order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberLog {
    pub member: String,
    /// `(offset, value)` in the order the member returned them.
    pub records: Vec<(u64, Vec<u8>)>,
}

/// A broken guarantee.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Violation {
    /// The member's offsets skip or repeat here.
    NotDense { member: String, offset: u64 },
    /// The member differs from the first member here (another value, or one log is longer).
    Diverged { member: String, offset: u64 },
    /// An acknowledged value is not at its offset.
    Lost { offset: u64, value: String },
    /// Two values were acknowledged at the same offset.
    AckedTwice { offset: u64 },
    /// A value in the log that no attempt sent.
    NeverSent { offset: u64, value: String },
    /// A value occurs more often than attempts that may have written it (a refused write
    /// committed).
    RefusedCommitted {
        value: String,
        occurrences: usize,
        possible: usize,
    },
}

/// What the checker found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub attempts: usize,
    pub acked: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Records in the (first member's) log.
    pub records: usize,
    /// Unknown attempts that committed (their value is in the log without an acknowledgement
    /// at that offset).
    pub unknown_committed: usize,
    /// Extra copies of values, each attributed to the value's unknown attempts:
    /// `(value, offsets, unknown attempts of it)`.
    pub duplicates: Vec<(String, Vec<u64>, usize)>,
    pub violations: Vec<Violation>,
}

impl Report {
    /// True when no guarantee was broken.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// Checks `attempts` against the logs of every member (see the module docs).
pub fn check(attempts: &[Attempt], logs: &[MemberLog]) -> Report {
    let mut r = Report {
        attempts: attempts.len(),
        ..Default::default()
    };
    let mut per_value: HashMap<&[u8], (usize, usize, usize)> = HashMap::new(); // ok, failed, unknown
    let mut acked_at: BTreeMap<u64, &[u8]> = BTreeMap::new();
    for a in attempts {
        let e = per_value.entry(&a.value).or_default();
        match a.outcome {
            Outcome::Ok(off) => {
                r.acked += 1;
                e.0 += 1;
                if let Some(prev) = acked_at.insert(off, &a.value) {
                    if prev != a.value.as_slice() {
                        r.violations.push(Violation::AckedTwice { offset: off });
                    }
                }
            }
            Outcome::Failed => {
                r.failed += 1;
                e.1 += 1;
            }
            Outcome::Unknown => {
                r.unknown += 1;
                e.2 += 1;
            }
        }
    }

    for log in logs {
        let mut expect = log.records.first().map(|(o, _)| *o);
        for (off, _) in &log.records {
            if Some(*off) != expect {
                r.violations.push(Violation::NotDense {
                    member: log.member.clone(),
                    offset: *off,
                });
                break;
            }
            expect = Some(off + 1);
        }
    }
    let Some(reference) = logs.first() else {
        return r;
    };
    r.records = reference.records.len();
    let by_offset: BTreeMap<u64, &[u8]> = reference
        .records
        .iter()
        .map(|(o, v)| (*o, v.as_slice()))
        .collect();
    for log in &logs[1..] {
        let theirs: BTreeMap<u64, &[u8]> = log
            .records
            .iter()
            .map(|(o, v)| (*o, v.as_slice()))
            .collect();
        let first_diff = by_offset
            .keys()
            .chain(theirs.keys())
            .filter(|o| by_offset.get(o) != theirs.get(o))
            .min();
        if let Some(&offset) = first_diff {
            r.violations.push(Violation::Diverged {
                member: log.member.clone(),
                offset,
            });
        }
    }

    for (&off, &v) in &acked_at {
        for log in logs {
            let found = log.records.iter().find(|(o, _)| *o == off);
            if found.map(|(_, x)| x.as_slice()) != Some(v) {
                r.violations.push(Violation::Lost {
                    offset: off,
                    value: text(v),
                });
                break;
            }
        }
    }

    let mut occurrences: BTreeMap<&[u8], Vec<u64>> = BTreeMap::new();
    for (&off, &v) in &by_offset {
        occurrences.entry(v).or_default().push(off);
    }
    for (v, offs) in &occurrences {
        let Some(&(ok, _failed, unknown)) = per_value.get(v) else {
            for &offset in offs {
                r.violations.push(Violation::NeverSent {
                    offset,
                    value: text(v),
                });
            }
            continue;
        };
        let possible = ok + unknown;
        if offs.len() > possible {
            r.violations.push(Violation::RefusedCommitted {
                value: text(v),
                occurrences: offs.len(),
                possible,
            });
        }
        let unacked = offs
            .iter()
            .filter(|o| acked_at.get(o).is_none_or(|a| a != v))
            .count();
        r.unknown_committed += unacked.min(unknown);
        if offs.len() > 1 {
            r.duplicates.push((text(v), offs.clone(), unknown));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: &str, off: u64) -> Attempt {
        Attempt {
            value: v.into(),
            outcome: Outcome::Ok(off),
        }
    }
    fn failed(v: &str) -> Attempt {
        Attempt {
            value: v.into(),
            outcome: Outcome::Failed,
        }
    }
    fn unknown(v: &str) -> Attempt {
        Attempt {
            value: v.into(),
            outcome: Outcome::Unknown,
        }
    }
    fn log(member: &str, values: &[&str]) -> MemberLog {
        MemberLog {
            member: member.into(),
            records: values
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u64, v.as_bytes().to_vec()))
                .collect(),
        }
    }
    fn three(values: &[&str]) -> Vec<MemberLog> {
        ["m1", "m2", "m3"].iter().map(|m| log(m, values)).collect()
    }

    /// A clean history: acked, refused, unknown that committed, unknown that did not.
    fn clean() -> (Vec<Attempt>, Vec<MemberLog>) {
        let attempts = vec![
            ok("a", 0),
            failed("b"),
            unknown("c"),
            ok("c", 2),
            ok("d", 3),
            unknown("e"),
        ];
        (attempts, three(&["a", "c", "c", "d"]))
    }

    #[test]
    fn a_clean_history_passes_and_counts_duplicates() {
        let (a, l) = clean();
        let r = check(&a, &l);
        assert!(r.ok(), "{:?}", r.violations);
        assert_eq!((r.acked, r.failed, r.unknown, r.records), (3, 1, 2, 4));
        assert_eq!(r.duplicates, vec![("c".to_string(), vec![1, 2], 1)]);
        assert_eq!(r.unknown_committed, 1);
    }

    #[test]
    fn a_lost_acknowledged_record_is_caught() {
        let (a, _) = clean();
        let r = check(&a, &three(&["a", "c", "c"]));
        assert!(r.violations.contains(&Violation::Lost {
            offset: 3,
            value: "d".into()
        }));
    }

    #[test]
    fn an_acknowledged_record_at_another_offset_is_caught() {
        let (a, _) = clean();
        let r = check(&a, &three(&["a", "c", "d", "c"]));
        assert!(r
            .violations
            .iter()
            .any(|v| matches!(v, Violation::Lost { offset: 2, .. })));
    }

    #[test]
    fn a_gap_in_the_offsets_is_caught() {
        let (a, mut l) = clean();
        l[1].records.remove(2);
        let r = check(&a, &l);
        assert!(r.violations.contains(&Violation::NotDense {
            member: "m2".into(),
            offset: 3
        }));
    }

    #[test]
    fn members_that_diverge_are_caught() {
        let (a, mut l) = clean();
        l[2].records[1].1 = b"a".to_vec();
        let r = check(&a, &l);
        assert!(r.violations.contains(&Violation::Diverged {
            member: "m3".into(),
            offset: 1
        }));
        // A member that is shorter after healing diverges too.
        let (a, mut l) = clean();
        l[1].records.pop();
        let r = check(&a, &l);
        assert!(r.violations.contains(&Violation::Diverged {
            member: "m2".into(),
            offset: 3
        }));
    }

    #[test]
    fn a_value_never_sent_is_caught() {
        let (a, _) = clean();
        let r = check(&a, &three(&["a", "c", "c", "d", "zzz"]));
        assert!(r.violations.contains(&Violation::NeverSent {
            offset: 4,
            value: "zzz".into()
        }));
    }

    #[test]
    fn a_refused_write_that_committed_is_caught() {
        let (a, _) = clean();
        let r = check(&a, &three(&["a", "c", "c", "d", "b"]));
        assert!(r.violations.contains(&Violation::RefusedCommitted {
            value: "b".into(),
            occurrences: 1,
            possible: 0
        }));
        // More copies than attempts that could have written them.
        let r = check(&a, &three(&["a", "c", "c", "d", "c"]));
        assert!(r
            .violations
            .iter()
            .any(|v| matches!(v, Violation::RefusedCommitted { occurrences: 3, .. })));
    }

    #[test]
    fn one_offset_acknowledged_twice_is_caught() {
        let (mut a, l) = clean();
        a.push(ok("x", 0));
        let r = check(&a, &l);
        assert!(r.violations.contains(&Violation::AckedTwice { offset: 0 }));
    }
}
