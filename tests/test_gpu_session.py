"""scripts/gpu_session.sh, tried out on a CPU (DEVICE=cpu): the CUDA-graph check runs emulated and writes its
record, a failed check is said, and without a GPU the sweep part never gets --cuda-graph."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _tree(tmp_path: Path, real_data: Path) -> Path:
    """A copy of what the script needs, as `remote_sweep.sh prepare` leaves it (.remote/ with the data)."""
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    for name in ("gpu_session.sh", "remote_sweep.sh", "check_cuda_graph.py"):
        shutil.copy(REPO / "scripts" / name, tree / "scripts")
    (tree / "mmlab").symlink_to(REPO / "mmlab")
    (tree / ".remote" / "data").mkdir(parents=True)
    (tree / ".remote" / "data" / "mnist").symlink_to(real_data / "mnist")
    (tree / ".remote" / "commit").write_text("0123456789abcdef\n")
    (tree / ".remote" / "dirty").write_text("0\n")
    return tree


def _run(tree: Path, out: Path, *args: str, **env: str):
    result = subprocess.run(["bash", "scripts/gpu_session.sh", *args], cwd=tree, capture_output=True, text=True,
                            env={**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "OUT": str(out),
                                 "OMP_NUM_THREADS": "1", **env}, timeout=600)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils' timeout")
def test_the_session_checks_the_captured_step_first(tmp_path, real_data):
    tree = _tree(tmp_path, real_data)
    rc, out = _run(tree, tmp_path / "out", "0", "0", CHECK_OPTIONS="--methods uniform --stack 1")
    assert rc == 0, out
    assert "emulated check passed (no GPU: the sweep trains eagerly)" in out and "SWEEP_LIMIT 0" in out
    record = json.loads((tmp_path / "out" / "benchmarks" / "check-cuda-graph-cpu.json").read_text())
    assert record["passed"] and record["emulated"] and record["git_commit"] == "0123456789abcdef"
    assert [m["method"] for m in record["methods"]] == ["uniform"]


@pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils' timeout")
def test_a_failed_check_is_said_and_the_session_goes_on_eagerly(tmp_path, real_data):
    tree = _tree(tmp_path, real_data)
    rc, out = _run(tree, tmp_path / "out", "0", "0", CHECK_OPTIONS="--methods no_such_method --stack 1")
    assert rc == 0, out
    assert "CUDA-graph check failed or stopped" in out and "SWEEP_LIMIT 0" in out


def test_the_session_needs_a_prepared_tree(tmp_path):
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "gpu_session.sh", tree / "scripts")
    rc, out = _run(tree, tmp_path / "out")
    assert rc == 2 and "run scripts/remote_sweep.sh prepare cgmnist first" in out
