//! The images the e2e tests run: the logserver's and the operator's.
//!
//! On the devcluster they come from `scripts/images.sh` (`make images`): built from this checkout's
//! binaries, tagged by content hash and imported into the node, once per test process. On another
//! cluster (kind), `LOGSERVER_IMAGE` and `OPERATOR_IMAGE` name images already loaded there.

use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

use crate::operator::workspace_root;

/// Image references, as pods name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// The member image (logserver + the `proglog` CLI).
    pub logserver: String,
    /// The operator image.
    pub operator: String,
}

/// The images to run, built and loaded on first use (blocking: call it from `spawn_blocking` in
/// async code, or after a first call there).
pub fn images() -> Result<Images> {
    static IMAGES: OnceLock<Result<Images, String>> = OnceLock::new();
    IMAGES
        .get_or_init(|| load().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn load() -> Result<Images> {
    if let (Ok(logserver), Ok(operator)) = (
        std::env::var("LOGSERVER_IMAGE"),
        std::env::var("OPERATOR_IMAGE"),
    ) {
        return Ok(Images {
            logserver,
            operator,
        });
    }
    // The devcluster's node must run before images.sh can import into it.
    if std::env::var_os("KUBECONFIG").is_none_or(|k| k.is_empty()) {
        crate::devcluster::ensure()?;
    }
    let script = workspace_root().join("scripts").join("images.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script).current_dir(workspace_root());
    // The binaries go to the target dir this test was built in.
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        if let Some(target) = std::env::current_exe()?.ancestors().nth(3) {
            cmd.env("CARGO_TARGET_DIR", target);
        }
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    if !out.status.success() {
        bail!("{} failed ({}):\n{stderr}", script.display(), out.status);
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// Reads `LOGSERVER_IMAGE=...` and `OPERATOR_IMAGE=...` lines (what `images.sh` prints).
fn parse(text: &str) -> Result<Images> {
    let get = |key: &str| {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .next_back()
            .map(str::to_string)
            .with_context(|| format!("images.sh printed no {key}= line:\n{text}"))
    };
    Ok(Images {
        logserver: get("LOGSERVER_IMAGE")?,
        operator: get("OPERATOR_IMAGE")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_last_assignment_of_each() {
        let text =
            "noise\nLOGSERVER_IMAGE=proglog/logserver:1\nOPERATOR_IMAGE=proglog/operator:2\n\
                    LOGSERVER_IMAGE=proglog/logserver:3\n";
        assert_eq!(
            parse(text).unwrap(),
            Images {
                logserver: "proglog/logserver:3".into(),
                operator: "proglog/operator:2".into()
            }
        );
        let err = parse("LOGSERVER_IMAGE=x\n").unwrap_err().to_string();
        assert!(err.contains("OPERATOR_IMAGE"), "{err}");
    }
}
