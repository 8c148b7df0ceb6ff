//! Compiles `hopper.proto` with protox (a protobuf compiler in Rust), so no
//! system `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=hopper.proto");
    let fds = protox::compile(["hopper.proto"], ["."])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
