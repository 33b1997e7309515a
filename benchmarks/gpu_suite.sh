#!/usr/bin/env bash
# The GPU suite, in one call on a fresh CUDA machine with torch, triton, ninja and pybind11
# and no network: versions, timed build, a parity smoke test, the CUDA tests,
# compute-sanitizer, a kernel profile, benchmarks of dense cuDNN, masked-dense, compact-ideal,
# compact, triton and cuda (bf16 and TF32, channels_last; CUDA-graph kernel time and eager
# wall-clock), and auto's calibration table for the card.
#   bash benchmarks/gpu_suite.sh --out DIR [--quick] [--budget SECONDS] [--only STEP,STEP...] [--dry-run]
# Steps run most-informative first, each under its own time cap and all under --budget
# (default 450 s), so that a slow step costs only what comes after it. Writes 9 files to
# DIR, copied there after every step: suite.log, tests-cuda.xml, tests-triton.xml,
# bench-{graphs,bf16,tf32,element}.json, profile.txt and calibration.json
# (rskcnn.bench.markdown renders a bench JSON as markdown). Exits non-zero if any step
# failed or was not run. --dry-run prints each step that would run, with its cap and
# command, and runs none (no GPU needed: a check of the script and its options).
#
# Step times on an H200 (2026-11-26, 16 host CPUs; results/gpu-h200): machine start ~30 s
# (outside the budget), build 45 s, info 4 s, cpp-errors 14 s, each smoke 6-27 s,
# tests-cuda 82-94 s, memcheck-cuda 8 s, bench-bf16 139 s (min run 0.1 s; over 122 s at
# 0.05 s once), profile 12 s, tests-triton over 105 s (two thirds done); bench-graphs not yet
# run there (estimated 80-140 s, see the step). The whole list does not fit 15 minutes of
# device time, nor the default budget past the first bench: pick with --only, e.g. the steps
# not yet run there.
set -uo pipefail
cd "$(dirname "$0")/.."

out="benchmarks/results/gpu" quick=0 budget=450 only="" dry_run=0
usage="usage: $0 --out DIR [--quick] [--budget SECONDS] [--only STEP,STEP...] [--dry-run]"
while [ $# -gt 0 ]; do
  case "$1" in
    --out|--budget|--only) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; } ;;&
    --out) out="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --budget) budget="$2"; shift 2 ;;
    --only) only=",$2,"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
[[ "$budget" =~ ^[0-9]+$ ]] || { echo "--budget: expected whole seconds, got '$budget'" >&2; exit 2; }
mkdir -p "$out"
work=$(mktemp -d)
exec > >(tee "$out/suite.log") 2>&1
py=$(command -v python3 || command -v python)
export py
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the in-place build, for scripts and pytest alike

failed=()
collect() {  # the step's files into DIR, so that they survive a later step's overrun
  for f in bench-graphs.json bench-bf16.json bench-tf32.json bench-element.json calibration.json profile.txt; do
    [ -f "$work/$f" ] && cp "$work/$f" "$out/"
  done
  return 0
}
step() {  # step NAME CAP_SECONDS COMMAND...: run under min(cap, what the budget has left)
  local name="$1" cap="$2"; shift 2
  [ -n "$only" ] && [[ "$only" != *",$name,"* ]] && return 0
  local left=$((budget - SECONDS - 5))
  [ "$cap" -gt "$left" ] && cap=$left
  if [ "$cap" -lt 15 ]; then echo "::: $name NOT RUN: the budget of $budget s is spent"; failed+=("$name"); return; fi
  echo "::: $name (cap $cap s): $*"
  [ "$dry_run" = 1 ] && return 0
  local start=$SECONDS
  timeout -k 10 "$cap" bash -c '"$@"' _ "$@"  # bash -c: a step may be one of the functions here
  local rc=$?
  if [ "$rc" = 0 ]; then echo "::: $name ok ($((SECONDS - start)) s)"
  else echo "::: $name FAILED rc=$rc ($((SECONDS - start)) s)"; failed+=("$name"); fi
  collect
}

versions() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || return 1
  "$py" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'triton', triton.__version__, 'device', torch.cuda.get_device_name(), 'sms', \
torch.cuda.get_device_properties(0).multi_processor_count)" || return 1
  nvcc --version | tail -2 || true
  echo "nproc $(nproc); CC=${CC:-} CXX=${CXX:-}; c++: $(command -v c++) $(c++ --version | head -1)"
}
export -f versions
step versions 30 versions

# Offline in-place build for this card's architecture only; a CPU-only rebuild if the CUDA
# one fails, so that the triton steps still run.
arch=""
[ "$dry_run" = 1 ] || arch=$("$py" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
# The system GCC where there is one: the lent machines' image sets CC/CXX to a GCC whose
# extension links no libstdc++.so, and every C++ error then crashes Python (results/gpu-h200).
compilers=""  # words for env, so it can be exported to the step's shell
[ -x /usr/bin/gcc ] && [ -x /usr/bin/g++ ] && compilers="CC=/usr/bin/gcc CXX=/usr/bin/g++"
build() { env TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$arch}" MAX_JOBS="$(nproc)" $compilers "$@" \
  "$py" setup.py -q build_ext --inplace; }
export -f build; export py arch compilers
step build 300 build
if [[ " ${failed[*]} " == *" build "* ]]; then step build-cpu-only 200 build env FORCE_CUDA=0; fi
step info 30 "$py" -m rskcnn info
step cpp-errors 60 "$py" benchmarks/check_cpp_errors.py

# Parity of every granularity, forward and both gradients, against the reference: the
# first thing to read if a kernel is wrong. Launches are synchronous so an error names its op.
for backend in cuda triton; do
  for dtype in float32 bfloat16; do
    step "smoke-$backend-$dtype" 90 env CUDA_LAUNCH_BLOCKING=1 "$py" benchmarks/sanitize_smoke.py \
      --backend "$backend" --dtype "$dtype"
  done
done

# -v: with workers, each result is printed as it comes, so a step cut short still names its failures
pytest=("$py" -m pytest -v -p no:cacheprovider -rfEs --tb=short)  # plus workers and a per-test cap where installed
"$py" -c "import xdist" 2>/dev/null && pytest+=(-n 12)
"$py" -c "import pytest_timeout" 2>/dev/null && pytest+=(--timeout 120)
step tests-cuda 200 "${pytest[@]}" --junitxml="$out/tests-cuda.xml" tests/test_cuda.py \
  tests/test_tile_plans.py tests/test_dtypes.py tests/test_opcheck.py

sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
memcheck() {  # memcheck BACKEND: a sandbox (gVisor) may refuse the device; that is no failure of ours
  local log; log=$(mktemp)
  "$sanitizer" --tool memcheck --error-exitcode 1 "$py" benchmarks/sanitize_smoke.py --backend "$1" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" != 0 ] && grep -q "Device not supported" "$log"; then
    echo "::: memcheck-$1 skipped: compute-sanitizer does not support this device (sandboxed GPU)"; rc=0
  fi
  rm -f "$log"; return "$rc"
}
export -f memcheck; export sanitizer
[ -n "$sanitizer" ] && step memcheck-cuda 120 memcheck cuda

# Issue 15: kernel time (CUDA-graph replays, interleaved with dense; eager wall-clock beside
# it) of filter masks drawn with the exact law, against the ideal of the compaction path
# (compact-ideal: dense cuDNN on the kept filters alone) and the compact backend (skipped,
# with the reason, in a build that lacks it). First of the benches: the most informative.
# Size, from run 3's bench-bf16 on the H200 (results/gpu-h200/run3-suite.log and its JSON):
# 384 eager timings at min run 0.05 s took 168 s, about 0.42 s each all told (52 s of it
# inside the timed blocks, the rest calibration, warm-up, autotuning and start-up). This
# step has 3 layers x 3 keeps x 4 backends x 4 passes = 144 eager timings, about 60 s. The
# graph timing adds per configuration 16 captures (3 warm-up calls each, about 0.1-0.2 s
# apiece with the synchronization and cache flush torch.cuda.graph does) and 11 rounds x 21
# replays of its 16 passes: with dense's four passes at about 0.33 ms of kernels on conv5_3
# (profile) and assuming compact's at most 10x that, about 1-2 s of replays. Under 8 s per
# configuration, under 70 s for all 9. So about 80-140 s with start-up, under a cap of
# 170 s; --retries 0 keeps a busy host from timing configurations again.
step bench-graphs 170 "$py" -m rskcnn bench --device cuda --timing graph --dtype bfloat16 --channels-last \
  --layers vgg16,vgg16_conv3,resnet18 --batch 32 --granularities filter \
  --keep-probs "$([ "$quick" = 1 ] && echo 0.5 || echo 0.25,0.5,0.75)" --law exact \
  --backends dense,masked-dense,compact-ideal,compact --skip-unavailable --min-run-time 0.05 --retries 0 \
  --out "$work" --no-progress --tag bench-graphs

bench=("$py" -m rskcnn bench --device cuda --channels-last --layers vgg16,vgg16_conv3 --batch 32
       --granularities filter,block,tap,element --block-size 32,32 --out "$work" --no-progress)
bench+=(--min-run-time 0.05); [ "$quick" = 1 ] && bench+=(--keep-probs 0.5)
step bench-bf16 180 "${bench[@]}" --dtype bfloat16 --tag bench-bf16
step profile 60 bash -c "'$py' benchmarks/profile_gpu.py | tee '$work/profile.txt'"
step tests-triton 150 "${pytest[@]}" --junitxml="$out/tests-triton.xml" tests/test_triton.py \
  tests/test_triton_element.py tests/test_compile.py
step bench-tf32 120 "${bench[@]}" --dtype float32 --tf32 --tag bench-tf32
# The element target: the sparse kernels against cuDNN at very low keep.
step bench-element 60 "$py" -m rskcnn bench --device cuda --channels-last --layers vgg16,vgg16_conv3 \
  --batch 32 --granularities element --keep-probs 0.05,0.1,0.25 --dtype bfloat16 --min-run-time 0.05 \
  --out "$work" --no-progress --tag bench-element
[ -n "$sanitizer" ] && step memcheck-triton 90 memcheck triton
step calibrate 30 "$py" -m rskcnn calibrate "$work/bench-bf16.json" "$work/bench-tf32.json" \
  --out "$work/calibration.json"

if [ "$dry_run" = 1 ]; then echo "::: dry run: no step was run"; exit 0; fi
if [ ${#failed[@]} -gt 0 ]; then echo "::: FAILED or NOT RUN: ${failed[*]} (after $SECONDS s)"; exit 1; fi
echo "::: all steps passed ($SECONDS s)"
