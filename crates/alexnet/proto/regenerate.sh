#!/usr/bin/env bash
# Regenerates crates/alexnet/src/export/onnx_pb.rs (the ONNX protobuf types the exporter
# encodes with prost) from onnx.proto beside this script. Needs protoc
# (`apt-get install protobuf-compiler`) and crates.io. onnx.proto is ONNX's own file
# (Apache-2.0, copied from the `onnx` Python package, IR version 14); replace it to follow
# a newer ONNX, then run this script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
cat > "$work/Cargo.toml" <<'TOML'
[package]
name = "onnx-proto-gen"
version = "0.0.0"
edition = "2024"
publish = false

[workspace]

[dependencies]
prost-build = "0.14"
TOML
cat > "$work/src/main.rs" <<'RUST'
fn main() {
    let [proto, out] = [1, 2].map(|i| std::env::args().nth(i).expect("usage: onnx-proto-gen PROTO_DIR OUT_DIR"));
    prost_build::Config::new().out_dir(&out).compile_protos(&[format!("{proto}/onnx.proto")], &[proto]).unwrap();
}
RUST
cargo run --quiet --manifest-path "$work/Cargo.toml" -- "$here" "$work"
cp "$work/onnx.rs" "$here/../src/export/onnx_pb.rs"
echo "wrote $here/../src/export/onnx_pb.rs"
