//! Who may do what on the Log service: a casbin enforcer over the book's model and policy files
//! (`r = sub, obj, act`, `p, root, *, produce`), asked `(subject, "*", action)` as the book's
//! proglog asks it. Decisions are cached per (subject, action) until the files change; the
//! files are read again when they change, so a policy update needs no restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use casbin::{CoreApi, DefaultModel, Enforcer, FileAdapter};

/// An action on the Log service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Produce,
    Consume,
}

impl Action {
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

/// Loading the model or the policy failed.
#[derive(Debug, thiserror::Error)]
#[error("ACL model {model} / policy {policy}: {reason}")]
pub struct Error {
    pub model: PathBuf,
    pub policy: PathBuf,
    pub reason: String,
}

struct State {
    enforcer: Enforcer,
    raw: (Vec<u8>, Vec<u8>),
    decisions: HashMap<(String, Action), bool>,
}

/// The policy in force.
pub struct Acl {
    model: PathBuf,
    policy: PathBuf,
    state: Mutex<State>,
}

impl std::fmt::Debug for Acl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acl")
            .field("model", &self.model)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Acl {
    /// Loads the casbin `model` (.conf) and `policy` (.csv) files.
    pub async fn load(model: &Path, policy: &Path) -> Result<Arc<Acl>, Error> {
        let acl = Acl {
            model: model.to_path_buf(),
            policy: policy.to_path_buf(),
            state: Mutex::new(Self::read(model, policy).await?),
        };
        Ok(Arc::new(acl))
    }

    fn err(&self, reason: impl std::fmt::Display) -> Error {
        Error {
            model: self.model.clone(),
            policy: self.policy.clone(),
            reason: reason.to_string(),
        }
    }

    async fn read(model: &Path, policy: &Path) -> Result<State, Error> {
        let err = |reason: String| Error {
            model: model.to_path_buf(),
            policy: policy.to_path_buf(),
            reason,
        };
        let raw = (
            std::fs::read(model).map_err(|e| err(format!("reading the model: {e}")))?,
            std::fs::read(policy).map_err(|e| err(format!("reading the policy: {e}")))?,
        );
        let text =
            String::from_utf8(raw.0.clone()).map_err(|_| err("the model is not UTF-8".into()))?;
        let m = DefaultModel::from_str(&text)
            .await
            .map_err(|e| err(format!("the model: {e}")))?;
        let enforcer = Enforcer::new(m, FileAdapter::new(policy.to_path_buf()))
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(State {
            enforcer,
            raw,
            decisions: HashMap::new(),
        })
    }

    /// True when the policy lets `subject` do `action`.
    pub fn allows(&self, subject: &str, action: Action) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&d) = s.decisions.get(&(subject.to_string(), action)) {
            return d;
        }
        let d = match s.enforcer.enforce((subject, OBJECT, action.as_str())) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(subject, action = action.as_str(), "ACL: {e}; refusing");
                false
            }
        };
        s.decisions.insert((subject.to_string(), action), d);
        d
    }

    /// Reads the files again and swaps the policy in when they changed; Ok(true) then.
    pub async fn reload(&self) -> Result<bool, Error> {
        let raw = (
            std::fs::read(&self.model).map_err(|e| self.err(e))?,
            std::fs::read(&self.policy).map_err(|e| self.err(e))?,
        );
        if self.state.lock().unwrap_or_else(|p| p.into_inner()).raw == raw {
            return Ok(false);
        }
        let fresh = Self::read(&self.model, &self.policy).await?;
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(true)
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
