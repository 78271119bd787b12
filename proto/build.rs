//! Generates the tonic/prost code from `proto/` with protox, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/proglog/v1/log.proto",
        "proto/proglog/v1/cluster.proto",
        "proto/proglog/v1/acl.proto",
        "proto/proglog/raft/v1/raft.proto",
        "proto/log/v1/log.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("proglog_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .bytes(".proglog.v1.Record.value")
        .bytes(".log.v1.Record.value")
        .bytes(".proglog.raft.v1")
        .compile_fds(fds)?;
    Ok(())
}
