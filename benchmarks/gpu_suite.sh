#!/usr/bin/env bash
# The GPU suite, in one call on a fresh CUDA machine with torch, triton, ninja and pybind11
# and no network: versions, timed build, CUDA tests, compute-sanitizer, benchmark of dense
# cuDNN, masked-dense, triton and cuda (bf16 and TF32, channels_last), and auto's
# calibration table for the card.
#   bash benchmarks/gpu_suite.sh --out DIR [--quick]
# Writes DIR/suite.log, DIR/tests.xml, DIR/bench-{bf16,tf32,element}.{json,md} and
# DIR/calibration.json (8 files); exits non-zero if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."

out="benchmarks/results/gpu" quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    *) echo "usage: $0 --out DIR [--quick]" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
exec > >(tee "$out/suite.log") 2>&1

failed=()
step() {  # step NAME COMMAND...: runs and times it, records a failure
  local name="$1"; shift
  echo "::: $name: $*"
  local start=$SECONDS
  if "$@"; then echo "::: $name ok ($((SECONDS - start)) s)"; else echo "::: $name FAILED ($((SECONDS - start)) s)"; failed+=("$name"); fi
}

versions() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || return 1
  python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'triton', triton.__version__, 'device', torch.cuda.get_device_name())" || return 1
  nvcc --version | tail -2 || true
}
step versions versions

# Offline install from the working tree: no build isolation, no dependency resolution; the
# CUDA kernels for this card's architecture only, which halves the build.
arch=$(python -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
step build env TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$arch}" \
  python -m pip install --no-build-isolation --no-deps --no-index -e .
step info python -m rskcnn info

tests=(tests/test_cuda.py tests/test_tile_plans.py tests/test_triton.py tests/test_triton_element.py
       tests/test_dtypes.py tests/test_compile.py tests/test_opcheck.py)
step tests python -m pytest "${tests[@]}" -q -p no:cacheprovider --junitxml="$out/tests.xml" -rs

sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
memcheck() {  # memcheck BACKEND: a sandbox (gVisor) may refuse the device; that is no failure of ours
  local log; log=$(mktemp)
  "$sanitizer" --tool memcheck --error-exitcode 1 python benchmarks/sanitize_smoke.py --backend "$1" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" != 0 ] && grep -q "Device not supported" "$log"; then
    echo "::: memcheck-$1 skipped: compute-sanitizer does not support this device (sandboxed GPU)"; rc=0
  fi
  rm -f "$log"; return "$rc"
}
if [ -n "$sanitizer" ]; then
  for backend in cuda triton; do step "memcheck-$backend" memcheck "$backend"; done
else
  echo "::: memcheck skipped: compute-sanitizer is not on PATH"
fi

bench=(python -m rskcnn bench --device cuda --channels-last --layers vgg16,vgg16_conv3 --batch 32
       --granularities filter,block,tap,element --block-size 32,32 --out "$out" --no-progress)
if [ "$quick" = 1 ]; then bench+=(--keep-probs 0.5 --min-run-time 0.1); else bench+=(--min-run-time 0.2); fi
step bench-bf16 "${bench[@]}" --dtype bfloat16 --tag bench-bf16
step bench-tf32 "${bench[@]}" --dtype float32 --tf32 --tag bench-tf32
# The element target: the sparse kernels against cuDNN at very low keep.
step bench-element python -m rskcnn bench --device cuda --channels-last --layers vgg16,vgg16_conv3 --batch 32 \
  --granularities element --keep-probs 0.05,0.1,0.25 --dtype bfloat16 --min-run-time 0.1 --out "$out" \
  --no-progress --tag bench-element
step calibrate python -m rskcnn calibrate "$out/bench-bf16.json" "$out/bench-tf32.json" --out "$out/calibration.json"

if [ ${#failed[@]} -gt 0 ]; then echo "::: FAILED: ${failed[*]}"; exit 1; fi
echo "::: all steps passed"
