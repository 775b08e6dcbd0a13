//! Compiles proto/grpc_predict_v2.proto (the Open Inference Protocol's gRPC service, issue 30)
//! into Rust at build time, with no system `protoc`: protox parses it into descriptors in pure
//! Rust, and tonic-prost-build writes the messages and the server trait from them.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/grpc_predict_v2.proto");
    let descriptors = protox::compile(["proto/grpc_predict_v2.proto"], ["proto"])?;
    // The client too: benches/grpc_rest.rs drives the plane with it (the server never uses it).
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
