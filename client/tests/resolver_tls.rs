//! Under the operator a member's certificate names it by DNS (`<pod>.<name>-members.<ns>.svc`,
//! a wildcard under the headless Service) while the Kubernetes resolver hands the client pod
//! IPs. A `logserver` process whose certificate carries DNS names only, dialed at 127.0.0.1:
//! the client verifies it under the name the resolver gives the endpoint, and refuses it under
//! the IP or under another cluster's name.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use proglog_client::resolver::{Endpoint, Members, StaticResolver};
use proglog_client::{Client, ClientConfig, RetryPolicy};
use proglog_proto::v1 as pb;
use proglog_proto::v1::cluster_client::ClusterClient;
use proglog_testkit::pki::{channel, TestPki};
use proglog_testkit::procs::{free_addr, logserver_bin};
use proglog_testkit::{eventually, DEADLINE};

const POD_NAME: &str = "plog-0.plog-members.logs.svc";

struct Member(Child);

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client(pki: &TestPki, addr: &str, server_name: Option<&str>, attempts: u32) -> Result<Client> {
    let members = Members::new(vec![Endpoint {
        addr: addr.to_string(),
        name: "plog-0".into(),
        is_leader: true,
        ready: true,
        server_name: server_name.map(str::to_string),
    }]);
    let cfg = ClientConfig {
        tls: Some(pki.client("root")?),
        retry: RetryPolicy {
            max_attempts: attempts,
            deadline: Duration::from_secs(5),
            ..Default::default()
        },
        ..Default::default()
    };
    Ok(Client::new(Arc::new(StaticResolver::new(members)), cfg)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_dialed_by_ip_is_verified_under_its_dns_name() -> Result<()> {
    let pki = TestPki::new()?;
    // The member's certificate as the operator issues it: DNS names only, no IP address.
    pki.issue(
        "member-dns",
        proglog_tls::issue::DEV_MEMBER,
        &["*.plog-members.logs.svc", "plog-leader.logs.svc"],
        Duration::from_secs(3600),
    )?;
    let files = pki.files("member-dns");
    let dir = tempfile::tempdir()?;
    let addr = free_addr()?.to_string();
    let child = Command::new(logserver_bin()?)
        .args(["--id", "1", "--listen", &addr, "--advertise", &addr])
        .arg("--data-dir")
        .arg(dir.path().join("m1"))
        .arg("--tls-ca")
        .arg(&files.ca)
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .arg("--acl-model")
        .arg(pki.model())
        .arg("--acl-policy")
        .arg(pki.policy())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting logserver")?;
    let _member = Member(child);
    eventually("the member to listen", DEADLINE, || async {
        tokio::net::TcpStream::connect(addr.as_str()).await.ok()
    })
    .await?;
    // The operator's side does the same: it dials the IP, verifies under the pod's name.
    let op = pki.client("operator")?.with_server_name(POD_NAME)?;
    ClusterClient::new(channel(Some(&op), &addr)?)
        .initialize(pb::InitializeRequest { members: vec![] })
        .await
        .context("initialize, verifying the member under its DNS name")?;

    let good = client(&pki, &addr, Some(POD_NAME), 50)?;
    let off = eventually(
        "a produce verified under the pod's name",
        DEADLINE,
        || async { good.produce(b"hello".to_vec()).await.ok() },
    )
    .await?;
    ensure!(good.consume(off).await?.value[..] == b"hello"[..]);

    // Under the IP dialed (no name from the resolver): the certificate does not cover it.
    let by_ip = client(&pki, &addr, None, 1)?;
    let e = anyhow::Error::new(by_ip.produce(b"no".to_vec()).await.unwrap_err());
    ensure!(
        format!("{e:#}").contains("not valid for the name dialed"),
        "{e:#}"
    );
    // Under another cluster's pod name: refused the same way.
    let other = client(&pki, &addr, Some("plog-0.other-members.logs.svc"), 1)?;
    let e = anyhow::Error::new(other.produce(b"no".to_vec()).await.unwrap_err());
    ensure!(
        format!("{e:#}").contains("not valid for the name dialed"),
        "{e:#}"
    );
    Ok(())
}
