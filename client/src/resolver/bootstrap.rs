//! The bootstrap resolver (clusters run without Kubernetes, or clients outside it): asks
//! `GetServers` of the seed addresses and of every member it has learnt of. It looks again on
//! [`Resolver::resolve_now`], every [`BootstrapConfig::period`], quickly while no leader is known,
//! and - when it has the admin token - on every message of the admin `WatchStatus` stream, so
//! that a leader change reaches the client within an election, not a period.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use proglog_proto::v1 as pb;
use proglog_proto::v1::cluster_client::ClusterClient;
use proglog_proto::v1::log_client::LogClient;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::{Endpoint, Members, Resolver};
use crate::conn::{lazy_channel, with_token};
use crate::error::{Error, Result};

/// Settings of the bootstrap resolver.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    /// `host:port` of one or more members. No default; at least one.
    pub seeds: Vec<String>,
    /// Admin token: when set, the resolver follows the `WatchStatus` stream. Default `None`.
    pub admin_token: Option<String>,
    /// Re-ask `GetServers` this often when all is well. Default 5 s.
    pub period: Duration,
    /// Re-ask this often while no leader is known or no member answers. Default 100 ms.
    pub fast_period: Duration,
    /// Timeout of one `GetServers` call (connecting included). Default 1 s.
    pub call_timeout: Duration,
    /// TLS to the members; `None` dials plaintext. Default `None`.
    pub tls: Option<proglog_tls::ClientTls>,
}

impl BootstrapConfig {
    /// Defaults with the given seeds.
    pub fn new(seeds: impl IntoIterator<Item = impl Into<String>>) -> Self {
        BootstrapConfig {
            seeds: seeds.into_iter().map(Into::into).collect(),
            admin_token: None,
            period: Duration::from_secs(5),
            fast_period: Duration::from_millis(100),
            call_timeout: Duration::from_secs(1),
            tls: None,
        }
    }
}

/// Resolves the member set with `GetServers` (see the module docs).
pub struct BootstrapResolver {
    tx: watch::Sender<Members>,
    notify: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for BootstrapResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapResolver")
            .field("members", &*self.tx.borrow())
            .finish()
    }
}

impl Drop for BootstrapResolver {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Resolver for BootstrapResolver {
    fn subscribe(&self) -> watch::Receiver<Members> {
        self.tx.subscribe()
    }

    fn resolve_now(&self) {
        self.notify.notify_one();
    }
}

/// What the resolver's tasks share.
struct Shared {
    cfg: BootstrapConfig,
    tx: watch::Sender<Members>,
    notify: Arc<Notify>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl BootstrapResolver {
    /// Starts resolving in the background. Returns once the first answer arrived or
    /// `call_timeout` passed (the set may then still be empty; it fills in later).
    pub async fn start(cfg: BootstrapConfig) -> Result<Self> {
        if cfg.seeds.is_empty() {
            return Err(Error::Config {
                field: "seeds",
                reason: "at least one member address is needed".into(),
            });
        }
        for s in &cfg.seeds {
            lazy_channel(
                s,
                cfg.call_timeout,
                Duration::from_secs(20),
                cfg.tls.as_ref(),
            )?;
        }
        let tx = watch::Sender::new(Members::default());
        let notify = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            cfg,
            tx: tx.clone(),
            notify: notify.clone(),
            channels: Mutex::new(HashMap::new()),
        });
        let mut rx = tx.subscribe();
        let mut tasks = vec![tokio::spawn(poll(shared.clone()))];
        // NB: under TLS the admin API takes only the operator's certificate: following
        // WatchStatus is the token holder's (plaintext) privilege.
        if shared.cfg.admin_token.is_some() && shared.cfg.tls.is_none() {
            tasks.push(tokio::spawn(follow_status(shared.clone())));
        }
        let wait = shared.cfg.call_timeout * 2;
        let _ = tokio::time::timeout(wait, rx.wait_for(|m| m.leader().is_some())).await;
        Ok(BootstrapResolver { tx, notify, tasks })
    }
}

impl Shared {
    fn channel(&self, addr: &str) -> Option<Channel> {
        let mut chans = self.channels.lock().unwrap();
        if let Some(c) = chans.get(addr) {
            return Some(c.clone());
        }
        let c = lazy_channel(
            addr,
            self.cfg.call_timeout,
            Duration::from_secs(20),
            self.cfg.tls.as_ref(),
        )
        .ok()?;
        chans.insert(addr.to_string(), c.clone());
        Some(c)
    }

    /// Addresses to ask: the leader, then the other known members, then the seeds.
    fn candidates(&self) -> Vec<String> {
        let cur = self.tx.borrow().clone();
        let mut out: Vec<String> = cur.leader().map(|l| l.addr.clone()).into_iter().collect();
        for a in cur
            .endpoints
            .iter()
            .map(|e| &e.addr)
            .chain(self.cfg.seeds.iter())
        {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    /// Publishes `m` when it differs from what subscribers have. Never publishes an empty set.
    fn publish(&self, m: Members) {
        if m.is_empty() {
            return;
        }
        self.tx.send_if_modified(|cur| {
            if *cur == m {
                false
            } else {
                tracing::debug!(members = ?m, "member set changed");
                *cur = m;
                true
            }
        });
    }

    /// Asks every candidate at once; the first answer that names a leader wins, else any answer.
    /// NB: concurrently, so a dead member (whose call may hang until the timeout) delays nothing.
    async fn fetch(&self) -> Option<Members> {
        let mut calls: FuturesUnordered<_> = self
            .candidates()
            .into_iter()
            .filter_map(|addr| {
                let ch = self.channel(&addr)?;
                let timeout = self.cfg.call_timeout;
                Some(async move {
                    let mut client = LogClient::new(ch);
                    let call = client.get_servers(pb::GetServersRequest {});
                    match tokio::time::timeout(timeout, call).await {
                        Ok(Ok(r)) => Some(from_servers(r.into_inner().servers)),
                        Ok(Err(s)) => {
                            tracing::debug!(%addr, "GetServers: {s}");
                            None
                        }
                        Err(_) => {
                            tracing::debug!(%addr, "GetServers timed out");
                            None
                        }
                    }
                })
            })
            .collect();
        let mut fallback = None;
        while let Some(answer) = calls.next().await {
            match answer {
                Some(m) if m.leader().is_some() => return Some(m),
                Some(m) => fallback = Some(m),
                None => {}
            }
        }
        fallback
    }
}

/// The member set of a `GetServers` answer: voters are ready, learners are not.
pub fn from_servers(servers: Vec<pb::Server>) -> Members {
    Members::new(
        servers
            .into_iter()
            .filter(|s| !s.rpc_addr.is_empty())
            .map(|s| Endpoint {
                addr: s.rpc_addr,
                name: s.id,
                is_leader: s.is_leader,
                ready: s.voter,
                server_name: None,
            })
            .collect(),
    )
}

/// The member set of an admin `ClusterStatus`.
pub fn from_status(st: &pb::ClusterStatus) -> Members {
    let leader = st.leader_id.filter(|&l| l != 0);
    Members::new(
        st.members
            .iter()
            .filter(|m| !m.addr.is_empty())
            .map(|m| Endpoint {
                addr: m.addr.clone(),
                name: if m.name.is_empty() {
                    m.node_id.to_string()
                } else {
                    m.name.clone()
                },
                is_leader: Some(m.node_id) == leader,
                ready: m.voter,
                server_name: None,
            })
            .collect(),
    )
}

async fn poll(shared: Arc<Shared>) {
    let mut last_fetch = tokio::time::Instant::now() - shared.cfg.period;
    loop {
        // NB: a burst of failing calls asks for many refreshes; one per fast period is enough.
        let since = last_fetch.elapsed();
        if since < shared.cfg.fast_period / 2 {
            tokio::time::sleep(shared.cfg.fast_period / 2 - since).await;
        }
        last_fetch = tokio::time::Instant::now();
        let got = shared.fetch().await;
        let healthy = got.as_ref().is_some_and(|m| m.leader().is_some());
        if let Some(m) = got {
            shared.publish(m);
        }
        let wait = if healthy {
            shared.cfg.period
        } else {
            shared.cfg.fast_period
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.notify.notified() => {}
        }
    }
}

/// Follows `WatchStatus` on one member at a time; each message is a fresh member set.
async fn follow_status(shared: Arc<Shared>) {
    let token = shared.cfg.admin_token.clone().unwrap_or_default();
    let mut i = 0usize;
    loop {
        let candidates = shared.candidates();
        let addr = candidates[i % candidates.len()].clone();
        i += 1;
        match follow_one(&shared, &addr, &token).await {
            Err(e @ Error::Unauthenticated(_)) => {
                // NB: retrying cannot fix a bad token; polling GetServers carries on alone.
                tracing::warn!(%addr, "not following WatchStatus: {e}");
                return;
            }
            Err(e) => tracing::debug!(%addr, "WatchStatus: {e}"),
            Ok(()) => {}
        }
        // The member went away or refused: look for the set again and try the next member.
        shared.notify.notify_one();
        tokio::time::sleep(shared.cfg.fast_period).await;
    }
}

async fn follow_one(shared: &Shared, addr: &str, token: &str) -> Result<()> {
    let ch = shared.channel(addr).ok_or(Error::BadAddress {
        addr: addr.into(),
        reason: "cannot dial".into(),
    })?;
    let mut client = ClusterClient::new(ch);
    let req = with_token(pb::StatusRequest {}, token)?;
    let mut stream = tokio::time::timeout(shared.cfg.call_timeout, client.watch_status(req))
        .await
        .map_err(|_| Error::NoMembers)?
        .map_err(|s| Error::from_status(addr, &s, None))?
        .into_inner();
    while let Some(st) = stream
        .message()
        .await
        .map_err(|s| Error::from_status(addr, &s, None))?
    {
        let m = from_status(&st);
        if m.leader().is_some() {
            shared.publish(m);
        } else {
            // An election is running: mark the old leader as not leading, keep the rest.
            shared.tx.send_if_modified(|cur| {
                let had = cur.leader().is_some();
                for e in &mut cur.endpoints {
                    e.is_leader = false;
                }
                had
            });
            shared.notify.notify_one();
        }
    }
    Ok(())
}
