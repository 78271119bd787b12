//! Leader election between operator replicas, on a `coordination.k8s.io` Lease: one replica
//! reconciles, the others stand by and take over once the Lease expires.
//!
//! The Lease itself is kept by `kube-lease-manager` (server-side apply, renewed `grace` before it
//! expires). NB: that crate reports a lost Lease only when it can read the Lease; a replica cut
//! off from the API server would keep believing it leads. So a fence runs beside it: the leader
//! reads the Lease itself every [`FENCE_EVERY`] and, unless it sees itself as the holder with a
//! renewal younger than `duration - grace`, gives up (the process exits and restarts as a
//! standby). The others may take the Lease only after `duration`, so two replicas never act at
//! once as long as clocks differ by less than `grace`.
//!
//! Knows nothing of reconciling: [`lead`] runs a future while this replica leads.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{error, info, warn};

/// How often the leader checks that it still holds a fresh Lease.
pub const FENCE_EVERY: Duration = Duration::from_secs(1);

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct Election {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Name of the Lease.
    pub lease: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a Lease stays valid after its last renewal, in seconds.
    pub duration_secs: u64,
    /// How long before expiry the holder renews, in seconds (also the clock skew tolerated).
    pub grace_secs: u64,
}

/// How [`lead`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// `shutdown` completed (the Lease was released if held).
    Shutdown,
    /// The Lease was lost, or could not be confirmed in time: stop acting at once.
    Lost(String),
}

/// Whether `lease` names `identity` as holder with a renewal at most `fresh` old at `now`.
pub fn held_fresh(lease: &Lease, identity: &str, now: Timestamp, fresh: Duration) -> bool {
    let Some(spec) = lease.spec.as_ref() else {
        return false;
    };
    if spec.holder_identity.as_deref() != Some(identity) {
        return false;
    }
    let Some(renewed) = spec.renew_time.as_ref().map(|t| t.0) else {
        return false;
    };
    // A renewal stamped ahead of our clock (skew below `grace`) counts as fresh.
    now.duration_since(renewed).as_secs_f64() <= fresh.as_secs_f64()
}

/// Waits to hold the Lease, then runs `work` while it is held. Returns when `shutdown`
/// completes or the Lease is lost; `on_lead` is called once this replica leads.
pub async fn lead<W, S>(
    client: kube::Client,
    e: &Election,
    shutdown: S,
    on_lead: impl FnOnce(),
    work: W,
) -> anyhow::Result<Ended>
where
    W: Future<Output = ()>,
    S: Future<Output = ()> + Clone,
{
    let manager = LeaseManagerBuilder::new(client.clone(), &e.lease)
        .with_namespace(&e.namespace)
        .with_identity(&e.identity)
        .with_duration(e.duration_secs)
        .with_grace(e.grace_secs)
        .build()
        .await?;
    let (mut leading, task) = manager.watch().await;
    info!(lease = %e.lease, identity = %e.identity, "standing by for the lease");
    let leads = tokio::select! {
        r = leading.wait_for(|l| *l) => Some(r.is_ok()),
        _ = shutdown.clone() => None,
    };
    if leads != Some(true) {
        drop(leading);
        let stopped = tokio::time::timeout(Duration::from_secs(5), task).await;
        anyhow::ensure!(leads.is_none(), "the lease manager stopped: {stopped:?}");
        return Ok(Ended::Shutdown);
    }
    info!(lease = %e.lease, identity = %e.identity, "holding the lease: reconciling");
    on_lead();
    let fresh = Duration::from_secs(e.duration_secs.saturating_sub(e.grace_secs).max(1));
    let leases: Api<Lease> = Api::namespaced(client, &e.namespace);
    let ended = tokio::select! {
        _ = work => Ended::Shutdown,
        _ = shutdown => Ended::Shutdown,
        r = leading.wait_for(|l| !*l) => Ended::Lost(match r {
            Ok(_) => "another replica holds the lease".into(),
            Err(_) => "the lease manager stopped".into(),
        }),
        why = fence(&leases, e, fresh) => Ended::Lost(why),
    };
    match &ended {
        Ended::Lost(why) => error!(lease = %e.lease, "lost the lease: {why}"),
        Ended::Shutdown => info!(lease = %e.lease, "releasing the lease"),
    }
    // Dropping the receiver makes the manager release the lease (if still held) and stop.
    drop(leading);
    if tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .is_err()
    {
        warn!("the lease was not released within 5 s");
    }
    Ok(ended)
}

/// Completes (with the reason) once the Lease cannot be confirmed as ours and fresh.
async fn fence(leases: &Api<Lease>, e: &Election, fresh: Duration) -> String {
    let mut confirmed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(FENCE_EVERY).await;
        match leases.get_opt(&e.lease).await {
            Ok(Some(l)) if held_fresh(&l, &e.identity, Timestamp::now(), fresh) => {
                confirmed = tokio::time::Instant::now();
            }
            Ok(Some(l)) => {
                let holder = l.spec.and_then(|s| s.holder_identity);
                // NB: the manager renews `grace` before expiry; a renewal in flight is not a loss.
                if holder.as_deref() != Some(e.identity.as_str()) {
                    return format!(
                        "the lease is held by {}",
                        holder.as_deref().unwrap_or("nobody")
                    );
                }
            }
            Ok(None) => return "the lease was deleted".into(),
            Err(err) => warn!("cannot read the lease: {err}"),
        }
        if confirmed.elapsed() > fresh {
            return format!("not confirmed as holder for {:?}", confirmed.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::SignedDuration;

    fn lease(holder: Option<&str>, renewed: Option<Timestamp>) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                renew_time: renewed.map(MicroTime),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn only_a_fresh_renewal_by_this_replica_counts_as_holding() {
        let now: Timestamp = "2026-11-30T08:00:00Z".parse().unwrap();
        let secs = |s: i64| now.checked_sub(SignedDuration::from_secs(s)).unwrap();
        let fresh = Duration::from_secs(7);
        assert!(held_fresh(
            &lease(Some("op-a"), Some(secs(3))),
            "op-a",
            now,
            fresh
        ));
        assert!(
            !held_fresh(&lease(Some("op-a"), Some(secs(8))), "op-a", now, fresh),
            "stale"
        );
        assert!(
            !held_fresh(&lease(Some("op-b"), Some(secs(1))), "op-a", now, fresh),
            "other"
        );
        assert!(!held_fresh(&lease(None, Some(secs(1))), "op-a", now, fresh));
        assert!(!held_fresh(&lease(Some("op-a"), None), "op-a", now, fresh));
        assert!(!held_fresh(&Lease::default(), "op-a", now, fresh));
        // A renewal stamped slightly ahead of our clock (skew) still counts.
        let ahead = secs(-1);
        assert!(held_fresh(
            &lease(Some("op-a"), Some(ahead)),
            "op-a",
            now,
            fresh
        ));
    }
}
