//! The [`Client`]: Produce, ProduceBatch, Consume, ConsumeStream and GetServers over the picker,
//! with retries. A refused write (`UNAVAILABLE` + `proglog-leader`) is retried at once at the
//! named leader; other retryable errors (no leader yet, member unreachable, timeouts) are retried
//! with back-off while the resolver looks again, within the policy's attempts and deadline.
//!
//! Produce is exactly once by default (the idempotent producer, [`crate::producer`]): every
//! attempt of a call carries the same producer id, epoch and sequence, so a retry of a record the
//! leader committed before its reply was lost gets the original offset. With
//! `ClientConfig::idempotent = false` (or against a cluster without `InitProducer`) delivery is
//! at least once: such a retry appends the value a second time. An acknowledged offset is never
//! lost either way.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use proglog_proto::v1 as pb;
use proglog_proto::v1::log_client::LogClient;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tracing::Instrument;

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::picker::{Counted, EndpointStats, Picker, Route};
use crate::producer::{renewable, Lane, Lanes};
use crate::resolver::{BootstrapConfig, BootstrapResolver, KubernetesConfig, KubernetesResolver};
use crate::resolver::{Members, Resolver};

/// A record read from the log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Record {
    /// Its offset in the log.
    pub offset: u64,
    /// The Raft term it was appended in.
    pub term: u64,
    /// Its value.
    #[serde(serialize_with = "value_as_text")]
    pub value: Bytes,
}

fn value_as_text<S: serde::Serializer>(v: &Bytes, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(v))
}

impl From<pb::Record> for Record {
    fn from(r: pb::Record) -> Self {
        Record {
            offset: r.offset,
            term: r.term,
            value: r.value,
        }
    }
}

/// A member as `GetServers` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Server {
    pub id: String,
    pub node_id: u64,
    pub rpc_addr: String,
    pub is_leader: bool,
    pub voter: bool,
}

impl From<pb::Server> for Server {
    fn from(s: pb::Server) -> Self {
        Server {
            id: s.id,
            node_id: s.node_id,
            rpc_addr: s.rpc_addr,
            is_leader: s.is_leader,
            voter: s.voter,
        }
    }
}

/// A ProgLog client (cheap to clone; clones share connections and counters).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    resolver: Arc<dyn Resolver>,
    picker: Picker,
    cfg: ClientConfig,
    lanes: Lanes,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("members", &self.members())
            .finish()
    }
}

impl Client {
    /// A client over any resolver.
    pub fn new(resolver: Arc<dyn Resolver>, cfg: ClientConfig) -> Result<Client> {
        cfg.validate()?;
        let picker = Picker::new(resolver.subscribe(), &cfg);
        Ok(Client {
            inner: Arc::new(Inner {
                resolver,
                picker,
                cfg,
                lanes: Lanes::default(),
            }),
        })
    }

    /// A client that discovers the cluster from seed addresses (`host:port`) with `GetServers`.
    pub async fn connect(seeds: impl IntoIterator<Item = impl Into<String>>) -> Result<Client> {
        let r = BootstrapResolver::start(BootstrapConfig::new(seeds)).await?;
        Client::new(Arc::new(r), ClientConfig::default())
    }

    /// A client for ProgLog `cluster` in `namespace`, discovered through its EndpointSlices.
    pub fn in_kubernetes(
        client: kube::Client,
        namespace: &str,
        cluster: &str,
        cfg: ClientConfig,
    ) -> Result<Client> {
        let r = KubernetesResolver::start(KubernetesConfig::new(client, namespace, cluster));
        Client::new(Arc::new(r), cfg)
    }

    /// The member set the client routes over now.
    pub fn members(&self) -> Members {
        self.inner.picker.members()
    }

    /// Per-member request and error counters since the client was made.
    pub fn stats(&self) -> Vec<EndpointStats> {
        self.inner.picker.stats()
    }

    /// Channels held open (one per member).
    pub fn channel_count(&self) -> usize {
        self.inner.picker.channel_count()
    }

    /// Waits until the resolver names a leader.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<()> {
        let mut rx = self.inner.resolver.subscribe();
        let found = matches!(
            tokio::time::timeout(timeout, rx.wait_for(|m| m.leader().is_some())).await,
            Ok(Ok(_))
        );
        match found {
            true => Ok(()),
            false if self.members().is_empty() => Err(Error::NoMembers),
            false => Err(Error::NoLeader),
        }
    }

    /// Appends one record; returns its offset once committed on a quorum.
    #[tracing::instrument(level = "debug", skip_all, fields(bytes = value.as_ref().len()))]
    pub async fn produce(&self, value: impl Into<Bytes> + AsRef<[u8]>) -> Result<u64> {
        let offsets = self.append(vec![value.into()]).await?;
        Ok(offsets[0])
    }

    /// Appends many records in one round trip; returns their (dense) offsets.
    #[tracing::instrument(level = "debug", skip_all, fields(records = values.len()))]
    pub async fn produce_batch(&self, values: Vec<Bytes>) -> Result<Vec<u64>> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        self.append(values).await
    }

    /// True when produce calls go through the idempotent producer (exactly once).
    pub fn is_idempotent(&self) -> bool {
        self.inner.cfg.idempotent && !self.inner.lanes.unsupported()
    }

    /// The producer lanes not in use now (id, epoch, next sequence); one per concurrent produce
    /// call the client has made. For diagnostics and tests.
    pub fn producer_lanes(&self) -> Vec<Lane> {
        self.inner.lanes.idle()
    }

    /// Sends records (one: Produce, more: ProduceBatch) under a producer lane when idempotent;
    /// see [`crate::producer`] for what happens to the lane.
    async fn append(&self, values: Vec<Bytes>) -> Result<Vec<u64>> {
        let records: Vec<pb::Record> = values
            .into_iter()
            .map(|value| pb::Record {
                value,
                ..Default::default()
            })
            .collect();
        let mut lane = match self.is_idempotent() {
            true => match self.inner.lanes.take() {
                Some(l) => Some(l),
                None => self.init_lane(0).await?,
            },
            false => None,
        };
        let mut renewals = 0;
        loop {
            let res = self.send(&records, lane).await;
            let Some(mut l) = lane else { return res };
            match res {
                Ok(offsets) => {
                    l.next_seq += records.len() as u64;
                    self.inner.lanes.put(l);
                    return Ok(offsets);
                }
                Err(e) => match e.producer_refusal() {
                    // Nothing was appended: a new epoch of the same id, the records again.
                    Some(reason) if renewable(reason) && renewals < 2 => {
                        renewals += 1;
                        tracing::debug!(producer = l.id, "{e}; starting a new producer epoch");
                        lane = self.init_lane(l.id).await?;
                    }
                    None if matches!(e, Error::InvalidArgument(_)) => {
                        self.inner.lanes.put(l);
                        return Err(e);
                    }
                    _ => return Err(e),
                },
            }
        }
    }

    /// One Produce or ProduceBatch call (with retries) carrying `lane`'s claim.
    async fn send(&self, records: &[pb::Record], lane: Option<Lane>) -> Result<Vec<u64>> {
        let (id, epoch, seq) = lane.map_or((0, 0, 0), |l| (l.id, l.epoch, l.next_seq));
        self.call(Route::Leader, Counted::Produce, None, |mut c| {
            let records = records.to_vec();
            async move {
                if records.len() == 1 {
                    let req = pb::ProduceRequest {
                        record: records.into_iter().next(),
                        producer_id: id,
                        producer_epoch: epoch,
                        sequence: seq,
                    };
                    c.produce(req).await.map(|r| vec![r.into_inner().offset])
                } else {
                    let req = pb::ProduceBatchRequest {
                        records,
                        producer_id: id,
                        producer_epoch: epoch,
                        first_sequence: seq,
                    };
                    c.produce_batch(req).await.map(|r| r.into_inner().offsets)
                }
            }
        })
        .await
    }

    /// A new producer lane from the cluster (`requested` = an id to start a new epoch of, or 0).
    /// `None` when the cluster has no `InitProducer` (an older version): at least once then.
    async fn init_lane(&self, requested: u64) -> Result<Option<Lane>> {
        let res = self
            .call(Route::Leader, Counted::Other, None, |mut c| async move {
                c.init_producer(pb::InitProducerRequest {
                    producer_id: requested,
                })
                .await
                .map(|r| r.into_inner())
            })
            .await;
        match res {
            Ok(r) => Ok(Some(Lane {
                id: r.producer_id,
                epoch: r.producer_epoch,
                next_seq: 0,
            })),
            Err(Error::Rpc {
                code: tonic::Code::Unimplemented,
                ..
            }) => {
                tracing::warn!("the cluster has no idempotent producer (InitProducer is unimplemented): produce is at least once");
                self.inner.lanes.set_unsupported();
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads the record at `offset` from a follower. When the follower has not applied it yet,
    /// asks the leader, so a record just produced can be read back at once.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn consume(&self, offset: u64) -> Result<Record> {
        let read = |route| {
            self.call(
                route,
                Counted::Consume,
                Some(offset),
                move |mut c| async move {
                    c.consume(pb::ConsumeRequest {
                        offset,
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().record)
                },
            )
        };
        let rec = match read(Route::Follower).await {
            Err(Error::OutOfRange { .. }) if self.members().leader().is_some() => {
                read(Route::Leader).await?
            }
            r => r?,
        };
        rec.map(Record::from).ok_or_else(|| Error::Rpc {
            addr: String::new(),
            code: tonic::Code::Internal,
            message: "the member answered without a record".into(),
            leader_hint: None,
        })
    }

    /// Streams records from `from` on and follows the tail. When the member serving the stream
    /// goes away, the stream resumes at another member after the last record delivered; it ends
    /// with an error only when retries run out or the error is not retryable.
    pub fn consume_stream(&self, from: u64) -> impl Stream<Item = Result<Record>> + Send + 'static {
        self.open_stream(from, Bound::Follow)
    }

    /// Streams records from `from` to the end of the log as the serving member holds it when
    /// the stream opens, or to `end` (exclusive) if that comes first, then ends. Resumes at
    /// another member like [`Client::consume_stream`]. A member older than this client
    /// ignores the bound and follows the tail.
    pub fn consume_to_end(
        &self,
        from: u64,
        end: Option<u64>,
    ) -> impl Stream<Item = Result<Record>> + Send + 'static {
        self.open_stream(from, Bound::End(end))
    }

    fn open_stream(
        &self,
        from: u64,
        bound: Bound,
    ) -> impl Stream<Item = Result<Record>> + Send + 'static {
        let (tx, rx) = mpsc::channel(1024);
        let this = self.clone();
        let span = tracing::debug_span!("consume_stream", from);
        tokio::spawn(async move { this.stream_into(from, bound, tx).await }.instrument(span));
        ReceiverStream::new(rx)
    }

    async fn stream_into(&self, mut next: u64, bound: Bound, tx: mpsc::Sender<Result<Record>>) {
        let mut attempt = 0u32;
        let mut since = Instant::now();
        loop {
            attempt += 1;
            let before = next;
            let err = match self.stream_once(&mut next, bound, &tx).await {
                None => return, // the receiver went away, or a bounded stream ended
                Some(e) => e,
            };
            if next != before {
                // Progress resets the retry budget: only a member that cannot serve at all counts.
                attempt = 1;
                since = Instant::now();
            }
            let policy = &self.inner.cfg.retry;
            let backoff = policy.backoff(attempt + 1);
            if !err.is_retryable()
                || attempt >= policy.max_attempts
                || since.elapsed() + backoff > policy.deadline
            {
                let _ = tx.send(Err(exhausted(err, attempt, since))).await;
                return;
            }
            tracing::debug!(
                attempt,
                "consume stream interrupted, resuming at {next}: {err}"
            );
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = tx.closed() => return,
            }
        }
    }

    /// Serves the stream from one member until it fails (`Some(error)`), the receiver goes
    /// away or a bounded stream ends (`None`). Advances `next` past every record delivered.
    async fn stream_once(
        &self,
        next: &mut u64,
        bound: Bound,
        tx: &mpsc::Sender<Result<Record>>,
    ) -> Option<Error> {
        if let Bound::End(Some(end)) = bound {
            if *next >= end {
                return None;
            }
        }
        let p = match self.inner.picker.pick(Route::Follower) {
            Ok(p) => p,
            Err(e) => return Some(e),
        };
        p.count_request(Counted::Consume);
        let mut client = LogClient::new(p.channel.clone());
        let open = client.consume_stream(pb::ConsumeRequest {
            offset: *next,
            to_end: matches!(bound, Bound::End(_)),
            end_offset: match bound {
                Bound::End(Some(end)) => end,
                _ => 0,
            },
        });
        let opened = tokio::select! {
            r = tokio::time::timeout(self.inner.cfg.request_timeout, open) => r,
            _ = tx.closed() => return None,
        };
        let mut stream = match opened {
            Ok(Ok(s)) => s.into_inner(),
            Ok(Err(s)) => {
                p.count_error();
                let e = Error::from_status(&p.addr, &s, Some(*next));
                self.on_failure(&p.addr, &e);
                return Some(e);
            }
            Err(_) => {
                p.count_error();
                return Some(timed_out(&p.addr));
            }
        };
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = tx.closed() => return None,
            };
            match msg {
                Ok(Some(r)) => {
                    let Some(r) = r.record else { continue };
                    *next = r.offset + 1;
                    if tx.send(Ok(r.into())).await.is_err() {
                        return None;
                    }
                }
                Ok(None) if matches!(bound, Bound::End(_)) => return None,
                Ok(None) => {
                    return Some(Error::Rpc {
                        addr: p.addr.clone(),
                        code: tonic::Code::Unavailable,
                        message: "the member ended the stream".into(),
                        leader_hint: None,
                    })
                }
                Err(s) => {
                    p.count_error();
                    let e = Error::from_status(&p.addr, &s, Some(*next));
                    self.on_failure(&p.addr, &e);
                    return Some(e);
                }
            }
        }
    }

    /// Lists the members as the cluster reports them (`GetServers` of any member).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn servers(&self) -> Result<Vec<Server>> {
        self.call(Route::Any, Counted::Other, None, |mut c| async move {
            c.get_servers(pb::GetServersRequest {})
                .await
                .map(|r| r.into_inner().servers)
        })
        .await
        .map(|s| s.into_iter().map(Server::from).collect())
    }

    /// What a failed attempt tells the picker and the resolver.
    fn on_failure(&self, addr: &str, e: &Error) {
        if let Some(hint) = e.leader_hint() {
            self.inner.picker.set_leader_hint(hint);
            return;
        }
        if let Error::Rpc {
            code: tonic::Code::Unavailable | tonic::Code::DeadlineExceeded,
            ..
        } = e
        {
            self.inner.picker.eject(addr);
            self.inner.resolver.resolve_now();
        }
    }

    /// Runs one call with the retry policy: picks a member per attempt by `route`.
    async fn call<T, F, Fut>(
        &self,
        route: Route,
        counted: Counted,
        offset: Option<u64>,
        mut f: F,
    ) -> Result<T>
    where
        F: FnMut(LogClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let policy = &self.inner.cfg.retry;
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let err = match self.inner.picker.pick(route) {
                Err(e) => e,
                Ok(p) => {
                    p.count_request(counted);
                    let client = LogClient::new(p.channel.clone());
                    let timeout = self.inner.cfg.request_timeout;
                    let once = async {
                        tokio::time::timeout(timeout, f(client))
                            .await
                            .map(|r| r.map_err(|s| Error::from_status(&p.addr, &s, offset)))
                    };
                    let res = match route {
                        // NB: a leader cut off from the network answers nothing until the
                        // request times out; once the resolver names another leader, the call
                        // goes there instead of waiting. A retried Produce is deduplicated by
                        // the idempotent producer (at least once without it, as on a timeout).
                        Route::Leader => tokio::select! {
                            r = once => r,
                            to = self.leader_moved(&p.addr) => {
                                let e = Error::Rpc {
                                    addr: p.addr.clone(),
                                    code: tonic::Code::Unavailable,
                                    message: format!("the leader moved to {to} while the call was in flight"),
                                    leader_hint: None,
                                };
                                tracing::debug!(attempt, "{e}");
                                Ok(Err(e))
                            }
                        },
                        _ => once.await,
                    };
                    match res {
                        Ok(Ok(v)) => {
                            if attempt > 1 {
                                tracing::debug!(attempt, addr = %p.addr, "succeeded after retries");
                            }
                            return Ok(v);
                        }
                        Ok(Err(e)) => {
                            p.count_error();
                            self.on_failure(&p.addr, &e);
                            e
                        }
                        Err(_) => {
                            p.count_error();
                            self.inner.picker.eject(&p.addr);
                            self.inner.resolver.resolve_now();
                            timed_out(&p.addr)
                        }
                    }
                }
            };
            // A member named the leader: go there at once; otherwise back off.
            let backoff = if err.leader_hint().is_some() && attempt == 1 {
                Duration::ZERO
            } else {
                policy.backoff(attempt + 1)
            };
            if !err.is_retryable()
                || attempt >= policy.max_attempts
                || start.elapsed() + backoff > policy.deadline
            {
                return Err(exhausted(err, attempt, start));
            }
            if matches!(err, Error::NoLeader | Error::NoMembers) {
                self.inner.resolver.resolve_now();
            }
            tracing::debug!(attempt, ?backoff, "retrying: {err}");
            // NB: a new member set (say, a new leader) ends the back-off early.
            let mut changed = self.inner.resolver.subscribe();
            changed.borrow_and_update();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = changed.changed() => {}
            }
        }
    }
}

impl Client {
    /// Resolves with the new leader's address once the resolver names a leader other than the
    /// one it named at the start and other than `addr` (where the call went); pends otherwise.
    /// While the call is unanswered for more than [`SLOW_LEADER`], asks the resolver to look
    /// again every [`SLOW_LEADER`]: the followers know of an election before the stream or the
    /// period the resolver follows tells of it.
    async fn leader_moved(&self, addr: &str) -> String {
        let mut members = self.inner.resolver.subscribe();
        let before = members.borrow_and_update().leader().map(|l| l.addr.clone());
        let mut nudge =
            tokio::time::interval_at(tokio::time::Instant::now() + SLOW_LEADER, SLOW_LEADER);
        loop {
            tokio::select! {
                changed = members.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                }
                _ = nudge.tick() => {
                    self.inner.resolver.resolve_now();
                    continue;
                }
            }
            if let Some(l) = members.borrow_and_update().leader() {
                if l.addr != addr && Some(&l.addr) != before.as_ref() {
                    return l.addr.clone();
                }
            }
        }
    }
}

/// A call to the leader unanswered this long makes the client ask the resolver to look again
/// (and again, as often) in case another member leads now.
const SLOW_LEADER: Duration = Duration::from_secs(1);

/// Where a consume stream ends.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// Never: it follows the tail.
    Follow,
    /// At the end of the log when the stream opens, or before this offset.
    End(Option<u64>),
}

fn timed_out(addr: &str) -> Error {
    Error::Rpc {
        addr: addr.to_string(),
        code: tonic::Code::DeadlineExceeded,
        message: "no answer within the request timeout".into(),
        leader_hint: None,
    }
}

/// The error a caller sees: the error itself after one attempt, else wrapped with the count.
fn exhausted(err: Error, attempts: u32, start: Instant) -> Error {
    if attempts <= 1 || !err.is_retryable() {
        err
    } else {
        Error::RetriesExhausted {
            attempts,
            elapsed: start.elapsed(),
            last: Box::new(err),
        }
    }
}
