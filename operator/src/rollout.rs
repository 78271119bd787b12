//! Leader-last rolling updates. The StatefulSet runs with `updateStrategy: OnDelete`, so a change
//! of the pod template (image, flags, ports) restarts nobody by itself; the operator restarts the
//! members one at a time: the followers first, each only once the one before is back, ready and
//! caught up (the leader reports it at most [`ROLLOUT_MAX_LAG`] entries behind), then it moves
//! leadership to an updated follower and restarts the old leader last. Nothing restarts while
//! the membership changes (scaling, a learner catching up, a lost member being replaced).
//!
//! [`plan`] is pure (the membership report, the pods and their revisions in; at most one
//! [`Step`] out) and unit-tested in `rollout_tests.rs`; [`reconcile`] takes the step (a pod
//! delete, or a hand-over through the admin API) and [`use_on_delete`] switches a StatefulSet made
//! with `RollingUpdate` by an earlier operator. Progress goes to `status.rollout`, the
//! Progressing condition and the step's Event.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use proglog_crds::RolloutStatus;
use tracing::{info, warn};

use crate::admin::AdminPool;
use crate::membership::{self, MembershipInput, MembershipReport, PodInfo, PROMOTE_MAX_LAG};
use crate::names;
use crate::step::{Handover, Outcome, Step, Taken};

/// A member at most this many entries behind the leader counts as caught up (the same bound a
/// learner is promoted at).
pub const ROLLOUT_MAX_LAG: u64 = PROMOTE_MAX_LAG;
/// The StatefulSet update strategy the operator uses.
pub const ON_DELETE: &str = "OnDelete";
/// The pod label holding the StatefulSet revision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// A member pod's revision, as the rollout reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRevision {
    /// The `controller-revision-hash` label (the StatefulSet revision it was made from).
    pub revision: Option<String>,
    /// Its uid: a restart deletes exactly the pod it planned for.
    pub uid: Option<String>,
}

/// What [`plan`] works from.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// Name of the ProgLog.
    pub name: &'a str,
    /// `spec.replicas`.
    pub desired: u32,
    /// The StatefulSet's `spec.replicas` now.
    pub sts_replicas: Option<u32>,
    /// The revision every member must run (`status.updateRevision`); `None` before the
    /// StatefulSet has one.
    pub revision: Option<&'a str>,
    /// The pods (ready, terminating).
    pub pods: &'a [PodInfo],
    /// Their revisions, by ordinal.
    pub revisions: &'a BTreeMap<u32, PodRevision>,
    /// This pass's membership report (leader, voters, per-member health and lag, step taken).
    pub report: &'a MembershipReport,
}

/// What [`plan`] decided.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutPlan {
    /// A [`Step::Restart`] or a [`Step::TransferLeadership`] with [`Handover::Restart`].
    pub action: Option<Step>,
    /// For `status.rollout` (`None` before the StatefulSet has a revision).
    pub status: Option<RolloutStatus>,
    /// Why no step although members are out of date.
    pub waiting: Option<String>,
}

impl RolloutPlan {
    /// Members still on an older revision.
    pub fn in_progress(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.updated < s.replicas)
    }
}

/// Plans at most one rollout step. Pure.
pub fn plan(o: &Observed) -> RolloutPlan {
    let Some(revision) = o.revision else {
        return RolloutPlan {
            action: None,
            status: None,
            waiting: None,
        };
    };
    let outdated: Vec<u32> = (0..o.desired)
        .filter(|ord| {
            let on = o.revisions.get(ord).and_then(|r| r.revision.as_deref());
            // A pod that does not exist yet is made on the new revision.
            o.revisions.contains_key(ord) && on != Some(revision)
        })
        .collect();
    let updated = o.desired - outdated.len() as u32;
    let status = |message: Option<String>| RolloutStatus {
        revision: revision.to_string(),
        updated: updated as i32,
        replicas: o.desired as i32,
        message,
    };
    if outdated.is_empty() {
        return RolloutPlan {
            action: None,
            status: Some(status(None)),
            waiting: None,
        };
    }
    let (action, message) = match busy(o).or_else(|| not_back(o)) {
        Some(why) => (None, why),
        None => {
            let step = next(o, &outdated, updated + 1);
            let message = step.describe(o.name);
            (Some(step), message)
        }
    };
    RolloutPlan {
        waiting: action
            .is_none()
            .then(|| format!("rolling update: {message}")),
        action,
        status: Some(status(Some(message))),
    }
}

/// Why no member may restart now because the membership is not the spec's (or is changing).
fn busy(o: &Observed) -> Option<String> {
    let r = o.report;
    let spec: std::collections::BTreeSet<u32> = (0..o.desired).collect();
    if let Some(step) = &r.step {
        return Some(format!("paused while the membership changes ({step})"));
    }
    if r.leader_ordinal.is_none() {
        return Some("paused: no leader is known".into());
    }
    if r.voters != spec || r.member_ordinals != spec {
        return Some(format!(
            "paused while the membership changes (members {:?}, voters {:?}, spec 0..{})",
            r.member_ordinals, r.voters, o.desired
        ));
    }
    if o.sts_replicas != Some(o.desired) {
        return Some("paused while the StatefulSet is resized".into());
    }
    None
}

/// Why some member is not back, ready and caught up (the previous restart is not done).
fn not_back(o: &Observed) -> Option<String> {
    let pod_of: BTreeMap<u32, &PodInfo> = o.pods.iter().map(|p| (p.ordinal, p)).collect();
    let status_of: BTreeMap<u32, &proglog_crds::MemberStatus> = (o.report.members.iter())
        .filter_map(|m| Some((names::ordinal(o.name, &m.pod)?, m)))
        .collect();
    let leader = o.report.leader_ordinal;
    let why: Vec<String> = (0..o.desired)
        .filter_map(|ord| {
            let pod = names::pod(o.name, ord);
            let m = status_of.get(&ord);
            let lag = m.and_then(|m| m.lag).map(|l| l.max(0) as u64);
            match pod_of.get(&ord) {
                None => Some(format!("{pod} does not exist yet")),
                Some(p) if p.terminating => Some(format!("{pod} is stopping")),
                Some(p) if !p.ready => Some(format!("{pod} is not ready")),
                Some(_) if !m.is_some_and(|m| m.healthy) => Some(format!("{pod} does not answer")),
                Some(_) if Some(ord) == leader => None,
                Some(_) => match lag {
                    Some(l) if l <= ROLLOUT_MAX_LAG => None,
                    Some(l) => Some(format!("{pod} is catching up ({l} entries behind)")),
                    None => Some(format!("{pod}'s progress is not known yet")),
                },
            }
        })
        .collect();
    (!why.is_empty()).then(|| {
        format!(
            "waiting for every member to be back, ready and caught up: {}",
            why.join("; ")
        )
    })
}

/// The next step: the highest outdated follower; once only the leader is left, a hand-over to
/// the updated voter least behind; in a one-member cluster the member itself.
fn next(o: &Observed, outdated: &[u32], nth: u32) -> Step {
    let of = o.desired;
    let leader = o.report.leader_ordinal.unwrap_or(0);
    if let Some(&ordinal) = outdated.iter().rev().find(|&&ord| ord != leader) {
        return Step::Restart { ordinal, nth, of };
    }
    let lag = |ord: u32| {
        (o.report.members.iter())
            .find(|m| names::ordinal(o.name, &m.pod) == Some(ord))
            .and_then(|m| m.lag)
            .unwrap_or(i64::MAX)
    };
    let to = (o.report.voters.iter().copied())
        .filter(|&v| v != leader && !outdated.contains(&v))
        .min_by_key(|&v| (lag(v), v));
    match to {
        Some(to) => Step::TransferLeadership {
            leader,
            to,
            why: Handover::Restart { nth, of },
        },
        // NB: nobody to hand over to; a one-member cluster is down while its member restarts.
        None => Step::Restart {
            ordinal: leader,
            nth,
            of,
        },
    }
}

/// The members' revisions, from their pods.
pub fn revisions(name: &str, pods: &[Pod]) -> BTreeMap<u32, PodRevision> {
    pods.iter()
        .filter_map(|p| {
            let ord = names::ordinal(name, &p.name_any())?;
            let revision = p.labels().get(REVISION_LABEL).cloned();
            Some((
                ord,
                PodRevision {
                    revision,
                    uid: p.uid(),
                },
            ))
        })
        .collect()
}

/// The revision the members must run: the StatefulSet's `status.updateRevision`.
pub fn update_revision(sts: &StatefulSet) -> Option<&str> {
    sts.status.as_ref()?.update_revision.as_deref()
}

/// Whether `sts` must be switched to `OnDelete` (it lets the StatefulSet controller restart
/// pods itself, in ordinal order, leader or not).
pub fn needs_on_delete(sts: &StatefulSet) -> bool {
    let strategy = sts.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    strategy.and_then(|u| u.type_.as_deref()) != Some(ON_DELETE)
}

/// Switches an existing StatefulSet to `OnDelete` before the operator applies its template.
/// NB: a merge patch, not the apply: `rollingUpdate` was defaulted by the API server (nobody owns
/// it, so an apply cannot drop it) and is invalid beside `OnDelete`.
pub async fn use_on_delete(api: &Api<StatefulSet>, sts: Option<&StatefulSet>) -> kube::Result<()> {
    let Some(sts) = sts.filter(|s| needs_on_delete(s)) else {
        return Ok(());
    };
    let patch = serde_json::json!({
        "spec": {"updateStrategy": {"type": ON_DELETE, "rollingUpdate": null}}
    });
    api.patch(
        &sts.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    info!(statefulset = %sts.name_any(), "switched the update strategy to OnDelete");
    Ok(())
}

/// Plans the rollout on this pass's membership report and takes its step; writes the result
/// into `report` (`rollout`, `step`, `waiting`, `settled`). A failed step is reported in
/// `waiting`, like a failed membership step; the next pass starts over.
pub async fn reconcile(
    client: &Client,
    pool: &AdminPool,
    input: &MembershipInput,
    report: &mut MembershipReport,
    sts: Option<&StatefulSet>,
    pods: &[Pod],
) {
    let revisions = revisions(&input.name, pods);
    let p = plan(&Observed {
        name: &input.name,
        desired: input.desired,
        sts_replicas: input.sts_replicas,
        revision: sts.and_then(update_revision),
        pods: &input.pods,
        revisions: &revisions,
        report,
    });
    if p.in_progress() {
        // Ready only once every member runs the new template (and the requeue stays short).
        report.settled = false;
    }
    report.rollout = p.status.clone();
    if let Some(w) = &p.waiting {
        report.waiting = Some(match report.waiting.take() {
            Some(earlier) => format!("{earlier}; {w}"),
            None => w.clone(),
        });
    }
    let Some(step) = p.action else { return };
    info!(?step, "rollout step");
    let done = match &step {
        Step::Restart { ordinal, .. } => {
            let uid = revisions.get(ordinal).and_then(|r| r.uid.clone());
            restart(
                client,
                &input.namespace,
                &names::pod(&input.name, *ordinal),
                uid,
            )
            .await
        }
        _ => membership::take(pool, input, &step)
            .await
            .map_err(|e| e.to_string()),
    };
    match done {
        Ok(outcome) => {
            report.step = Some(Taken {
                cluster: input.name.clone(),
                step,
                outcome,
            });
            report.waiting = None;
        }
        Err(e) => {
            warn!(?step, "rollout step failed: {e}");
            report.waiting = Some(format!("{}: {e}", step.describe(&input.name)));
        }
    }
}

/// Deletes pod `pod` (only the one with `uid`): the StatefulSet makes it again on its new
/// revision, with the same name and volume. The member stops gracefully (SIGTERM).
async fn restart(
    client: &Client,
    ns: &str,
    pod: &str,
    uid: Option<String>,
) -> Result<Outcome, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods.delete(pod, &dp).await {
        Ok(_) => Ok(Outcome::Restarted),
        Err(e) => Err(format!("deleting pod {pod}: {e}")),
    }
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;
