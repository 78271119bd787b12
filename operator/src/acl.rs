//! The Log service's ACL of one ProgLog, as the members read it from the ConfigMap
//! `<name>-acl`: the book's casbin model ([`MODEL`], unchanged) and a policy the operator renders
//! in full from who may do what ([`render`]). The operator owns `policy.csv` whole: every pass
//! writes what [`render`] returns, so a hand edit does not last; grants come from ProgLogUsers.
//!
//! The members' and the operator's identities need no lines here: the Raft and admin planes
//! check their subjects themselves, and neither produces nor consumes. Pure; no I/O.

/// The casbin model (the book's `model.conf`): `r = sub, obj, act`, allowed when a policy line
/// has the same subject, object and action.
pub const MODEL: &str = include_str!("../../logserver/acl/model.conf");

/// An action on the Log service, as the policy spells it.
pub const PRODUCE: &str = "produce";
/// See [`PRODUCE`].
pub const CONSUME: &str = "consume";
/// Every action a policy line may name.
pub const ACTIONS: [&str; 2] = [PRODUCE, CONSUME];

/// The object every line names (the members ask about `*`, as the book's proglog does).
const OBJECT: &str = "*";

/// One subject (a certificate CN) and the actions it may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The subject: the CN of the user's certificate.
    pub subject: String,
    /// Actions: [`PRODUCE`], [`CONSUME`]; others are left out of the policy.
    pub actions: Vec<String>,
}

/// Why a grant cannot be written into a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The subject is empty, reserved, or holds characters a CSV line cannot carry.
    #[error("subject {0:?} cannot be granted actions: {1}")]
    BadSubject(String, &'static str),
    /// An action other than produce and consume.
    #[error("unknown action {0:?} (want produce or consume)")]
    UnknownAction(String),
}

/// Checks one grant: a plain subject (no comma, quote, newline or `#` at its start; not a
/// member's or the operator's reserved subject), known actions.
pub fn check(g: &Grant) -> Result<(), Error> {
    let s = &g.subject;
    let bad = |why| Err(Error::BadSubject(s.clone(), why));
    if s.trim().is_empty() || s.trim() != s {
        return bad("empty, or spaces at either end");
    }
    if s.contains([',', '"', '\n', '\r']) || s.starts_with('#') {
        return bad("it holds a comma, a quote, a newline or starts with #");
    }
    if s == crate::names::MEMBER_SUBJECT || s == crate::names::OPERATOR_SUBJECT {
        return bad("it is reserved for the members or the operator");
    }
    if let Some(a) = g.actions.iter().find(|a| !ACTIONS.contains(&a.as_str())) {
        return Err(Error::UnknownAction(a.clone()));
    }
    Ok(())
}

/// The policy (`policy.csv`) granting each valid grant its actions, one `p, <subject>, *,
/// <action>` line each, sorted and without duplicates so that the same grants always render
/// the same text (no needless ConfigMap writes, no needless member reloads). Grants that fail
/// [`check`] are left out (the caller reports them). A header comment says who writes it.
pub fn render(grants: &[Grant]) -> String {
    let mut lines = std::collections::BTreeSet::new();
    for g in grants.iter().filter(|g| check(g).is_ok()) {
        for a in &g.actions {
            lines.insert(format!("p, {}, {OBJECT}, {a}", g.subject));
        }
    }
    let mut out = String::from(
        "# Written by proglog-operator from the ProgLogUsers of this ProgLog; edits do not last.\n",
    );
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(subject: &str, actions: &[&str]) -> Grant {
        Grant {
            subject: subject.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// What casbin (as the members run it) decides with the rendered policy.
    async fn decide(policy: &str, sub: &str, act: &str) -> bool {
        use casbin::{CoreApi, DefaultModel, Enforcer, FileAdapter};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.csv");
        std::fs::write(&path, policy).unwrap();
        let m = DefaultModel::from_str(MODEL).await.unwrap();
        let e = Enforcer::new(m, FileAdapter::new(path)).await.unwrap();
        e.enforce((sub, "*", act)).unwrap()
    }

    #[tokio::test]
    async fn the_rendered_policy_grants_exactly_what_was_asked() {
        let p = render(&[
            grant("bob", &["consume"]),
            grant("alice", &["produce", "consume", "produce"]),
            grant("proglog-operator", &["produce"]),
            grant("mallory,x", &["produce"]),
            grant("eve", &["delete"]),
        ]);
        assert_eq!(
            p.lines().skip(1).collect::<Vec<_>>(),
            [
                "p, alice, *, consume",
                "p, alice, *, produce",
                "p, bob, *, consume"
            ]
        );
        assert!(decide(&p, "alice", "produce").await);
        assert!(decide(&p, "bob", "consume").await);
        assert!(!decide(&p, "bob", "produce").await);
        assert!(!decide(&p, "proglog-operator", "produce").await);
        assert!(!decide(&p, "eve", "consume").await);
        // No users: the header alone, which casbin reads as an empty policy.
        let empty = render(&[]);
        assert_eq!(empty.lines().count(), 1);
        assert!(!decide(&empty, "alice", "consume").await);
    }

    #[test]
    fn bad_grants_are_named() {
        assert!(check(&grant("alice", &["produce"])).is_ok());
        assert!(matches!(
            check(&grant("proglog-member", &[])),
            Err(Error::BadSubject(_, _))
        ));
        assert!(matches!(
            check(&grant(" a", &[])),
            Err(Error::BadSubject(_, _))
        ));
        assert_eq!(
            check(&grant("a", &["write"])),
            Err(Error::UnknownAction("write".into()))
        );
    }
}
