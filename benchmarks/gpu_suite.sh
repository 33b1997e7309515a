#!/usr/bin/env bash
# The GPU suite, in one call on a fresh CUDA machine with torch, triton, ninja and pybind11
# and no network: versions, build, CUDA tests, compute-sanitizer, benchmark.
#   bash benchmarks/gpu_suite.sh --out DIR [--quick]
# Writes DIR/suite.log, DIR/tests.xml and the bench's JSON and Markdown; exits non-zero if
# any step failed.
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

# Offline install from the working tree: no build isolation, no dependency resolution.
step build python -m pip install --no-build-isolation --no-deps --no-index -e .
step info python -m rskcnn info

tests=(tests/test_triton.py tests/test_triton_element.py tests/test_dtypes.py tests/test_compile.py tests/test_opcheck.py)
step tests python -m pytest "${tests[@]}" -q -p no:cacheprovider --junitxml="$out/tests.xml" -rs

if command -v compute-sanitizer >/dev/null; then
  step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 python benchmarks/sanitize_smoke.py --backend triton
else
  echo "::: memcheck skipped: compute-sanitizer is not on PATH"
fi

bench=(python -m rskcnn bench --device cuda --channels-last --layers vgg16,vgg16_conv3 --batch 32
       --granularities filter,block,tap,element --block-size 32,32 --out "$out" --no-progress)
if [ "$quick" = 1 ]; then bench+=(--keep-probs 0.5 --min-run-time 0.1); else bench+=(--min-run-time 0.2); fi
step bench-bf16 "${bench[@]}" --dtype bfloat16
step bench-tf32 "${bench[@]}" --dtype float32 --tf32

if [ ${#failed[@]} -gt 0 ]; then echo "::: FAILED: ${failed[*]}"; exit 1; fi
echo "::: all steps passed"
