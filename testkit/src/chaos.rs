//! The fault campaign: producers that record every attempt, a seeded nemesis, and the figures
//! per fault type. `proglog-chaos` runs it; `make chaos SEED=n FAULTS=m` is the long form and
//! a short seeded run is a test of this crate.
//!
//! Producers talk to members directly (one connection per member, opened before any call, so a
//! member that cannot be reached is never sent anything), follow `proglog-leader` hints, and
//! retry each value until it is acknowledged. Every attempt is recorded with its outcome: `Ok`,
//! `Failed` (refused with `proglog-write-outcome: not-committed`) or `Unknown` (anything else
//! after the request left). After the last fault heals, every member's whole log is read and
//! checked against the attempts ([`crate::history::check`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use proglog_proto::v1 as pb;
use proglog_proto::v1::log_client::LogClient;
use tonic::transport::{Channel, Endpoint};

use crate::history::{Attempt, Outcome};

/// The kinds of fault the nemesis injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    KillLeader,
    KillFollower,
    PauseLeader,
    PauseFollower,
    PartitionLeader,
    PartitionFollower,
    KillMajority,
    RollingRestart,
    MembershipChange,
}

impl Fault {
    /// Every fault; the partitions need network namespaces.
    pub fn all(partitions: bool) -> Vec<Fault> {
        use Fault::*;
        let mut v = vec![
            KillLeader,
            KillFollower,
            PauseLeader,
            PauseFollower,
            KillMajority,
            RollingRestart,
            MembershipChange,
        ];
        if partitions {
            v.extend([PartitionLeader, PartitionFollower]);
        }
        v
    }
}

/// What the producers recorded.
#[derive(Debug, Default)]
pub struct Recorder {
    pub attempts: Mutex<Vec<Attempt>>,
    /// When each acknowledgement arrived.
    pub acks: Mutex<Vec<Instant>>,
}

impl Recorder {
    fn record(&self, value: &[u8], outcome: Outcome) {
        if matches!(outcome, Outcome::Ok(_)) {
            self.acks.lock().unwrap().push(Instant::now());
        }
        self.attempts.lock().unwrap().push(Attempt {
            value: value.to_vec(),
            outcome,
        });
    }

    /// Acknowledgements so far.
    pub fn acked(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    /// Time from `from` to the first ack after it, and the longest time without an ack in
    /// `[from, to]` (the edges count).
    pub fn window(&self, from: Instant, to: Instant) -> (Option<Duration>, Duration) {
        let mut acks: Vec<Instant> = self
            .acks
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|&t| t >= from && t <= to)
            .collect();
        acks.sort();
        let first = acks.first().map(|&t| t - from);
        let mut prev = from;
        let mut longest = Duration::ZERO;
        for t in acks.iter().copied().chain([to]) {
            longest = longest.max(t.saturating_duration_since(prev));
            prev = t;
        }
        (first, longest)
    }
}

fn outcome_of(s: &tonic::Status) -> Outcome {
    let not_committed = s
        .metadata()
        .get(proglog_proto::WRITE_OUTCOME_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        == Some(proglog_proto::NOT_COMMITTED);
    if not_committed {
        Outcome::Failed
    } else {
        Outcome::Unknown
    }
}

/// One producer: values `p<id>-<seq>`, each retried until acknowledged, until `stop`.
pub async fn produce(id: usize, addrs: Vec<String>, rec: Arc<Recorder>, stop: Arc<AtomicBool>) {
    let mut clients: HashMap<String, LogClient<Channel>> = HashMap::new();
    let mut current = id % addrs.len();
    let mut target: Option<String> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let value = format!("p{id}-{seq}").into_bytes();
        seq += 1;
        // NB: a value is retried until acknowledged; the campaign's end stops it.
        while !stop.load(Ordering::Relaxed) {
            let addr = target
                .take()
                .unwrap_or_else(|| addrs[current % addrs.len()].clone());
            let client = match clients.get(&addr) {
                Some(c) => Some(c.clone()),
                None => connect(&addr).await,
            };
            let Some(mut client) = client else {
                current += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            clients.insert(addr.clone(), client.clone());
            let req = pb::ProduceRequest {
                record: Some(pb::Record {
                    value: value.clone().into(),
                    ..Default::default()
                }),
                // NB: raw at-least-once produce (no producer id): the campaign counts duplicates.
                ..Default::default()
            };
            match tokio::time::timeout(Duration::from_secs(2), client.produce(req)).await {
                Ok(Ok(r)) => {
                    rec.record(&value, Outcome::Ok(r.into_inner().offset));
                    break;
                }
                Ok(Err(s)) => {
                    rec.record(&value, outcome_of(&s));
                    let hint = s
                        .metadata()
                        .get(proglog_proto::LEADER_METADATA_KEY)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    match hint {
                        Some(h) if h != addr => target = Some(h),
                        _ => {
                            clients.remove(&addr);
                            current += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                Err(_) => {
                    rec.record(&value, Outcome::Unknown);
                    clients.remove(&addr);
                    current += 1;
                }
            }
        }
    }
}

async fn connect(addr: &str) -> Option<LogClient<Channel>> {
    let ep = Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_millis(300));
    let ch = tokio::time::timeout(Duration::from_millis(500), ep.connect())
        .await
        .ok()?
        .ok()?;
    Some(LogClient::new(ch))
}

/// Reads member `addr`'s whole log, `[first, next)`, in one ConsumeStream.
pub async fn read_log(addr: &str, first: u64, next: u64) -> Result<Vec<(u64, Vec<u8>)>> {
    let mut c = LogClient::connect(format!("http://{addr}")).await?;
    let mut out = Vec::new();
    if next <= first {
        return Ok(out);
    }
    let mut s = c
        .consume_stream(pb::ConsumeRequest {
            offset: first,
            ..Default::default()
        })
        .await?
        .into_inner();
    while let Some(m) = s.message().await? {
        let Some(r) = m.record else { continue };
        out.push((r.offset, r.value.to_vec()));
        if r.offset + 1 >= next {
            break;
        }
    }
    Ok(out)
}
