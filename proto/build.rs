//! Compiles the protobuf schemas and records file descriptor sets for gRPC reflection: one of
//! every schema, and one of the client API alone (what reflection serves to the world).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let api = "proto/meridian/v1/api.proto";
    let protos = [
        api,
        "proto/meridian/durable/v1/durable.proto",
        "proto/meridian/peer/v1/peer.proto",
        "proto/meridian/link/v1/link.proto",
    ];
    tonic_prost_build::configure()
        // Ordered maps: durable records must encode to the same bytes on every replica
        // (state hashes and snapshots compare them), and a HashMap's order is random.
        .btree_map(".")
        // A request that does not decode is INVALID_ARGUMENT with a reason, not INTERNAL.
        .codec_path("crate::codec::MeridianCodec")
        .file_descriptor_set_path(out.join("meridian_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    // The client API's descriptor alone (it imports nothing), for server reflection. The
    // generated code of this second run is identical to the first's and simply rewritten.
    tonic_prost_build::configure()
        .btree_map(".")
        .codec_path("crate::codec::MeridianCodec")
        .file_descriptor_set_path(out.join("meridian_api_descriptor.bin"))
        .compile_protos(&[api], &["proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
