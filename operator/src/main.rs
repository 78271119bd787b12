//! `proglog-operator`: runs the ProgLog controller.

fn main() {
    eprintln!("proglog-operator: being written");
    std::process::exit(1);
}
