//! Discovery: a [`Resolver`] publishes the cluster's member set ([`Members`]) through a
//! `tokio::sync::watch` channel; the picker reads it. Two implementations: [`bootstrap`] asks
//! `GetServers` of seed addresses, [`kubernetes`] watches the EndpointSlices the operator
//! publishes. Resolvers only discover: they never open client connections of their own for
//! Produce/Consume, and they never publish an empty set because of a transient error.

pub mod bootstrap;
pub mod kubernetes;

use tokio::sync::watch;

pub use bootstrap::{BootstrapConfig, BootstrapResolver};
pub use kubernetes::{KubernetesConfig, KubernetesResolver};

/// One member as the client sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Endpoint {
    /// `host:port` the client dials.
    pub addr: String,
    /// The member's name (pod name, or Raft id) when known; may be empty.
    pub name: String,
    /// True for the current leader.
    pub is_leader: bool,
    /// True when the member may serve reads (ready pod, voter).
    pub ready: bool,
    /// The name its TLS certificate is verified under when it differs from the host in
    /// `addr` (a pod dialed by IP is verified under its DNS name); `None`: the host dialed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// The member set: sorted by address, at most one leader.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Members {
    pub endpoints: Vec<Endpoint>,
}

impl Members {
    /// Builds a set: sorts by address, merges duplicates (leader and ready win).
    pub fn new(mut endpoints: Vec<Endpoint>) -> Members {
        endpoints.sort();
        let mut out: Vec<Endpoint> = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            match out.last_mut() {
                Some(last) if last.addr == e.addr => {
                    last.is_leader |= e.is_leader;
                    last.ready |= e.ready;
                    if last.name.is_empty() {
                        last.name = e.name;
                    }
                    if last.server_name.is_none() {
                        last.server_name = e.server_name;
                    }
                }
                _ => out.push(e),
            }
        }
        Members { endpoints: out }
    }

    /// The leader, if one is known.
    pub fn leader(&self) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.is_leader)
    }

    /// Ready members that do not lead.
    pub fn ready_followers(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().filter(|e| e.ready && !e.is_leader)
    }

    /// True when no member is known.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }
}

/// A source of the member set.
pub trait Resolver: Send + Sync + 'static {
    /// The member set now and on every change.
    fn subscribe(&self) -> watch::Receiver<Members>;

    /// A hint that a call failed in a way that suggests the set is stale (e.g. the leader did not
    /// answer). Resolvers that poll look again soon; watching resolvers may ignore it.
    fn resolve_now(&self);
}

/// A fixed member set (tests, or a single `--addr` when nothing else is known).
#[derive(Debug)]
pub struct StaticResolver {
    tx: watch::Sender<Members>,
}

impl StaticResolver {
    pub fn new(members: Members) -> Self {
        StaticResolver {
            tx: watch::Sender::new(members),
        }
    }

    /// Replaces the set (tests use it to simulate a resolver update).
    pub fn set(&self, members: Members) {
        self.tx.send_replace(members);
    }
}

impl Resolver for StaticResolver {
    fn subscribe(&self) -> watch::Receiver<Members> {
        self.tx.subscribe()
    }

    fn resolve_now(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(addr: &str, leader: bool, ready: bool) -> Endpoint {
        Endpoint {
            addr: addr.into(),
            name: String::new(),
            is_leader: leader,
            ready,
            server_name: None,
        }
    }

    #[test]
    fn members_sorted_and_merged() {
        let m = Members::new(vec![
            ep("b:1", false, true),
            ep("a:1", false, false),
            ep("a:1", true, true),
        ]);
        assert_eq!(m.endpoints.len(), 2);
        assert_eq!(m.leader().unwrap().addr, "a:1");
        assert_eq!(
            m.ready_followers().map(|e| &e.addr[..]).collect::<Vec<_>>(),
            ["b:1"]
        );
    }
}
