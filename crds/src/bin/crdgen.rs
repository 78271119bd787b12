//! Writes the ProgLog CRD YAML generated from the Rust types.
//!
//! `crdgen` writes `crds/proglog.dev_proglogs.yaml` (the committed copy a test compares with the
//! types); `crdgen -` prints it to standard output instead, e.g. `crdgen - | kubectl apply -f -`.

use std::path::PathBuf;
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
                "usage: crdgen [-]\n  writes crds/proglog.dev_proglogs.yaml, or prints it with -"
            );
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("crdgen: unexpected argument {other:?} (usage: crdgen [-])");
            ExitCode::FAILURE
        }
        None => {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proglog.dev_proglogs.yaml");
            match std::fs::write(&path, yaml) {
                Ok(()) => {
                    eprintln!("crdgen: wrote {}", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("crdgen: cannot write {}: {e}", path.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}
