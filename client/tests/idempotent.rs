//! The client's idempotent producer against three `logserver` processes: on by default, one
//! producer lane per concurrent caller, recovery by itself when the cluster fences its epoch,
//! and the opt-out.

use std::collections::BTreeSet;

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use proglog_client::ClientConfig;
use proglog_proto::v1 as pb;
use proglog_proto::v1::log_client::LogClient;
use proglog_testkit::procs::{Cluster, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn produce_is_idempotent_by_default_and_recovers_from_a_fenced_epoch() -> Result<()> {
    let cluster = Cluster::start(3, Options::steady()).await?;
    let leader = cluster.leader_addr().await?;
    let client = cluster.client(false, ClientConfig::default()).await?;
    assert!(client.is_idempotent());

    // 8 concurrent callers: 8 lanes at most, each with its own sequence.
    let offsets: Vec<u64> = futures::stream::iter(0..200u32)
        .map(|i| {
            let c = client.clone();
            async move { c.produce(format!("r{i}").into_bytes()).await }
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    assert_eq!(offsets.iter().collect::<BTreeSet<_>>().len(), 200);
    let lanes = client.producer_lanes();
    assert!(!lanes.is_empty() && lanes.len() <= 8, "{lanes:?}");
    assert_eq!(lanes.iter().map(|l| l.next_seq).sum::<u64>(), 200);
    let batch = client
        .produce_batch(vec!["b0".into(), "b1".into(), "b2".into()])
        .await?;
    assert_eq!(batch, vec![200, 201, 202]);

    // Another session takes over every lane's producer id (a new epoch): the client's next
    // produce is refused as stale, and it starts a newer epoch by itself.
    let mut raw = LogClient::connect(format!("http://{leader}")).await?;
    for l in client.producer_lanes() {
        let r = raw
            .init_producer(pb::InitProducerRequest { producer_id: l.id })
            .await?
            .into_inner();
        assert_eq!(r.producer_epoch, l.epoch + 1);
    }
    let off = client.produce("after the fence").await?;
    assert_eq!(off, 203);
    let rec = client.consume(off).await?;
    assert_eq!(&rec.value[..], b"after the fence");
    assert!(
        client.producer_lanes().iter().any(|l| l.epoch >= 2),
        "{:?}",
        client.producer_lanes()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opting_out_sends_no_producer_id() -> Result<()> {
    let cluster = Cluster::start(3, Options::steady()).await?;
    let cfg = ClientConfig {
        idempotent: false,
        ..Default::default()
    };
    let client = cluster.client(false, cfg).await?;
    assert!(!client.is_idempotent());
    assert_eq!(client.produce("x").await?, 0);
    assert!(client.producer_lanes().is_empty());
    Ok(())
}
