//! The ProgLog member: a segmented on-disk commit log ([`storage`]), replicated with Raft and
//! served over gRPC.
#![deny(unsafe_code)] // NB: allowed only in storage::index, which maps the index file.

pub mod storage;
