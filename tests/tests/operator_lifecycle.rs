//! The operator end to end, as a user drives it: its own operator pod in a fresh namespace
//! (deployed from `manifests/`), then `kubectl apply` of a 3-member ProgLog made from
//! `manifests/samples/proglog.yaml` -> Ready; 1,000 records produced and read back through the
//! client's Kubernetes resolver (every Produce at the leader, every Consume at a follower);
//! `proglog --cluster ... status` (table and JSON); the leader pod killed (grace 0) under load ->
//! a new leader in the status and the leader EndpointSlice, Produce works again, no acknowledged
//! record lost (killed once, and killed and kept down until the others elect); a write refused by a
//! follower reaches the leader through its DNS leader hint; `kubectl scale` to 5 and back to 3;
//! `kubectl delete` -> every child gone, volumes deleted (`storage.onDelete: Delete`); the
//! operator was refused nothing by its ClusterRole. Prints the timings it measures.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use e2e::devcluster::wait_for;
use e2e::names;
use e2e::operator::{healthy_voters, is_ready, sample_proglog, wait_proglog, OperatorEnv};
use e2e::records::{
    check_all, pod_ready, produce_many, wait_for_election, wait_for_members, wait_readable,
    BackgroundProducer, Produced, PRODUCERS,
};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::api::DeleteParams;
use kube::Api;
use proglog_client::{Client, ClientConfig, RetryPolicy};

const NAME: &str = "life";
const RECORDS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proglog_lives_through_produce_failover_scaling_and_deletion() -> Result<()> {
    let env = OperatorEnv::start("e2e-op-life").await?;
    let result = scenario(&env).await;
    if let Err(e) = &result {
        eprintln!("FAILED: {e:#}");
    }
    env.cleanup(result.is_err()).await;
    result
}

async fn scenario(env: &OperatorEnv) -> Result<()> {
    let ns = env.ns.as_str();
    let plogs = env.proglogs();

    // Apply -> Ready.
    let body = sample_proglog(NAME, ns, 3, "Delete")?;
    let t_apply = Instant::now();
    env.kubectl_ok(&["apply", "-f", "-"], Some(&body.to_string()))?;
    let p = wait_proglog(
        &plogs,
        NAME,
        "condition Ready",
        Duration::from_secs(180),
        |p| is_ready(p) && healthy_voters(p).len() == 3,
    )
    .await?;
    let ready_after = t_apply.elapsed();
    eprintln!("[timing] Ready after apply: {ready_after:.2?}");
    let status = p.status.clone().context("no status")?;
    let leader = status.leader.clone().context("Ready without a leader")?;
    ensure!(
        status.replicas == 3 && status.ready_replicas == 3,
        "{status:?}"
    );
    ensure!(
        status.selector.as_deref() == Some(names::selector(NAME).as_str()),
        "status.selector {:?}",
        status.selector
    );
    check_children_exist(env).await?;
    env.kubectl_ok(
        &[
            "wait",
            "--for=condition=Ready",
            &format!("plog/{NAME}"),
            "--timeout=10s",
        ],
        None,
    )?;
    // Each membership step is an Event on the ProgLog (`kubectl describe plog` shows them).
    let events = env.kubectl_ok(
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.kind=ProgLog,involvedObject.name={NAME}"),
            "-o",
            "name",
        ],
        None,
    )?;
    ensure!(
        events.lines().count() >= 3,
        "expected an Event per membership step (initialize, add, promote...), got: {events:?}"
    );
    let warnings = env.kubectl_ok(
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.kind=ProgLog,involvedObject.name={NAME},type=Warning"),
            "-o",
            "custom-columns=REASON:.reason,MESSAGE:.message",
            "--no-headers",
        ],
        None,
    )?;
    if !warnings.trim().is_empty() {
        eprintln!("NB: Warning events while the ProgLog came up:\n{warnings}");
    }
    let get = env.kubectl_ok(&["get", "plog", NAME], None)?;
    ensure!(
        get.contains("REPLICAS") && get.contains("LEADER") && get.contains(&leader),
        "kubectl get plog prints replicas, ready, leader: {get}"
    );

    // Produce 1,000 at the leader, consume them at the followers, through the resolver.
    let client =
        Client::in_kubernetes(env.client.clone(), ns, NAME, e2e::records::through_faults())?;
    let members = wait_for_members(&client, 3, Duration::from_secs(30)).await?;
    let leader_addr = members
        .leader()
        .map(|l| l.addr.clone())
        .context("no leader")?;
    ensure!(
        members.leader().map(|l| l.name.as_str()) == Some(leader.as_str()),
        "the leader slice names {:?}, the status {leader}",
        members.leader()
    );
    let t = Instant::now();
    let acked = produce_many(&client, "rec", RECORDS).await?;
    eprintln!(
        "[timing] {RECORDS} produces ({PRODUCERS} concurrent): {:.2?}",
        t.elapsed()
    );
    let offsets: BTreeSet<u64> = acked.keys().copied().collect();
    ensure!(offsets.len() == RECORDS, "offsets are not unique");
    let (lo, hi) = (*offsets.first().unwrap(), *offsets.last().unwrap());
    ensure!(
        hi - lo + 1 == RECORDS as u64,
        "offsets not dense: {lo}..={hi}"
    );
    for s in client.stats() {
        ensure!(
            s.produces == 0 || s.addr == leader_addr,
            "{} got {} produces; the leader is {leader_addr}",
            s.addr,
            s.produces
        );
    }
    // Followers apply a commit a heartbeat later; read the last record from each before
    // counting where consumes go (else one could fall back to the leader).
    for f in members.ready_followers() {
        wait_readable(&f.addr, hi).await?;
    }
    let t = Instant::now();
    check_all(&client, &acked).await?;
    eprintln!("[timing] {RECORDS} consumes: {:.2?}", t.elapsed());
    let stats = client.stats();
    let leader_consumes: u64 = stats
        .iter()
        .filter(|s| s.addr == leader_addr)
        .map(|s| s.consumes)
        .sum();
    let follower_consumes: Vec<u64> = stats
        .iter()
        .filter(|s| s.addr != leader_addr)
        .map(|s| s.consumes)
        .collect();
    ensure!(
        leader_consumes == 0,
        "the leader served {leader_consumes} consumes: {stats:?}"
    );
    ensure!(
        follower_consumes.len() == 2 && follower_consumes.iter().all(|&c| c > 0),
        "consumes are not spread over both followers: {stats:?}"
    );
    // The same records as one stream from a follower.
    let t = Instant::now();
    let streamed: Vec<proglog_client::Record> = tokio::time::timeout(
        Duration::from_secs(30),
        client.consume_stream(lo).take(RECORDS).collect::<Vec<_>>(),
    )
    .await
    .context("ConsumeStream did not deliver the records in 30 s")?
    .into_iter()
    .collect::<Result<_, _>>()?;
    ensure!(
        streamed.len() == RECORDS && streamed.iter().zip(lo..).all(|(r, o)| r.offset == o),
        "stream: not the offsets {lo}..={hi} in order"
    );
    for r in &streamed {
        let want = acked.get(&r.offset).map(String::as_str);
        ensure!(
            want == Some(&*String::from_utf8_lossy(&r.value)),
            "stream: offset {} is {:?}, acknowledged {want:?}",
            r.offset,
            r.value
        );
    }
    eprintln!(
        "[timing] {RECORDS} records by ConsumeStream: {:.2?}",
        t.elapsed()
    );

    cli(env, &leader).await?;
    stale_leader_hint(&members).await?;

    // Kill the leader under load; then kill the new leader and keep its pod from coming back
    // until the others have elected a leader (as when its node fails).
    let acked = failover(env, &client, &leader, acked, false).await?;
    let leader = plogs
        .get(NAME)
        .await?
        .status
        .and_then(|s| s.leader)
        .context("no leader after the first kill")?;
    let acked = failover(env, &client, &leader, acked, true).await?;

    // Scale to 5 and back to 3.
    scale(env, &client, &acked).await?;

    // Delete: every child goes, and the volumes with them (onDelete: Delete).
    drop(client);
    let t = Instant::now();
    env.kubectl_ok(
        &["delete", "plog", NAME, "--wait=true", "--timeout=90s"],
        None,
    )?;
    wait_for(
        "every child and volume to go",
        Duration::from_secs(90),
        || async {
            let mut left = env.children_left(NAME).await?;
            left.extend(env.claims(NAME).await?);
            ensure!(left.is_empty(), "still there: {left:?}");
            Ok(Some(()))
        },
    )
    .await?;
    eprintln!(
        "[timing] delete -> every child and volume gone: {:.2?}",
        t.elapsed()
    );
    // The ClusterRole of manifests/ was enough: the API server refused the operator nothing.
    let log = env.kubectl_ok(
        &[
            "logs",
            "-l",
            &format!("app.kubernetes.io/name={}", e2e::operator::OPERATOR),
            "--tail=-1",
        ],
        None,
    )?;
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("forbidden"))
        .collect();
    ensure!(
        refused.is_empty(),
        "the operator was refused by RBAC:\n{}",
        refused.join("\n")
    );
    Ok(())
}

/// `proglog --cluster NAME --namespace NS status|produce|consume`, table and JSON.
async fn cli(env: &OperatorEnv, leader: &str) -> Result<()> {
    let ns = env.ns.as_str();
    let base = ["--cluster", NAME, "--namespace", ns];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let out = env.proglog(&args)?;
        ensure!(
            out.ok,
            "proglog {args:?} failed:\n{}{}",
            out.stdout,
            out.stderr
        );
        Ok(out.stdout)
    };
    let table = run(&["status"])?;
    eprintln!("proglog status:\n{table}");
    ensure!(
        table.contains(leader),
        "status names no leader {leader}:\n{table}"
    );
    for o in 0..3 {
        let pod = names::pod(NAME, o);
        ensure!(
            table.lines().filter(|l| l.starts_with(&pod)).count() == 1,
            "status has no row for member {pod}:\n{table}"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&run(&["-o", "json", "status"])?)?;
    ensure!(
        json["status"]["leader"] == leader,
        "JSON status leader: {json}"
    );
    ensure!(
        json["status"]["members"].as_array().map(Vec::len) == Some(3),
        "JSON status members: {json}"
    );
    let produced: serde_json::Value =
        serde_json::from_str(&run(&["-o", "json", "produce", "from-the-cli"])?)?;
    let off = produced["offsets"][0]
        .as_u64()
        .with_context(|| format!("produce printed {produced}"))?;
    let consumed = run(&["consume", "--from", &off.to_string(), "--count", "1"])?;
    ensure!(
        consumed.contains("from-the-cli"),
        "consume --from {off} printed {consumed:?}"
    );
    Ok(())
}

/// A client whose member set names a follower as the leader (as after a leadership change the
/// slices have not shown yet): the follower refuses the write and names the leader by its cluster
/// DNS name, which does not resolve outside the cluster; the client must send the write to that
/// pod's address from the set.
async fn stale_leader_hint(members: &proglog_client::Members) -> Result<()> {
    let leader = members.leader().context("no leader")?.clone();
    let follower = members
        .ready_followers()
        .next()
        .context("no follower")?
        .clone();
    let mut stale = members.clone();
    for e in &mut stale.endpoints {
        e.is_leader = e.addr == follower.addr;
    }
    let resolver = proglog_client::resolver::StaticResolver::new(stale);
    let c = Client::new(
        Arc::new(resolver),
        ClientConfig {
            retry: RetryPolicy {
                deadline: Duration::from_secs(5),
                ..Default::default()
            },
            ..Default::default()
        },
    )?;
    let t = Instant::now();
    c.produce("via-the-hint").await?;
    let stats = c.stats();
    let at = |addr: &str| {
        stats
            .iter()
            .find(|s| s.addr == addr)
            .cloned()
            .unwrap_or_default()
    };
    ensure!(
        at(&follower.addr).errors == 1 && at(&leader.addr).produces == 1 && stats.len() == 2,
        "the write should go follower -> leader {} by the hint: {stats:?}",
        leader.addr
    );
    eprintln!(
        "[timing] produce through a stale leader and its DNS hint: {:.2?}",
        t.elapsed()
    );
    Ok(())
}

/// Kills the leader pod (grace 0) while a producer runs; returns every acknowledged record.
async fn failover(
    env: &OperatorEnv,
    client: &Client,
    leader: &str,
    mut acked: BTreeMap<u64, String>,
    keep_down: bool,
) -> Result<BTreeMap<u64, String>> {
    let ns = env.ns.as_str();
    let plogs = env.proglogs();
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let slices: Api<EndpointSlice> = Api::namespaced(env.client.clone(), ns);
    let leader_slice = names::leader_service(NAME);

    // Some acknowledged records before the kill.
    let bg = BackgroundProducer::start(client, "bg");
    bg.wait_for_more(20, Duration::from_secs(10)).await?;

    let before = pods.get(leader).await?;
    let old_uid = before.metadata.uid.clone().unwrap_or_default();
    let old_term = plogs
        .get(NAME)
        .await?
        .status
        .and_then(|s| s.term)
        .unwrap_or_default();
    // Watch the surviving members for the election (admin API, with the operator's token).
    let token = Api::<Secret>::namespaced(env.client.clone(), ns)
        .get(&names::admin_secret(NAME))
        .await?
        .data
        .and_then(|d| d.get(names::ADMIN_TOKEN_KEY).cloned())
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
        .context("no admin token")?;
    let old_id = names::ordinal(NAME, leader)
        .map(names::node_id)
        .context("leader ordinal")?;
    let survivors: Vec<String> = client
        .members()
        .endpoints
        .iter()
        .filter(|e| e.name != leader)
        .map(|e| e.addr.clone())
        .collect();
    let election = tokio::spawn(wait_for_election(survivors, token, old_id));
    let t_kill = Instant::now();
    let t_kill_tokio = tokio::time::Instant::now();
    pods.delete(leader, &DeleteParams::default().grace_period(0))
        .await?;
    let killer = keep_down.then(|| tokio::spawn(keep_deleting(pods.clone(), leader.to_string())));
    // NB: two outcomes are correct. Usually the followers' election timeout runs out first and
    // they elect a new leader. But a member that led keeps its committed vote, and openraft lets
    // it lead again at the same term when it restarts before the followers time out: on the
    // devcluster the StatefulSet's new pod runs ~0.3 s after the kill (same IP, same volume),
    // less than the 500 ms election timeout. The test reports which it saw.
    let (outcome, slice_leader) = loop {
        let s = slices.get(&leader_slice).await?;
        let named = s
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            .find_map(|e| e.target_ref.as_ref().and_then(|t| t.name.clone()));
        match named {
            Some(n) if n != leader => break ("a new leader was elected", n),
            Some(_) if keep_down => {}
            Some(n) => {
                let back = pods.get_opt(leader).await?.filter(|p| {
                    p.metadata.uid.as_deref() != Some(old_uid.as_str()) && pod_ready(p)
                });
                if back.is_some() {
                    break ("the restarted pod resumed leadership", n);
                }
            }
            None => {}
        }
        ensure!(
            t_kill.elapsed() < Duration::from_secs(30),
            "no leader in the leader EndpointSlice 30 s after the kill: {:?}",
            s.endpoints
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let in_slice = t_kill.elapsed();
    if let Some(k) = killer {
        k.abort();
    }
    let elected = if slice_leader != leader {
        match tokio::time::timeout(Duration::from_secs(5), election).await {
            Ok(Ok(Ok(at))) => {
                let e = at.duration_since(t_kill_tokio);
                format!(
                    "members saw the election after {e:.2?} (slice {:.2?} later, polled every 50 ms); ",
                    in_slice.saturating_sub(e)
                )
            }
            other => format!("members' view of the election unknown ({other:?}); "),
        }
    } else {
        election.abort();
        String::new()
    };
    let off = client.produce("after-failover").await?;
    let first_produce = t_kill.elapsed();
    acked.insert(off, "after-failover".into());
    let p = wait_proglog(
        &plogs,
        NAME,
        "the slice's leader in status",
        Duration::from_secs(30),
        |p| {
            p.status.as_ref().is_some_and(|s| {
                s.leader.as_deref() == Some(slice_leader.as_str())
                    && s.term.unwrap_or_default() >= old_term
            })
        },
    )
    .await?;
    let in_status = t_kill.elapsed();
    let term = p.status.and_then(|s| s.term).unwrap_or_default();
    let how = if keep_down {
        "killed and kept down"
    } else {
        "killed once"
    };
    eprintln!(
        "[timing] leader {leader} (term {old_term}) {how}: {outcome}; {elected}leader {slice_leader} in the \
         leader slice after {in_slice:.2?}; first produce acknowledged after {first_produce:.2?}; \
         in status (term {term}) after {in_status:.2?}"
    );

    // The killed member comes back (same name, same volume) and the cluster is Ready again.
    wait_proglog(
        &plogs,
        NAME,
        "Ready again with 3 healthy voters",
        Duration::from_secs(120),
        |p| is_ready(p) && healthy_voters(p).len() == 3,
    )
    .await?;
    eprintln!(
        "[timing] leader killed -> Ready again with 3 voters: {:.2?}",
        t_kill.elapsed()
    );
    let Produced {
        acked: bg_acked,
        longest_gap: gap,
        errors: bg_errors,
    } = bg.stop().await?;
    for (off, v) in bg_acked {
        if let Some(old) = acked.insert(off, v.clone()) {
            bail!("offset {off} acknowledged twice: {old} and {v}");
        }
    }
    eprintln!(
        "[timing] background producer: longest gap between acknowledgements {gap:.2?}; \
         {} calls failed after retries",
        bg_errors.len()
    );
    ensure!(
        bg_errors.is_empty(),
        "produces failed through the failover: {bg_errors:?}"
    );
    let t = Instant::now();
    check_all(client, &acked).await?;
    eprintln!(
        "no acknowledged record lost: {} records read back in {:.2?}",
        acked.len(),
        t.elapsed()
    );
    Ok(acked)
}

/// Deletes (grace 0) every pod named `name` as soon as it appears, until aborted.
async fn keep_deleting(pods: Api<Pod>, name: String) {
    use futures::StreamExt;
    use kube::runtime::watcher;
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher::watcher(pods.clone(), cfg));
    while let Some(ev) = events.next().await {
        let pod = match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
            _ => continue,
        };
        if pod.metadata.deletion_timestamp.is_none() {
            let _ = pods
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
        }
    }
}

/// `kubectl scale` to 5 (5 voters), then back to 3 (3 members; pods and volumes 3 and 4 gone).
async fn scale(env: &OperatorEnv, client: &Client, acked: &BTreeMap<u64, String>) -> Result<()> {
    let ns = env.ns.as_str();
    let plogs = env.proglogs();
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), ns);

    let t = Instant::now();
    env.kubectl_ok(&["scale", &format!("plog/{NAME}"), "--replicas=5"], None)?;
    let p = wait_proglog(
        &plogs,
        NAME,
        "5 healthy voters and Ready",
        Duration::from_secs(180),
        |p| is_ready(p) && healthy_voters(p).len() == 5,
    )
    .await?;
    eprintln!(
        "[timing] scale 3 -> 5: Ready with 5 voters after {:.2?}",
        t.elapsed()
    );
    let voters: BTreeSet<String> = healthy_voters(&p).into_iter().collect();
    let want: BTreeSet<String> = (0..5).map(|o| names::pod(NAME, o)).collect();
    ensure!(voters == want, "voters {voters:?}, want {want:?}");
    wait_for_members(client, 5, Duration::from_secs(30)).await?;
    client.produce("with-five").await?;

    let t = Instant::now();
    env.kubectl_ok(&["scale", &format!("plog/{NAME}"), "--replicas=3"], None)?;
    wait_proglog(
        &plogs,
        NAME,
        "3 members and Ready",
        Duration::from_secs(180),
        |p| {
            is_ready(p)
                && healthy_voters(p).len() == 3
                && p.status.as_ref().is_some_and(|s| s.members.len() == 3)
        },
    )
    .await?;
    for o in [3, 4] {
        let pod = names::pod(NAME, o);
        let claim = format!("{}-{pod}", names::DATA_VOLUME);
        wait_for(
            &format!("pod {pod} and its volume claim to go"),
            Duration::from_secs(60),
            || async {
                Ok(
                    (pods.get_opt(&pod).await?.is_none() && pvcs.get_opt(&claim).await?.is_none())
                        .then_some(()),
                )
            },
        )
        .await?;
    }
    eprintln!(
        "[timing] scale 5 -> 3: Ready with 3 members, pods and volumes 3 and 4 gone after {:.2?}",
        t.elapsed()
    );
    wait_for_members(client, 3, Duration::from_secs(30)).await?;
    let off = client.produce("with-three").await?;
    let r = client.consume(off).await?;
    ensure!(&r.value[..] == b"with-three");
    // Everything acknowledged so far is still there (sampled: the first, last and every 97th).
    for (i, (off, want)) in acked.iter().enumerate() {
        if i % 97 == 0 || i + 1 == acked.len() {
            let r = client.consume(*off).await?;
            ensure!(String::from_utf8_lossy(&r.value) == *want, "offset {off}");
        }
    }
    Ok(())
}

async fn check_children_exist(env: &OperatorEnv) -> Result<()> {
    let c = &env.client;
    let ns = env.ns.as_str();
    Api::<StatefulSet>::namespaced(c.clone(), ns)
        .get(&names::statefulset(NAME))
        .await?;
    let svc = Api::<Service>::namespaced(c.clone(), ns);
    for s in [
        names::headless_service(NAME),
        names::leader_service(NAME),
        names::followers_service(NAME),
    ] {
        svc.get(&s).await.with_context(|| format!("Service {s}"))?;
    }
    Api::<Secret>::namespaced(c.clone(), ns)
        .get(&names::admin_secret(NAME))
        .await?;
    Api::<ServiceAccount>::namespaced(c.clone(), ns)
        .get(&names::service_account(NAME))
        .await?;
    Api::<RoleBinding>::namespaced(c.clone(), ns)
        .get(&names::service_account(NAME))
        .await?;
    Api::<PodDisruptionBudget>::namespaced(c.clone(), ns)
        .get(&names::pdb(NAME))
        .await?;
    Api::<ClusterRole>::all(c.clone())
        .get(&names::cluster_role(ns, NAME))
        .await?;
    Ok(())
}
