//! `proglog-certs DIR`: a development PKI for `make run-local` (see `proglog_tls::issue::dev_pki`):
//! CA, member, operator and the book's users `root` (may produce and consume) and `nobody` (may
//! do nothing), plus the book's casbin `model.conf` and `policy.csv`. Does nothing when
//! `DIR/ca.pem` exists already.

use std::path::PathBuf;

const MODEL: &str = include_str!("../../../logserver/acl/model.conf");
const POLICY: &str = include_str!("../../../logserver/acl/policy.csv");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: proglog-certs DIR")?);
    if dir.join("ca.pem").exists() {
        println!("{}: certificates exist already", dir.display());
        return Ok(());
    }
    proglog_tls::issue::dev_pki(&dir, &["localhost", "127.0.0.1"], &["root", "nobody"])?;
    std::fs::write(dir.join("model.conf"), MODEL)?;
    std::fs::write(dir.join("policy.csv"), POLICY)?;
    println!(
        "{}: CA, member, operator, root and nobody certificates, ACL",
        dir.display()
    );
    Ok(())
}
