//! Compiles `hopper.proto` with protox (a protobuf compiler in Rust), so no
//! system `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=hopper.proto");
    let fds = protox::compile(["hopper.proto"], ["."])?;
    // Model states (94 MB for confA) as `Bytes`: decoded without a copy out
    // of the receive buffer, and sent from a buffer the sender shares.
    tonic_prost_build::configure()
        .bytes(".hopper.v1.TrainUnitRequest.state")
        .bytes(".hopper.v1.UnitResult.state")
        .bytes(".hopper.v1.EvaluateRequest.state")
        .bytes(".hopper.v1.StateChunk.data")
        // A TorchScript module, shared by every unit of its models.
        .bytes(".hopper.v1.Arch.TorchScript.module")
        // An endpoint carries a Bearer token, a state source a proof: their
        // Debug (lib.rs, hop.rs) hides them.
        .skip_debug([".hopper.v1.FlightEndpoint", ".hopper.v1.StateSource"])
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
