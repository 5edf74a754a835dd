//! Compiles the protobuf schemas and records a file descriptor set for gRPC reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let protos =
        ["proto/meridian/v1/api.proto", "proto/meridian/durable/v1/durable.proto", "proto/meridian/peer/v1/peer.proto"];
    tonic_prost_build::configure()
        // Ordered maps: durable records must encode to the same bytes on every replica
        // (state hashes and snapshots compare them), and a HashMap's order is random.
        .btree_map(".")
        .file_descriptor_set_path(out.join("meridian_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
