//! Generates the message types and the tonic client and server of `signalbox.v1`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        // Ordered maps: status snapshots compare and print the same way every time.
        .btree_map(".")
        .compile_protos(&["proto/signalbox/v1/deploy.proto", "proto/signalbox/v1/artifact.proto", "proto/signalbox/v1/target.proto", "proto/signalbox/v1/release.proto"], &["proto"])?;
    Ok(())
}
