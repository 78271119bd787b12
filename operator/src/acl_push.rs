//! Pushing a ProgLog's ACL policy to its members over the admin API (`proglog.v1.Acl`, mutual
//! TLS as the operator's identity), so that a grant or a revocation is in force within a second
//! instead of when the kubelet next refreshes the members' ConfigMap volume (about a minute).
//!
//! The ConfigMap `<name>-acl` stays the source of truth: it is written first, then pushed, and
//! a member that misses the push (down, not started, unreachable) reads it from its volume (at
//! start, or when the kubelet refreshes it) or gets it from the next pass's push (the ProgLog
//! controller pushes on every pass, the users controller on every change).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use proglog_crds::ProgLog;

use crate::admin::{AdminPool, ClusterAuth};
use crate::membership::pod_addr;
use crate::{acl, names};

/// How long one member may take to answer a push.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Held while a ProgLog's policy is listed, rendered, written and pushed, by either controller.
/// NB: one lock for the whole process, so pushes reach the members in the order of the writes
/// and the last push carries the last write: a member holds a push against differing policy
/// files for a while ([`logserver`'s `PUSH_HOLD`]), so an older push arriving last would
/// outlast the newer files.
pub static POLICY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a push reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Member pods (not terminating) the policy was pushed to.
    pub pods: usize,
    /// Pods that hold it now.
    pub in_force: usize,
    /// Pods whose policy it changed.
    pub changed: usize,
    /// Pods that did not take it, and why.
    pub failed: Vec<(String, String)>,
    /// Why nothing was pushed (the operator's identity is not issued yet, the pods could not
    /// be listed).
    pub not_pushed: Option<String>,
}

impl Pushed {
    /// Nothing was pushed, for `reason`.
    pub fn not_pushed(reason: impl Into<String>) -> Pushed {
        Pushed {
            not_pushed: Some(reason.into()),
            ..Pushed::default()
        }
    }

    /// Every member pod holds the policy.
    pub fn everywhere(&self) -> bool {
        self.not_pushed.is_none() && self.failed.is_empty() && self.pods > 0
    }

    /// For a status message or an Event: "in force on all 3 members at once", or what failed.
    pub fn summary(&self) -> String {
        const LATER: &str = "the members read it from the ConfigMap when the kubelet refreshes it";
        if let Some(why) = &self.not_pushed {
            return format!("not pushed ({why}); {LATER}");
        }
        if self.pods == 0 {
            return "not pushed: no member pod yet".into();
        }
        if self.failed.is_empty() {
            return match self.pods {
                1 => "in force on its 1 member at once (pushed)".into(),
                n => format!("in force on all {n} members at once (pushed)"),
            };
        }
        let failed: Vec<String> = self
            .failed
            .iter()
            .map(|(pod, why)| format!("{pod}: {why}"))
            .collect();
        format!(
            "pushed to {} of {} members ({}); for the others {LATER}",
            self.in_force,
            self.pods,
            failed.join("; ")
        )
    }
}

/// Pushes `policy` (with the book's model, [`acl::MODEL`]) to every member pod of `pl` that is
/// not terminating, all at once, each bounded by [`PUSH_TIMEOUT`]. Never fails: what did not
/// work is in the result.
pub async fn push(
    client: &Client,
    pool: &AdminPool,
    auth: &ClusterAuth,
    pl: &ProgLog,
    policy: &str,
) -> Pushed {
    let name = pl.name_any();
    let ns = pl.namespace().unwrap_or_default();
    let pods = match Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels(&names::selector(&name)))
        .await
    {
        Ok(l) => l.items,
        Err(e) => return Pushed::not_pushed(format!("listing the pods of {name}: {e}")),
    };
    let mut calls = Vec::new();
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let pod_name = pod.name_any();
        let Some(ordinal) = names::ordinal(&name, &pod_name) else {
            continue;
        };
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty());
        let port = pl.spec.ports.grpc;
        calls.push(async move {
            let Some(ip) = ip else {
                return (pod_name, Err("no pod IP yet".to_string()));
            };
            let call = async {
                let c = pool.client(&pod_addr(&ip, port), &auth.member(ordinal)?)?;
                c.set_policy(acl::MODEL, policy).await
            };
            let r = match tokio::time::timeout(PUSH_TIMEOUT, call).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {PUSH_TIMEOUT:?}")),
            };
            (pod_name, r)
        });
    }
    let mut out = Pushed {
        pods: calls.len(),
        ..Pushed::default()
    };
    for (pod, r) in futures::future::join_all(calls).await {
        match r {
            Ok(changed) => {
                out.in_force += 1;
                out.changed += usize::from(changed);
            }
            Err(e) => out.failed.push((pod, e)),
        }
    }
    out.failed.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_where_the_policy_is_in_force() {
        let all = Pushed {
            pods: 3,
            in_force: 3,
            changed: 3,
            ..Pushed::default()
        };
        assert!(all.everywhere());
        assert_eq!(all.summary(), "in force on all 3 members at once (pushed)");
        let some = Pushed {
            pods: 3,
            in_force: 2,
            failed: vec![("demo-2".into(), "no pod IP yet".into())],
            ..Pushed::default()
        };
        assert!(!some.everywhere());
        assert!(some
            .summary()
            .starts_with("pushed to 2 of 3 members (demo-2: no pod IP yet)"));
        let none = Pushed::not_pushed("no operator identity yet");
        assert!(!none.everywhere());
        assert!(none.summary().contains("no operator identity yet"));
        assert!(!Pushed::default().everywhere(), "no pods: not everywhere");
    }
}
