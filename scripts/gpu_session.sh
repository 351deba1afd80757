#!/usr/bin/env bash
# One short GPU session, prepared in advance: check the captured training step on this GPU, measure
# it, then train as much of the full CG-MNIST table as fits, in a part that the next session resumes
# (scripts/remote_sweep.sh).
#
#   here:  scripts/remote_sweep.sh prepare cgmnist        # data + unfinished checkpoints -> .remote/
#   there: OUT=/out scripts/gpu_session.sh [BENCH_SECONDS] [SWEEP_LIMIT] [JOBS] [STACK] [GRAPH_SECONDS]
#          [PARALLEL_SECONDS]   (defaults 90 5m 8 3 0 0; SWEEP_LIMIT 0: no sweep part; with CHECK_SECONDS
#          120 the whole fits one 10-minute device call)
#   here:  scripts/remote_sweep.sh collect FOLDER; cp FOLDER/benchmarks/*.json results/benchmarks/
#
# 1. scripts/check_cuda_graph.py (CHECK_SECONDS, default 120): a few small runs trained eagerly and
#    with the loop's step replayed from a CUDA graph (mmlab.training.graph), compared; the comparison
#    goes to $OUT/benchmarks/check-cuda-graph-<device>.json. If it fails, everything after trains eagerly.
# 2. benchmarks/bench_training.py, the cases in BENCH_CASES (default: the "..., CUDA graph" cases, each
#    beside its eager method; "all" for every case), to $OUT/benchmarks/<device>-graph-loop.json (or
#    <device>.json for "all"); it writes after every case, so a cut-short one keeps what it measured.
# 3. Where GRAPH_SECONDS / PARALLEL_SECONDS > 0 (both recorded on an H200 already): the bare
#    CUDA-graph probe (bench_cuda_graph.py) and 4 and 8 uniform runs side by side (bench_parallel.py).
# 4. The sweep shares the GPU among JOBS workers, each training STACK seeds of a run together (sweep
#    --stack), with --cuda-graph if the check passed, stopping at epoch ends before SWEEP_LIMIT.
#    8 x 3 = 24 runs in flight: their checkpoints (about 1.8 MB each) and the MNIST files (11 MB)
#    stay under a 64 MB transfer limit for the next part.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bench_seconds="${1:-90}"
limit="${2:-5m}"
jobs="${3:-8}"
stack="${4:-3}"
graph_seconds="${5:-0}"
parallel_seconds="${6:-0}"
check_seconds="${CHECK_SECONDS:-120}"
: "${OUT:?set OUT to the folder that comes back}"
[[ -f .remote/commit ]] || { echo "no .remote/: run scripts/remote_sweep.sh prepare cgmnist first" >&2; exit 2; }
python="${PYTHON:-python3}"
device="${DEVICE:-cuda}"  # DEVICE=cpu only to try the script out (the check is then emulated)
mkdir -p "$OUT/benchmarks"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
graph_flag=()
export PYTHONPATH="$PWD" MMLAB_DATA="$PWD/.remote/data"
export MMLAB_GIT_COMMIT="$(cat .remote/commit)" MMLAB_GIT_DIRTY="$(cat .remote/dirty)"
slug="$("$python" -c 'from mmlab.book import device_slug; from mmlab.training import pick_device; print(device_slug(pick_device("'"$device"'")))')"
emulate=()
[[ "$device" == cuda* ]] || emulate=(--emulate --train-size 1024 --epochs 1)
read -r -a check_options <<< "${CHECK_OPTIONS:-}"  # e.g. "--methods uniform --stack 1"
if timeout --signal=INT "$check_seconds" "$python" scripts/check_cuda_graph.py --device "$device" "${emulate[@]}" \
     "${check_options[@]}" \
     --out "$OUT/benchmarks/check-cuda-graph-$slug.json" 2>&1 | tee "$OUT/graph-check.log" \
   && grep -q "CUDA-graph check passed" "$OUT/graph-check.log"; then
  if [[ "$device" == cuda* ]]; then
    graph_flag=(--cuda-graph); echo "CUDA-graph check passed: the sweep replays captured steps"
  else
    echo "emulated check passed (no GPU: the sweep trains eagerly)"
  fi
else
  echo "CUDA-graph check failed or stopped (see graph-check.log): everything below trains eagerly"
fi
(
  export MMLAB_CHECKPOINTS="$OUT/bench-checkpoints"
  cases_default=("uniform, CUDA graph" "mmpareto, CUDA graph" "ogm_ge, CUDA graph")
  if [[ "${BENCH_CASES:-}" == all ]]; then
    case_args=(); name="$slug"
  elif [[ -n "${BENCH_CASES:-}" ]]; then
    IFS=';' read -r -a chosen <<< "$BENCH_CASES"; case_args=(--cases "${chosen[@]}"); name="$slug-bench"
  elif [[ ${#graph_flag[@]} -gt 0 ]]; then
    case_args=(--cases "${cases_default[@]}"); name="$slug-graph-loop"
  else
    case_args=(); name=""
  fi
  if [[ -n "$name" && "$bench_seconds" != 0 ]]; then
    timeout --signal=INT "$bench_seconds" "$python" benchmarks/bench_training.py --device "$device" --samples 8192 \
      --repeats 2 "${case_args[@]}" --out "$OUT/benchmarks/$name.json" 2>&1 | tee "$OUT/bench.log" \
      || echo "benchmark stopped at ${bench_seconds} s"
  fi
  if [[ "$device" == cuda* && "$graph_seconds" != 0 ]]; then
    timeout --signal=INT "$graph_seconds" "$python" benchmarks/bench_cuda_graph.py --device "$device" --samples 8192 \
      --repeats 2 --out "$OUT/benchmarks/cuda-graph-$slug.json" 2>&1 | tee "$OUT/graph.log" \
      || echo "CUDA-graph probe stopped or failed (see graph.log)"
  fi
  if [[ "$parallel_seconds" != 0 ]]; then
    timeout --signal=INT "$parallel_seconds" "$python" benchmarks/bench_parallel.py --device "$device" --case uniform \
      --jobs 4 8 --repeats 1 --out "$OUT/benchmarks/parallel-$slug-uniform.json" 2>&1 | tee "$OUT/parallel.log" \
      || echo "side-by-side benchmark stopped at ${parallel_seconds} s"
  fi
)
rm -rf "$OUT/bench-checkpoints"
if [[ "$limit" == 0 ]]; then echo "SWEEP_LIMIT 0: no sweep part"; exit 0; fi
OUT="$OUT" scripts/remote_sweep.sh run "$limit" --plan --dataset cgmnist --profile full --device "$device" --jobs "$jobs" \
  --stack "$stack" "${graph_flag[@]}"
