//! Tests of [`crate::user_resources`]: the objects built for a ProgLogUser, checked with plain
//! values, a real CA, rustls's client verifier (as members verify callers) and the logserver's
//! casbin enforcer over the book's model (as members decide).

use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use proglog_crds::ProgLogUser;
use proglog_tls::issue::Ca;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::acl::render;
use crate::names;
use crate::pki::{LEAF_VALIDITY, RENEW_BEFORE};
use crate::user_resources::*;

fn user(name: &str, ns: &str, proglog: &str, actions: &[&str], sas: &[&str]) -> ProgLogUser {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "proglog.dev/v1alpha1", "kind": "ProgLogUser",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "generation": 1},
        "spec": {"proglog": proglog, "actions": actions, "serviceAccounts": sas},
    }))
    .unwrap()
}

fn ca() -> Ca {
    Ca::new("test CA", Duration::from_secs(3600 * 24 * 365)).unwrap()
}

fn issue(ca: &Ca, subject: &str) -> proglog_tls::issue::Issued {
    ca.issue(subject, &[], LEAF_VALIDITY).unwrap()
}

/// True when a member trusting `ca_pem` accepts `cert_pem` as a client certificate.
fn accepted_as_client(ca_pem: &str, cert_pem: &str) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.into(),
        proglog_tls::provider(),
    )
    .build()
    .unwrap();
    let leaf = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    v.verify_client_cert(&leaf, &[], UnixTime::now()).is_ok()
}

#[test]
fn the_secret_holds_the_ca_certificate_and_key_and_belongs_to_the_user() {
    let u = user("alice", "logs", "demo", &["produce"], &[]);
    let c = UserChildren::new(&u).unwrap();
    assert_eq!(c.subject(), "logs/alice");
    let ca = ca();
    let issued = issue(&ca, &c.subject());
    let s = c.secret(&ca.cert_pem(), &issued);
    assert_eq!(s.metadata.name.as_deref(), Some("alice-proglog-tls"));
    assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(secret_text(&s, "ca.pem"), Some(ca.cert_pem().as_str()));
    assert_eq!(secret_text(&s, "tls.crt"), Some(issued.cert_pem.as_str()));
    assert_eq!(secret_text(&s, "tls.key"), Some(issued.key_pem.as_str()));
    let labels = s.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[names::CLUSTER_LABEL], "demo");
    assert_eq!(labels[names::USER_LABEL], "alice");
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("ProgLogUser", "uid-alice", Some(true))
    );
    assert!(owned_by(&s.metadata, "uid-alice"));
    assert!(!owned_by(&s.metadata, "uid-bob"));

    // The certificate names the subject and a member trusting the CA accepts it; another
    // ProgLog's CA does not.
    let (cn, _) = describe(&issued.cert_pem).unwrap();
    assert_eq!(cn, "logs/alice");
    assert!(accepted_as_client(&ca.cert_pem(), &issued.cert_pem));
    assert!(!accepted_as_client(
        &self::ca().cert_pem(),
        &issued.cert_pem
    ));

    let mut named = u.clone();
    named.spec.secret_name = Some("alice-certs".into());
    assert_eq!(
        UserChildren::new(&named).unwrap().secret_name(),
        "alice-certs"
    );
    let mut bare = u;
    bare.metadata.uid = None;
    assert!(UserChildren::new(&bare).is_err());
}

#[test]
fn the_binding_gives_each_service_account_the_discovery_role_once() {
    let u = user(
        "alice",
        "logs",
        "demo",
        &["consume"],
        &["web", "app", "web"],
    );
    let rb = UserChildren::new(&u).unwrap().role_binding();
    assert_eq!(rb.metadata.name.as_deref(), Some("alice-proglog-discovery"));
    assert_eq!(rb.role_ref.kind, "ClusterRole");
    assert_eq!(rb.role_ref.name, names::DISCOVERY_CLUSTER_ROLE);
    let subjects: Vec<(&str, &str, Option<&str>)> = rb
        .subjects
        .as_ref()
        .unwrap()
        .iter()
        .map(|s| (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()))
        .collect();
    assert_eq!(
        subjects,
        [
            ("ServiceAccount", "app", Some("logs")),
            ("ServiceAccount", "web", Some("logs"))
        ]
    );
    assert_eq!(
        rb.metadata.owner_references.as_ref().unwrap()[0].uid,
        "uid-alice"
    );
    let none = user("bob", "logs", "demo", &["consume"], &[]);
    let rb = UserChildren::new(&none).unwrap().role_binding();
    assert_eq!(rb.subjects, Some(vec![]), "binds nobody");
}

#[test]
fn the_policy_lists_the_users_of_one_proglog_in_a_fixed_order() {
    let mut leaving = user("dave", "logs", "demo", &["produce"], &[]);
    leaving.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let users = [
        user("bob", "logs", "demo", &["consume"], &[]),
        user("alice", "logs", "demo", &["produce", "consume"], &[]),
        user("carol", "logs", "other", &["produce"], &[]),
        user("erin", "elsewhere", "demo", &["produce"], &[]),
        leaving,
    ];
    let g = grants(&users, "logs", "demo");
    let subjects: Vec<&str> = g.iter().map(|g| g.subject.as_str()).collect();
    assert_eq!(subjects, ["logs/alice", "logs/bob"]);
    let text = render(&g);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "p, logs/alice, *, consume",
            "p, logs/alice, *, produce",
            "p, logs/bob, *, consume"
        ]
    );
    let mut reversed = users.clone();
    reversed.reverse();
    assert_eq!(render(&grants(&reversed, "logs", "demo")), text);
    // Every subject passes the policy's checks (a namespace and a `/` are never reserved).
    assert!(g.iter().all(|g| crate::acl::check(g).is_ok()));
}

/// The rendered policy, loaded by the members' enforcer with the book's model, grants exactly
/// what the users say.
#[tokio::test]
async fn members_enforce_the_rendered_policy() {
    use logserver::service::acl::{Acl, Action};
    let users = [
        user("alice", "logs", "demo", &["produce", "consume"], &[]),
        user("bob", "logs", "demo", &["consume"], &[]),
        user("proglog-operator", "logs", "demo", &["produce"], &[]),
    ];
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.csv");
    std::fs::write(&policy, render(&grants(&users, "logs", "demo"))).unwrap();
    let model = dir.path().join("model.conf");
    std::fs::write(&model, crate::acl::MODEL).unwrap();
    let acl = Acl::load(&model, &policy).await.unwrap();
    assert!(acl.allows("logs/alice", Action::Produce));
    assert!(acl.allows("logs/alice", Action::Consume));
    assert!(acl.allows("logs/bob", Action::Consume));
    assert!(!acl.allows("logs/bob", Action::Produce));
    assert!(!acl.allows("bob", Action::Consume));
    assert!(!acl.allows("logs/carol", Action::Consume));
    // A user named like the operator gets its own namespaced subject, not the operator's.
    assert!(acl.allows("logs/proglog-operator", Action::Produce));
    assert!(!acl.allows("proglog-operator", Action::Produce));
}

#[test]
fn a_certificate_is_issued_again_only_when_it_must_be() {
    let u = user("alice", "logs", "demo", &["produce"], &[]);
    let c = UserChildren::new(&u).unwrap();
    let ca = ca();
    let good = c.secret(&ca.cert_pem(), &issue(&ca, "logs/alice"));
    let now = SystemTime::now();
    let check = |s: Option<&k8s_openapi::api::core::v1::Secret>, ca_pem: &str, at| {
        reissue_reason(s, ca_pem, "logs/alice", at, RENEW_BEFORE)
    };
    assert_eq!(check(Some(&good), &ca.cert_pem(), now), None);
    assert_eq!(check(None, &ca.cert_pem(), now), Some("no certificate yet"));
    let other_ca = self::ca();
    assert_eq!(
        check(Some(&good), &other_ca.cert_pem(), now),
        Some("the ProgLog's CA changed")
    );
    let later = now + LEAF_VALIDITY - RENEW_BEFORE + Duration::from_secs(3600);
    assert_eq!(
        check(Some(&good), &ca.cert_pem(), later),
        Some("the certificate expires soon")
    );
    let bob = c.secret(&ca.cert_pem(), &issue(&ca, "logs/bob"));
    assert_eq!(
        check(Some(&bob), &ca.cert_pem(), now),
        Some("the certificate names another subject")
    );
    let mut keyless = good.clone();
    keyless.data.as_mut().unwrap().remove(names::USER_KEY_KEY);
    assert_eq!(
        check(Some(&keyless), &ca.cert_pem(), now),
        Some("the Secret lacks a key")
    );
}

#[test]
fn the_status_says_ready_when_and_until_when() {
    let mut u = user("alice", "logs", "demo", &["produce"], &[]);
    let t0 = Time(Timestamp::from_second(1_800_000_000).unwrap());
    let ok = Outcome {
        ready: true,
        reason: "Issued",
        message: "fine".into(),
        not_after: Some(1_900_000_000),
    };
    let st = user_status(&u, &ok, t0.clone()).unwrap();
    let c = &st.conditions[0];
    assert_eq!(
        (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
        ("Ready", "True", "Issued")
    );
    assert_eq!(c.observed_generation, Some(1));
    assert_eq!(st.subject.as_deref(), Some("logs/alice"));
    assert_eq!(st.secret_name.as_deref(), Some("alice-proglog-tls"));
    assert_eq!(st.not_after.as_deref(), Some("2030-03-17T17:46:40Z"));

    // Still ready later: the transition time stays. Not ready: it moves, notAfter is kept.
    u.status = Some(st);
    let t1 = Time(Timestamp::from_second(1_800_000_100).unwrap());
    let again = user_status(&u, &ok, t1.clone()).unwrap();
    assert_eq!(again.conditions[0].last_transition_time, t0);
    let gone = Outcome {
        ready: false,
        reason: "ProgLogNotFound",
        message: "ProgLog logs/demo does not exist".into(),
        not_after: None,
    };
    let down = user_status(&u, &gone, t1.clone()).unwrap();
    assert_eq!(down.conditions[0].status, "False");
    assert_eq!(down.conditions[0].last_transition_time, t1);
    assert_eq!(down.not_after.as_deref(), Some("2030-03-17T17:46:40Z"));
}

#[test]
fn renewal_is_due_renew_before_the_end_and_never_sooner_than_the_floor() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let floor = Duration::from_secs(60);
    let day = Duration::from_secs(86_400);
    assert_eq!(
        until_renewal(1_000_000 + 10 * 86_400, now, day, floor),
        9 * day
    );
    assert_eq!(until_renewal(1_000_000 + 100, now, day, floor), floor);
    assert_eq!(until_renewal(0, now, day, floor), floor);
}
