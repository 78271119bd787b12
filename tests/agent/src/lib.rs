//! devcluster node agent: makes this machine a Kubernetes node whose pods are local processes.
//!
//! The agent registers a `Node`, renews its `Lease`, provisions PersistentVolumes for claims, keeps hosts
//! files that give pods and Services DNS names, and runs every pod the scheduler binds to it: each
//! container is a process (the image names a binary through [`images::ImageTable`]) in a private mount
//! and UTS namespace, with the pod's volumes bind-mounted at their mount paths and a loopback IP of its
//! own. It is not a container runtime: there is no filesystem, network or resource isolation.
#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
pub mod error;
pub mod hosts;
pub mod images;
pub mod ipam;
pub mod kubelet;
pub mod node;
pub mod pod;
pub mod probe;
pub mod provisioner;
pub mod spec;
pub mod status;
pub mod volumes;

pub use config::Config;
pub use error::{Error, Result};
