//! Unit tests of [`super`]: the children of a ProgLog, checked field by field where a user would
//! notice a mistake (the pods' command line, probes, volumes, selectors, owner references).

use super::*;
use clap::Parser;
use proglog_crds::{Durability, VolumePolicy};

fn demo(spec: serde_json::Value) -> ProgLog {
    let spec: ProgLogSpec = serde_json::from_value(spec).unwrap();
    let mut pl = ProgLog::new("demo", spec);
    pl.metadata.namespace = Some("ns".to_string());
    pl.metadata.uid = Some("uid-1".to_string());
    pl
}

fn pod_spec(sts: &StatefulSet) -> &PodSpec {
    sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

/// The pod's arguments with `$(VAR)` expanded as the kubelet would for pod `demo-2`.
fn expanded_args(c: &Children) -> Vec<String> {
    c.args()
        .into_iter()
        .map(|a| {
            a.replace("$(POD_IP)", "10.1.2.3")
                .replace("$(POD_NAME)", "demo-2")
                .replace("$(POD_NAMESPACE)", "ns")
        })
        .collect()
}

#[test]
fn children_need_a_namespace_and_uid() {
    let mut pl = demo(serde_json::json!({}));
    pl.metadata.uid = None;
    assert!(matches!(
        Children::new(&pl, "cluster.local"),
        Err(Error::MissingMetadata("uid"))
    ));
    pl.metadata.uid = Some("u".into());
    pl.metadata.namespace = None;
    assert!(matches!(
        Children::new(&pl, "cluster.local"),
        Err(Error::MissingMetadata("namespace"))
    ));
}

#[test]
fn the_logserver_parses_the_args_and_gets_the_spec_values() {
    let pl = demo(serde_json::json!({
        "ports": {"grpc": 9000, "metrics": 9001},
        "log": {
            "segmentBytes": 2_097_152, "indexBytes": 8192, "maxRecordBytes": 4096,
            "durability": "Interval", "syncIntervalMs": 7, "heartbeatMs": 50,
            "electionTimeoutMs": 400, "snapshotEvery": 123, "retainEntries": 456,
            "groupCommitDepth": 3, "raftPipeline": true, "cacheWindowBytes": 0
        }
    }));
    assert_eq!(pl.spec.log.durability, Durability::Interval);
    let c = Children::new(&pl, "example.org").unwrap();
    let argv = std::iter::once("logserver".to_string()).chain(expanded_args(&c));
    let a = logserver::config::Args::try_parse_from(argv).expect("logserver accepts the args");
    assert_eq!(a.listen.to_string(), "10.1.2.3:9000");
    assert_eq!(a.metrics_listen.unwrap().to_string(), "10.1.2.3:9001");
    assert_eq!(a.advertise, "demo-2.demo-members.ns.svc.example.org:9000");
    assert_eq!(
        a.advertise,
        names::member_address("demo", "ns", 2, "example.org", 9000)
    );
    assert_eq!(a.name, "demo-2");
    assert_eq!(a.id, None, "the id comes from the pod name");
    assert_eq!(a.data_dir.to_str(), Some(names::DATA_DIR));
    // TLS by default: the mounted identity and ACL, the cluster's subjects, no token.
    let path =
        |p: &Option<std::path::PathBuf>| p.as_deref().and_then(|p| p.to_str()).map(str::to_string);
    assert_eq!(
        path(&a.tls_ca).as_deref(),
        Some("/var/run/proglog/tls/ca.pem")
    );
    assert_eq!(
        path(&a.tls_cert).as_deref(),
        Some("/var/run/proglog/tls/cert.pem")
    );
    assert_eq!(
        path(&a.tls_key).as_deref(),
        Some("/var/run/proglog/tls/key.pem")
    );
    assert_eq!(
        path(&a.acl_model).as_deref(),
        Some("/var/run/proglog/acl/model.conf")
    );
    assert_eq!(
        path(&a.acl_policy).as_deref(),
        Some("/var/run/proglog/acl/policy.csv")
    );
    assert_eq!(a.member_identity, names::MEMBER_SUBJECT);
    assert_eq!(a.admin_identity, names::OPERATOR_SUBJECT);
    assert_eq!(
        a.admin_token_file, None,
        "the admin API takes the operator's certificate"
    );
    assert_eq!(
        (a.segment_bytes, a.index_bytes, a.max_record_bytes),
        (2_097_152, 8192, 4096)
    );
    assert_eq!(
        (a.sync_interval_ms, a.heartbeat_ms, a.election_timeout_ms),
        (7, 50, 400)
    );
    assert_eq!((a.snapshot_every, a.retain_entries), (123, 456));
    assert_eq!((a.group_commit_depth, a.raft_pipeline), (3, true));
    assert_eq!(a.segment_cache_window_bytes, 0);
    assert_eq!(format!("{:?}", a.durability).to_lowercase(), "interval");

    // And the settings validate as a member's config (id derived from the name: ordinal + 1).
    let cfg = logserver::config::Config::try_from(a).expect("valid member config");
    assert_eq!(cfg.id, names::node_id(2));
    let tls = cfg.tls.as_ref().expect("mutual TLS on");
    assert_eq!(tls.member_identity.as_deref(), Some(names::MEMBER_SUBJECT));
    cfg.validate().unwrap();
}

#[test]
fn default_replication_settings_add_no_args_so_existing_members_are_not_restarted() {
    let pl = demo(serde_json::json!({}));
    let c = Children::new(&pl, "cluster.local").unwrap();
    let args = expanded_args(&c);
    assert!(
        !args.iter().any(|a| a == "--group-commit-depth"
            || a == "--raft-pipeline"
            || a == "--segment-cache-window-bytes"),
        "{args:?}"
    );
    let argv = std::iter::once("logserver".to_string()).chain(args);
    let a = logserver::config::Args::try_parse_from(argv).unwrap();
    assert_eq!((a.group_commit_depth, a.raft_pipeline), (1, false));
    assert_eq!(
        a.segment_cache_window_bytes,
        proglog_crds::default_cache_window_bytes() as u64,
        "the CRD's default is the logserver's"
    );
}

#[test]
fn with_tls_off_the_members_take_the_admin_token_and_no_certificate() {
    let pl = demo(serde_json::json!({"tls": {"enabled": false}}));
    let c = Children::new(&pl, "cluster.local").unwrap();
    assert!(!c.tls());
    let argv = std::iter::once("logserver".to_string()).chain(expanded_args(&c));
    let a = logserver::config::Args::try_parse_from(argv).unwrap();
    assert_eq!(
        a.admin_token_file.as_deref().and_then(|p| p.to_str()),
        Some("/var/run/proglog/admin/token")
    );
    assert!(a.tls_ca.is_none() && a.tls_cert.is_none() && a.acl_policy.is_none());
    let sts = c.statefulset(3);
    let pod = pod_spec(&sts);
    let vols: Vec<&str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(vols, [ADMIN_TOKEN_VOLUME]);
    let secret_vol = &pod.volumes.as_ref().unwrap()[0];
    assert_eq!(
        secret_vol.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("demo-admin")
    );
    let mounts: Vec<(&str, &str)> = pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.as_str(), m.mount_path.as_str()))
        .collect();
    assert!(mounts.contains(&(ADMIN_TOKEN_VOLUME, names::ADMIN_TOKEN_DIR)));
    assert!(!mounts
        .iter()
        .any(|(n, _)| *n == TLS_VOLUME || *n == ACL_VOLUME));
}

#[test]
fn the_default_spec_gives_valid_args_and_large_records_get_room_between_peers() {
    let pl = demo(serde_json::json!({"log": {"maxRecordBytes": 67_108_864}}));
    let c = Children::new(&pl, "cluster.local").unwrap();
    let argv = std::iter::once("logserver".to_string()).chain(expanded_args(&c));
    let a = logserver::config::Args::try_parse_from(argv).unwrap();
    let cfg = logserver::config::Config::try_from(logserver::config::Args {
        admin_token_file: None,
        ..a
    })
    .unwrap();
    cfg.validate().unwrap();
    assert!(cfg.max_peer_message_bytes > 2 * cfg.max_request_bytes());
}

#[test]
fn every_arg_reference_is_a_declared_env_var() {
    let pl = demo(serde_json::json!({}));
    let c = Children::new(&pl, "cluster.local").unwrap();
    let sts = c.statefulset(3);
    let container = &pod_spec(&sts).containers[0];
    let env: Vec<&str> = container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    for a in container.args.as_ref().unwrap() {
        let mut rest = a.as_str();
        while let Some(i) = rest.find("$(") {
            let end = rest[i..].find(')').unwrap() + i;
            let var = &rest[i + 2..end];
            assert!(env.contains(&var), "{a} uses undeclared {var}");
            rest = &rest[end..];
        }
    }
    let ip = container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == ENV_POD_IP)
        .unwrap();
    assert_eq!(
        ip.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "status.podIP"
    );
}

#[test]
fn statefulset_takes_replicas_given_and_the_spec_settings() {
    let pl = demo(serde_json::json!({
        "replicas": 5,
        "image": "proglog/logserver:test",
        "imagePullPolicy": "Never",
        "storage": {"size": "3Gi", "storageClassName": "fast", "onDelete": "Delete"},
        "resources": {"requests": {"cpu": "100m"}}
    }));
    let c = Children::new(&pl, "cluster.local").unwrap();
    let sts = c.statefulset(4);
    let spec = sts.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(4), "replicas come from the caller");
    assert_eq!(spec.service_name.as_deref(), Some("demo-members"));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    // The operator restarts members itself, leader last: the StatefulSet must not.
    let strategy = spec.update_strategy.as_ref().unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("OnDelete"));
    assert!(strategy.rolling_update.is_none());
    let retention = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .unwrap();
    assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
    assert_eq!(retention.when_scaled.as_deref(), Some("Delete"));

    let labels = names::labels("demo");
    assert_eq!(spec.selector.match_labels.as_ref(), Some(&labels));
    let tmpl_labels = spec.template.metadata.as_ref().unwrap().labels.as_ref();
    assert_eq!(tmpl_labels, Some(&labels), "pods match the selector");

    let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
    assert_eq!(claim.metadata.name.as_deref(), Some(names::DATA_VOLUME));
    let cs = claim.spec.as_ref().unwrap();
    assert_eq!(cs.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        cs.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "3Gi"
    );

    let pod = pod_spec(&sts);
    assert_eq!(pod.service_account_name.as_deref(), Some("demo-logserver"));
    let fs_group = pod.security_context.as_ref().and_then(|s| s.fs_group);
    assert_eq!(
        fs_group,
        Some(crate::resources::NONROOT_ID),
        "the non-root image user can read the token and write the volume"
    );
    assert_restricted(pod);
    let ctr = &pod.containers[0];
    assert_eq!(ctr.name, names::CONTAINER);
    assert_eq!(ctr.image.as_deref(), Some("proglog/logserver:test"));
    assert_eq!(ctr.image_pull_policy.as_deref(), Some("Never"));
    assert_eq!(
        ctr.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0,
        "100m"
    );
    let mounts: Vec<(&str, &str)> = ctr
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| (m.name.as_str(), m.mount_path.as_str()))
        .collect();
    assert!(mounts.contains(&(names::DATA_VOLUME, names::DATA_DIR)));
    assert!(mounts.contains(&(TLS_VOLUME, names::TLS_DIR)));
    assert!(mounts.contains(&(ACL_VOLUME, names::ACL_DIR)));
    assert!(
        !mounts.iter().any(|(n, _)| *n == ADMIN_TOKEN_VOLUME),
        "no token under TLS"
    );
    for m in ctr.volume_mounts.iter().flatten() {
        if m.name != names::DATA_VOLUME {
            assert_eq!(m.read_only, Some(true), "{} is read-only", m.name);
            assert!(
                m.sub_path.is_none(),
                "{}: subPath mounts are never refreshed",
                m.name
            );
        }
    }
    let vol = |name: &str| {
        pod.volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        vol(TLS_VOLUME).secret.unwrap().secret_name.as_deref(),
        Some("demo-member-tls")
    );
    assert_eq!(vol(ACL_VOLUME).config_map.unwrap().name, "demo-acl");
}

#[test]
fn the_default_volume_policy_retains_on_delete_but_deletes_on_scale_down() {
    let pl = demo(serde_json::json!({}));
    assert_eq!(pl.spec.storage.on_delete, VolumePolicy::Retain);
    let sts = Children::new(&pl, "cluster.local").unwrap().statefulset(3);
    let r = sts
        .spec
        .unwrap()
        .persistent_volume_claim_retention_policy
        .unwrap();
    assert_eq!(
        (r.when_deleted.as_deref(), r.when_scaled.as_deref()),
        (Some("Retain"), Some("Delete"))
    );
}

#[test]
fn probes_ready_on_readyz_alive_on_tcp() {
    let pl = demo(serde_json::json!({"ports": {"grpc": 9100}}));
    let sts = Children::new(&pl, "cluster.local").unwrap().statefulset(3);
    let ctr = &pod_spec(&sts).containers[0];
    let ready = ctr.readiness_probe.as_ref().unwrap();
    let http = ready
        .http_get
        .as_ref()
        .expect("an HTTP probe: the kubelet cannot speak TLS");
    assert_eq!(http.path.as_deref(), Some(READY_PATH));
    assert_eq!(http.port, IntOrString::Int(9400), "the metrics port");
    assert_eq!(http.scheme.as_deref(), Some("HTTP"));
    assert!(ready.tcp_socket.is_none() && ready.grpc.is_none());
    let live = ctr.liveness_probe.as_ref().unwrap();
    assert_eq!(
        live.tcp_socket.as_ref().unwrap().port,
        IntOrString::Int(9100)
    );
    assert!(live.grpc.is_none(), "liveness must not depend on a leader");
    let ports: Vec<_> = ctr
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.as_deref().unwrap(), p.container_port))
        .collect();
    assert_eq!(ports, [("grpc", 9100), ("metrics", 9400)]);
    let annotations = sts
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap();
    let annotations = annotations.annotations.as_ref().unwrap();
    assert_eq!(annotations["prometheus.io/port"], "9400");
    assert_eq!(annotations["prometheus.io/scrape"], "true");
}

#[test]
fn namespaced_children_are_owned_labelled_and_named() {
    let pl = demo(serde_json::json!({}));
    let c = Children::new(&pl, "cluster.local").unwrap();
    let ca = crate::pki::CaPem {
        cert: "c".into(),
        key: "k".into(),
    };
    let id = crate::pki::IdentityPem {
        ca: "c".into(),
        cert: "x".into(),
        key: "y".into(),
    };
    let metas = [
        c.admin_secret("t").metadata,
        c.ca_secret(&ca).metadata,
        c.identity_secret(names::member_tls_secret("demo"), &id)
            .metadata,
        c.identity_secret(names::operator_tls_secret("demo"), &id)
            .metadata,
        c.acl_config_map("").metadata,
        c.service_account().metadata,
        c.role_binding().metadata,
        c.headless_service().metadata,
        c.leader_service().metadata,
        c.followers_service().metadata,
        c.metrics_service().metadata,
        c.statefulset(3).metadata,
        c.pdb().metadata,
    ];
    let got: Vec<&str> = metas.iter().map(|m| m.name.as_deref().unwrap()).collect();
    assert_eq!(
        got,
        [
            "demo-admin",
            "demo-ca",
            "demo-member-tls",
            "demo-operator-tls",
            "demo-acl",
            "demo-logserver",
            "demo-logserver",
            "demo-members",
            "demo-leader",
            "demo-followers",
            "demo-metrics",
            "demo",
            "demo"
        ]
    );
    for m in &metas {
        assert_eq!(m.namespace.as_deref(), Some("ns"));
        let owners = m.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        let o = &owners[0];
        assert_eq!(
            (o.kind.as_str(), o.name.as_str(), o.uid.as_str()),
            ("ProgLog", "demo", "uid-1")
        );
        assert_eq!(o.api_version, "proglog.dev/v1alpha1");
        assert_eq!(o.controller, Some(true));
        let labels = m.labels.as_ref().unwrap();
        for (k, v) in names::labels("demo") {
            assert_eq!(labels.get(&k), Some(&v), "{:?} lacks {k}", m.name);
        }
    }
}

#[test]
fn services_headless_selects_pods_and_role_services_are_selectorless() {
    let pl = demo(serde_json::json!({"ports": {"grpc": 8500}}));
    let c = Children::new(&pl, "cluster.local").unwrap();
    let h = c.headless_service().spec.unwrap();
    assert_eq!(h.cluster_ip.as_deref(), Some("None"));
    assert_eq!(h.publish_not_ready_addresses, Some(true));
    assert_eq!(h.selector, Some(names::labels("demo")));
    for (svc, role) in [
        (c.leader_service(), names::ROLE_LEADER),
        (c.followers_service(), names::ROLE_FOLLOWERS),
    ] {
        assert_eq!(
            svc.metadata.labels.as_ref().unwrap()[names::ROLE_LABEL],
            role
        );
        let spec = svc.spec.unwrap();
        assert!(spec.selector.is_none(), "discovery writes the slices");
        let p = &spec.ports.unwrap()[0];
        assert_eq!(p.name.as_deref(), Some(names::GRPC_PORT_NAME));
        assert_eq!(
            (p.port, p.target_port.clone()),
            (8500, Some(IntOrString::Int(8500)))
        );
    }
    let p = &h.ports.unwrap()[0];
    assert_eq!((p.name.as_deref(), p.port), (Some("grpc"), 8500));

    let m = c.metrics_service();
    assert_eq!(
        m.metadata.labels.as_ref().unwrap()[names::ROLE_LABEL],
        "metrics"
    );
    let m = m.spec.unwrap();
    assert_eq!(m.cluster_ip.as_deref(), Some("None"));
    assert_eq!(m.selector, Some(names::labels("demo")));
    let p = &m.ports.unwrap()[0];
    assert_eq!(
        (p.name.as_deref(), p.port, p.target_port.clone()),
        (Some("metrics"), 9400, Some(IntOrString::Int(9400)))
    );
}

#[test]
fn rbac_is_read_only_and_bound_in_the_namespace() {
    let pl = demo(serde_json::json!({}));
    let c = Children::new(&pl, "cluster.local").unwrap();
    let role = c.cluster_role();
    assert_eq!(role.metadata.name.as_deref(), Some("proglog:ns:demo"));
    assert!(role.metadata.owner_references.is_none(), "cluster-scoped");
    assert!(role.metadata.namespace.is_none());
    let rules = role.rules.unwrap();
    let mut granted: Vec<(String, String)> = Vec::new();
    for r in &rules {
        assert_eq!(r.verbs, ["get", "list", "watch"]);
        for g in r.api_groups.as_ref().unwrap() {
            for res in r.resources.as_ref().unwrap() {
                granted.push((g.clone(), res.clone()));
            }
        }
    }
    granted.sort();
    assert_eq!(
        granted,
        [
            ("".into(), "pods".into()),
            ("discovery.k8s.io".into(), "endpointslices".into()),
            ("proglog.dev".into(), "proglogs".into())
        ]
    );
    let rb = c.role_binding();
    assert_eq!(rb.role_ref.kind, "ClusterRole");
    assert_eq!(rb.role_ref.name, "proglog:ns:demo");
    let s = &rb.subjects.unwrap()[0];
    assert_eq!(
        (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()),
        ("ServiceAccount", "demo-logserver", Some("ns"))
    );
}

#[test]
fn pdb_allows_one_member_down() {
    let pl = demo(serde_json::json!({}));
    let pdb = Children::new(&pl, "cluster.local").unwrap().pdb();
    let spec = pdb.spec.unwrap();
    assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
    assert!(spec.min_available.is_none());
    assert_eq!(
        spec.selector.unwrap().match_labels,
        Some(names::labels("demo"))
    );
}

#[test]
fn pki_secrets_and_the_acl_hold_the_keys_the_members_mount() {
    let pl = demo(serde_json::json!({}));
    let c = Children::new(&pl, "cluster.local").unwrap();
    let ca = crate::pki::CaPem {
        cert: "CA".into(),
        key: "CAKEY".into(),
    };
    let data = c.ca_secret(&ca).data.unwrap();
    assert_eq!(data[names::CA_CERT_KEY].0, b"CA");
    assert_eq!(data[names::CA_KEY_KEY].0, b"CAKEY");
    let id = crate::pki::IdentityPem {
        ca: "CA".into(),
        cert: "CERT".into(),
        key: "KEY".into(),
    };
    let s = c.identity_secret(names::member_tls_secret("demo"), &id);
    let data = s.data.unwrap();
    assert_eq!(data.len(), 3, "no CA key in an identity Secret");
    assert_eq!(
        (
            &data["ca.pem"].0[..],
            &data["cert.pem"].0[..],
            &data["key.pem"].0[..]
        ),
        (&b"CA"[..], &b"CERT"[..], &b"KEY"[..])
    );
    let argv = std::iter::once("logserver".to_string()).chain(expanded_args(&c));
    let a = logserver::config::Args::try_parse_from(argv).unwrap();
    // What the members read is where the volumes put these keys.
    let in_dir = |dir: &str, key: &str| std::path::Path::new(dir).join(key);
    assert_eq!(
        a.tls_cert.unwrap(),
        in_dir(names::TLS_DIR, names::TLS_CERT_KEY)
    );
    let cm = c.acl_config_map("p, alice, *, produce\n");
    let data = cm.data.unwrap();
    assert_eq!(data[names::ACL_POLICY_KEY], "p, alice, *, produce\n");
    assert!(data[names::ACL_MODEL_KEY].contains("r = sub, obj, act"));
    assert_eq!(
        a.acl_model.unwrap(),
        in_dir(names::ACL_DIR, names::ACL_MODEL_KEY)
    );
}

#[test]
fn the_secret_holds_the_token_and_tokens_are_fresh_hex() {
    let pl = demo(serde_json::json!({}));
    let s = Children::new(&pl, "cluster.local")
        .unwrap()
        .admin_secret("abc");
    assert_eq!(s.data.unwrap()[names::ADMIN_TOKEN_KEY].0, b"abc");
    let (a, b) = (new_token(), new_token());
    assert_eq!(a.len(), 64);
    assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
}

/// The pod passes Pod Security Admission `restricted` (the checks of the Pod Security Standards
/// that a pod spec can fail), and gets no service-account token (a member never calls the API).
fn assert_restricted(pod: &k8s_openapi::api::core::v1::PodSpec) {
    let psc = pod
        .security_context
        .as_ref()
        .expect("a pod security context");
    assert_eq!(psc.run_as_non_root, Some(true), "runAsNonRoot");
    assert_ne!(psc.run_as_user, Some(0), "never uid 0");
    assert_eq!(
        psc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault"),
        "seccomp RuntimeDefault"
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert!(pod.host_network.is_none() && pod.host_pid.is_none() && pod.host_ipc.is_none());
    for v in pod.volumes.iter().flatten() {
        assert!(v.host_path.is_none(), "no hostPath volume ({})", v.name);
    }
    for c in &pod.containers {
        let sc = c
            .security_context
            .as_ref()
            .expect("a container security context");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_ne!(sc.privileged, Some(true), "{}", c.name);
        let caps = sc.capabilities.as_ref().expect("capabilities");
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert!(caps.add.as_ref().is_none_or(|a| a.is_empty()), "{}", c.name);
    }
}
