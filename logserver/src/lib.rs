//! The ProgLog member: a segmented on-disk commit log ([`storage`]), replicated with Raft and
//! served over gRPC.
#![forbid(unsafe_code)]

pub mod storage;
