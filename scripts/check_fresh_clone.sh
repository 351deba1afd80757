#!/usr/bin/env bash
# The data tests on a copy of this checkout in a folder with nothing beside it (no ../shared), as a
# user's clone is: once with MMLAB_DATA naming a data folder (every test that needs real data must
# find it there: none may be skipped for want of MNIST), once with no data at all (those tests
# must skip, saying where they looked, and none may fail).
#
#   scripts/check_fresh_clone.sh DATA_DIR        # DATA_DIR: a folder with mnist/ (and fsdd/, cremad/)
#   PYTHON=.venv/bin/python scripts/check_fresh_clone.sh ../shared/data
#
# .ci/run calls it after `make test`. Exit status 1 when a run fails or a check is not met.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${1:?usage: scripts/check_fresh_clone.sh DATA_DIR}"
data="$(cd "$data" && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
tests=(tests/test_data_mnist.py tests/test_data_cgmnist.py tests/test_data_avdigits.py
       tests/test_data_cremad.py tests/test_data_audio.py)

scratch="$(mktemp -d "${TMPDIR:-/tmp}/mmlab-fresh-clone.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
clone="$scratch/lone/clone"  # its parent holds nothing else: no ../shared beside it
mkdir -p "$clone"
# the files a clone has: tracked ones and new ones git does not ignore (no .venv, results/smoke, _build)
(cd "$here" && git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} "$clone" 2>/dev/null || true)
[[ -f "$clone/mmlab/__init__.py" && -d "$clone/tests" ]] || { echo "check_fresh_clone: copying the tree failed" >&2; exit 1; }

run() {  # run NAME ENV...: the data tests in the copy, with its own mmlab first on the path
  local name="$1"; shift
  echo "--- fresh clone, $name"
  (cd "$clone" && env -u MMLAB_DATA -u MMLAB_TEST_MNIST_DIR MMLAB_CACHE="$scratch/empty-cache" \
      MMLAB_RESULTS="$scratch/results" PYTHONPATH="$clone" MPLBACKEND=Agg "$@" \
      "$python" -m pytest -q -rs -p no:cacheprovider "${tests[@]}") > "$scratch/$name.log" 2>&1
  local rc=$?
  if [[ $rc -eq 0 ]]; then tail -n 1 "$scratch/$name.log"; else tail -n 60 "$scratch/$name.log"; fi
  return $rc
}

status=0
run with-data MMLAB_DATA="$data" || status=1
if grep -q "real MNIST files were not found" "$scratch/with-data.log"; then
  echo "check_fresh_clone: with MMLAB_DATA=$data, a test was skipped for want of MNIST" >&2; status=1
fi
run without-data || status=1
if ! grep -q "real MNIST files were not found" "$scratch/without-data.log"; then
  echo "check_fresh_clone: without any data, no test said it skipped for want of MNIST" >&2; status=1
fi
[[ $status -eq 0 ]] && echo "check_fresh_clone: passed (with MMLAB_DATA, and without any data)"
exit $status
