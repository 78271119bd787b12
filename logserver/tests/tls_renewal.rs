//! Certificate renewal with no restart and no failed call: members and a client start with
//! certificates that expire a few seconds in; new ones are written over the files while a
//! producer runs, opening a fresh connection every few calls; the producer carries on past the
//! old certificates' expiry without a single failed call, and every member presents its new
//! certificate to new connections.

mod tls_common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use proglog_proto::v1::log_client::LogClient;
use proglog_testkit::pki::channel;
use proglog_testkit::{eventually, DEADLINE};
use proglog_tls::issue::DEV_MEMBER;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tls_common::{record, TlsCluster, DAY};
use tower_service::Service;

/// How long the first certificates are valid (and how long the producer must ride past).
const SHORT: Duration = Duration::from_secs(5);

/// The leaf certificate member `addr` presents to a new connection.
async fn presented(tls: &proglog_tls::ClientTls, addr: &str) -> Result<Vec<u8>> {
    let io = tls
        .connector()
        .call(format!("http://{addr}").parse()?)
        .await?;
    let (_, conn) = io.inner().get_ref();
    Ok(conn.peer_certificates().unwrap_or_default()[0].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewed_certificates_are_used_with_no_restart_and_no_failed_call() -> Result<()> {
    let started = Instant::now();
    let c = TlsCluster::start_with(3, SHORT).await?;
    c.pki.issue("root", "root", &[], SHORT)?;
    let l = c.leader().await?;
    let addr = c.addr(l);
    // One client identity for the whole run: it must pick the renewed files up by itself.
    let tls = c.pki.client("root")?;

    // Calls acknowledged so far, so the renewal starts once the producer is under way.
    let acked = Arc::new(AtomicU64::new(0));
    let producer = {
        let (tls, addr, acked) = (tls.clone(), addr.clone(), acked.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed, mut after_expiry) = (0u64, Vec::new(), 0u64);
            let mut client = None;
            while started.elapsed() < SHORT + Duration::from_secs(2) {
                // A fresh connection (a new handshake on both sides) every 5 calls.
                if ok % 5 == 0 {
                    client = Some(LogClient::new(channel(Some(&tls), &addr)?));
                }
                let c = client.as_mut().expect("set above");
                match c.produce(record("r")).await {
                    Ok(_) => {
                        ok += 1;
                        acked.store(ok, Ordering::Relaxed);
                    }
                    Err(e) => failed.push(e.to_string()),
                }
                if started.elapsed() > SHORT {
                    after_expiry += 1;
                }
            }
            anyhow::Ok((ok, failed, after_expiry))
        })
    };

    // Renew while it runs: every member and the client.
    eventually("the producer is under way", DEADLINE, || async {
        (acked.load(Ordering::Relaxed) >= 10).then_some(())
    })
    .await?;
    for i in 0..3 {
        c.pki.issue(
            &format!("member-{}", i + 1),
            DEV_MEMBER,
            &["127.0.0.1"],
            DAY,
        )?;
    }
    c.pki.issue("root", "root", &[], DAY)?;
    let probe = c.pki.anonymous()?;
    for i in 0..3 {
        let file = std::fs::read(c.pki.files(&format!("member-{}", i + 1)).cert)?;
        let new = CertificateDer::from_pem_slice(&file)?.to_vec();
        eventually(
            "the member presents its renewed certificate",
            DEADLINE,
            || async { (presented(&probe, &c.addr(i)).await.ok()? == new).then_some(()) },
        )
        .await?;
    }

    let (ok, failed, after_expiry) = producer.await??;
    ensure!(
        failed.is_empty(),
        "{} of {} calls failed: {:?}",
        failed.len(),
        ok,
        &failed[..failed.len().min(3)]
    );
    ensure!(
        after_expiry > 0,
        "the producer did not run past the old certificates' expiry"
    );
    eprintln!("{ok} produce calls, {after_expiry} after the old certificates expired, none failed");
    c.shutdown().await
}
