//! The segmented on-disk log. Knows nothing of Raft, gRPC or tokio.
