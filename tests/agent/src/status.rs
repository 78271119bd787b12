//! Pure pod status: from what the agent knows of its containers to the `status` it writes.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

/// A container's state, as in `ContainerStatus.state`.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Not running: `reason` is e.g. ContainerCreating, ErrImagePull, CrashLoopBackOff.
    Waiting { reason: String, message: String },
    /// Running since `started_at`.
    Running { started_at: Timestamp },
    /// Exited.
    Terminated {
        exit_code: i32,
        reason: String,
        message: String,
        started_at: Timestamp,
        finished_at: Timestamp,
    },
}

impl State {
    /// A waiting state.
    pub fn waiting(reason: &str, message: impl Into<String>) -> Self {
        State::Waiting {
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            State::Waiting { reason, message } => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            State::Running { started_at } => {
                json!({"running": {"startedAt": started_at.to_string()}})
            }
            State::Terminated {
                exit_code,
                reason,
                message,
                started_at,
                finished_at,
            } => json!({"terminated": {
                "exitCode": exit_code, "reason": reason, "message": message,
                "startedAt": started_at.to_string(), "finishedAt": finished_at.to_string()}}),
        }
    }
}

/// What the agent knows of one container.
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    /// Container name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// The binary the image maps to ("" until resolved).
    pub binary: String,
    /// Current state.
    pub state: State,
    /// The previous run's state, after a restart.
    pub last: Option<State>,
    /// Restarts so far.
    pub restart_count: i32,
    /// Readiness (probe, or running when there is no readiness probe).
    pub ready: bool,
    /// Startup probe passed (or none).
    pub started: bool,
}

impl Container {
    /// A container not started yet.
    pub fn new(name: &str, image: &str) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            binary: String::new(),
            state: State::waiting("ContainerCreating", ""),
            last: None,
            restart_count: 0,
            ready: false,
            started: false,
        }
    }

    fn to_json(&self, uid: &str) -> Value {
        let mut v = json!({
            "name": self.name, "image": self.image, "imageID": format!("devcluster://{}", self.binary),
            "state": self.state.to_json(), "ready": self.ready, "restartCount": self.restart_count,
            "started": self.started && matches!(self.state, State::Running { .. }),
            "lastState": self.last.as_ref().map(State::to_json).unwrap_or(json!({})),
        });
        if !matches!(self.state, State::Waiting { .. }) || self.restart_count > 0 {
            v["containerID"] = json!(format!(
                "devcluster://{uid}/{}/{}",
                self.name, self.restart_count
            ));
        }
        v
    }
}

/// What the agent knows of one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodView {
    /// The pod IP, once allocated.
    pub ip: Option<String>,
    /// The node IP.
    pub host_ip: String,
    /// When the agent took the pod on.
    pub start_time: Timestamp,
    /// Init containers.
    pub init: Vec<Container>,
    /// App containers.
    pub containers: Vec<Container>,
    /// Every init container has completed.
    pub init_done: bool,
    /// Sandbox ready (IP and volumes in place).
    pub sandbox_ready: bool,
    /// `spec.restartPolicy`.
    pub restart_policy: String,
}

fn exit_code(s: &State) -> Option<i32> {
    match s {
        State::Terminated { exit_code, .. } => Some(*exit_code),
        _ => None,
    }
}

/// The pod phase for `view`.
pub fn phase(view: &PodView) -> &'static str {
    let never = view.restart_policy == "Never";
    if view
        .init
        .iter()
        .any(|c| never && exit_code(&c.state).is_some_and(|e| e != 0))
    {
        return "Failed";
    }
    if !view.init_done || view.containers.is_empty() {
        return "Pending";
    }
    let codes: Vec<Option<i32>> = view
        .containers
        .iter()
        .map(|c| exit_code(&c.state))
        .collect();
    if codes.iter().all(Option::is_some) {
        let all_ok = codes.iter().all(|c| *c == Some(0));
        return match (view.restart_policy.as_str(), all_ok) {
            ("Always", _) => "Running",
            (_, true) => "Succeeded",
            ("Never", false) => "Failed",
            _ => "Running",
        };
    }
    let ever_ran = view.containers.iter().any(|c| {
        matches!(c.state, State::Running { .. }) || c.restart_count > 0 || c.last.is_some()
    });
    if ever_ran {
        "Running"
    } else {
        "Pending"
    }
}

/// The `status` merge patch for `pod`, keeping the scheduler's condition and earlier transition times.
pub fn patch(pod: &Pod, view: &PodView, now: Timestamp) -> Value {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let old = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let phase = phase(view);
    let all_ready = !view.containers.is_empty()
        && view.containers.iter().all(|c| c.ready)
        && phase == "Running";
    let cond = |t: &str, ok: bool| {
        let status = if ok { "True" } else { "False" };
        let since = old
            .iter()
            .find(|c| c.type_ == t && c.status == status)
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0)
            .unwrap_or(now);
        json!({"type": t, "status": status, "lastTransitionTime": since.to_string(), "lastProbeTime": null})
    };
    let mut conditions: Vec<Value> = old
        .iter()
        .filter(|c| c.type_ == "PodScheduled")
        .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
        .collect();
    conditions.push(cond("PodReadyToStartContainers", view.sandbox_ready));
    conditions.push(cond("Initialized", view.init_done));
    conditions.push(cond("ContainersReady", all_ready));
    conditions.push(cond("Ready", all_ready));
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": view.host_ip, "hostIPs": [{"ip": view.host_ip}],
        "startTime": view.start_time.to_string(),
        "containerStatuses": view.containers.iter().map(|c| c.to_json(&uid)).collect::<Vec<_>>(),
    });
    // NB: no qosClass: the API server sets it at creation and refuses any change.
    if !view.init.is_empty() {
        status["initContainerStatuses"] = json!(view
            .init
            .iter()
            .map(|c| c.to_json(&uid))
            .collect::<Vec<_>>());
    }
    if let Some(ip) = &view.ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    json!({ "status": status })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(policy: &str, states: &[State]) -> PodView {
        PodView {
            ip: Some("127.10.0.2".into()),
            host_ip: "127.0.0.1".into(),
            start_time: Timestamp::UNIX_EPOCH,
            init: vec![],
            containers: states
                .iter()
                .map(|s| Container {
                    state: s.clone(),
                    ready: matches!(s, State::Running { .. }),
                    ..Container::new("c", "i")
                })
                .collect(),
            init_done: true,
            sandbox_ready: true,
            restart_policy: policy.into(),
        }
    }

    fn done(code: i32) -> State {
        State::Terminated {
            exit_code: code,
            reason: "x".into(),
            message: "".into(),
            started_at: Timestamp::UNIX_EPOCH,
            finished_at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn phases() {
        let run = State::Running {
            started_at: Timestamp::UNIX_EPOCH,
        };
        assert_eq!(
            phase(&view("Always", &[State::waiting("ContainerCreating", "")])),
            "Pending"
        );
        assert_eq!(
            phase(&view("Always", std::slice::from_ref(&run))),
            "Running"
        );
        assert_eq!(phase(&view("Never", &[done(0)])), "Succeeded");
        assert_eq!(phase(&view("Never", &[done(1)])), "Failed");
        assert_eq!(phase(&view("OnFailure", &[done(1)])), "Running");
        assert_eq!(phase(&view("Never", &[done(0), run])), "Running");
    }

    #[test]
    fn ready_condition_and_scheduler_condition_kept() {
        let mut pod = Pod::default();
        pod.metadata.uid = Some("u".into());
        pod.status = Some(serde_json::from_value(json!({"conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}]})).unwrap());
        let v = view(
            "Always",
            &[State::Running {
                started_at: Timestamp::UNIX_EPOCH,
            }],
        );
        let p = patch(&pod, &v, Timestamp::UNIX_EPOCH);
        let conds = p["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds[0]["type"], "PodScheduled");
        let ready = conds.iter().find(|c| c["type"] == "Ready").unwrap();
        assert_eq!(ready["status"], "True");
        assert_eq!(p["status"]["podIP"], "127.10.0.2");
        assert_eq!(p["status"]["containerStatuses"][0]["ready"], true);
        let mut v = v;
        v.containers[0].ready = false;
        let p = patch(&pod, &v, Timestamp::UNIX_EPOCH);
        let ready = p["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()
            .clone();
        assert_eq!(ready["status"], "False");
    }
}
