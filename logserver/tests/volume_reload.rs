//! Under the operator a member reads its certificate from a Secret volume and its ACL from a
//! ConfigMap volume. The kubelet updates those the way its atomic writer does: the files are
//! symlinks `<key> -> ..data/<key>`, `..data` is a symlink to a timestamped directory, and an
//! update writes a new directory and renames a new `..data` symlink over the old one. Both
//! reloaders (the TLS material and the ACL) must see such a swap, with no write to the paths
//! they were given.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use logserver::service::acl::{Acl, Action};
use proglog_tls::issue::Ca;
use proglog_tls::{Reloading, TlsFiles};

/// A kubelet-style volume in `dir` holding `files`; call again to update it.
fn atomic_write(dir: &Path, generation: u32, files: &[(&str, &str)]) -> Result<()> {
    let ts = dir.join(format!("..2026_11_30_10_00_0{generation}.{generation}"));
    std::fs::create_dir(&ts)?;
    for (k, v) in files {
        std::fs::write(ts.join(k), v)?;
    }
    let tmp = dir.join("..data_tmp");
    symlink(ts.file_name().unwrap(), &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    for (k, _) in files {
        let link = dir.join(k);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(k), &link)?;
        }
    }
    Ok(())
}

const MODEL: &str = include_str!("../acl/model.conf");

#[tokio::test]
async fn the_acl_follows_a_configmap_volume_update() -> Result<()> {
    let dir = tempfile::tempdir()?;
    atomic_write(
        dir.path(),
        1,
        &[
            ("model.conf", MODEL),
            ("policy.csv", "p, alice, *, consume\n"),
        ],
    )?;
    let acl = Acl::load(
        &dir.path().join("model.conf"),
        &dir.path().join("policy.csv"),
    )
    .await?;
    assert!(acl.allows("alice", Action::Consume));
    assert!(!acl.allows("bob", Action::Produce));
    assert!(!acl.reload().await?, "nothing changed yet");
    atomic_write(
        dir.path(),
        2,
        &[
            ("model.conf", MODEL),
            ("policy.csv", "p, bob, *, produce\n"),
        ],
    )?;
    assert!(acl.reload().await?, "the swap of ..data is a change");
    assert!(acl.allows("bob", Action::Produce));
    assert!(!acl.allows("alice", Action::Consume), "revoked");
    Ok(())
}

#[tokio::test]
async fn tls_material_follows_a_secret_volume_update() -> Result<()> {
    let ca = Ca::new("volume test CA", Duration::from_secs(3600))?;
    let issue = |cn: &str| ca.issue(cn, &["localhost"], Duration::from_secs(3600));
    let (one, two) = (issue("proglog-member")?, issue("renewed-member")?);
    let dir = tempfile::tempdir()?;
    let ca_pem = ca.cert_pem();
    atomic_write(
        dir.path(),
        1,
        &[
            ("ca.pem", &ca_pem),
            ("cert.pem", &one.cert_pem),
            ("key.pem", &one.key_pem),
        ],
    )?;
    let files = TlsFiles {
        ca: dir.path().join("ca.pem"),
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    let m = Reloading::load(files)?;
    assert_eq!(m.subject(), "proglog-member");
    atomic_write(
        dir.path(),
        2,
        &[
            ("ca.pem", &ca_pem),
            ("cert.pem", &two.cert_pem),
            ("key.pem", &two.key_pem),
        ],
    )?;
    assert!(m.reload()?, "the swap of ..data is a change");
    assert_eq!(m.subject(), "renewed-member");
    Ok(())
}
