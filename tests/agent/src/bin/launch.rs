//! `devcluster-launch`: the last step before a container's program runs, inside the pod's own mount and
//! UTS namespaces (the agent starts it under `unshare --mount --uts --propagation private`).
//!
//! Usage: `devcluster-launch [--hostname H] [--bind SRC DST]... [--bind-ro SRC DST]... [--workdir DIR]
//! -- PROGRAM ARGS...`. It sets the hostname, bind-mounts each SRC at DST (creating an empty mount point
//! on the node when DST does not exist: NB, these stay behind as empty directories/files), changes to
//! DIR and execs PROGRAM with the environment it was given. Mounts are private to the namespace, so
//! nothing is visible outside the pod and all of it disappears with the pod's last process.
#![forbid(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

struct Plan {
    hostname: Option<String>,
    binds: Vec<(String, String, bool)>,
    workdir: Option<String>,
    argv: Vec<String>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Plan> {
    let mut plan = Plan {
        hostname: None,
        binds: Vec::new(),
        workdir: None,
        argv: Vec::new(),
    };
    let need = |args: &mut dyn Iterator<Item = String>, flag: &str| {
        args.next().with_context(|| format!("{flag} needs a value"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--hostname" => plan.hostname = Some(need(&mut args, "--hostname")?),
            "--workdir" => plan.workdir = Some(need(&mut args, "--workdir")?),
            "--bind" | "--bind-ro" => {
                let src = need(&mut args, &a)?;
                let dst = need(&mut args, &a)?;
                plan.binds.push((src, dst, a == "--bind-ro"));
            }
            "--" => {
                plan.argv = args.collect();
                break;
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    if plan.argv.is_empty() {
        bail!("no program given after --");
    }
    Ok(plan)
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn main() -> Result<()> {
    let plan = parse(std::env::args().skip(1))?;
    if let Some(h) = &plan.hostname {
        std::fs::write("/proc/sys/kernel/hostname", h)
            .context("setting the hostname (UTS namespace?)")?;
    }
    for (src, dst, ro) in &plan.binds {
        let d = Path::new(dst);
        if !d.exists() {
            if Path::new(src).is_dir() {
                std::fs::create_dir_all(d)
                    .with_context(|| format!("creating mount point {dst}"))?;
            } else {
                if let Some(p) = d.parent() {
                    std::fs::create_dir_all(p)
                        .with_context(|| format!("creating {}", p.display()))?;
                }
                std::fs::write(d, b"").with_context(|| format!("creating mount point {dst}"))?;
            }
        }
        run(Command::new("mount").args(["--bind", src, dst]))?;
        if *ro {
            run(Command::new("mount").args(["-o", "remount,bind,ro", dst]))?;
        }
    }
    if let Some(w) = &plan.workdir {
        std::fs::create_dir_all(w).with_context(|| format!("creating workingDir {w}"))?;
        std::env::set_current_dir(w).with_context(|| format!("entering workingDir {w}"))?;
    }
    let err = Command::new(&plan.argv[0]).args(&plan.argv[1..]).exec();
    Err(err).with_context(|| format!("executing {:?}", plan.argv[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> impl Iterator<Item = String> {
        s.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn parses_plan() {
        let p = parse(args(&[
            "--hostname",
            "web-0",
            "--bind",
            "/a",
            "/b",
            "--bind-ro",
            "/c",
            "/d",
            "--",
            "prog",
            "--x",
        ]))
        .unwrap();
        assert_eq!(p.hostname.as_deref(), Some("web-0"));
        assert_eq!(
            p.binds,
            vec![
                ("/a".into(), "/b".into(), false),
                ("/c".into(), "/d".into(), true)
            ]
        );
        assert_eq!(p.argv, ["prog", "--x"]);
        assert!(parse(args(&["--bind", "/a"])).is_err());
        assert!(parse(args(&["--hostname", "h"])).is_err());
    }
}
