//! The ProgLog wire API: the `.proto` files under `proto/` and the tonic/prost code generated from
//! them. Nothing else lives here: conversions to domain types belong to the crates that own those
//! types.

/// `proglog.v1`: the `Log` (client), `Cluster` (admin) and `Acl` (admin: the policy push)
/// services.
pub mod v1 {
    tonic::include_proto!("proglog.v1");
}

/// `proglog.raft.v1`: the peer-to-peer Raft service.
pub mod raft {
    pub mod v1 {
        tonic::include_proto!("proglog.raft.v1");
    }
}

/// `log.v1`: the book's client API ("Distributed Services with Go", `api/v1/log.proto`), served
/// by every member over the same log as [`v1`].
pub mod book {
    pub mod v1 {
        tonic::include_proto!("log.v1");
    }
}

/// The status code the book's `ErrOffsetOutOfRange` carries: 404, which is not one of gRPC's
/// codes (grpc-go passes it through as `codes.Code(404)`).
pub const BOOK_OFFSET_OUT_OF_RANGE_CODE: u32 = 404;

/// The encoded `FileDescriptorSet` of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/proglog_descriptor.bin"));

/// The response metadata key that carries the leader's address when a follower refuses a write.
pub const LEADER_METADATA_KEY: &str = "proglog-leader";

/// The response metadata key that names why an idempotent Produce was refused
/// (`unknown-producer`, `stale-epoch`, `out-of-order`, `too-old`, `reused`).
pub const PRODUCER_ERROR_METADATA_KEY: &str = "proglog-producer-error";
/// The response metadata key that says what became of a refused write: [`NOT_COMMITTED`] when
/// the member never proposed it (safe to retry anywhere), [`OUTCOME_UNKNOWN`] when it was
/// proposed but the member could not see it commit (it may still commit; a retry may duplicate).
pub const WRITE_OUTCOME_METADATA_KEY: &str = "proglog-write-outcome";
/// [`WRITE_OUTCOME_METADATA_KEY`]: the write was never proposed.
pub const NOT_COMMITTED: &str = "not-committed";
/// [`WRITE_OUTCOME_METADATA_KEY`]: the write was proposed; whether it commits is unknown.
pub const OUTCOME_UNKNOWN: &str = "unknown";
