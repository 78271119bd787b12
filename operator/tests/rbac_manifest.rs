//! `manifests/cluster_role.yaml` against what the operator does: it holds every verb the
//! members' ClusterRole grants (Kubernetes refuses to let it grant more than it holds), what PKI
//! needs (Secrets and the ACL ConfigMap written by server-side apply), and nothing it does not
//! use (no wildcard; no delete but the finalizer's ClusterRole and a rolling update's pods; PVCs are
//! never deleted).

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::ClusterRole;
use proglog_crds::ProgLog;
use proglog_operator::resources::Children;

type Grant = (String, String, String);

fn grants(role: &ClusterRole) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for r in role.rules.iter().flatten() {
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    out.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    out
}

fn manifest() -> ClusterRole {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/cluster_role.yaml"
    );
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn has(g: &BTreeSet<Grant>, group: &str, res: &str, verb: &str) -> bool {
    g.contains(&(group.into(), res.into(), verb.into()))
}

#[test]
fn the_operator_holds_what_it_grants_and_what_pki_needs_and_no_more() {
    let op = grants(&manifest());
    let mut pl = ProgLog::new(
        "demo",
        serde_json::from_value(serde_json::json!({})).unwrap(),
    );
    pl.metadata.namespace = Some("ns".into());
    pl.metadata.uid = Some("u".into());
    let members = grants(&Children::new(&pl, "cluster.local").unwrap().cluster_role());
    let missing: Vec<_> = members.difference(&op).collect();
    assert!(missing.is_empty(), "the operator cannot grant {missing:?}");

    for verb in ["get", "create", "patch", "list", "watch"] {
        assert!(
            has(&op, "", "secrets", verb),
            "secrets {verb}: CA and certificates"
        );
    }
    for verb in ["create", "patch", "list", "watch"] {
        assert!(
            has(&op, "", "configmaps", verb),
            "configmaps {verb}: the ACL"
        );
    }
    for (g, r, v) in &op {
        assert!(
            g != "*" && r != "*" && v != "*",
            "no wildcard ({g} {r} {v})"
        );
        if v == "delete" {
            assert!(
                matches!(
                    (g.as_str(), r.as_str()),
                    ("rbac.authorization.k8s.io", "clusterroles") | ("", "pods")
                ),
                "only the finalizer deletes (the members' ClusterRole) and a rolling update \
                 (member pods), not {g}/{r}"
            );
        }
    }
    assert!(
        has(&op, "", "pods", "delete"),
        "pods delete: a rolling update restarts members by deleting their pods"
    );
    assert!(!has(&op, "", "persistentvolumeclaims", "delete"));
    assert!(!has(
        &op,
        "rbac.authorization.k8s.io",
        "clusterroles",
        "list"
    ));
}
