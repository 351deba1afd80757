#!/usr/bin/env bash
# Record the runs of chapter 1 (unimodal x2, joint, uniform) for every seed of a profile,
# several runs at once, through `python -m mmlab sweep`. Recorded runs are skipped; interrupted
# ones resume from their checkpoints; a failed run is reported and the others go on (exit 1).
#
#   scripts/run_profile.sh full 12                  # profile, runs at once (default: full, 4)
#   scripts/run_profile.sh full 12 --device cuda    # further arguments go to the sweep
#   scripts/run_profile.sh full 4 --dry-run         # what is recorded, what would train
#   SEEDS="0 1" scripts/run_profile.sh quick 2      # other seeds than the profile's
#
# On a GPU machine the runs share the card; each worker gets cores / runs CPU threads.
set -euo pipefail
profile="${1:-full}"
jobs=4
[[ $# -gt 0 ]] && shift
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
  jobs="$1"
  shift
fi
seeds=()
if [[ -n "${SEEDS:-}" ]]; then
  read -r -a seeds <<< "$SEEDS"
  seeds=(--seed "${seeds[@]}")
fi
exec "${PYTHON:-python3}" -m mmlab sweep --dataset cgmnist --profile "$profile" --jobs "$jobs" \
  --method joint uniform unimodal:modality=gray unimodal:modality=color "${seeds[@]}" "$@"
