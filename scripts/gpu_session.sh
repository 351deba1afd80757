#!/usr/bin/env bash
# One short GPU session, prepared in advance: the GPU benchmark record, then as much of the full
# CG-MNIST table as fits, in a part that the next session resumes (scripts/remote_sweep.sh).
#
#   here:  scripts/remote_sweep.sh prepare cgmnist        # data + unfinished checkpoints -> .remote/
#   there: OUT=/out scripts/gpu_session.sh [BENCH_SECONDS] [SWEEP_LIMIT] [JOBS] [STACK] [GRAPH_SECONDS]
#          [PARALLEL_SECONDS]   (defaults 150 6m 8 3 60 90; SWEEP_LIMIT 0: the benchmarks only)
#   here:  scripts/remote_sweep.sh collect FOLDER; cp FOLDER/benchmarks/*.json results/benchmarks/
#
# The benchmark runs alone on the GPU first (8,192-sample epochs, two repeats; it writes its record
# after every case, so a cut-short one keeps what it measured), then the CUDA-graph probe
# (benchmarks/bench_cuda_graph.py: what capturing the step would gain), then 1, 4 and 8 uniform runs
# side by side on the card (benchmarks/bench_parallel.py: what the sweep's --jobs gains), then the sweep shares the GPU
# among JOBS workers, each training STACK seeds of a run together (sweep --stack), stopping at epoch
# ends before SWEEP_LIMIT. 8 x 3 = 24 runs in flight: their checkpoints (about 1.8 MB each) and the
# MNIST files (11 MB) stay under a 64 MB transfer limit for the next part; all 36 would not.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bench_seconds="${1:-150}"
limit="${2:-6m}"
jobs="${3:-8}"
stack="${4:-3}"
graph_seconds="${5:-60}"
parallel_seconds="${6:-90}"
: "${OUT:?set OUT to the folder that comes back}"
[[ -f .remote/commit ]] || { echo "no .remote/: run scripts/remote_sweep.sh prepare cgmnist first" >&2; exit 2; }
python="${PYTHON:-python3}"
device="${DEVICE:-cuda}"  # DEVICE=cpu only to try the script out
mkdir -p "$OUT/benchmarks"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
(
  export PYTHONPATH="$PWD" MMLAB_DATA="$PWD/.remote/data" MMLAB_CHECKPOINTS="$OUT/bench-checkpoints"
  export MMLAB_GIT_COMMIT="$(cat .remote/commit)" MMLAB_GIT_DIRTY="$(cat .remote/dirty)"
  slug="$("$python" -c 'from mmlab.book import device_slug; from mmlab.training import pick_device; print(device_slug(pick_device("'"$device"'")))')"
  timeout --signal=INT "$bench_seconds" "$python" benchmarks/bench_training.py --device "$device" --samples 8192 \
    --repeats 2 --out "$OUT/benchmarks/$slug.json" 2>&1 | tee "$OUT/bench.log" || echo "benchmark stopped at ${bench_seconds} s"
  if [[ "$device" == cuda* ]]; then
    timeout --signal=INT "$graph_seconds" "$python" benchmarks/bench_cuda_graph.py --device "$device" --samples 8192 \
      --repeats 2 --out "$OUT/benchmarks/cuda-graph-$slug.json" 2>&1 | tee "$OUT/graph.log" \
      || echo "CUDA-graph probe stopped or failed (see graph.log)"
  fi
  timeout --signal=INT "$parallel_seconds" "$python" benchmarks/bench_parallel.py --device "$device" --case uniform \
    --jobs 4 8 --repeats 1 --out "$OUT/benchmarks/parallel-$slug.json" 2>&1 | tee "$OUT/parallel.log" \
    || echo "side-by-side benchmark stopped at ${parallel_seconds} s"
)
rm -rf "$OUT/bench-checkpoints"
if [[ "$limit" == 0 ]]; then echo "SWEEP_LIMIT 0: benchmarks only, no sweep part"; exit 0; fi
OUT="$OUT" scripts/remote_sweep.sh run "$limit" --plan --dataset cgmnist --profile full --device "$device" --jobs "$jobs" \
  --stack "$stack"
