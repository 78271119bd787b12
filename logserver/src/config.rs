//! The member's settings: clap [`Args`] (every flag has an environment variable) and the
//! validated [`Config`] built from them once at start-up. Nothing here does I/O except reading
//! the admin token file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::storage::{Durability, LogConfig};

/// Errors in the settings; each names the bad flag.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("--admin-token-file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Result with the config [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// When appended records reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DurabilityArg {
    /// fsync every append batch before it is acknowledged (default).
    EveryBatch,
    /// fsync at most every --sync-interval-ms. NB: records are then acknowledged before they
    /// are on disk; losing a majority of members at once can lose acknowledged records.
    Interval,
    /// never fsync appends (rollover, truncation and shutdown still sync); same caveat.
    Never,
}

/// Command-line flags of `logserver`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "logserver",
    version,
    about = "A ProgLog member: replicated commit log over gRPC"
)]
pub struct Args {
    /// Raft node id of this member (unique in the cluster, > 0). Default: derived from --name
    /// when it ends in `-<ordinal>` (a StatefulSet pod name): ordinal + 1.
    #[arg(long, env = "PROGLOG_ID")]
    pub id: Option<u64>,
    /// Human name of the member (pod name under the operator). Default: $HOSTNAME, else the id.
    #[arg(long, env = "PROGLOG_NAME", default_value = "")]
    pub name: String,
    /// Directory of the log and Raft metadata.
    #[arg(long, env = "PROGLOG_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address the gRPC server binds.
    #[arg(long, env = "PROGLOG_LISTEN", default_value = "0.0.0.0:8400")]
    pub listen: SocketAddr,
    /// Address of the HTTP listener serving Prometheus metrics (`/metrics`) and `/healthz`.
    /// Default: none (no metrics listener); the operator sets `<pod IP>:9400`.
    #[arg(long, env = "PROGLOG_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// host:port peers and clients use to reach this member. Default: the bound address.
    #[arg(long, env = "PROGLOG_ADVERTISE", default_value = "")]
    pub advertise: String,
    /// File holding the bearer token of the Cluster (admin) API. Without it every admin call is
    /// refused.
    #[arg(long, env = "PROGLOG_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Largest record value accepted, in bytes.
    #[arg(long, env = "PROGLOG_MAX_RECORD_BYTES", default_value_t = 1 << 20)]
    pub max_record_bytes: usize,
    /// Max bytes of a segment's store file.
    #[arg(long, env = "PROGLOG_SEGMENT_BYTES", default_value_t = 1 << 30)]
    pub segment_bytes: u64,
    /// Max bytes of a segment's index file.
    #[arg(long, env = "PROGLOG_INDEX_BYTES", default_value_t = 10 << 20)]
    pub index_bytes: u64,
    /// Bytes of zeros written at a time ahead of the active segment's end, so an append's fsync
    /// has no file size or block allocation to journal; cut off when the segment is sealed or
    /// the member stops. 0 turns preallocation off.
    #[arg(long, env = "PROGLOG_SEGMENT_PREALLOC_BYTES", default_value_t = 1 << 20)]
    pub segment_prealloc_bytes: u64,
    /// Bytes of the active segment kept in the page cache behind its end: older (synced) frames
    /// are dropped from it, so the cache does not grow with the log (nor count against a pod's
    /// memory); reads of older records go to the disk. 0 leaves the page cache to the kernel.
    /// Needs preallocation on.
    #[arg(long, env = "PROGLOG_SEGMENT_CACHE_WINDOW_BYTES", default_value_t = 256 << 20)]
    pub segment_cache_window_bytes: u64,
    /// When appends are fsynced.
    #[arg(
        long,
        env = "PROGLOG_DURABILITY",
        value_enum,
        default_value = "every-batch"
    )]
    pub durability: DurabilityArg,
    /// fsync interval for --durability interval, in milliseconds.
    #[arg(long, env = "PROGLOG_SYNC_INTERVAL_MS", default_value_t = 10)]
    pub sync_interval_ms: u64,
    /// Raft heartbeat interval, in milliseconds.
    #[arg(long, env = "PROGLOG_HEARTBEAT_MS", default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Raft election timeout, in milliseconds: a follower that has not heard from its leader for
    /// this long asks the other voters (pre-vote) and campaigns if a quorum lost the leader too;
    /// also the leader lease (followers refuse votes for this long after the leader's last
    /// message) and how long a leader takes writes without hearing from a quorum.
    #[arg(long, env = "PROGLOG_ELECTION_TIMEOUT_MS", default_value_t = 250)]
    pub election_timeout_ms: u64,
    /// Take a snapshot (a cut of the log) every this many Raft entries.
    #[arg(long, env = "PROGLOG_SNAPSHOT_EVERY", default_value_t = 10_000)]
    pub snapshot_every: u64,
    /// Keep at least this many Raft entries on disk; older whole segments are dropped once a
    /// snapshot covers them. 0 keeps everything.
    #[arg(long, env = "PROGLOG_RETAIN_ENTRIES", default_value_t = 0)]
    pub retain_entries: u64,
    /// Largest peer (Raft) message, in bytes; must exceed the largest Log request.
    #[arg(long, env = "PROGLOG_MAX_PEER_MESSAGE_BYTES", default_value_t = 64 << 20)]
    pub max_peer_message_bytes: usize,
    /// Group commit on the leader: concurrent produce calls share Raft entries, with up to this
    /// many entries in flight; 0 turns grouping off (one entry per call).
    #[arg(long, env = "PROGLOG_GROUP_COMMIT_DEPTH", default_value_t = 1)]
    pub group_commit_depth: usize,
    /// Group commit on the leader: how long, in microseconds, the next group may wait for the
    /// callers the last one answered to call again, so closed-loop producers share entries
    /// (rounded up to the runtime's 1 ms timer). 0 never waits.
    #[arg(long, env = "PROGLOG_GROUP_COMMIT_WAIT_US", default_value_t = 1000)]
    pub group_commit_wait_us: u64,
    /// How long a follower may wait for the leader's new commit index, in milliseconds: the
    /// leader sends it with the next entries, or after this long in a heartbeat, instead of in an
    /// empty AppendEntries after every commit. 0 sends one after every commit (openraft's way).
    #[arg(long, env = "PROGLOG_COMMIT_NOTICE_DELAY_MS", default_value_t = 5)]
    pub commit_notice_delay_ms: u64,
    /// Pipelined replication: as leader, send entries written while an AppendEntries is in flight
    /// to that follower at once instead of after its answer (openraft 0.9 keeps one in flight).
    /// Meant for many producers and a real network round trip, with --group-commit-depth 2 or
    /// more; on one machine it has not measured faster. Followers of any setting accept it.
    /// `--raft-pipeline` alone turns it on; `--raft-pipeline false` (or 0, no) off.
    #[arg(long, env = "PROGLOG_RAFT_PIPELINE", default_value_t = false, num_args = 0..=1,
        default_missing_value = "true", action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new())]
    pub raft_pipeline: bool,
    /// Benchmarks only: hold every incoming peer (Raft) request this many microseconds before
    /// handling it, as a network round trip between members would (rounded up to the runtime's
    /// 1 ms timer); the requests' waits overlap. 0 (the default) adds nothing.
    #[arg(long, env = "PROGLOG_PEER_DELAY_US", default_value_t = 0, hide = true)]
    pub peer_delay_us: u64,
    /// CA bundle (PEM) that client and peer certificates must chain to. With --tls-cert and
    /// --tls-key it turns mutual TLS on for every plane; without the three the member serves
    /// plaintext (local runs and tests only).
    #[arg(long, env = "PROGLOG_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// This member's certificate chain (PEM, leaf first); presented to clients and to peers.
    #[arg(long, env = "PROGLOG_TLS_CERT", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "PROGLOG_TLS_KEY", requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
    /// How often the TLS files and the ACL files are checked for changes (renewed
    /// certificates are used for new connections without a restart), in milliseconds.
    #[arg(long, env = "PROGLOG_TLS_RELOAD_MS", default_value_t = 1000)]
    pub tls_reload_ms: u64,
    /// casbin model (.conf) of the Log service's ACL; required with TLS. The book's
    /// `model.conf` works unchanged.
    #[arg(long, env = "PROGLOG_ACL_MODEL", requires = "acl_policy")]
    pub acl_model: Option<PathBuf>,
    /// casbin policy (.csv): `p, <subject>, *, produce|consume` lines.
    #[arg(long, env = "PROGLOG_ACL_POLICY", requires = "acl_model")]
    pub acl_policy: Option<PathBuf>,
    /// Subject (certificate CN) of this cluster's members: the only one the Raft peer service
    /// accepts. Default: the CN of --tls-cert.
    #[arg(long, env = "PROGLOG_MEMBER_IDENTITY", default_value = "")]
    pub member_identity: String,
    /// Subject (certificate CN) of the operator: the only one the admin (Cluster) service
    /// accepts under TLS.
    #[arg(
        long,
        env = "PROGLOG_ADMIN_IDENTITY",
        default_value = "proglog-operator"
    )]
    pub admin_identity: String,
}

/// Mutual TLS and authorization settings of a member.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// CA bundle, certificate and key (PEM). No default.
    pub files: proglog_tls::TlsFiles,
    /// How often the TLS and ACL files are checked for changes. Default 1 s.
    pub reload_every: Duration,
    /// casbin model and policy files of the Log service's ACL. No default.
    pub acl_model: PathBuf,
    pub acl_policy: PathBuf,
    /// Subject accepted on the peer plane; `None`: the CN of this member's certificate.
    pub member_identity: Option<String>,
    /// Subject accepted on the admin plane. Default `proglog-operator`.
    pub admin_identity: String,
}

/// The validated settings of a member.
#[derive(Debug, Clone)]
pub struct Config {
    /// Raft node id, > 0. No default.
    pub id: u64,
    /// Human name. Default: the id in decimal.
    pub name: String,
    /// Data directory. No default.
    pub data_dir: PathBuf,
    /// Bind address. Default `0.0.0.0:8400`.
    pub listen: SocketAddr,
    /// Bind address of the metrics listener (`/metrics`, `/healthz`); `None`: none. Default `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// Advertised `host:port`; empty means "the bound address". Default empty.
    pub advertise: String,
    /// Bearer token of the admin API; `None` refuses every admin call. Default `None`.
    pub admin_token: Option<String>,
    /// Largest record value in bytes. Default 1 MiB.
    pub max_record_bytes: usize,
    /// Storage settings (dir is `data_dir`). Defaults: see [`LogConfig::new`].
    pub log: LogConfig,
    /// Raft heartbeat interval. Default 100 ms.
    pub heartbeat: Duration,
    /// Election timeout and leader lease (see `--election-timeout-ms`). Default 250 ms.
    pub election_timeout: Duration,
    /// Entries between snapshots. Default 10,000.
    pub snapshot_every: u64,
    /// Entries kept on disk at least; 0 = everything. Default 0.
    pub retain_entries: u64,
    /// Largest peer (Raft) message a member sends or accepts, in bytes; AppendEntries above half
    /// of it are split. Must exceed the largest Raft entry (one Log request, see
    /// [`Config::max_request_bytes`]). Default 64 MiB.
    pub max_peer_message_bytes: usize,
    /// Raft entries of grouped produce calls in flight at most on the leader; 0 = no grouping
    /// (one entry per call). Default 1.
    pub group_commit_depth: usize,
    /// How long the next group may wait for the callers the last one answered (see
    /// [`crate::service::group`]); zero = never. Default 1 ms.
    pub group_commit_wait: Duration,
    /// How long a follower may wait for a new commit index (see `--commit-notice-delay-ms` and
    /// [`crate::raft::notice`]); zero = an empty AppendEntries after every commit. Default 5 ms.
    pub commit_notice_delay: Duration,
    /// Pipelined replication (see `--raft-pipeline` and [`crate::raft::network`]). Default off.
    pub raft_pipeline: bool,
    /// Benchmarks only: how long incoming peer requests are held (`--peer-delay-us`). Default
    /// zero.
    pub peer_delay: Duration,
    /// Mutual TLS on every plane and authorization; `None` serves plaintext. Default `None`.
    pub tls: Option<TlsConfig>,
}

impl Config {
    /// A config with the defaults for a member `id` with data in `data_dir`, listening on `listen`.
    pub fn new(id: u64, data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        let data_dir = data_dir.into();
        Config {
            id,
            name: id.to_string(),
            log: LogConfig::new(&data_dir),
            data_dir,
            listen,
            metrics_listen: None,
            advertise: String::new(),
            admin_token: None,
            max_record_bytes: 1 << 20,
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(250),
            snapshot_every: 10_000,
            retain_entries: 0,
            max_peer_message_bytes: 64 << 20,
            group_commit_depth: crate::service::group::DEFAULT_DEPTH,
            group_commit_wait: crate::service::group::DEFAULT_WAIT,
            commit_notice_delay: Duration::from_millis(5),
            raft_pipeline: false,
            peer_delay: Duration::ZERO,
            tls: None,
        }
    }

    /// The largest Log request accepted: 4 MiB, or one record of `max_record_bytes` plus room.
    pub fn max_request_bytes(&self) -> usize {
        (4 << 20).max(self.max_record_bytes + (64 << 10))
    }

    /// Checks the settings that cannot be checked by their types.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| {
            Err(Error::Invalid {
                field,
                reason: reason.into(),
            })
        };
        if self.id == 0 {
            return bad("id", "must be > 0");
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > (64 << 20) {
            return bad("max-record-bytes", "must be in 1..=64 MiB");
        }
        if self.heartbeat.is_zero() || self.election_timeout <= self.heartbeat * 2 {
            return bad(
                "election-timeout-ms",
                "must exceed twice the heartbeat interval (and the heartbeat must be > 0)",
            );
        }
        if self.max_peer_message_bytes < (64 << 10) {
            return bad("max-peer-message-bytes", "must be at least 64 KiB");
        }
        if self.snapshot_every == 0 {
            return bad("snapshot-every", "must be > 0");
        }
        if let Some(t) = &self.tls {
            if self.admin_token.is_some() {
                return bad(
                    "admin-token-file",
                    "not used with TLS: the admin API then accepts only the operator's \
                     certificate (--admin-identity)",
                );
            }
            if t.admin_identity.is_empty() {
                return bad("admin-identity", "must not be empty");
            }
            if t.reload_every.is_zero() {
                return bad("tls-reload-ms", "must be > 0");
            }
        }
        Ok(())
    }
}

/// `proglog-2` -> 3: a StatefulSet pod's ordinal + 1 (Raft ids must be > 0).
pub fn id_from_name(name: &str) -> Option<u64> {
    let (_, ordinal) = name.rsplit_once('-')?;
    ordinal.parse::<u64>().ok()?.checked_add(1)
}

impl TryFrom<Args> for Config {
    type Error = Error;

    fn try_from(a: Args) -> Result<Config> {
        let admin_token = match &a.admin_token_file {
            None => None,
            Some(path) => {
                let t = std::fs::read_to_string(path).map_err(|source| Error::TokenFile {
                    path: path.clone(),
                    source,
                })?;
                let t = t.trim().to_string();
                if t.is_empty() {
                    return Err(Error::Invalid {
                        field: "admin-token-file",
                        reason: format!("{} is empty", path.display()),
                    });
                }
                Some(t)
            }
        };
        let name = if a.name.is_empty() {
            std::env::var("HOSTNAME").unwrap_or_default()
        } else {
            a.name.clone()
        };
        let id = match a.id {
            Some(id) => id,
            None => id_from_name(&name).ok_or_else(|| Error::Invalid {
                field: "id",
                reason: format!(
                    "not given, and the name {name:?} does not end in -<ordinal> to derive it from"
                ),
            })?,
        };
        let mut c = Config::new(id, &a.data_dir, a.listen);
        if !name.is_empty() {
            c.name = name;
        }
        c.advertise = a.advertise;
        c.metrics_listen = a.metrics_listen;
        c.admin_token = admin_token;
        c.max_record_bytes = a.max_record_bytes;
        c.log.max_store_bytes = a.segment_bytes;
        c.log.max_index_bytes = a.index_bytes;
        c.log.prealloc_bytes = a.segment_prealloc_bytes;
        c.log.cache_window_bytes = a.segment_cache_window_bytes;
        c.log.durability = match a.durability {
            DurabilityArg::EveryBatch => Durability::EveryBatch,
            DurabilityArg::Interval => {
                Durability::Interval(Duration::from_millis(a.sync_interval_ms))
            }
            DurabilityArg::Never => Durability::Never,
        };
        c.heartbeat = Duration::from_millis(a.heartbeat_ms);
        c.election_timeout = Duration::from_millis(a.election_timeout_ms);
        c.snapshot_every = a.snapshot_every;
        c.retain_entries = a.retain_entries;
        c.max_peer_message_bytes = a.max_peer_message_bytes;
        c.group_commit_depth = a.group_commit_depth;
        c.group_commit_wait = Duration::from_micros(a.group_commit_wait_us);
        c.commit_notice_delay = Duration::from_millis(a.commit_notice_delay_ms);
        c.raft_pipeline = a.raft_pipeline;
        c.peer_delay = Duration::from_micros(a.peer_delay_us);
        if let (Some(ca), Some(cert), Some(key)) = (a.tls_ca, a.tls_cert, a.tls_key) {
            let (Some(acl_model), Some(acl_policy)) = (a.acl_model, a.acl_policy) else {
                return Err(Error::Invalid {
                    field: "acl-model",
                    reason: "--acl-model and --acl-policy are required with TLS (who may \
                             produce and consume)"
                        .into(),
                });
            };
            c.tls = Some(TlsConfig {
                files: proglog_tls::TlsFiles { ca, cert, key },
                reload_every: Duration::from_millis(a.tls_reload_ms),
                acl_model,
                acl_policy,
                member_identity: Some(a.member_identity).filter(|m| !m.is_empty()),
                admin_identity: a.admin_identity,
            });
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn raft_pipeline_is_a_switch_that_also_takes_a_value() {
        let parse = |extra: &[&str]| {
            let argv = ["logserver", "--id=1", "--data-dir=/tmp/x"]
                .iter()
                .chain(extra)
                .copied();
            let a = Args::try_parse_from(argv).unwrap();
            Config::try_from(a).unwrap().raft_pipeline
        };
        assert!(!parse(&[]));
        assert!(parse(&["--raft-pipeline"]));
        assert!(parse(&["--raft-pipeline", "--durability=never"]));
        assert!(parse(&["--raft-pipeline", "true"]));
        assert!(!parse(&["--raft-pipeline=false"]));
        assert!(!parse(&["--raft-pipeline", "0"]));
        let bad = [
            "logserver",
            "--id=1",
            "--data-dir=/tmp/x",
            "--raft-pipeline=maybe",
        ];
        assert!(Args::try_parse_from(bad).is_err());
    }

    #[test]
    fn flags_build_a_valid_config_and_bad_values_name_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("token");
        std::fs::write(&tok, "s3cret\n").unwrap();
        let args = Args::parse_from([
            "logserver",
            "--id=2",
            "--data-dir=/tmp/x",
            &format!("--admin-token-file={}", tok.display()),
            "--durability=never",
        ]);
        let c = Config::try_from(args.clone()).unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("s3cret"));
        assert_eq!(c.log.durability, Durability::Never);
        assert_eq!(c.listen, "0.0.0.0:8400".parse().unwrap());
        assert!(!c.name.is_empty());
        assert_eq!(c.log.cache_window_bytes, 256 << 20);
        let mut no_window = args.clone();
        no_window.segment_cache_window_bytes = 0;
        let n = Config::try_from(no_window).unwrap();
        assert_eq!(n.log.cache_window_bytes, 0);

        let mut derived = args.clone();
        derived.id = None;
        derived.name = "plog-4".into();
        let d = Config::try_from(derived.clone()).unwrap();
        assert_eq!((d.id, d.name.as_str()), (5, "plog-4"));
        derived.name = "no-ordinal-here".into();
        let e = Config::try_from(derived).unwrap_err().to_string();
        assert!(e.starts_with("--id"), "{e}");

        let mut bad = args;
        bad.id = Some(0);
        let e = Config::try_from(bad).unwrap_err().to_string();
        assert!(e.starts_with("--id"), "{e}");
    }
}
