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

impl Pick {
    /// Counts an attempt of `route`.
    pub fn count_request(&self, route: Route, produce: bool) {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        if produce {
            self.counters.produces.fetch_add(1, Ordering::Relaxed);
        } else if route != Route::Any {
            self.counters.consumes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a failed attempt.
    pub fn count_error(&self) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
}

struct State {
    members: Members,
    channels: HashMap<String, Channel>,
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
        st.channels
            .retain(|addr, _| members.endpoints.iter().any(|e| &e.addr == addr));
        st.hint = None;
        st.members = members;
    }

    /// The member set the picker routes over now.
    pub fn members(&self) -> Members {
        self.sync();
        self.state.lock().unwrap().members.clone()
    }

    /// Remembers the leader a member named; used until the resolver publishes again.
    pub fn set_leader_hint(&self, addr: &str) {
        self.sync();
        self.state.lock().unwrap().hint = Some(addr.to_string());
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
            Some(c) => c.clone(),
            None => {
                let c = lazy_channel(&addr, self.connect_timeout, self.keep_alive)?;
                st.channels.insert(addr.clone(), c.clone());
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
        }];
        eps.extend(followers.iter().map(|f| Endpoint {
            addr: f.to_string(),
            name: String::new(),
            is_leader: false,
            ready: true,
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
