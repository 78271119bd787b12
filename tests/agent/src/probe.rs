//! Container probes (exec, HTTP, TCP, gRPC), as the kubelet runs them, against the pod's IP.
//!
//! NB: an `HTTPS` httpGet probe only checks that the TCP connection opens (no TLS client here);
//! an exec probe runs inside the container's mount namespace through `nsenter`.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The counters a probe keeps between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Delay before the first run.
    pub initial_delay: Duration,
    /// Interval between runs.
    pub period: Duration,
    /// Per-run deadline.
    pub timeout: Duration,
    /// Consecutive successes that make the probe pass.
    pub success_threshold: u32,
    /// Consecutive failures that make it fail.
    pub failure_threshold: u32,
}

impl Settings {
    /// The probe's settings with Kubernetes' defaults.
    pub fn of(p: &Probe) -> Self {
        let secs = |v: Option<i32>, d: i32| Duration::from_secs(v.unwrap_or(d).max(0) as u64);
        Self {
            initial_delay: secs(p.initial_delay_seconds, 0),
            period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }
}

/// Tracks consecutive results and says whether the probe currently passes.
#[derive(Debug, Clone)]
pub struct Tracker {
    settings: Settings,
    successes: u32,
    failures: u32,
    passing: bool,
}

impl Tracker {
    /// A tracker starting in `initially` state.
    pub fn new(settings: Settings, initially: bool) -> Self {
        Self {
            settings,
            successes: 0,
            failures: 0,
            passing: initially,
        }
    }

    /// Records one result; returns the state after it.
    pub fn record(&mut self, ok: bool) -> bool {
        if ok {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= self.settings.success_threshold {
                self.passing = true;
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures >= self.settings.failure_threshold {
                self.passing = false;
            }
        }
        self.passing
    }
}

fn port(p: &IntOrString, c: &Container) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("bad port {n}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

/// Runs `probe` once; `Ok` when it passes. `pid` is the container's process (for exec probes).
pub async fn run(
    probe: &Probe,
    c: &Container,
    pod_ip: &str,
    pid: Option<u32>,
    env: &[(String, String)],
) -> Result<(), String> {
    let timeout = Settings::of(probe).timeout;
    match tokio::time::timeout(timeout, run_inner(probe, c, pod_ip, pid, env)).await {
        Ok(r) => r,
        Err(_) => Err(format!("probe timed out after {timeout:?}")),
    }
}

async fn run_inner(
    probe: &Probe,
    c: &Container,
    pod_ip: &str,
    pid: Option<u32>,
    env: &[(String, String)],
) -> Result<(), String> {
    if let Some(h) = &probe.http_get {
        let host = h.host.clone().unwrap_or_else(|| pod_ip.to_string());
        let port = port(&h.port, c)?;
        let mut stream = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        if h.scheme.as_deref() == Some("HTTPS") {
            return Ok(());
        }
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.35\r\nAccept: */*\r\nConnection: close\r\n");
        for hh in h.http_headers.iter().flatten() {
            req.push_str(&format!("{}: {}\r\n", hh.name, hh.value));
        }
        req.push_str("\r\n");
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("sending request: {e}"))?;
        let mut buf = vec![0u8; 256];
        let mut n = 0;
        while n < 16 {
            let r = stream
                .read(&mut buf[n..])
                .await
                .map_err(|e| format!("reading response: {e}"))?;
            if r == 0 {
                break;
            }
            n += r;
        }
        let head = String::from_utf8_lossy(&buf[..n]);
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad HTTP response {head:?}"))?;
        return if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        };
    }
    if let Some(t) = &probe.tcp_socket {
        let host = t.host.clone().unwrap_or_else(|| pod_ip.to_string());
        let port = port(&t.port, c)?;
        TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
        return Ok(());
    }
    if let Some(g) = &probe.grpc {
        use tonic_health::pb::{
            health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
        };
        let port = u16::try_from(g.port).map_err(|_| format!("bad port {}", g.port))?;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{pod_ip}:{port}"))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("connect {pod_ip}:{port}: {e}"))?;
        let resp = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: g.service.clone().unwrap_or_default(),
            })
            .await
            .map_err(|e| format!("health check: {e}"))?;
        let status = resp.into_inner().status;
        return if status == ServingStatus::Serving as i32 {
            Ok(())
        } else {
            Err(format!("service unhealthy (responded with {status})"))
        };
    }
    if let Some(e) = &probe.exec {
        let cmd = e.command.clone().unwrap_or_default();
        if cmd.is_empty() {
            return Err("exec probe without command".into());
        }
        let mut command = tokio::process::Command::new("nsenter");
        if let Some(pid) = pid {
            command.args(["-t", &pid.to_string(), "-m", "-u", "--"]);
        }
        let out = command
            .args(&cmd)
            .env_clear()
            .envs(env.iter().cloned())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("exec {cmd:?}: {e}"))?;
        return if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "command {cmd:?} exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim()
            ))
        };
    }
    Err("probe has no handler".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, TCPSocketAction};
    use tokio::net::TcpListener;

    #[test]
    fn thresholds() {
        let s = Settings::of(&Probe {
            success_threshold: Some(2),
            failure_threshold: Some(2),
            ..Default::default()
        });
        let mut t = Tracker::new(s, false);
        assert!(!t.record(true));
        assert!(t.record(true));
        assert!(t.record(false));
        assert!(!t.record(false));
        assert!(!t.record(true));
    }

    async fn http_server(status: &'static str) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        port
    }

    #[tokio::test]
    async fn http_tcp_exec() {
        let c = Container::default();
        let ok = http_server("200 OK").await;
        let bad = http_server("503 Service Unavailable").await;
        let http = |port: u16| Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(port as i32),
                path: Some("/healthz".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(run(&http(ok), &c, "127.0.0.1", None, &[]).await, Ok(()));
        assert!(run(&http(bad), &c, "127.0.0.1", None, &[])
            .await
            .unwrap_err()
            .contains("503"));
        let tcp = |port: u16| Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(port as i32),
                host: None,
            }),
            ..Default::default()
        };
        assert_eq!(run(&tcp(ok), &c, "127.0.0.1", None, &[]).await, Ok(()));
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(run(&tcp(closed), &c, "127.0.0.1", None, &[]).await.is_err());
        let exec = |cmd: &str| Probe {
            exec: Some(ExecAction {
                command: Some(vec!["sh".into(), "-c".into(), cmd.into()]),
            }),
            ..Default::default()
        };
        let env = [("PATH".to_string(), "/usr/bin:/bin".to_string())];
        // Without a pid, nsenter runs the command in the agent's own namespaces.
        assert_eq!(
            run(&exec("true"), &c, "127.0.0.1", None, &env).await,
            Ok(())
        );
        assert!(run(&exec("exit 3"), &c, "127.0.0.1", None, &env)
            .await
            .is_err());
    }
}
