//! The client's Kubernetes resolver against a real API server (the devcluster, started or reused
//! by the `e2e` helper; or the cluster KUBECONFIG names). EndpointSlices are written by hand the way
//! the operator writes them - a leader slice and several follower slices, one not-ready endpoint,
//! and a slice of another ProgLog - and the test checks that the resolver publishes exactly the
//! ready members, follows a leader change, readiness changes and a deleted slice. It prints how
//! long each change took to reach the resolver.

use std::time::{Duration, Instant};

use anyhow::Result;
use e2e::{devcluster, names};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use proglog_client::resolver::{KubernetesConfig, KubernetesResolver, Members, Resolver};
use serde_json::json;

const CLUSTER: &str = "demo";
const DEADLINE: Duration = Duration::from_secs(30);

fn slice(name: &str, cluster: &str, role: &str, eps: &[(&str, bool)]) -> EndpointSlice {
    let service = if role == names::ROLE_LEADER {
        names::leader_service(cluster)
    } else {
        names::followers_service(cluster)
    };
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {
                "proglog.dev/cluster": cluster,
                "proglog.dev/role": role,
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "proglog-operator",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": 8400, "protocol": "TCP"}],
        "endpoints": eps.iter().map(|(ip, ready)| json!({
            "addresses": [ip],
            "conditions": {"ready": ready},
            "targetRef": {"kind": "Pod", "name": format!("pod-{ip}")},
        })).collect::<Vec<_>>(),
    }))
    .expect("a valid EndpointSlice")
}

/// (leader, sorted ready followers) of a member set.
fn shape(m: &Members) -> (Option<String>, Vec<String>) {
    (
        m.leader().map(|l| l.addr.clone()),
        m.ready_followers().map(|e| e.addr.clone()).collect(),
    )
}

async fn wait_shape(
    r: &KubernetesResolver,
    what: &str,
    since: Instant,
    leader: &str,
    followers: &[&str],
) -> Result<Duration> {
    let want = (
        Some(leader.to_string()),
        followers.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
    );
    let mut rx = r.subscribe();
    let got = tokio::time::timeout(DEADLINE, rx.wait_for(|m| shape(m) == want)).await;
    match got {
        Ok(Ok(_)) => {
            let took = since.elapsed();
            println!("{what}: reached the resolver {took:?} after the first API write");
            Ok(took)
        }
        _ => anyhow::bail!(
            "{what}: resolver has {:?}, want {want:?}",
            shape(&r.subscribe().borrow())
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_resolver_follows_endpointslices() -> Result<()> {
    let (_dc, client) = devcluster::client().await?;
    let ns = devcluster::unique_namespace("client-resolver");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    let result = run(client.clone(), &ns).await;
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    result
}

async fn run(client: kube::Client, ns: &str) -> Result<()> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let pp = PostParams::default();
    slices
        .create(
            &pp,
            &slice("demo-leader-a", CLUSTER, "leader", &[("10.1.0.1", true)]),
        )
        .await?;
    slices
        .create(
            &pp,
            &slice(
                "demo-followers-a",
                CLUSTER,
                "followers",
                &[("10.1.0.2", true), ("10.1.0.4", false)],
            ),
        )
        .await?;
    slices
        .create(
            &pp,
            &slice(
                "demo-followers-b",
                CLUSTER,
                "followers",
                &[("10.1.0.3", true)],
            ),
        )
        .await?;
    // Another ProgLog in the same namespace must not leak in.
    slices
        .create(
            &pp,
            &slice("other-leader-a", "other", "leader", &[("10.9.9.9", true)]),
        )
        .await?;

    let resolver = KubernetesResolver::start(KubernetesConfig::new(client.clone(), ns, CLUSTER));
    wait_shape(
        &resolver,
        "initial list",
        Instant::now(),
        "10.1.0.1:8400",
        &["10.1.0.2:8400", "10.1.0.3:8400"],
    )
    .await?;
    assert_eq!(
        resolver.subscribe().borrow().endpoints.len(),
        3,
        "10.1.0.4 is not ready"
    );

    // The leader moves to 10.1.0.2, as the operator publishes it: the leader slice first, then
    // the followers. The resolver never shows a set without addresses in between.
    let mut rx = resolver.subscribe();
    let watcher = tokio::spawn(async move {
        let mut min_len = usize::MAX;
        while rx.changed().await.is_ok() {
            let m = rx.borrow_and_update().clone();
            min_len = min_len.min(m.endpoints.len());
            if m.leader().map(|l| l.addr.as_str()) == Some("10.1.0.2:8400")
                && m.ready_followers().count() == 2
            {
                break;
            }
        }
        min_len
    });
    let apply = PatchParams::apply("proglog-client-test").force();
    let t0 = Instant::now();
    slices
        .patch(
            "demo-leader-a",
            &apply,
            &Patch::Apply(slice(
                "demo-leader-a",
                CLUSTER,
                "leader",
                &[("10.1.0.2", true)],
            )),
        )
        .await?;
    slices
        .patch(
            "demo-followers-a",
            &apply,
            &Patch::Apply(slice(
                "demo-followers-a",
                CLUSTER,
                "followers",
                &[("10.1.0.1", true), ("10.1.0.4", false)],
            )),
        )
        .await?;
    let took = wait_shape(
        &resolver,
        "leader change",
        t0,
        "10.1.0.2:8400",
        &["10.1.0.1:8400", "10.1.0.3:8400"],
    )
    .await?;
    let min_len = tokio::time::timeout(DEADLINE, watcher).await??;
    assert!(min_len > 0, "the resolver published an empty set");
    println!("leader change through EndpointSlices took {took:?}");

    let t1 = Instant::now();

    // A follower turns not ready: it stops receiving reads.
    slices
        .patch(
            "demo-followers-b",
            &apply,
            &Patch::Apply(slice(
                "demo-followers-b",
                CLUSTER,
                "followers",
                &[("10.1.0.3", false)],
            )),
        )
        .await?;
    wait_shape(
        &resolver,
        "follower not ready",
        t1,
        "10.1.0.2:8400",
        &["10.1.0.1:8400"],
    )
    .await?;

    // A new follower slice appears, then one is deleted.
    let t2 = Instant::now();
    slices
        .create(
            &pp,
            &slice(
                "demo-followers-c",
                CLUSTER,
                "followers",
                &[("10.1.0.5", true)],
            ),
        )
        .await?;
    wait_shape(
        &resolver,
        "third follower slice",
        t2,
        "10.1.0.2:8400",
        &["10.1.0.1:8400", "10.1.0.5:8400"],
    )
    .await?;
    let t3 = Instant::now();
    slices
        .delete("demo-followers-a", &DeleteParams::default())
        .await?;
    wait_shape(
        &resolver,
        "slice deleted",
        t3,
        "10.1.0.2:8400",
        &["10.1.0.5:8400"],
    )
    .await?;

    // `proglog status --cluster`: without the CRD the error says to install it; with it (once
    // the operator's CRD is applied), a missing ProgLog is reported as such.
    match proglog_client::kube_status::get(&client, ns, CLUSTER).await {
        Err(e @ proglog_client::Error::CrdMissing) => println!("status: {e}"),
        Err(e @ proglog_client::Error::NotFound { .. }) => println!("status: {e}"),
        other => anyhow::bail!("status of a ProgLog that does not exist: {other:?}"),
    }

    // The client routes by what the resolver publishes.
    let c = proglog_client::Client::new(
        std::sync::Arc::new(resolver),
        proglog_client::ClientConfig::default(),
    )?;
    assert_eq!(
        c.members().leader().map(|l| l.name.clone()),
        Some("pod-10.1.0.2".to_string())
    );
    Ok(())
}
