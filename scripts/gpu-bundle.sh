#!/usr/bin/env bash
# Prepares the folder that scripts/gpu-check.sh runs from on a GPU machine without Rust or
# network: release binaries built here, the OpenCL ICD loader and CLBlast unpacked from their
# Debian packages, and the check scripts.
#
#   scripts/gpu-bundle.sh [OUT]        (default: target/gpu-bundle)
#
# Then copy OUT to the GPU machine and run `OUT/gpu-check.sh` there. The binaries need a glibc
# at least as new as this machine's (Debian 12 here: glibc 2.36) and an NVIDIA driver with
# OpenCL (libnvidia-opencl.so.1); nothing else is installed there.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="$(mkdir -p "${1:-target/gpu-bundle}" && cd "${1:-target/gpu-bundle}" && pwd)"

echo "== building release binaries (xtask, the OpenCL conformance tests)"
cargo build --release -p xtask
# The test binary's path comes from cargo's JSON messages (its name carries a hash).
conformance=$(cargo test --release -p alexnet-opencl --test conformance --no-run --message-format=json |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "conformance" and m.get("executable"):
        print(m["executable"])')
[ -x "$conformance" ] || { echo "no conformance test binary found" >&2; exit 1; }

echo "== downloading and unpacking the OpenCL ICD loader and CLBlast"
rm -rf "$OUT/bin" "$OUT/lib" "$OUT/debs"
mkdir -p "$OUT/bin" "$OUT/lib" "$OUT/debs/root"
(cd "$OUT/debs" && apt-get download ocl-icd-libopencl1 libclblast1)
for deb in "$OUT"/debs/*.deb; do dpkg-deb -x "$deb" "$OUT/debs/root"; done
cp -a "$OUT"/debs/root/usr/lib/*/libOpenCL.so.1* "$OUT"/debs/root/usr/lib/*/libclblast.so.1* "$OUT/lib/"

cp target/release/xtask "$OUT/bin/xtask"
cp "$conformance" "$OUT/bin/opencl-conformance"
cp scripts/gpu-check.sh scripts/torch_alexnet.py "$OUT/"
ls -l "$OUT" "$OUT/bin" "$OUT/lib"
echo "== bundle ready: copy $OUT to the GPU machine and run its gpu-check.sh"
