#!/usr/bin/env bash
# The OpenCL backend on a GPU in one command, on a Linux machine with an NVIDIA GPU and driver
# but no Rust and no network. Runs from a bundle made by scripts/gpu-bundle.sh (bin/: release
# binaries; lib/: the OpenCL ICD loader and CLBlast from their Debian packages):
#
#   ./gpu-check.sh [BUNDLE]            (default: the folder this script is in)
#
# 1. prints the OpenCL devices; 2. runs the OpenCL conformance tests (our GEMM and CLBlast);
# 3. benchmarks the paper net (training batch 128, inference batch 32) with our GEMM and with
# CLBlast, printing launches and transfers per step; 4. where PyTorch with CUDA is installed,
# runs the same net in PyTorch in float32 with TF32 off and with PyTorch's defaults. Budget: 10
# minutes; each stage has its own time limit and a failed stage does not stop the others.
#
# The ICD loader finds the driver through a vendor file naming libnvidia-opencl.so.1, written to
# BUNDLE/icd/ (OCL_ICD_VENDORS). To use another driver, set OCL_ICD_VENDORS yourself (a folder
# of .icd files, or one .icd file). Smaller runs (for a CPU driver): ALEX_CHECK_BATCH,
# ALEX_CHECK_INFER_BATCH, ALEX_CHECK_STEPS, ALEX_CHECK_INFER_STEPS.
set -uo pipefail
BUNDLE="$(cd "${1:-$(dirname "$0")}" && pwd)"
BATCH="${ALEX_CHECK_BATCH:-128}"
INFER_BATCH="${ALEX_CHECK_INFER_BATCH:-32}"
STEPS="${ALEX_CHECK_STEPS:-5}"
INFER_STEPS="${ALEX_CHECK_INFER_STEPS:-10}"
started=$SECONDS
failed=()

export LD_LIBRARY_PATH="$BUNDLE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ALEX_REQUIRE_OPENCL=1
export POCL_CACHE_DIR="${POCL_CACHE_DIR:-$BUNDLE/pocl-cache}"

if [ -z "${OCL_ICD_VENDORS:-}" ]; then
  driver=""
  for candidate in $(ldconfig -p 2>/dev/null | awk '/libnvidia-opencl\.so\.1/ {print $NF}') \
    /usr/lib/x86_64-linux-gnu/libnvidia-opencl.so.1 /usr/lib64/libnvidia-opencl.so.1 /usr/lib/libnvidia-opencl.so.1; do
    if [ -e "$candidate" ]; then driver="$candidate"; break; fi
  done
  if [ -z "$driver" ]; then
    echo "no libnvidia-opencl.so.1 found (is the NVIDIA driver installed?); set OCL_ICD_VENDORS to another driver's .icd" >&2
    exit 1
  fi
  mkdir -p "$BUNDLE/icd"
  echo "$driver" > "$BUNDLE/icd/nvidia.icd"
  export OCL_ICD_VENDORS="$BUNDLE/icd"
fi

# stage NAME SECONDS COMMAND...: runs one stage under a time limit and records a failure.
stage() {
  local name="$1" limit="$2"
  shift 2
  echo
  echo "== $name (limit ${limit}s; $((SECONDS - started))s elapsed)"
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  if [ $rc -ne 0 ]; then
    echo "!! $name failed (exit $rc$([ $rc -eq 124 ] && echo ', time limit'))"
    failed+=("$name")
  fi
}

echo "== bundle $BUNDLE; OCL_ICD_VENDORS=$OCL_ICD_VENDORS"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
stage "OpenCL devices" 60 "$BUNDLE/bin/xtask" devices
stage "conformance tests (own GEMM and CLBlast)" 150 "$BUNDLE/bin/opencl-conformance" --test-threads=2
for gemm in own clblast; do
  stage "paper net, $gemm GEMM" 110 env ALEX_OPENCL_GEMM=$gemm "$BUNDLE/bin/xtask" bench train --backend opencl \
    --preset paper --batch "$BATCH" --infer-batch "$INFER_BATCH" --steps "$STEPS" --infer-steps "$INFER_STEPS"
done
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  for tf32 in off default; do
    stage "PyTorch paper net, TF32 $tf32" 60 python3 "$BUNDLE/torch_alexnet.py" --tf32 "$tf32" \
      --batch "$BATCH" --infer-batch "$INFER_BATCH" --steps 20 --infer-steps 50
  done
else
  echo
  echo "== PyTorch with CUDA is not installed here: no PyTorch comparison"
fi

echo
echo "== done in $((SECONDS - started))s"
if [ ${#failed[@]} -gt 0 ]; then
  printf '!! failed: %s\n' "${failed[@]}"
  exit 1
fi
