//! Writes the CRD YAML generated from the Rust types: the ProgLog and the ProgLogUser.
//!
//! `crdgen` writes `crds/proglog.dev_proglogs.yaml`, `crds/proglog.dev_proglogusers.yaml` and
//! their copies under `manifests/crd/` (the committed files a test compares with the types);
//! `crdgen -` prints both to standard output instead, e.g.
//! `crdgen - | kubectl apply --server-side -f -`.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let crds = proglog_crds::all_crds();
    match std::env::args().nth(1).as_deref() {
        Some("-") => {
            for (yaml, _) in &crds {
                print!("{yaml}");
            }
            ExitCode::SUCCESS
        }
        Some("-h" | "--help") => {
            let paths: Vec<&str> = crds.iter().flat_map(|(_, p)| *p).collect();
            println!(
                "usage: crdgen [-]\n  writes {}, or prints the CRDs with -",
                paths.join(", ")
            );
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("crdgen: unexpected argument {other:?} (usage: crdgen [-])");
            ExitCode::FAILURE
        }
        None => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            for (yaml, paths) in &crds {
                for rel in paths {
                    let path = root.join(rel);
                    let written = path
                        .parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|()| std::fs::write(&path, yaml));
                    if let Err(e) = written {
                        eprintln!("crdgen: cannot write {}: {e}", path.display());
                        return ExitCode::FAILURE;
                    }
                    eprintln!("crdgen: wrote {rel}");
                }
            }
            ExitCode::SUCCESS
        }
    }
}
