//! `devcluster-echo`: the small program the devcluster tests run in pods (image `proglog/devcluster-echo`).
//!
//! `devcluster-echo serve` (the default): an HTTP server on `$POD_IP:$PORT` (default 127.0.0.1:8080).
//! On start it records its first boot in `$DATA_DIR/first-boot` (kept if present) and appends to
//! `$DATA_DIR/boots`. `GET /healthz` answers `ok`; `GET /` answers `host=<hostname> ip=<ip>
//! first-boot=<...> boots=<n>`. SIGTERM stops it cleanly.
//!
//! `devcluster-echo grpc-health`: a gRPC server on `$POD_IP:$PORT` with only `grpc.health.v1.Health`,
//! reporting SERVING (for gRPC probes).
//!
//! `devcluster-echo rbac-check`: with in-cluster config, lists ConfigMaps and Secrets in its namespace
//! and prints `configmaps: allowed` / `secrets: forbidden` (or the other way), then exits 0.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

async fn serve() -> Result<()> {
    let ip = env("POD_IP", "127.0.0.1");
    let port = env("PORT", "8080");
    let host = env("HOSTNAME", "unknown");
    let (first, boots) = match std::env::var("DATA_DIR") {
        Ok(d) => {
            let d = PathBuf::from(d);
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            let first_path = d.join("first-boot");
            if !first_path.exists() {
                let stamp = format!(
                    "{host}@{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)?
                        .as_nanos()
                );
                std::fs::write(&first_path, &stamp)?;
                std::fs::File::open(&d)?.sync_all()?;
            }
            let mut boots = std::fs::read_to_string(d.join("boots")).unwrap_or_default();
            boots.push_str(&format!("{host}\n"));
            std::fs::write(d.join("boots"), &boots)?;
            (std::fs::read_to_string(&first_path)?, boots.lines().count())
        }
        Err(_) => ("none".to_string(), 0),
    };
    let listener = TcpListener::bind(format!("{ip}:{port}"))
        .await
        .with_context(|| format!("binding {ip}:{port}"))?;
    println!("devcluster-echo: serving on {ip}:{port} (first-boot={first} boots={boots})");
    let body = format!("host={host} ip={ip} first-boot={first} boots={boots}\n");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (mut conn, _) = tokio::select! {
            c = listener.accept() => c?,
            _ = term.recv() => { println!("devcluster-echo: SIGTERM, bye"); return Ok(()); }
        };
        let body = body.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let n = conn.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let text = if path == "/healthz" {
                "ok\n".to_string()
            } else {
                body
            };
            let resp = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len());
            let _ = conn.write_all(resp.as_bytes()).await;
        });
    }
}

async fn grpc_health() -> Result<()> {
    let addr = format!("{}:{}", env("POD_IP", "127.0.0.1"), env("PORT", "9090")).parse()?;
    let (_reporter, service) = tonic_health::server::health_reporter();
    println!("devcluster-echo: gRPC health on {addr}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_shutdown(addr, async move {
            term.recv().await;
        })
        .await?;
    Ok(())
}

async fn rbac_check() -> Result<()> {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use kube::api::{Api, ListParams};
    let client = kube::Client::try_default()
        .await
        .context("in-cluster config")?;
    let ns = std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")?;
    let say = |what: &str, r: Result<usize, kube::Error>| match r {
        Ok(n) => println!("{what}: allowed ({n} items)"),
        Err(kube::Error::Api(e)) if e.code == 403 => println!("{what}: forbidden ({})", e.message),
        Err(e) => println!("{what}: error ({e})"),
    };
    let lp = ListParams::default();
    say(
        "configmaps",
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .list(&lp)
            .await
            .map(|l| l.items.len()),
    );
    say(
        "secrets",
        Api::<Secret>::namespaced(client.clone(), &ns)
            .list(&lp)
            .await
            .map(|l| l.items.len()),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => serve().await,
        Some("grpc-health") => grpc_health().await,
        Some("rbac-check") => rbac_check().await,
        Some(other) => anyhow::bail!("unknown mode {other:?} (serve, grpc-health, rbac-check)"),
    }
}
