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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// For each attempt (same index), the fault under way when it ended: its number from 1, or
    /// 0 between faults. Duplicates are attributed to faults with it.
    pub during: Mutex<Vec<usize>>,
    /// When each acknowledgement arrived.
    pub acks: Mutex<Vec<Instant>>,
    /// The fault under way now (set by the nemesis; 0: none).
    pub fault: AtomicUsize,
    /// Acknowledgements of a retry that the cluster recognised as already committed (the
    /// original offset came back, nothing was appended): duplicates the producer id prevented.
    pub deduplicated: AtomicUsize,
    /// Producer refusals that made a producer start a new epoch.
    pub renewals: AtomicUsize,
}

impl Recorder {
    fn record(&self, value: &[u8], outcome: Outcome, deduplicated: bool) {
        if matches!(outcome, Outcome::Ok(_)) {
            self.acks.lock().unwrap().push(Instant::now());
        }
        if deduplicated {
            self.deduplicated.fetch_add(1, Ordering::Relaxed);
        }
        let mut attempts = self.attempts.lock().unwrap();
        attempts.push(Attempt {
            value: value.to_vec(),
            outcome,
        });
        self.during
            .lock()
            .unwrap()
            .push(self.fault.load(Ordering::Relaxed));
    }

    /// The faults (numbers from 1; 0: between faults) under way when the attempts of `value`
    /// whose outcome was unknown ended: where a duplicate of `value` came from.
    pub fn unknown_during(&self, value: &[u8]) -> Vec<usize> {
        let attempts = self.attempts.lock().unwrap();
        let during = self.during.lock().unwrap();
        let mut out: Vec<usize> = attempts
            .iter()
            .zip(during.iter())
            .filter(|(a, _)| a.value == value && a.outcome == Outcome::Unknown)
            .map(|(_, &f)| f)
            .collect();
        out.dedup();
        out
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
    // NB: a producer refusal is decided in `apply` for this very attempt: it appended nothing.
    if not_committed || producer_error(s).is_some() {
        Outcome::Failed
    } else {
        Outcome::Unknown
    }
}

fn producer_error(s: &tonic::Status) -> Option<&str> {
    s.metadata()
        .get(proglog_proto::PRODUCER_ERROR_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
}

/// A campaign producer's connections and where it sends next: the member that answered last or
/// that a `proglog-leader` hint named, else the members in turn.
struct Route {
    addrs: Vec<String>,
    clients: HashMap<String, LogClient<Channel>>,
    current: usize,
    target: Option<String>,
}

/// One request a producer sends.
enum Call {
    Init(u64),
    Produce(pb::ProduceRequest),
}

/// What came back.
enum Reply {
    Init(pb::InitProducerResponse),
    Produced(pb::ProduceResponse),
}

impl Route {
    /// Sends `call` to the next member: `None` when no member could be reached (nothing was
    /// sent), else the answer (or `Err(None)` after the 2 s attempt timeout). Follows a
    /// `proglog-leader` hint on the next call.
    async fn send(&mut self, call: &Call) -> Option<Result<Reply, Option<tonic::Status>>> {
        let addr = self
            .target
            .take()
            .unwrap_or_else(|| self.addrs[self.current % self.addrs.len()].clone());
        let client = match self.clients.get(&addr) {
            Some(c) => Some(c.clone()),
            None => connect(&addr).await,
        };
        let Some(mut client) = client else {
            self.current += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            return None;
        };
        self.clients.insert(addr.clone(), client.clone());
        let fut = async {
            match call {
                Call::Init(id) => client
                    .init_producer(pb::InitProducerRequest { producer_id: *id })
                    .await
                    .map(|r| Reply::Init(r.into_inner())),
                Call::Produce(req) => client
                    .produce(req.clone())
                    .await
                    .map(|r| Reply::Produced(r.into_inner())),
            }
        };
        match tokio::time::timeout(Duration::from_secs(2), fut).await {
            Ok(Ok(r)) => {
                // NB: the member that answered leads (or did): the next call goes there too.
                self.target = Some(addr);
                Some(Ok(r))
            }
            Ok(Err(s)) => {
                let hint = s
                    .metadata()
                    .get(proglog_proto::LEADER_METADATA_KEY)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                match hint {
                    Some(h) if h != addr => self.target = Some(h),
                    _ if producer_error(&s).is_some() => {}
                    _ => {
                        self.clients.remove(&addr);
                        self.current += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                Some(Err(Some(s)))
            }
            Err(_) => {
                self.clients.remove(&addr);
                self.current += 1;
                Some(Err(None))
            }
        }
    }

    /// A producer id and a new epoch (`requested` = an id to start a new epoch of, or 0),
    /// retried until the cluster answers or `stop`.
    async fn init(&mut self, requested: u64, stop: &AtomicBool) -> Option<(u64, u32)> {
        while !stop.load(Ordering::Relaxed) {
            if let Some(Ok(Reply::Init(r))) = self.send(&Call::Init(requested)).await {
                return Some((r.producer_id, r.producer_epoch));
            }
        }
        None
    }
}

/// One producer: values `p<id>-<seq>`, each retried until acknowledged, until `stop`. With
/// `idempotent` every attempt of a value carries the producer id, epoch and the value's sequence
/// (the idempotent producer); without, it is a raw at-least-once produce.
pub async fn produce(
    id: usize,
    addrs: Vec<String>,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    idempotent: bool,
) {
    let mut route = Route {
        current: id % addrs.len(),
        addrs,
        clients: HashMap::new(),
        target: None,
    };
    // (producer id, epoch, next sequence) when idempotent.
    let mut lane: Option<(u64, u32, u64)> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let value = format!("p{id}-{n}").into_bytes();
        n += 1;
        // NB: a value is retried until acknowledged; the campaign's end stops it.
        while !stop.load(Ordering::Relaxed) {
            if idempotent && lane.is_none() {
                let Some((pid, epoch)) = route.init(0, &stop).await else {
                    return;
                };
                lane = Some((pid, epoch, 0));
            }
            let (producer_id, producer_epoch, sequence) = lane.unwrap_or_default();
            let req = pb::ProduceRequest {
                record: Some(pb::Record {
                    value: value.clone().into(),
                    ..Default::default()
                }),
                producer_id,
                producer_epoch,
                sequence,
            };
            match route.send(&Call::Produce(req)).await {
                None => {}
                Some(Ok(Reply::Produced(r))) => {
                    rec.record(&value, Outcome::Ok(r.offset), r.duplicate);
                    if let Some(l) = lane.as_mut() {
                        l.2 += 1;
                    }
                    break;
                }
                Some(Ok(Reply::Init(_))) => unreachable!("a Produce is answered by a Produce"),
                Some(Err(None)) => rec.record(&value, Outcome::Unknown, false),
                Some(Err(Some(s))) => {
                    rec.record(&value, outcome_of(&s), false);
                    if let (Some(reason), Some((pid, _, _))) = (producer_error(&s), lane) {
                        // NB: every refusal appended nothing; a new epoch of the same id sends
                        // the value again from sequence 0 (what the client does).
                        tracing::warn!(producer = pid, reason, "producer refusal: new epoch");
                        rec.renewals.fetch_add(1, Ordering::Relaxed);
                        let Some((pid, epoch)) = route.init(pid, &stop).await else {
                            return;
                        };
                        lane = Some((pid, epoch, 0));
                    }
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
