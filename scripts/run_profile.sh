#!/usr/bin/env bash
# Record the runs of chapter 1 (unimodal x2, joint, uniform) for every seed of a profile,
# several runs at once. Finished runs are skipped (their records exist); interrupted ones
# resume from their checkpoints.
#
#   scripts/run_profile.sh full 12      # profile, parallel runs (default: 4)
#
# On a GPU machine, several small CG-MNIST runs share the card; each process uses one CPU thread.
set -euo pipefail
profile="${1:-full}"
jobs="${2:-4}"
seeds="${SEEDS:-$(${PYTHON:-python3} -c "from mmlab import get_profile; print(' '.join(map(str, get_profile('$profile').seeds)))")}"
export OMP_NUM_THREADS=1
for seed in $seeds; do
  for method in "joint" "uniform" "unimodal --modality gray" "unimodal --modality color"; do
    echo "--method $method --seed $seed"
  done
done | xargs -P "$jobs" -I{} sh -c "${PYTHON:-python3} -m mmlab train --dataset cgmnist --profile $profile --no-progress {} || echo 'FAILED: {}'"
