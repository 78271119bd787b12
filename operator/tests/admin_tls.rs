//! The operator's admin client against a real member under mutual TLS, both with the
//! certificates the operator's PKI issues (`pki`): the member's covers DNS names only, the
//! client dials its IP and verifies it under the pod's name; only the operator's identity may
//! call the admin API; a renewed identity (swapped in place, as `certs` does) is used by the
//! next connection with no new pool or client.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use logserver::config::{Config, TlsConfig};
use logserver::node::Node;
use proglog_operator::admin::{AdminPool, Auth, ClusterAuth};
use proglog_operator::pki::{self, IdentityPem, Leaf, Validity};
use proglog_operator::{acl, names};
use proglog_tls::{ClientTls, Reloading, TlsFiles};
use tonic::Code;

fn raw(id: &IdentityPem) -> [Vec<u8>; 3] {
    [
        id.ca.as_bytes().to_vec(),
        id.cert.as_bytes().to_vec(),
        id.key.as_bytes().to_vec(),
    ]
}

fn origin() -> TlsFiles {
    TlsFiles {
        ca: "memory/ca.pem".into(),
        cert: "memory/cert.pem".into(),
        key: "memory/key.pem".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_plane_takes_the_operators_certificate_only() -> Result<()> {
    let (name, ns) = ("demo", "logs");
    let v = Validity::default();
    let ca = pki::new_ca(name, ns)?;
    let member = pki::issue(&ca, Leaf::Member, name, ns, "cluster.local", &v)?;
    let operator = pki::issue(&ca, Leaf::Operator, name, ns, "cluster.local", &v)?;

    // The member, with the files the Secret and ConfigMap volumes would hold.
    let dir = tempfile::tempdir()?;
    let write = |file: &str, text: &str| -> Result<std::path::PathBuf> {
        let p = dir.path().join(file);
        std::fs::write(&p, text)?;
        Ok(p)
    };
    let mut cfg = Config::new(1, dir.path().join("data"), "127.0.0.1:0".parse()?);
    cfg.heartbeat = Duration::from_millis(100);
    cfg.election_timeout = Duration::from_millis(800);
    cfg.tls = Some(TlsConfig {
        files: TlsFiles {
            ca: write(names::CA_CERT_KEY, &member.ca)?,
            cert: write(names::TLS_CERT_KEY, &member.cert)?,
            key: write(names::TLS_KEY_KEY, &member.key)?,
        },
        reload_every: Duration::from_millis(100),
        acl_model: write(names::ACL_MODEL_KEY, acl::MODEL)?,
        acl_policy: write(names::ACL_POLICY_KEY, &acl::render(&[]))?,
        member_identity: Some(names::MEMBER_SUBJECT.into()),
        admin_identity: names::OPERATOR_SUBJECT.into(),
    });
    let node = Node::start(cfg).await?;
    let addr = node.addr().to_string();

    let pool = AdminPool::with_timeouts(Duration::from_secs(2), Duration::from_secs(5));
    let material = Reloading::from_pem(origin(), raw(&operator))?;
    let auth = ClusterAuth::Tls {
        tls: ClientTls::mutual(material.clone())?,
        name: name.into(),
        namespace: ns.into(),
    };
    let admin = pool.client(&addr, &auth.member(0)?)?;
    admin
        .initialize(Vec::new())
        .await
        .context("initialize as the operator, the member verified under demo-0's name")?;
    let st = admin.status().await?;
    ensure!(st.node_id == 1, "{st:?}");

    // The same identity, but expecting another ProgLog's member: the handshake fails.
    let other = ClusterAuth::Tls {
        tls: ClientTls::mutual(material.clone())?,
        name: "other".into(),
        namespace: ns.into(),
    };
    let e = pool
        .client(&addr, &other.member(0)?)?
        .status()
        .await
        .unwrap_err();
    ensure!(
        e.is_unreachable(),
        "another cluster's name must not verify: {e}"
    );

    // Plaintext with the bearer token: no TLS, no answer.
    let e = pool
        .client(&addr, &Auth::Token("t".into()))?
        .status()
        .await
        .unwrap_err();
    // NB: how the connection dies (UNAVAILABLE, CANCELLED, INTERNAL: an h2 protocol error)
    // depends on when the member closes it; what matters is that no handler and no guard
    // answered it.
    ensure!(
        !matches!(
            e.code(),
            Code::Ok | Code::PermissionDenied | Code::Unauthenticated
        ),
        "plaintext must not reach the admin API: {e}"
    );

    // A member's certificate is not the operator's: refused by name.
    let as_member = ClusterAuth::Tls {
        tls: ClientTls::mutual(Reloading::from_pem(origin(), raw(&member))?)?,
        name: name.into(),
        namespace: ns.into(),
    };
    let e = AdminPool::new()
        .client(&addr, &as_member.member(0)?)?
        .status()
        .await
        .unwrap_err();
    ensure!(
        e.code() == Code::PermissionDenied && e.to_string().contains(names::MEMBER_SUBJECT),
        "{e}"
    );

    // Swapping the material in place reaches the next connection of the same pooled client:
    // swapped to the member's identity, the admin API refuses it; swapped back, it answers.
    ensure!(material.update(raw(&member))?, "new material");
    pool.forget(&addr);
    let e = pool
        .client(&addr, &auth.member(0)?)?
        .status()
        .await
        .unwrap_err();
    ensure!(e.code() == Code::PermissionDenied, "{e}");
    let renewed = pki::issue(&ca, Leaf::Operator, name, ns, "cluster.local", &v)?;
    ensure!(material.update(raw(&renewed))?, "renewed material");
    pool.forget(&addr);
    pool.client(&addr, &auth.member(0)?)?
        .status()
        .await
        .context("the renewed operator certificate")?;
    node.shutdown().await?;
    Ok(())
}
