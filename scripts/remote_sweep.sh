#!/usr/bin/env bash
# A sweep in time-boxed parts, on a machine that gets a copy of this tree without git and without a
# network (a GPU lent for minutes at a time, say), resumed part after part from the checkpoints
# each part brings back.
#
#   scripts/remote_sweep.sh prepare [DATASET...]   # here: copy the data and the unfinished runs'
#                                                  # checkpoints into .remote/ (ignored), note the commit
#   (send the tree, .remote/ included, to the machine; there, in the tree's copy:)
#   OUT=/somewhere scripts/remote_sweep.sh run 8m SWEEP-ARGS...
#                                                  # python -m mmlab sweep SWEEP-ARGS --time-limit 8m:
#                                                  # records to $OUT/results, checkpoints to $OUT/checkpoints
#   scripts/remote_sweep.sh collect FOLDER         # here: FOLDER is what came back of $OUT; new records
#                                                  # go to results/, checkpoints to results/.checkpoints/
#
# e.g.  OUT=$OUT scripts/remote_sweep.sh run 8m --plan --dataset cgmnist --profile full --device cuda --jobs 12
#
# The runs stop at an epoch's end before the limit (sweep --time-limit), so what each part trained
# is kept; records are written as each run finishes. Provenance: the records name the commit that
# `prepare` noted (MMLAB_GIT_COMMIT; the copy has no .git) and the remote device. Run `prepare` on a
# clean tree: a dirty one is noted as dirty.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
python="${PYTHON:-python3}"
command="${1:-}"
[[ $# -gt 0 ]] && shift

case "$command" in
prepare)
  data="${MMLAB_DATA:-../shared/data}"
  datasets=("$@")
  [[ ${#datasets[@]} -eq 0 ]] && datasets=(cgmnist)
  folders=(mnist)
  for d in "${datasets[@]}"; do
    case "$d" in
      cgmnist) ;;
      avdigits) folders+=(fsdd) ;;
      *) echo "prepare: no data recipe for dataset '$d' (cgmnist, avdigits)" >&2; exit 2 ;;
    esac
  done
  for f in "${folders[@]}"; do
    [[ -d "$data/$f" ]] || { echo "prepare: $data/$f not found (set MMLAB_DATA)" >&2; exit 2; }
  done
  rm -rf .remote
  mkdir -p .remote/data .remote/checkpoints
  for f in "${folders[@]}"; do
    cp -r "$data/$f" .remote/data/
  done
  if compgen -G "results/.checkpoints/*.pt" > /dev/null; then
    cp results/.checkpoints/*.pt .remote/checkpoints/
  fi
  git rev-parse HEAD > .remote/commit
  if [[ -n "$(git status --porcelain -- mmlab)" ]]; then echo 1 > .remote/dirty; else echo 0 > .remote/dirty; fi
  echo "prepared .remote/: $(du -sh .remote | cut -f1) ($(ls .remote/checkpoints | wc -l) checkpoint(s)), commit $(cut -c1-10 .remote/commit)"
  size_mb=$(du -sm .remote | cut -f1)
  if (( size_mb > ${REMOTE_LIMIT_MB:-60} )); then
    echo "warning: .remote/ is ${size_mb} MB, more than ${REMOTE_LIMIT_MB:-60} MB (REMOTE_LIMIT_MB): a transfer with a" \
         "size limit may refuse it; move some checkpoints out of results/.checkpoints/ and prepare again" >&2
  fi
  echo "send it with the tree (it is git-ignored), then: OUT=... scripts/remote_sweep.sh run 8m SWEEP-ARGS"
  ;;
run)
  limit="${1:?run: give the time limit first, e.g. 8m}"
  shift
  : "${OUT:?run: set OUT to the folder that comes back}"
  [[ -f .remote/commit ]] || { echo "run: no .remote/ here; run 'scripts/remote_sweep.sh prepare' first" >&2; exit 2; }
  mkdir -p "$OUT/results" "$OUT/checkpoints"
  cp .remote/checkpoints/*.pt "$OUT/checkpoints/" 2>/dev/null || true
  # the records made so far (committed), so that the sweep skips them; `collect` leaves them alone
  for folder in results/*/; do
    [[ -d "$folder" && "$(basename "$folder")" != benchmarks ]] && cp -r "${folder%/}" "$OUT/results/"
  done
  export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" MMLAB_DATA="$here/.remote/data"
  export MMLAB_CHECKPOINTS="$OUT/checkpoints" MMLAB_GIT_COMMIT="$(cat .remote/commit)"
  export MMLAB_GIT_DIRTY="$(cat .remote/dirty)"
  set +e
  "$python" -m mmlab sweep "$@" --time-limit "$limit" --results "$OUT/results" --no-progress \
    2>&1 | tee "$OUT/sweep.log"
  status=${PIPESTATUS[0]}
  set -e
  echo "sweep exit status $status (0 all recorded, 3 paused by the time limit: run again to go on)"
  exit "$status"
  ;;
collect)
  folder="${1:?collect: give the folder that came back}"
  [[ -d "$folder/results" ]] || { echo "collect: $folder/results not found" >&2; exit 2; }
  new=0 same=0 differ=0
  while IFS= read -r -d '' record; do
    relative="${record#"$folder/results/"}"
    target="results/$relative"
    if [[ -e "$target" ]]; then
      if cmp -s "$record" "$target"; then same=$((same + 1)); else
        echo "collect: $target exists and differs; kept as it is" >&2; differ=$((differ + 1)); fi
    else
      mkdir -p "$(dirname "$target")"
      cp "$record" "$target"
      new=$((new + 1))
    fi
  done < <(find "$folder/results" -name '*.json' -not -path '*/.*' -print0)
  mkdir -p results/.checkpoints
  # checkpoints: one that came back replaces a local one only if it is further along (never a later one by an
  # earlier one), unreadable ones are reported and left where they are, each is written atomically; then a run
  # recorded now needs its checkpoint no more
  moved=$(COLLECT_FROM="$folder" PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$python" - <<'PY'
import os
import sys
from pathlib import Path

from mmlab.io import atomic_write_bytes
from mmlab.results import read_record
from mmlab.training.checkpoint import load_checkpoint

moved = 0
for remote in sorted(Path(os.environ["COLLECT_FROM"], "checkpoints").glob("*.pt")):
    local = Path("results/.checkpoints") / remote.name
    try:
        done = load_checkpoint(remote, map_location="cpu")["epochs_done"]
    except (RuntimeError, KeyError, TypeError) as err:
        print(f"collect: {remote} is not a readable checkpoint; not copied ({err})", file=sys.stderr)
        continue
    if local.exists():
        try:
            here = load_checkpoint(local, map_location="cpu")["epochs_done"]
        except (RuntimeError, KeyError, TypeError):
            here = -1  # an unreadable local one is replaced by a readable one
        if here >= done:
            print(f"collect: {local} has {here} epochs done, the one that came back {done}; kept", file=sys.stderr)
            continue
    atomic_write_bytes(local, remote.read_bytes())
    moved += 1

recorded = {read_record(p)["key"] for p in Path("results").rglob("*.json")
            if not any(part.startswith(".") for part in p.parts) and p.parts[1] != "benchmarks"}
for checkpoint in Path("results/.checkpoints").glob("*.pt"):
    if checkpoint.stem in recorded:
        checkpoint.unlink()
print(moved)
PY
)
  echo "collected: $new new record(s), $same already here, $differ differing (kept); $moved checkpoint(s)"
  ;;
*)
  echo "usage: scripts/remote_sweep.sh prepare [DATASET...] | run LIMIT SWEEP-ARGS... | collect FOLDER" >&2
  exit 2
  ;;
esac
