//! The ProgLog member: a segmented on-disk commit log ([`storage`]), replicated with Raft
//! ([`raft`]) and served over gRPC ([`service`]). [`node`] wires them into one running member;
//! [`config`] holds its settings.
#![deny(unsafe_code)] // NB: allowed only in storage::index, which maps the index file.

pub mod raft;
pub mod storage;
