//! The idempotent producer over gRPC on an in-process three-member cluster: retries of Produce,
//! ProduceBatch and ProduceStream get their original offsets and append nothing (in order, per
//! record); gaps, stale epochs and unknown producers are refused with the documented codes and
//! `proglog-producer-error` metadata; a request without a producer id behaves as before.

mod common;

use anyhow::Result;
use common::*;
use proglog_proto::v1 as pb;
use proglog_proto::v1::log_client::LogClient;
use tonic::transport::Channel;
use tonic::Code;

fn rec(v: &str) -> pb::Record {
    pb::Record {
        value: v.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

fn one(p: &pb::InitProducerResponse, seq: u64, v: &str) -> pb::ProduceRequest {
    pb::ProduceRequest {
        record: Some(rec(v)),
        producer_id: p.producer_id,
        producer_epoch: p.producer_epoch,
        sequence: seq,
    }
}

fn reason(s: &tonic::Status) -> &str {
    s.metadata()
        .get(proglog_proto::PRODUCER_ERROR_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Every value in `[0, next)` as the member at `lc` serves it.
async fn log_values(lc: &mut LogClient<Channel>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    loop {
        match lc
            .consume(pb::ConsumeRequest {
                offset: out.len() as u64,
                ..Default::default()
            })
            .await
        {
            Ok(r) => out.push(String::from_utf8(
                r.into_inner().record.unwrap().value.to_vec(),
            )?),
            Err(s) if s.code() == Code::OutOfRange => return Ok(out),
            Err(s) => return Err(s.into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_of_produce_batch_and_stream_append_nothing_and_keep_order() -> Result<()> {
    let c = TestCluster::start(3, |_| {}).await?;
    let leader = c.leader().await?;
    let mut lc = log_client(c.member(leader).addr).await?;
    let p = lc
        .init_producer(pb::InitProducerRequest::default())
        .await?
        .into_inner();
    assert!(p.producer_id > 0 && p.idle_expiry_ms > 0);

    let r = lc.produce(one(&p, 0, "a")).await?.into_inner();
    assert_eq!((r.offset, r.duplicate), (0, false));
    let r = lc.produce(one(&p, 0, "a")).await?.into_inner();
    assert_eq!((r.offset, r.duplicate), (0, true), "a retry");

    let batch = pb::ProduceBatchRequest {
        records: vec![rec("b"), rec("c"), rec("d")],
        producer_id: p.producer_id,
        producer_epoch: p.producer_epoch,
        first_sequence: 1,
    };
    let r = lc.produce_batch(batch.clone()).await?.into_inner();
    assert_eq!((r.offsets.clone(), r.duplicate), (vec![1, 2, 3], false));
    let r = lc.produce_batch(batch).await?.into_inner();
    assert_eq!((r.offsets, r.duplicate), (vec![1, 2, 3], true));

    // A stream of five records, then the same stream again (a client resending after a broken
    // stream): the same offsets, in order, nothing appended.
    let stream = || {
        let reqs: Vec<_> = (4..9).map(|s| one(&p, s, &format!("s{s}"))).collect();
        futures::stream::iter(reqs)
    };
    for duplicate in [false, true] {
        let mut acks = lc.produce_stream(stream()).await?.into_inner();
        let mut got = Vec::new();
        while let Some(a) = acks.message().await? {
            assert_eq!(a.duplicate, duplicate);
            got.push(a.offset);
        }
        assert_eq!(got, vec![4, 5, 6, 7, 8]);
    }
    // A client without a producer id: at least once, as before.
    for _ in 0..2 {
        produce(&mut lc, b"plain".to_vec()).await?;
    }
    let want = [
        "a", "b", "c", "d", "s4", "s5", "s6", "s7", "s8", "plain", "plain",
    ];
    assert_eq!(log_values(&mut lc).await?, want);
    for m in c.running() {
        c.wait_next(m.id, want.len() as u64).await?;
        assert_eq!(log_values(&mut log_client(m.addr).await?).await?, want);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gaps_stale_epochs_and_unknown_producers_are_refused_with_codes() -> Result<()> {
    let c = TestCluster::start(3, |_| {}).await?;
    let leader = c.leader().await?;
    let follower = (1..=3).find(|&m| m != leader).unwrap();
    let mut lc = log_client(c.member(leader).addr).await?;
    let p = lc
        .init_producer(pb::InitProducerRequest::default())
        .await?
        .into_inner();
    lc.produce(one(&p, 0, "a")).await?;

    let e = lc.produce(one(&p, 5, "gap")).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e)),
        (Code::Aborted, "out-of-order"),
        "{e:?}"
    );
    assert!(e.message().contains("1 comes next"), "{}", e.message());

    let unknown = pb::InitProducerResponse {
        producer_id: 999_999,
        ..p
    };
    let e = lc.produce(one(&unknown, 0, "x")).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e)),
        (Code::FailedPrecondition, "unknown-producer")
    );

    // A new epoch of the same id fences the old one; sequences restart at 0.
    let p2 = lc
        .init_producer(pb::InitProducerRequest {
            producer_id: p.producer_id,
        })
        .await?
        .into_inner();
    assert_eq!(
        (p2.producer_id, p2.producer_epoch),
        (p.producer_id, p.producer_epoch + 1)
    );
    let e = lc.produce(one(&p, 1, "old")).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e)),
        (Code::FailedPrecondition, "stale-epoch")
    );
    assert_eq!(lc.produce(one(&p2, 0, "b")).await?.into_inner().offset, 1);

    // A sequence reused for other records, and an overflowing one.
    let batch = pb::ProduceBatchRequest {
        records: vec![rec("x"), rec("y")],
        producer_id: p2.producer_id,
        producer_epoch: p2.producer_epoch,
        first_sequence: 0,
    };
    let e = lc.produce_batch(batch).await.unwrap_err();
    assert_eq!((e.code(), reason(&e)), (Code::InvalidArgument, "reused"));
    let e = lc.produce(one(&p2, u64::MAX, "z")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // InitProducer is a write: a follower names the leader.
    let mut fc = log_client(c.member(follower).addr).await?;
    let e = fc
        .init_producer(pb::InitProducerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e
        .metadata()
        .get(proglog_proto::LEADER_METADATA_KEY)
        .is_some());

    assert_eq!(
        log_values(&mut lc).await?,
        ["a", "b"],
        "refusals append nothing"
    );
    Ok(())
}
