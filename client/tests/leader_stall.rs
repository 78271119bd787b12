//! A leader that stops answering while a produce is in flight (SIGSTOP: to a client it looks like
//! a leader cut off by a partition; its TCP connections stay open). The survivors elect a new
//! leader, the resolver names it, and the call moves there instead of waiting out its request
//! timeout, which is set far beyond the test's deadline. Prints how long the produce took.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use proglog_client::{ClientConfig, RetryPolicy};
use proglog_testkit::procs::{Cluster, Options};
use proglog_testkit::{eventually, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_produce_in_flight_to_a_stalled_leader_moves_to_the_new_leader() -> Result<()> {
    let mut cluster = Cluster::start(3, Options::steady()).await?;
    let leader = cluster.leader_addr().await?;
    let patient = Duration::from_secs(600);
    let cfg = ClientConfig {
        request_timeout: patient,
        retry: RetryPolicy {
            deadline: patient,
            ..RetryPolicy::default()
        },
        ..ClientConfig::default()
    };
    let client = cluster.client(true, cfg).await?;
    client.produce("before").await?;
    eventually("the client to know the leader", DEADLINE, || async {
        (client.members().leader().map(|l| l.addr.as_str()) == Some(leader.as_str())).then_some(())
    })
    .await?;

    let stalled = cluster.id_of(&leader)?;
    cluster.pause(stalled)?;
    let t = Instant::now();
    let produced = tokio::time::timeout(DEADLINE, client.produce("during")).await;
    let took = t.elapsed();
    cluster.resume(stalled)?;
    let offset = produced
        .context("the produce waited on the stalled leader (its request timeout is 600 s)")??;
    println!("produce in flight when the leader stalled: acknowledged after {took:.2?}");

    let now = client.members();
    let new_leader = now.leader().context("no leader known")?;
    assert_ne!(new_leader.addr, leader, "the stalled member still leads");
    let rec = client.consume(offset).await?;
    assert_eq!(&rec.value[..], b"during");
    Ok(())
}
