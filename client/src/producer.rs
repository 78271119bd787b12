//! The client side of the idempotent producer: a pool of producer *lanes*. A lane is one
//! producer id and epoch from the cluster (`InitProducer`) and its next sequence number. Each
//! Produce or ProduceBatch call takes a lane for its whole life, so a lane has one call in
//! flight at a time: every attempt of that call (the retries) carries the same sequence, and the
//! cluster answers a retry of a committed record with the original offset. Concurrent calls take
//! different lanes (one per concurrent caller, created on demand and reused after).
//!
//! What happens to a lane after its call:
//! - success: its sequence moves past the records and it goes back to the pool;
//! - a refusal that appended nothing (`unknown-producer`: forgotten after being idle;
//!   `stale-epoch`; `out-of-order`): the caller starts a new epoch of the same id
//!   ([`Lanes::renew`]) and sends the records again under it;
//! - `INVALID_ARGUMENT` before the log (say, a record over the size limit): back to the pool,
//!   unchanged;
//! - anything else (retries ran out, so the records may or may not have committed): the lane is
//!   dropped. Its next sequence would be ambiguous; the cluster forgets it after its idle expiry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// One producer id, epoch and next sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane {
    pub id: u64,
    pub epoch: u32,
    pub next_seq: u64,
}

/// The idle lanes of a client.
#[derive(Debug, Default)]
pub struct Lanes {
    idle: Mutex<Vec<Lane>>,
    /// Set when the cluster does not know `InitProducer` (an older version): at least once.
    unsupported: AtomicBool,
}

impl Lanes {
    /// An idle lane, if there is one.
    pub fn take(&self) -> Option<Lane> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// Returns a lane after its call.
    pub fn put(&self, lane: Lane) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(lane);
    }

    /// The idle lanes.
    pub fn idle(&self) -> Vec<Lane> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// True when the cluster has no idempotent producer.
    pub fn unsupported(&self) -> bool {
        self.unsupported.load(Ordering::Relaxed)
    }

    /// Remembers that the cluster has no idempotent producer.
    pub fn set_unsupported(&self) {
        self.unsupported.store(true, Ordering::Relaxed);
    }
}

/// Whether a refusal with this `proglog-producer-error` reason is recovered by a new epoch
/// (nothing was appended and the sequence state of the lane is what the cluster disagrees with).
pub fn renewable(reason: &str) -> bool {
    matches!(reason, "unknown-producer" | "stale-epoch" | "out-of-order")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_reused_last_in_first_out() {
        let l = Lanes::default();
        assert_eq!(l.take(), None);
        let a = Lane {
            id: 5,
            epoch: 0,
            next_seq: 3,
        };
        l.put(a);
        assert_eq!(l.idle(), vec![a]);
        assert_eq!(l.take(), Some(a));
        assert!(renewable("out-of-order") && !renewable("too-old"));
    }
}
