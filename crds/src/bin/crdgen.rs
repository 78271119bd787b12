//! Writes the ProgLog CRD YAML generated from the Rust types.
//!
//! `crdgen` writes `crds/proglog.dev_proglogs.yaml` and its copy under `manifests/crd/` (the
//! committed files a test compares with the types); `crdgen -` prints it to standard output
//! instead, e.g. `crdgen - | kubectl apply --server-side -f -`.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = proglog_crds::crd_yaml();
    match std::env::args().nth(1).as_deref() {
        Some("-") => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Some("-h" | "--help") => {
            println!(
                "usage: crdgen [-]\n  writes {}, or prints the CRD with -",
                proglog_crds::CRD_PATHS.join(" and ")
            );
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("crdgen: unexpected argument {other:?} (usage: crdgen [-])");
            ExitCode::FAILURE
        }
        None => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            for rel in proglog_crds::CRD_PATHS {
                let path = root.join(rel);
                let written = path
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::write(&path, &yaml));
                if let Err(e) = written {
                    eprintln!("crdgen: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
                eprintln!("crdgen: wrote {rel}");
            }
            ExitCode::SUCCESS
        }
    }
}
