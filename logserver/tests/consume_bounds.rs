//! Bounded ConsumeStream on a one-member loopback cluster: `to_end` ends the stream (OK) at the
//! end of the log as it was when the stream opened, `end_offset` ends it before that offset,
//! and an offset past the end is OUT_OF_RANGE naming the readable range.

mod common;

use anyhow::Result;
use common::*;
use futures::StreamExt;
use proglog_proto::v1 as pb;

/// The offsets a stream delivers until it ends.
async fn offsets(
    c: &mut proglog_proto::v1::log_client::LogClient<tonic::transport::Channel>,
    req: pb::ConsumeRequest,
) -> Result<Vec<u64>, tonic::Status> {
    let mut s = c.consume_stream(req).await?.into_inner();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let next = tokio::time::timeout_at(deadline, s.next())
            .await
            .expect("the stream ends by itself");
        match next {
            None => return Ok(out),
            Some(r) => out.push(r?.record.expect("record").offset),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_streams_end_at_the_end_of_the_log() -> Result<()> {
    let c = TestCluster::start(1, |_| {}).await?;
    let mut client = log_client(c.member(1).addr).await?;
    let records = (0..10)
        .map(|i| pb::Record {
            value: value(i).into(),
            ..Default::default()
        })
        .collect();
    client
        .produce_batch(pb::ProduceBatchRequest {
            records,
            ..Default::default()
        })
        .await?;
    let req = |offset, to_end, end_offset| pb::ConsumeRequest {
        offset,
        to_end,
        end_offset,
    };

    assert_eq!(
        offsets(&mut client, req(0, true, 0)).await?,
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        offsets(&mut client, req(4, true, 0)).await?,
        (4..10).collect::<Vec<_>>()
    );
    assert_eq!(offsets(&mut client, req(2, false, 5)).await?, vec![2, 3, 4]);
    assert_eq!(
        offsets(&mut client, req(2, true, 50)).await?,
        (2..10).collect::<Vec<_>>()
    );
    assert!(offsets(&mut client, req(10, true, 0)).await?.is_empty());

    let past = offsets(&mut client, req(11, true, 0)).await.unwrap_err();
    assert_eq!(past.code(), tonic::Code::OutOfRange);
    assert!(past.message().contains("[0, 10)"), "{}", past.message());
    c.shutdown().await
}
