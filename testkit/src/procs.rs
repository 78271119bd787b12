//! A cluster of real `logserver` processes: start, form through the admin API, SIGKILL, pause
//! (SIGSTOP/SIGCONT), restart on the same address and data, and find the leader. Every member
//! binds 127.0.0.1 on a free port unless a [`Placement`] puts it elsewhere (network namespaces).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use proglog_client::admin::Admin;
use proglog_client::resolver::{BootstrapConfig, BootstrapResolver};
use proglog_client::{Client, ClientConfig};
use proglog_proto::v1 as pb;
use proglog_proto::v1::log_client::LogClient;

use crate::{eventually, DEADLINE};

/// The admin token of test clusters.
pub const TOKEN: &str = "testkit-admin-token";

/// The `logserver` binary: `$PROGLOG_LOGSERVER` when set; else the one next to this executable
/// (`target/<profile>/logserver`, when a tool was built together with it); else built once with
/// cargo into this build's target dir.
///
/// NB: logserver's own tests pass `env!("CARGO_BIN_EXE_logserver")` in [`Options::bin`]: a
/// separate `cargo build -p logserver` resolves features apart from the test build and
/// rebuilds (and stores) TLS and gRPC crates a second time.
pub fn logserver_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PROGLOG_LOGSERVER") {
        return Ok(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe()?.parent() {
        let sibling = dir.join("logserver");
        if !dir.ends_with("deps") && sibling.is_file() {
            return Ok(sibling);
        }
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            // target/<profile>/deps/<test> or target/<profile>/<bin>
            let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
            if dir.ends_with("deps") {
                dir.pop();
            }
            let release = dir.ends_with("release");
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
            let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            cmd.current_dir(root)
                .args(["build", "-q", "-p", "logserver", "--bin", "logserver"]);
            if release {
                cmd.arg("--release");
            }
            if std::env::var_os("CARGO_TARGET_DIR").is_none() {
                if let Some(t) = dir.parent() {
                    cmd.env("CARGO_TARGET_DIR", t);
                }
            }
            let st = cmd.status().map_err(|e| format!("running cargo: {e}"))?;
            if !st.success() {
                return Err(format!("cargo build -p logserver failed: {st}"));
            }
            Ok(dir.join("logserver"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The leader's address as the first of `addrs` that answers `GetServers` reports it.
pub async fn leader_of(addrs: &[String]) -> Option<String> {
    for a in addrs {
        let Ok(mut c) = LogClient::connect(format!("http://{a}")).await else {
            continue;
        };
        let Ok(r) = c.get_servers(pb::GetServersRequest {}).await else {
            continue;
        };
        if let Some(s) = r.into_inner().servers.into_iter().find(|s| s.is_leader) {
            return Some(s.rpc_addr);
        }
    }
    None
}

/// A free port on 127.0.0.1.
pub fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// How a member process is started: a command prefix (e.g. `ip netns exec NS`) and its address.
#[derive(Debug, Clone)]
pub struct Placement {
    pub prefix: Vec<String>,
    pub addr: SocketAddr,
}

/// One member process.
pub struct Member {
    pub id: u64,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub placement: Placement,
    child: Option<Child>,
    paused: bool,
}

impl Member {
    /// True while the process runs (paused or not).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// True while the process is stopped with SIGSTOP.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = signal(c.id(), "CONT");
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()?;
    anyhow::ensure!(st.success(), "kill -{sig} {pid}: {st}");
    Ok(())
}

/// Settings of a process cluster.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The `logserver` binary; default [`logserver_bin`].
    pub bin: Option<PathBuf>,
    /// Extra `logserver` flags for every member (e.g. `--election-timeout-ms 800`).
    pub args: Vec<String>,
    /// Where member `i` (0-based) runs; default: 127.0.0.1 on a free port.
    pub placements: Vec<Placement>,
    /// Keep the members' stdout and stderr (`RUST_LOG` as set) instead of dropping them.
    pub show_logs: bool,
    /// Write each member's log (stdout and stderr, at `warn` unless `RUST_LOG` is set) to
    /// `m<id>.log` in the cluster's directory ([`Cluster::log_of`]).
    pub log_files: bool,
}

impl Options {
    /// Options for tests that assume the leader stays put: an election timeout of one second
    /// instead of the default 250 ms.
    ///
    /// NB: on a loaded 2-core CI machine a debug-build member can miss heartbeats for more than
    /// 250 ms, and a follower then takes over between `leader_addr()` and the test's first call.
    pub fn steady() -> Options {
        Options {
            args: ["--heartbeat-ms", "100", "--election-timeout-ms", "1000"]
                .map(String::from)
                .to_vec(),
            ..Options::default()
        }
    }
}

/// A cluster of `logserver` processes.
pub struct Cluster {
    pub members: Vec<Member>,
    bin: PathBuf,
    token_file: PathBuf,
    opts: Options,
    root: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` members (not yet formed into a cluster).
    pub fn spawn(n: u64, opts: Options) -> Result<Cluster> {
        let bin = match &opts.bin {
            Some(b) => b.clone(),
            None => logserver_bin()?,
        };
        let root = tempfile::tempdir()?;
        let token_file = root.path().join("token");
        std::fs::write(&token_file, TOKEN)?;
        let mut c = Cluster {
            members: Vec::new(),
            bin,
            token_file,
            opts,
            root,
        };
        for id in 1..=n {
            let placement = match c.opts.placements.get(id as usize - 1) {
                Some(p) => p.clone(),
                None => Placement {
                    prefix: Vec::new(),
                    addr: free_addr()?,
                },
            };
            let dir = c.root.path().join(format!("m{id}"));
            c.members.push(Member {
                id,
                addr: placement.addr,
                dir,
                placement,
                child: None,
                paused: false,
            });
            c.launch(id)?;
        }
        Ok(c)
    }

    /// Starts `n` members and forms one cluster through the admin API of the first.
    pub async fn start(n: u64, opts: Options) -> Result<Cluster> {
        let c = Cluster::spawn(n, opts)?;
        c.wait_listening().await?;
        let members = c
            .members
            .iter()
            .map(|m| pb::Member {
                node_id: m.id,
                addr: m.addr.to_string(),
                name: format!("m{}", m.id),
            })
            .collect();
        Admin::new(c.members[0].addr.to_string(), TOKEN)?
            .init(members)
            .await?;
        c.wait_leader().await?;
        Ok(c)
    }

    /// Waits until every running member accepts connections.
    pub async fn wait_listening(&self) -> Result<()> {
        for m in self.members.iter().filter(|m| m.running()) {
            eventually("members to listen", DEADLINE, || async {
                tokio::net::TcpStream::connect(m.addr).await.ok()
            })
            .await?;
        }
        Ok(())
    }

    /// The file holding the admin token ([`TOKEN`]) the members were started with.
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// A client with the bootstrap resolver over every member (following the admin
    /// `WatchStatus` stream when `watch`), with `cfg`, once it knows the leader.
    pub async fn client(&self, watch: bool, cfg: ClientConfig) -> Result<Client> {
        let mut b = BootstrapConfig::new(self.addrs());
        if watch {
            b.admin_token = Some(TOKEN.into());
        }
        let r = BootstrapResolver::start(b).await?;
        let c = Client::new(Arc::new(r), cfg)?;
        c.wait_for_leader(DEADLINE).await?;
        Ok(c)
    }

    /// The id of the member at `addr`.
    pub fn id_of(&self, addr: &str) -> Result<u64> {
        self.members
            .iter()
            .find(|m| m.addr.to_string() == addr)
            .map(|m| m.id)
            .with_context(|| format!("no member at {addr}"))
    }

    fn launch(&mut self, id: u64) -> Result<()> {
        let m = &self.members[(id - 1) as usize];
        let (program, pre) = match m.placement.prefix.split_first() {
            Some((p, rest)) => (PathBuf::from(p), rest.to_vec()),
            None => (self.bin.clone(), Vec::new()),
        };
        let mut cmd = Command::new(program);
        if !pre.is_empty() {
            cmd.args(pre).arg(&self.bin);
        }
        let addr = m.addr.to_string();
        cmd.args(["--id", &id.to_string(), "--name", &format!("m{id}")])
            .args(["--listen", &addr, "--advertise", &addr])
            .arg("--data-dir")
            .arg(&m.dir)
            .arg("--admin-token-file")
            .arg(&self.token_file)
            .args(&self.opts.args)
            .stdout(Stdio::null());
        if self.opts.log_files {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.root.path().join(format!("m{id}.log")))?;
            if std::env::var_os("RUST_LOG").is_none() {
                cmd.env("RUST_LOG", "warn");
            }
            cmd.stdout(f.try_clone()?).stderr(f);
        } else if self.opts.show_logs {
            // NB: the logserver logs to stdout.
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        } else {
            cmd.env("RUST_LOG", "warn").stderr(Stdio::null());
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let m = &mut self.members[(id - 1) as usize];
        m.child = Some(child);
        m.paused = false;
        Ok(())
    }

    pub fn member(&self, id: u64) -> &Member {
        &self.members[(id - 1) as usize]
    }

    /// Addresses of the members, running or not.
    pub fn addrs(&self) -> Vec<String> {
        self.members.iter().map(|m| m.addr.to_string()).collect()
    }

    /// SIGKILLs member `id` and waits for it to exit.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        let m = &mut self.members[(id - 1) as usize];
        if let Some(mut c) = m.child.take() {
            if m.paused {
                let _ = signal(c.id(), "CONT");
            }
            c.kill()?;
            c.wait()?;
        }
        m.paused = false;
        Ok(())
    }

    /// SIGTERMs member `id` (graceful stop) and waits up to `DEADLINE` for it to exit; returns
    /// its exit status (`None` when it was not running).
    pub async fn stop(&mut self, id: u64) -> Result<Option<ExitStatus>> {
        let m = &mut self.members[(id - 1) as usize];
        let Some(mut c) = m.child.take() else {
            return Ok(None);
        };
        if m.paused {
            signal(c.id(), "CONT")?;
            m.paused = false;
        }
        signal(c.id(), "TERM")?;
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(st) = c.try_wait()? {
                return Ok(Some(st));
            }
            if tokio::time::Instant::now() > end {
                c.kill()?;
                c.wait()?;
                bail!("member {id} did not stop within {DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Pauses member `id` (SIGSTOP).
    pub fn pause(&mut self, id: u64) -> Result<()> {
        let m = &mut self.members[(id - 1) as usize];
        let pid = m.pid().context("member is not running")?;
        signal(pid, "STOP")?;
        m.paused = true;
        Ok(())
    }

    /// Resumes member `id` (SIGCONT).
    pub fn resume(&mut self, id: u64) -> Result<()> {
        let m = &mut self.members[(id - 1) as usize];
        let pid = m.pid().context("member is not running")?;
        signal(pid, "CONT")?;
        m.paused = false;
        Ok(())
    }

    /// Starts a stopped member again with its data dir, on its address.
    pub async fn restart(&mut self, id: u64) -> Result<()> {
        anyhow::ensure!(!self.member(id).running(), "member {id} runs");
        self.launch(id)?;
        let addr = self.member(id).addr;
        eventually("the restarted member to listen", DEADLINE, || async {
            tokio::net::TcpStream::connect(addr).await.ok()
        })
        .await?;
        Ok(())
    }

    /// The Raft status as member `id` reports it.
    pub async fn status(&self, id: u64) -> Result<pb::ClusterStatus> {
        let addr = self.member(id).addr.to_string();
        let admin = Admin::new(addr.clone(), TOKEN)?.with_timeout(Duration::from_secs(2));
        Ok(admin.status_of(&addr).await?)
    }

    /// The id of the member that reports itself the leader, among running, unpaused members.
    pub async fn leader_now(&self) -> Option<u64> {
        for m in self.members.iter().filter(|m| m.running() && !m.paused) {
            if let Ok(st) = self.status(m.id).await {
                if st.role == pb::Role::Leader as i32 {
                    return Some(m.id);
                }
            }
        }
        None
    }

    /// Addresses of the running members.
    pub fn running_addrs(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.running())
            .map(|m| m.addr.to_string())
            .collect()
    }

    /// [`Cluster::wait_leader`], as the leader's address.
    pub async fn leader_addr(&self) -> Result<String> {
        let id = self.wait_leader().await?;
        Ok(self.member(id).addr.to_string())
    }

    /// Waits until every running, unpaused member names the same leader; returns its id.
    pub async fn wait_leader(&self) -> Result<u64> {
        eventually("a leader every member agrees on", DEADLINE, || async {
            let mut leader = None;
            for m in self.members.iter().filter(|m| m.running() && !m.paused) {
                let st = self.status(m.id).await.ok()?;
                let l = st.leader_id?;
                match leader {
                    None => leader = Some(l),
                    Some(x) if x == l => {}
                    Some(_) => return None,
                }
            }
            let l = leader?;
            (self.member(l).running() && !self.member(l).paused).then_some(l)
        })
        .await
    }

    /// What member `id` logged so far (with [`Options::log_files`]).
    pub fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(self.root.path().join(format!("m{id}.log"))).unwrap_or_default()
    }

    /// Where members keep their data.
    pub fn dir(&self) -> &Path {
        self.root.path()
    }
}
