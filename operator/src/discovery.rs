//! Discovery: follows each tracked cluster's leader and writes its `<name>-leader` and
//! `<name>-followers` EndpointSlices.
//!
//! (API committed first so the controller can build against it; the follower task is being
//! filled in.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::Stream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::reflector::ObjectRef;
use proglog_crds::ProgLog;
use tokio::sync::mpsc;

use crate::admin::AdminPool;
use crate::membership::PodInfo;

/// One cluster discovery follows.
#[derive(Clone, Debug, PartialEq)]
pub struct Tracked {
    /// Namespace of the ProgLog.
    pub namespace: String,
    /// Name of the ProgLog.
    pub name: String,
    /// Owner reference (the ProgLog, controller=true) put on the slices.
    pub owner: OwnerReference,
    /// The members' gRPC port.
    pub port: i32,
    /// The pods of the StatefulSet.
    pub pods: Vec<PodInfo>,
    /// The admin API's bearer token.
    pub token: String,
}

/// Follows the leader of every tracked cluster. Cheap to clone.
#[derive(Clone)]
pub struct Discovery {
    inner: Arc<Inner>,
}

struct Inner {
    #[allow(dead_code)]
    client: kube::Client,
    #[allow(dead_code)]
    pool: AdminPool,
    tracked: Mutex<HashMap<(String, String), Tracked>>,
    #[allow(dead_code)]
    trigger: mpsc::Sender<ObjectRef<ProgLog>>,
}

impl Discovery {
    /// A discovery with no cluster tracked, and the stream of ProgLogs whose leader or members
    /// changed (feed it to the Controller's `reconcile_on`).
    pub fn new(
        client: kube::Client,
        pool: AdminPool,
    ) -> (
        Self,
        impl Stream<Item = ObjectRef<ProgLog>> + Send + 'static,
    ) {
        let (tx, rx) = mpsc::channel(256);
        let d = Discovery {
            inner: Arc::new(Inner {
                client,
                pool,
                tracked: Mutex::new(HashMap::new()),
                trigger: tx,
            }),
        };
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            let r = rx.recv().await?;
            Some((r, rx))
        });
        (d, stream)
    }

    /// Starts following `t`'s cluster, or updates what is known of it (pods, token). Idempotent.
    pub fn track(&self, t: Tracked) {
        let key = (t.namespace.clone(), t.name.clone());
        self.inner
            .tracked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, t);
    }

    /// Stops following the cluster (it is being deleted; its slices go with their owner).
    pub fn untrack(&self, namespace: &str, name: &str) {
        self.inner
            .tracked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(namespace.to_string(), name.to_string()));
    }
}
