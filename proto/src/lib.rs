//! The ProgLog wire API: the `.proto` files under `proto/` and the tonic/prost code generated from
//! them. Nothing else lives here: conversions to domain types belong to the crates that own those
//! types.

/// `proglog.v1`: the `Log` (client) and `Cluster` (admin) services.
pub mod v1 {
    tonic::include_proto!("proglog.v1");
}

/// `proglog.raft.v1`: the peer-to-peer Raft service.
pub mod raft {
    pub mod v1 {
        tonic::include_proto!("proglog.raft.v1");
    }
}

/// The encoded `FileDescriptorSet` of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/proglog_descriptor.bin"));

/// The response metadata key that carries the leader's address when a follower refuses a write.
pub const LEADER_METADATA_KEY: &str = "proglog-leader";

/// The response metadata key that names why an idempotent Produce was refused
/// (`unknown-producer`, `stale-epoch`, `out-of-order`, `too-old`, `reused`).
pub const PRODUCER_ERROR_METADATA_KEY: &str = "proglog-producer-error";
