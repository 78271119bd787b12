//! ConsumeStream through the client survives the member serving it: the follower that serves
//! the stream is SIGKILLed while records keep coming, and the stream resumes at another member
//! after the last record it delivered - every record once, in offset order, none missing.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use proglog_client::ClientConfig;
use proglog_testkit::procs::{Cluster, Options};
use proglog_testkit::DEADLINE;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consume_stream_resumes_when_its_member_dies() -> Result<()> {
    let mut cluster = Cluster::start(3, Options::steady()).await?;
    let leader = cluster.leader_addr().await?;
    let client = cluster.client(true, ClientConfig::default()).await?;
    let first = client
        .produce_batch((0..50).map(|i| format!("v{i}").into()).collect())
        .await?;
    let mut stream = Box::pin(client.consume_stream(first[0]));
    let mut got = Vec::new();
    while got.len() < 50 {
        let r = tokio::time::timeout(DEADLINE, stream.next())
            .await?
            .context("stream ended")??;
        got.push(r);
    }
    // The member that serves the stream is the one follower with a consume on its counters.
    let serving = client
        .stats()
        .into_iter()
        .find(|s| s.consumes > 0)
        .context("no member serves the stream")?
        .addr;
    ensure!(serving != leader, "the stream went to the leader");
    cluster.kill(cluster.id_of(&serving)?)?;

    let more = client
        .produce_batch((50..100).map(|i| format!("v{i}").into()).collect())
        .await?;
    let last = *more.last().unwrap();
    while got.last().map(|r| r.offset) != Some(last) {
        let r = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .context("the stream stalled after its member died")?
            .context("stream ended")??;
        got.push(r);
    }
    for (i, r) in got.iter().enumerate() {
        assert_eq!(
            r.offset,
            first[0] + i as u64,
            "records out of order or repeated"
        );
        assert_eq!(&r.value[..], format!("v{i}").as_bytes());
    }
    let resumed_at = client
        .stats()
        .into_iter()
        .filter(|s| s.addr != serving && s.consumes > 0)
        .map(|s| s.addr)
        .collect::<Vec<_>>();
    println!("stream moved from {serving} to {resumed_at:?}");
    assert!(!resumed_at.is_empty());
    Ok(())
}
