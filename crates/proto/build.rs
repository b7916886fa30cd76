//! Compiles `proto/` with protox (pure Rust) so no system `protoc` is needed.

use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "gomark/common/v1/common.proto",
    "gomark/config/v1/config.proto",
    "gomark/events/v1/envelope.proto",
    "gomark/orchestrator/v1/orchestrator.proto",
    "gomark/hubspot_sync/v1/hubspot_sync.proto",
    "gomark/upso_cadence/v1/upso_cadence.proto",
    "gomark/pipeline_tracker/v1/pipeline_tracker.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());

    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    let fds = protox::compile(&files, [&root])?;

    // Reflection serves this set, so grpcurl works without local .proto files. Without the
    // source info (the comments and spans of every element, two thirds of its 133 KB): each
    // reflection service (v1 and v1alpha, on every gRPC port) decodes the set into many small
    // allocations, and the embedded process, with five ports, held 8.6 MiB more at rest
    // (45.8 against 37.2 MiB, BENCHMARKS.md). The comments stay in proto/ and the Rust code.
    let mut served = fds.clone();
    for file in &mut served.file {
        file.source_code_info = None;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("gomark_descriptor.bin"), served.encode_to_vec())?;

    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}
