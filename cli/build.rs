//! Generates the gRPC service `alluxio peer-bench` measures the peer protocol against
//! (tonic streaming 1 MiB messages), from a manual description: no .proto, no protoc.

fn main() {
    let pages = tonic_build::manual::Method::builder()
        .name("pages")
        .route_name("Pages")
        .input_type("bytes::Bytes")
        .output_type("bytes::Bytes")
        .codec_path("crate::grpc_bench::RawCodec")
        .server_streaming()
        .build();
    let service = tonic_build::manual::Service::builder()
        .name("PageStream")
        .package("alluxio.bench.v1")
        .method(pages)
        .build();
    tonic_build::manual::Builder::new().compile(&[service]);
}
