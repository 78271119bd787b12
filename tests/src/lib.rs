//! End-to-end test helpers.
//!
//! [`devcluster`] starts (or reuses) the local Kubernetes control plane and node agent and hands tests a
//! `kube::Client`.

pub mod devcluster;
