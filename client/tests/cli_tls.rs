//! The `proglog` CLI (and so the client library) against three `logserver` processes with
//! mutual TLS: the cluster is formed with the operator's certificate, a user the ACL allows
//! produces and consumes, and each way of getting it wrong ends in an error that says what is
//! wrong: a refused action, a wrong CA, an expired certificate, no TLS at all.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::{ensure, Context, Result};
use proglog_testkit::pki::TestPki;
use proglog_testkit::procs::logserver_bin;
use proglog_testkit::{eventually, DEADLINE};

struct Members {
    procs: Vec<Child>,
    addrs: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Members {
    fn drop(&mut self) {
        for c in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Three members with TLS flags only (no admin token), not yet a cluster.
async fn spawn(pki: &TestPki) -> Result<Members> {
    let bin = logserver_bin()?;
    let dir = tempfile::tempdir()?;
    let member = pki.files("member");
    let (mut procs, mut addrs) = (Vec::new(), Vec::new());
    for id in 1..=3 {
        let addr = free_addr()?.to_string();
        let child = Command::new(&bin)
            .args([
                "--id",
                &id.to_string(),
                "--listen",
                &addr,
                "--advertise",
                &addr,
            ])
            .arg("--data-dir")
            .arg(dir.path().join(format!("m{id}")))
            .arg("--tls-ca")
            .arg(&member.ca)
            .arg("--tls-cert")
            .arg(&member.cert)
            .arg("--tls-key")
            .arg(&member.key)
            .arg("--acl-model")
            .arg(pki.model())
            .arg("--acl-policy")
            .arg(pki.policy())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        procs.push(child);
        addrs.push(addr);
    }
    for a in &addrs {
        eventually("members to listen", DEADLINE, || async {
            tokio::net::TcpStream::connect(a.as_str()).await.ok()
        })
        .await?;
    }
    Ok(Members {
        procs,
        addrs,
        _dir: dir,
    })
}

/// Runs `proglog --addr ... --ca <ca> [--cert/--key of who] args`.
fn proglog(
    m: &Members,
    ca: Option<&std::path::Path>,
    who: Option<&proglog_tls::TlsFiles>,
    args: &[&str],
) -> Result<Output> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_proglog"));
    cmd.arg("--addr").arg(m.addrs.join(","));
    for v in [
        "PROGLOG_ADMIN_TOKEN",
        "PROGLOG_ADMIN_TOKEN_FILE",
        "PROGLOG_CA",
        "PROGLOG_CERT",
        "PROGLOG_KEY",
        "KUBECONFIG",
    ] {
        cmd.env_remove(v);
    }
    if let Some(ca) = ca {
        cmd.arg("--ca").arg(ca);
    }
    if let Some(w) = who {
        cmd.arg("--cert").arg(&w.cert).arg("--key").arg(&w.key);
    }
    cmd.args(args);
    Ok(cmd.stdin(Stdio::null()).output()?)
}

fn ok(out: &Output) -> Result<String> {
    ensure!(
        out.status.success(),
        "proglog failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The stderr of a run that must fail.
fn failed(out: &Output) -> Result<String> {
    ensure!(
        !out.status.success(),
        "proglog succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_over_mutual_tls_with_clear_errors() -> Result<()> {
    let pki = TestPki::new()?;
    let m = spawn(&pki).await?;
    let ca = pki.files("member").ca;
    let (op, root, nobody) = (
        pki.files("operator"),
        pki.files("root"),
        pki.files("nobody"),
    );

    let members: Vec<String> = m
        .addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect();
    let mut init = vec!["admin", "init"];
    for mm in &members {
        init.extend(["--member", mm.as_str()]);
    }
    // A user's certificate is not the operator's: the admin API refuses it.
    let e = failed(&proglog(&m, Some(&ca), Some(&root), &init)?)?;
    ensure!(
        e.contains("permission denied") && e.contains("\"root\""),
        "{e}"
    );
    assert_eq!(
        ok(&proglog(&m, Some(&ca), Some(&op), &init)?)?.trim(),
        "initialized"
    );
    let wait = ["admin", "wait-serving", "--timeout-secs", "30"];
    ok(&proglog(&m, Some(&ca), None, &wait)?)?;

    let out = ok(&proglog(
        &m,
        Some(&ca),
        Some(&root),
        &["produce", "hello", "world"],
    )?)?;
    ensure!(out.contains('0') && out.contains('1'), "{out}");
    let out = eventually("the records to be readable", DEADLINE, || async {
        let o = proglog(
            &m,
            Some(&ca),
            Some(&root),
            &["consume", "--from", "0", "--count", "2"],
        )
        .ok()?;
        let s = ok(&o).ok()?;
        s.contains("world").then_some(s)
    })
    .await?;
    ensure!(out.contains("hello"), "{out}");

    // A refused action names the subject and the action.
    let e = failed(&proglog(
        &m,
        Some(&ca),
        Some(&nobody),
        &["--attempts", "1", "--timeout-secs", "2", "produce", "x"],
    )?)?;
    ensure!(
        e.contains("permission denied") && e.contains("\"nobody\"") && e.contains("produce"),
        "{e}"
    );
    ensure!(e.contains("hint:") && e.contains("ACL"), "{e}");

    // No client certificate: UNAUTHENTICATED, with a hint to pass one.
    let e = failed(&proglog(
        &m,
        Some(&ca),
        None,
        &["--attempts", "1", "--timeout-secs", "2", "produce", "x"],
    )?)?;
    ensure!(e.contains("unauthenticated") && e.contains("--cert"), "{e}");

    // A CA that did not sign the members.
    let other = TestPki::new()?;
    let (oca, oroot) = (other.files("root").ca, other.files("root"));
    let e = failed(&proglog(
        &m,
        Some(&oca),
        Some(&oroot),
        &["--attempts", "1", "--timeout-secs", "2", "produce", "x"],
    )?)?;
    ensure!(e.contains("not signed by a CA in our CA bundle"), "{e}");

    // An expired client certificate: refused before any call, naming the file and the date.
    let day = Duration::from_secs(24 * 3600);
    let now = SystemTime::now();
    pki.ca
        .issue_between("root", &[], now - 2 * day, now - day)?
        .write(pki.dir.path(), "expired", &pki.ca.cert_pem())?;
    let expired = pki.files("expired");
    let e = failed(&proglog(&m, Some(&ca), Some(&expired), &["produce", "x"])?)?;
    ensure!(e.contains("expired") && e.contains("expired.pem"), "{e}");

    // Plaintext against TLS members: it says they may serve TLS.
    let e = failed(&proglog(
        &m,
        None,
        None,
        &["--attempts", "1", "--timeout-secs", "2", "produce", "x"],
    )?)?;
    ensure!(e.contains("--ca"), "{e}");

    Ok(())
}
