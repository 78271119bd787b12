//! The API contract a caller can act on: status codes and metadata for bad inputs, follower
//! writes and unauthenticated admin calls; health, reflection, GetServers and leadership transfer.

mod common;

use anyhow::Result;
use common::*;
use proglog_proto::v1 as pb;
use tonic::Code;

fn record(n: usize) -> pb::Record {
    pb::Record {
        value: vec![7u8; n].into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_inputs_get_codes_a_caller_can_act_on() -> Result<()> {
    let c = TestCluster::start(3, |cfg| cfg.max_record_bytes = 1024).await?;
    let leader = c.leader().await?;
    let follower = (1..=3).find(|&m| m != leader).unwrap();
    let mut lc = log_client(c.member(leader).addr).await?;

    let off = produce(&mut lc, vec![1; 1024]).await?;
    assert_eq!(off, 0);
    let e = produce(&mut lc, vec![1; 1025]).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("1024"), "{}", e.message());
    let e = lc
        .produce_batch(pb::ProduceBatchRequest {
            records: vec![record(10), record(2000)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = lc
        .produce_batch(pb::ProduceBatchRequest {
            records: vec![],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let e = lc
        .consume(pb::ConsumeRequest {
            offset: 5,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange);
    assert!(
        e.message().contains("offset 5") && e.message().contains("[0, 1)"),
        "{}",
        e.message()
    );

    let mut fc = log_client(c.member(follower).addr).await?;
    let e = produce(&mut fc, b"x".to_vec()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    let hint = e
        .metadata()
        .get(proglog_proto::LEADER_METADATA_KEY)
        .expect("leader metadata");
    assert_eq!(hint.to_str()?, c.member(leader).addr.to_string());
    // Consume works on a follower, up to what it has applied.
    c.wait_next(follower, 1).await?;
    let r = fc
        .consume(pb::ConsumeRequest {
            offset: 0,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(r.record.unwrap().value.len(), 1024);

    // Admin calls need the bearer token.
    let mut admin = admin_client(c.member(leader).addr).await?;
    let e = admin.status(pb::StatusRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut bad = tonic::Request::new(pb::StatusRequest {});
    bad.metadata_mut()
        .insert("authorization", "Bearer wrong".parse()?);
    assert_eq!(
        admin.status(bad).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let st = admin
        .status(with_token(pb::StatusRequest {}))
        .await?
        .into_inner();
    assert_eq!(st.leader_id, Some(leader));
    assert_eq!(st.members.len(), 3);
    assert_eq!(st.next_offset, 1);
    let e = admin
        .initialize(with_token(pb::InitializeRequest { members: vec![] }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_reflection_and_get_servers() -> Result<()> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let c = TestCluster::start(3, |_| {}).await?;
    let leader = c.leader().await?;
    for m in &c.members {
        let addr = m.addr;
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let serving = eventually("SERVING", DEADLINE, || {
            let mut h = HealthClient::new(ch.clone());
            async move {
                let r = h
                    .check(HealthCheckRequest {
                        service: "proglog.v1.Log".into(),
                    })
                    .await
                    .ok()?;
                (r.into_inner().status == 1).then_some(())
            }
        })
        .await;
        assert!(serving.is_ok(), "member {} is not SERVING", m.id);
    }

    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", c.member(1).addr))?
        .connect()
        .await?;
    let mut refl = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(futures::stream::iter([req]))
        .await?
        .into_inner();
    let msg = resp.message().await?.expect("a reflection answer");
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        anyhow::bail!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "proglog.v1.Log",
        "proglog.v1.Cluster",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }

    let mut lc = log_client(c.member(2).addr).await?;
    let servers = lc
        .get_servers(pb::GetServersRequest {})
        .await?
        .into_inner()
        .servers;
    assert_eq!(servers.len(), 3);
    let leaders: Vec<_> = servers.iter().filter(|s| s.is_leader).collect();
    assert_eq!(leaders.len(), 1);
    assert_eq!(leaders[0].node_id, leader);
    assert_eq!(leaders[0].rpc_addr, c.member(leader).addr.to_string());
    assert!(servers.iter().all(|s| s.voter));
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_leadership_moves_the_leader() -> Result<()> {
    let c = TestCluster::start(3, |_| {}).await?;
    let leader = c.leader().await?;
    let target = (1..=3).find(|&m| m != leader).unwrap();
    let mut admin = admin_client(c.member(leader).addr).await?;
    let r = admin
        .transfer_leadership(with_token(pb::TransferLeadershipRequest {
            node_id: target,
        }))
        .await?
        .into_inner();
    assert_eq!(r.leader_id, target);
    assert_eq!(c.leader().await?, target);
    c.shutdown().await
}

/// Writes renew the followers' leader lease just as heartbeats do, so a transfer must hold them
/// while the lease lapses; otherwise the target's vote is refused for as long as writes flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_leadership_succeeds_under_steady_writes() -> Result<()> {
    let c = TestCluster::start(3, |_| {}).await?;
    let leader = c.leader().await?;
    let target = (1..=3).find(|&m| m != leader).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut lc = log_client(c.member(leader).addr).await?;
        tokio::spawn(async move {
            let (mut acked, mut refused) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match produce(&mut lc, value(acked)).await {
                    Ok(_) => acked += 1,
                    // After the transfer the old leader refuses with the new leader's hint.
                    Err(e) if e.code() == Code::Unavailable => {
                        refused += 1;
                        break;
                    }
                    Err(e) => panic!("produce failed: {e:?}"),
                }
            }
            (acked, refused)
        })
    };
    // Let writes flow before the transfer starts.
    let lc = log_client(c.member(leader).addr).await?;
    eventually("writes flowing", std::time::Duration::from_secs(10), || {
        let mut lc = lc.clone();
        async move {
            let r = lc
                .consume(pb::ConsumeRequest {
                    offset: 100,
                    ..Default::default()
                })
                .await
                .ok()?;
            r.into_inner().record.map(|_| ())
        }
    })
    .await?;
    let mut admin = admin_client(c.member(leader).addr).await?;
    let r = admin
        .transfer_leadership(with_token(pb::TransferLeadershipRequest {
            node_id: target,
        }))
        .await?
        .into_inner();
    assert_eq!(r.leader_id, target);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, _refused) = writer.await?;
    assert!(acked >= 100, "only {acked} writes were acknowledged");
    assert_eq!(c.leader().await?, target);
    // The new leader takes writes.
    let mut lc2 = log_client(c.member(target).addr).await?;
    produce(&mut lc2, value(acked)).await?;
    c.shutdown().await
}
