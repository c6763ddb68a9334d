//! Generates the gRPC client and server of the metaserver's one service from a manual
//! description (no .proto and no protoc): messages are the serde types of `rpc`, carried
//! by its JSON codec.

fn main() {
    let call = tonic_build::manual::Method::builder()
        .name("call")
        .route_name("Call")
        .input_type("crate::rpc::Call")
        .output_type("crate::rpc::Reply")
        .codec_path("crate::rpc::JsonCodec")
        .build();
    let service = tonic_build::manual::Service::builder()
        .name("Meta")
        .package("alluxio.meta.v1")
        .method(call)
        .build();
    tonic_build::manual::Builder::new().compile(&[service]);
}
