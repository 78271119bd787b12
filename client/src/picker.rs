//! The picker: routes each call by what it does. Writes (Produce) go to the leader - the one the
//! resolver names, or the one a follower just named in `proglog-leader` metadata, until the
//! resolver publishes again. Reads (Consume) go round robin over the ready followers (the leader
//! when there are none), passing over members whose connection just failed. It keeps one
//! long-lived lazy channel per member across resolver updates, so an unchanged set causes no
//! reconnects, and counts requests and errors per member.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tonic::transport::Channel;

use crate::config::ClientConfig;
use crate::conn::lazy_channel;
use crate::error::{Error, Result};
use crate::resolver::Members;

/// What a call does, which decides where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Produce: the leader.
    Leader,
    /// Consume: a ready follower, round robin.
    Follower,
    /// Anything any member can answer (GetServers): like `Follower`, falling back to any member.
    Any,
}

/// Where a read may go, best first: ready followers that are not ejected; else the leader (not
/// ejected); else any ready follower; else (for `Any`, or when a leader exists) any member.
fn read_pool<'a>(
    members: &'a Members,
    ejected: &HashMap<String, Instant>,
    route: Route,
) -> Vec<&'a str> {
    let followers: Vec<&str> = members.ready_followers().map(|e| e.addr.as_str()).collect();
    let healthy: Vec<&str> = followers
        .iter()
        .copied()
        .filter(|a| !ejected.contains_key(*a))
        .collect();
    if !healthy.is_empty() {
        return healthy;
    }
    let leader = members.leader().map(|l| l.addr.as_str());
    if let Some(l) = leader.filter(|l| !ejected.contains_key(*l)) {
        return vec![l];
    }
    if !followers.is_empty() {
        return followers;
    }
    if route == Route::Any || leader.is_some() {
        return members.endpoints.iter().map(|e| e.addr.as_str()).collect();
    }
    Vec::new()
}

/// The address to dial for the leader a member named in `proglog-leader` metadata:
/// - the member with exactly that address (members found by `GetServers` advertise it);
/// - else the member whose name is the hint's first DNS label: under the operator, members
///   advertise `<pod>.<name>-members.<ns>.svc.<domain>:<port>` while the Kubernetes resolver
///   lists pod IPs named by pod, and a client outside the cluster cannot resolve the DNS name;
/// - else, when every known member is an IP address and the hint is a DNS name, nothing: the
///   resolver dials by IP and will publish the new leader (dialling a name it does not list would
///   only fail outside the cluster);
/// - else the hint itself (a member the resolver has not found yet).
pub fn match_hint(members: &Members, hint: &str) -> Option<String> {
    if members.endpoints.iter().any(|e| e.addr == hint) {
        return Some(hint.to_string());
    }
    let host = hint.rsplit_once(':').map_or(hint, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let is_ip = |h: &str| h.parse::<std::net::IpAddr>().is_ok();
    if !is_ip(host) {
        let label = host.split('.').next().unwrap_or_default();
        if let Some(e) = members
            .endpoints
            .iter()
            .find(|e| !label.is_empty() && e.name == label)
        {
            return Some(e.addr.clone());
        }
        let all_ips = !members.is_empty()
            && members.endpoints.iter().all(|e| {
                let h = e.addr.rsplit_once(':').map_or(e.addr.as_str(), |(h, _)| h);
                is_ip(h.trim_start_matches('[').trim_end_matches(']'))
            });
        if all_ips {
            return None;
        }
    }
    Some(hint.to_string())
}

/// Per-member counters.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    produces: AtomicU64,
    consumes: AtomicU64,
}

/// A snapshot of one member's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EndpointStats {
    /// The member's address.
    pub addr: String,
    /// Attempts sent to it (every kind of call).
    pub requests: u64,
    /// Attempts that failed (any error, including refusals like "not the leader").
    pub errors: u64,
    /// Produce and ProduceBatch attempts.
    pub produces: u64,
    /// Consume attempts and ConsumeStream opens.
    pub consumes: u64,
}

/// A chosen member for one attempt.
#[derive(Clone)]
pub struct Pick {
    pub addr: String,
    pub channel: Channel,
    counters: Arc<Counters>,
}

/// What an attempt counts as in [`EndpointStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Produce and ProduceBatch.
    Produce,
    /// Consume and ConsumeStream opens.
    Consume,
    /// Anything else (GetServers, InitProducer): a request only.
    Other,
}

impl Pick {
    /// Counts an attempt.
    pub fn count_request(&self, what: Counted) {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        match what {
            Counted::Produce => self.counters.produces.fetch_add(1, Ordering::Relaxed),
            Counted::Consume => self.counters.consumes.fetch_add(1, Ordering::Relaxed),
            Counted::Other => 0,
        };
    }

    /// Counts a failed attempt.
    pub fn count_error(&self) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
}

struct State {
    members: Members,
    /// By address: the name the channel verifies the member under, and the channel.
    channels: HashMap<String, (Option<String>, Channel)>,
    /// A leader named by a member after the resolver's last update.
    hint: Option<String>,
    ejected: HashMap<String, Instant>,
}

/// Routes calls to members (see the module docs).
pub struct Picker {
    rx: Mutex<watch::Receiver<Members>>,
    state: Mutex<State>,
    counters: Mutex<BTreeMap<String, Arc<Counters>>>,
    next: AtomicUsize,
    connect_timeout: Duration,
    keep_alive: Duration,
    tls: Option<proglog_tls::ClientTls>,
    eject_for: Duration,
}

impl Picker {
    /// A picker over the sets `rx` publishes.
    pub fn new(rx: watch::Receiver<Members>, cfg: &ClientConfig) -> Self {
        Picker {
            rx: Mutex::new(rx),
            state: Mutex::new(State {
                members: Members::default(),
                channels: HashMap::new(),
                hint: None,
                ejected: HashMap::new(),
            }),
            counters: Mutex::new(BTreeMap::new()),
            next: AtomicUsize::new(0),
            connect_timeout: cfg.connect_timeout,
            keep_alive: cfg.keep_alive,
            tls: cfg.tls.clone(),
            eject_for: cfg.eject_for,
        }
    }

    /// Takes in the resolver's latest set: new members get a channel, gone members lose theirs,
    /// unchanged members keep theirs.
    fn sync(&self) {
        let mut rx = self.rx.lock().unwrap();
        if !rx.has_changed().unwrap_or(false) && !self.state.lock().unwrap().members.is_empty() {
            return;
        }
        let members = rx.borrow_and_update().clone();
        drop(rx);
        let mut st = self.state.lock().unwrap();
        if st.members == members {
            return;
        }
        // NB: a channel is kept only while the same address is verified under the same name (a
        // pod IP taken over by another member gets a channel of its own).
        st.channels.retain(|addr, (name, _)| {
            members
                .endpoints
                .iter()
                .any(|e| &e.addr == addr && &e.server_name == name)
        });
        st.hint = None;
        st.members = members;
    }

    /// The member set the picker routes over now.
    pub fn members(&self) -> Members {
        self.sync();
        self.state.lock().unwrap().members.clone()
    }

    /// Remembers the leader a member named; used until the resolver publishes again. The hint is
    /// matched against the member set first (see [`match_hint`]), so that a leader advertised by
    /// a DNS name the client cannot resolve is dialled at the address the resolver found.
    pub fn set_leader_hint(&self, addr: &str) {
        self.sync();
        let mut st = self.state.lock().unwrap();
        st.hint = match_hint(&st.members, addr);
        if st.hint.is_none() {
            tracing::debug!(
                hint = addr,
                "leader hint names no known member; waiting for the resolver"
            );
        }
    }

    /// Passes over `addr` for reads for a while (its connection failed), and forgets it as the
    /// hinted leader.
    pub fn eject(&self, addr: &str) {
        let until = Instant::now() + self.eject_for;
        let mut st = self.state.lock().unwrap();
        st.ejected.insert(addr.to_string(), until);
        if st.hint.as_deref() == Some(addr) {
            st.hint = None; // the named leader did not answer either
        }
    }

    /// Chooses the member for one attempt.
    pub fn pick(&self, route: Route) -> Result<Pick> {
        self.sync();
        let mut st = self.state.lock().unwrap();
        let now = Instant::now();
        st.ejected.retain(|_, until| *until > now);
        let addr = match route {
            Route::Leader => st
                .hint
                .clone()
                .or_else(|| st.members.leader().map(|l| l.addr.clone()))
                .ok_or(if st.members.is_empty() {
                    Error::NoMembers
                } else {
                    Error::NoLeader
                })?,
            Route::Follower | Route::Any => {
                let pool = read_pool(&st.members, &st.ejected, route);
                if pool.is_empty() {
                    return Err(if st.members.is_empty() {
                        Error::NoMembers
                    } else {
                        Error::NoLeader
                    });
                }
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                pool[i % pool.len()].to_string()
            }
        };
        let channel = match st.channels.get(&addr) {
            Some((_, c)) => c.clone(),
            None => {
                // A member the resolver names is verified under its DNS name when it has one (a
                // pod dialed by IP); a hinted leader it does not list, under the name dialed.
                let server_name = st
                    .members
                    .endpoints
                    .iter()
                    .find(|e| e.addr == addr)
                    .and_then(|e| e.server_name.clone());
                let tls = match (&self.tls, &server_name) {
                    (Some(t), Some(n)) => Some(
                        t.clone()
                            .with_server_name(n)
                            .map_err(|e| Error::Tls(e.to_string()))?,
                    ),
                    (t, _) => t.clone(),
                };
                let c = lazy_channel(&addr, self.connect_timeout, self.keep_alive, tls.as_ref())?;
                st.channels.insert(addr.clone(), (server_name, c.clone()));
                c
            }
        };
        drop(st);
        let counters = self
            .counters
            .lock()
            .unwrap()
            .entry(addr.clone())
            .or_default()
            .clone();
        Ok(Pick {
            addr,
            channel,
            counters,
        })
    }

    /// Counters of every member the picker has sent to.
    pub fn stats(&self) -> Vec<EndpointStats> {
        self.counters
            .lock()
            .unwrap()
            .iter()
            .map(|(addr, c)| EndpointStats {
                addr: addr.clone(),
                requests: c.requests.load(Ordering::Relaxed),
                errors: c.errors.load(Ordering::Relaxed),
                produces: c.produces.load(Ordering::Relaxed),
                consumes: c.consumes.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// How many channels the picker holds (tests check that updates do not churn them).
    pub fn channel_count(&self) -> usize {
        self.state.lock().unwrap().channels.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::{Endpoint, Resolver, StaticResolver};

    fn set(leader: &str, followers: &[&str]) -> Members {
        let mut eps = vec![Endpoint {
            addr: leader.into(),
            name: String::new(),
            is_leader: true,
            ready: true,
            server_name: None,
        }];
        eps.extend(followers.iter().map(|f| Endpoint {
            addr: f.to_string(),
            name: String::new(),
            is_leader: false,
            ready: true,
            server_name: None,
        }));
        Members::new(eps)
    }

    fn picker(r: &StaticResolver) -> Picker {
        Picker::new(r.subscribe(), &ClientConfig::default())
    }

    #[tokio::test]
    async fn writes_to_the_leader_reads_round_robin_over_followers() {
        let r = StaticResolver::new(set("l:1", &["f:1", "f:2"]));
        let p = picker(&r);
        for _ in 0..4 {
            assert_eq!(p.pick(Route::Leader).unwrap().addr, "l:1");
        }
        let reads: Vec<String> = (0..4)
            .map(|_| p.pick(Route::Follower).unwrap().addr)
            .collect();
        assert_eq!(reads[0], reads[2]);
        assert_eq!(reads[1], reads[3]);
        assert_ne!(reads[0], reads[1]);
        assert!(!reads.contains(&"l:1".to_string()));
    }

    #[tokio::test]
    async fn reads_go_to_the_leader_when_there_are_no_followers_and_skip_ejected() {
        let r = StaticResolver::new(set("l:1", &[]));
        let p = picker(&r);
        assert_eq!(p.pick(Route::Follower).unwrap().addr, "l:1");
        r.set(set("l:1", &["f:1", "f:2"]));
        p.eject("f:1");
        for _ in 0..3 {
            assert_eq!(p.pick(Route::Follower).unwrap().addr, "f:2");
        }
    }

    #[tokio::test]
    async fn a_leader_hint_holds_until_the_resolver_publishes_again() {
        let r = StaticResolver::new(set("l:1", &["f:1", "f:2"]));
        let p = picker(&r);
        p.set_leader_hint("f:1");
        assert_eq!(p.pick(Route::Leader).unwrap().addr, "f:1");
        r.set(set("f:2", &["l:1", "f:1"]));
        assert_eq!(p.pick(Route::Leader).unwrap().addr, "f:2");
        // A hinted leader that does not answer is forgotten.
        p.set_leader_hint("f:1");
        p.eject("f:1");
        assert_eq!(p.pick(Route::Leader).unwrap().addr, "f:2");
    }

    #[test]
    fn a_hint_by_dns_name_maps_to_the_member_of_that_pod() {
        let named = |addr: &str, name: &str, leader: bool| Endpoint {
            addr: addr.into(),
            name: name.into(),
            is_leader: leader,
            ready: true,
            server_name: None,
        };
        let k8s = Members::new(vec![
            named("127.10.0.5:8400", "demo-0", true),
            named("127.10.0.6:8400", "demo-1", false),
            named("127.10.0.7:8400", "demo-2", false),
        ]);
        let dns = "demo-2.demo-members.ns.svc.cluster.local:8400";
        assert_eq!(match_hint(&k8s, dns).as_deref(), Some("127.10.0.7:8400"));
        assert_eq!(
            match_hint(&k8s, "127.10.0.6:8400").as_deref(),
            Some("127.10.0.6:8400")
        );
        // A pod the slices do not list yet: wait for the resolver rather than dial the name.
        let unknown = "demo-3.demo-members.ns.svc.cluster.local:8400";
        assert_eq!(match_hint(&k8s, unknown), None);
        // Members found by GetServers are dialled by the names they advertise.
        let by_name = Members::new(vec![named("a.example:1", "1", true)]);
        assert_eq!(
            match_hint(&by_name, "b.example:1").as_deref(),
            Some("b.example:1")
        );
        assert_eq!(
            match_hint(&Members::default(), "10.0.0.1:1").as_deref(),
            Some("10.0.0.1:1")
        );
    }

    #[tokio::test]
    async fn a_dns_hint_routes_to_the_pod_ip() {
        let mut m = set("127.0.0.1:1", &["127.0.0.2:1"]);
        m.endpoints[1].name = "demo-1".into();
        let r = StaticResolver::new(m);
        let p = picker(&r);
        p.set_leader_hint("demo-1.demo-members.ns.svc.cluster.local:8400");
        assert_eq!(p.pick(Route::Leader).unwrap().addr, "127.0.0.2:1");
        p.set_leader_hint("demo-9.demo-members.ns.svc.cluster.local:8400");
        assert_eq!(p.pick(Route::Leader).unwrap().addr, "127.0.0.1:1");
    }

    #[tokio::test]
    async fn channels_survive_updates_and_follow_membership() {
        let r = StaticResolver::new(set("l:1", &["f:1", "f:2"]));
        let p = picker(&r);
        for _ in 0..3 {
            p.pick(Route::Follower).unwrap();
        }
        p.pick(Route::Leader).unwrap();
        assert_eq!(p.channel_count(), 3);
        // The same set again, and a leader change among the same members: no channel is dropped.
        r.set(set("l:1", &["f:1", "f:2"]));
        r.set(set("f:1", &["l:1", "f:2"]));
        assert_eq!(p.pick(Route::Leader).unwrap().addr, "f:1");
        assert_eq!(p.channel_count(), 3);
        // A member leaves: its channel goes.
        r.set(set("f:1", &["f:2"]));
        p.pick(Route::Leader).unwrap();
        assert_eq!(p.channel_count(), 2);
    }

    #[tokio::test]
    async fn no_members_and_no_leader_are_told_apart() {
        let r = StaticResolver::new(Members::default());
        let p = picker(&r);
        assert!(matches!(p.pick(Route::Leader), Err(Error::NoMembers)));
        let mut m = set("a:1", &["b:1"]);
        m.endpoints.iter_mut().for_each(|e| e.is_leader = false);
        r.set(m);
        assert!(matches!(p.pick(Route::Leader), Err(Error::NoLeader)));
        assert!(p.pick(Route::Follower).is_ok());
    }
}
