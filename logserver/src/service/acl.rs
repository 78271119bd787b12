//! Who may do what on the Log service: a casbin enforcer over the book's model and policy files
//! (`r = sub, obj, act`, `p, root, *, produce`), asked `(subject, "*", action)` as the book's
//! proglog asks it. Decisions are cached per (subject, action) until the policy changes.
//!
//! Two ways a policy comes into force, with no restart:
//! - the files: read at start (the source of truth) and read again when they change
//!   ([`Acl::spawn_watch`]; under the operator a ConfigMap volume, which the kubelet refreshes
//!   about once a minute);
//! - a push ([`Acl::set`], the admin `Acl.SetPolicy` call of the operator, which writes the
//!   ConfigMap first): in force at once. Until the files show the pushed policy too (the kubelet
//!   caught up), a different file content is taken as older and does not undo the push; after
//!   [`PUSH_HOLD`] the files win again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use casbin::{CoreApi, DefaultModel, Enforcer, StringAdapter};

/// An action on the Log service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Produce,
    Consume,
}

impl Action {
    fn index(self) -> usize {
        match self {
            Action::Produce => 0,
            Action::Consume => 1,
        }
    }

    /// The action's name in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Produce => "produce",
            Action::Consume => "consume",
        }
    }
}

/// The object every call is about (the book asks for `*`).
const OBJECT: &str = "*";

/// How long a pushed policy outranks policy files that differ from it. NB: the kubelet
/// refreshes a ConfigMap volume within its sync period plus its cache's delay (53-72 s
/// measured with the defaults); files that still differ from the push after this long were
/// changed after it, so they are the truth again (a push the operator then failed to make).
pub const PUSH_HOLD: Duration = Duration::from_secs(180);

/// Loading a model and policy failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The files do not read or load.
    #[error("ACL model {model} / policy {policy}: {reason}")]
    Files {
        model: PathBuf,
        policy: PathBuf,
        reason: String,
    },
    /// A pushed model and policy do not load.
    #[error("the pushed ACL does not load: {0}")]
    Pushed(String),
}

/// (model, policy) as bytes.
type Raw = (Vec<u8>, Vec<u8>);

struct State {
    enforcer: Enforcer,
    raw: Raw,
    /// Decisions by subject, by [`Action::index`]. NB: looked up by `&str`, so a cached
    /// decision costs no allocation.
    decisions: HashMap<String, [Option<bool>; 2]>,
}

/// The policy in force.
pub struct Acl {
    model: PathBuf,
    policy: PathBuf,
    state: Mutex<State>,
    /// A pushed policy the files have not shown yet, and when it came.
    pushed: Mutex<Option<(Raw, Instant)>>,
    push_hold: Duration,
    /// Held by a reload or a push from reading what is in force to swapping in the new one.
    updates: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Acl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acl")
            .field("model", &self.model)
            .field("policy", &self.policy)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read_files(model: &Path, policy: &Path) -> Result<Raw, String> {
    Ok((
        std::fs::read(model).map_err(|e| format!("reading the model: {e}"))?,
        std::fs::read(policy).map_err(|e| format!("reading the policy: {e}"))?,
    ))
}

/// An enforcer over `raw`; Err says why it does not load.
async fn build(raw: Raw) -> Result<State, String> {
    let model = std::str::from_utf8(&raw.0).map_err(|_| "the model is not UTF-8")?;
    let policy = std::str::from_utf8(&raw.1).map_err(|_| "the policy is not UTF-8")?;
    let m = DefaultModel::from_str(model)
        .await
        .map_err(|e| format!("the model: {e}"))?;
    // NB: the policy text through casbin's StringAdapter, files and pushes alike, so that both
    // are read by the same code (it skips blank and `#` lines as the FileAdapter does).
    let enforcer = Enforcer::new(m, StringAdapter::new(policy))
        .await
        .map_err(|e| format!("the policy: {e}"))?;
    // NB: casbin loads a model with sections missing; a question finds out whether it answers.
    enforcer
        .enforce(("", OBJECT, Action::Produce.as_str()))
        .map_err(|e| format!("the model cannot decide (subject, object, action): {e}"))?;
    Ok(State {
        enforcer,
        raw,
        decisions: HashMap::new(),
    })
}

impl Acl {
    /// Loads the casbin `model` (.conf) and `policy` (.csv) files.
    pub async fn load(model: &Path, policy: &Path) -> Result<Arc<Acl>, Error> {
        Self::load_with_hold(model, policy, PUSH_HOLD).await
    }

    /// As [`Acl::load`], a pushed policy outranking differing files for `push_hold`.
    pub async fn load_with_hold(
        model: &Path,
        policy: &Path,
        push_hold: Duration,
    ) -> Result<Arc<Acl>, Error> {
        let err = |reason: String| Error::Files {
            model: model.to_path_buf(),
            policy: policy.to_path_buf(),
            reason,
        };
        let state = build(read_files(model, policy).map_err(err)?)
            .await
            .map_err(err)?;
        Ok(Arc::new(Acl {
            model: model.to_path_buf(),
            policy: policy.to_path_buf(),
            state: Mutex::new(state),
            pushed: Mutex::new(None),
            push_hold,
            updates: tokio::sync::Mutex::new(()),
        }))
    }

    fn err(&self, reason: impl std::fmt::Display) -> Error {
        Error::Files {
            model: self.model.clone(),
            policy: self.policy.clone(),
            reason: reason.to_string(),
        }
    }

    fn read_files(&self) -> Result<Raw, Error> {
        read_files(&self.model, &self.policy).map_err(|r| self.err(r))
    }

    /// True when the policy lets `subject` do `action`.
    pub fn allows(&self, subject: &str, action: Action) -> bool {
        let mut s = lock(&self.state);
        if let Some(d) = s.decisions.get(subject).and_then(|d| d[action.index()]) {
            return d;
        }
        let d = match s.enforcer.enforce((subject, OBJECT, action.as_str())) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(subject, action = action.as_str(), "ACL: {e}; refusing");
                false
            }
        };
        s.decisions.entry(subject.to_string()).or_default()[action.index()] = Some(d);
        d
    }

    /// Reads the files again and swaps their policy in when it differs from the one in force
    /// (and no newer push outranks them); Ok(true) then.
    pub async fn reload(&self) -> Result<bool, Error> {
        let raw = self.read_files()?;
        let _held = self.updates.lock().await;
        {
            let mut pushed = lock(&self.pushed);
            if let Some((p, at)) = pushed.as_ref() {
                if *p == raw {
                    *pushed = None; // the files caught up with the push
                    return Ok(false);
                }
                if at.elapsed() < self.push_hold {
                    return Ok(false); // the files are behind the push
                }
                tracing::warn!(
                    policy = %self.policy.display(),
                    "the ACL files still differ from the policy pushed {:?} ago: going by the files",
                    at.elapsed()
                );
                *pushed = None;
            }
        }
        if lock(&self.state).raw == raw {
            return Ok(false);
        }
        let fresh = build(raw).await.map_err(|r| self.err(r))?;
        *lock(&self.state) = fresh;
        Ok(true)
    }

    /// Puts a pushed `model` and `policy` in force at once; Ok(true) when that changed the
    /// policy in force. Err (and the policy in force stays) when they do not load.
    pub async fn set(&self, model: &str, policy: &str) -> Result<bool, Error> {
        let raw: Raw = (model.as_bytes().to_vec(), policy.as_bytes().to_vec());
        let _held = self.updates.lock().await;
        let changed = lock(&self.state).raw != raw;
        if changed {
            let fresh = build(raw.clone()).await.map_err(Error::Pushed)?;
            *lock(&self.state) = fresh;
        }
        *lock(&self.pushed) = Some((raw, Instant::now()));
        Ok(changed)
    }

    /// Polls the files every `every` while this policy is in use.
    pub fn spawn_watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Acl> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(me) = weak.upgrade() else { return };
                match me.reload().await {
                    Ok(true) => tracing::info!(policy = %me.policy.display(), "ACL reloaded"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!("ACL changed but does not load (keeping the old): {e}")
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &str = include_str!("../../acl/model.conf");

    struct Files(tempfile::TempDir);

    impl Files {
        fn new(policy: &str) -> Files {
            let f = Files(tempfile::tempdir().unwrap());
            std::fs::write(f.model(), MODEL).unwrap();
            f.write(policy);
            f
        }
        fn model(&self) -> PathBuf {
            self.0.path().join("model.conf")
        }
        fn policy(&self) -> PathBuf {
            self.0.path().join("policy.csv")
        }
        fn write(&self, policy: &str) {
            std::fs::write(self.policy(), policy).unwrap();
        }
    }

    #[tokio::test]
    async fn a_push_is_in_force_at_once_and_older_files_do_not_undo_it() {
        let f = Files::new("p, alice, *, consume\n");
        let acl = Acl::load(&f.model(), &f.policy()).await.unwrap();
        assert!(acl.allows("alice", Action::Consume));

        assert!(acl.set(MODEL, "p, bob, *, produce\n").await.unwrap());
        assert!(!acl.allows("alice", Action::Consume), "revoked by the push");
        assert!(acl.allows("bob", Action::Produce));
        assert!(!acl.set(MODEL, "p, bob, *, produce\n").await.unwrap());

        // The files still say the old policy (the kubelet has not caught up): the push stays.
        assert!(!acl.reload().await.unwrap());
        assert!(!acl.allows("alice", Action::Consume));
        // They catch up: nothing to load; then they change: they rule again.
        f.write("p, bob, *, produce\n");
        assert!(!acl.reload().await.unwrap());
        f.write("p, carol, *, consume\n");
        assert!(acl.reload().await.unwrap());
        assert!(acl.allows("carol", Action::Consume));
        assert!(!acl.allows("bob", Action::Produce));
    }

    #[tokio::test]
    async fn after_the_hold_differing_files_win_and_a_bad_push_changes_nothing() {
        let f = Files::new("p, alice, *, consume\n");
        let acl = Acl::load_with_hold(&f.model(), &f.policy(), Duration::ZERO)
            .await
            .unwrap();
        assert!(acl.set(MODEL, "p, bob, *, produce\n").await.unwrap());
        assert!(acl.reload().await.unwrap(), "the files win after the hold");
        assert!(acl.allows("alice", Action::Consume));
        assert!(!acl.allows("bob", Action::Produce));

        let e = acl
            .set("[request_definition]\n", "p, bob, *, produce\n")
            .await;
        assert!(matches!(e, Err(Error::Pushed(_))), "{e:?}");
        assert!(acl.allows("alice", Action::Consume), "unchanged");
        assert!(!acl.allows("bob", Action::Produce));
    }
}
