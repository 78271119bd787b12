//! The picker on a real three-member cluster: every Produce reaches the leader, Consume is spread
//! evenly over the two followers, and the client keeps one channel per member.

use std::collections::BTreeSet;

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use proglog_client::{ClientConfig, EndpointStats};
use proglog_testkit::procs::{Cluster, Options, TOKEN};
use proglog_testkit::{eventually, DEADLINE};

fn stats_of<'a>(stats: &'a [EndpointStats], addr: &str) -> Option<&'a EndpointStats> {
    stats.iter().find(|s| s.addr == addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_produces_all_reach_the_leader() -> Result<()> {
    let cluster = Cluster::start(3, Options::steady()).await?;
    let leader = cluster.leader_addr().await?;
    let client = cluster.client(false, ClientConfig::default()).await?;

    let start = std::time::Instant::now();
    let offsets: Vec<u64> = futures::stream::iter(0..1000u32)
        .map(|i| {
            let c = client.clone();
            async move { c.produce(format!("r{i}").into_bytes()).await }
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    println!("1000 produces, 16 in flight: {:?}", start.elapsed());
    let unique: BTreeSet<u64> = offsets.iter().copied().collect();
    assert_eq!(unique.len(), 1000, "an offset was handed out twice");

    let stats = client.stats();
    println!("per-endpoint counters: {stats:#?}");
    let l = stats_of(&stats, &leader).expect("the leader got no request");
    assert_eq!(l.produces, 1000, "produces at the leader");
    assert_eq!(l.errors, 0);
    for s in stats.iter().filter(|s| s.addr != leader) {
        assert_eq!(s.produces, 0, "a produce went to follower {}", s.addr);
    }
    assert_eq!(client.channel_count(), 1, "one channel, to the leader");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_thousand_consumes_spread_over_the_followers() -> Result<()> {
    let cluster = Cluster::start(3, Options::steady()).await?;
    let leader = cluster.leader_addr().await?;
    let client = cluster.client(false, ClientConfig::default()).await?;
    let values: Vec<bytes::Bytes> = (0..100).map(|i| format!("v{i}").into()).collect();
    let offsets = client.produce_batch(values.clone()).await?;
    assert_eq!(offsets.len(), 100);
    let followers: Vec<String> = cluster
        .addrs()
        .into_iter()
        .filter(|a| *a != leader)
        .collect();
    // Wait until both followers have applied the batch, so that no read falls back to the leader.
    for f in &followers {
        let admin = proglog_client::admin::Admin::new(f.clone(), TOKEN)?;
        eventually("the follower to apply the batch", DEADLINE, || async {
            let st = admin.status_of(f).await.ok()?;
            (st.next_offset > offsets[99]).then_some(())
        })
        .await?;
    }

    let before = client.stats();
    let got: Vec<(u64, proglog_client::Record)> = futures::stream::iter(0..3000u64)
        .map(|i| {
            let c = client.clone();
            let off = offsets[(i % 100) as usize];
            async move { Ok::<_, proglog_client::Error>((off, c.consume(off).await?)) }
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    for (off, rec) in &got {
        assert_eq!(rec.offset, *off);
        let i = offsets.iter().position(|o| o == off).unwrap();
        assert_eq!(rec.value, values[i]);
    }

    let stats = client.stats();
    println!("per-endpoint counters: {stats:#?}");
    let consumes = |addr: &str| {
        stats_of(&stats, addr).map_or(0, |s| s.consumes)
            - stats_of(&before, addr).map_or(0, |s| s.consumes)
    };
    for f in &followers {
        let share = consumes(f) as f64 / 3000.0;
        println!(
            "follower {f}: {} consumes ({:.1}%)",
            consumes(f),
            share * 100.0
        );
        assert!(
            (0.40..=0.60).contains(&share),
            "follower {f} served {:.1}% of the consumes",
            share * 100.0
        );
    }
    assert_eq!(consumes(&leader), 0, "the leader served consumes");
    assert_eq!(client.channel_count(), 3, "one channel per member");
    Ok(())
}
