"""scripts/remote_sweep.sh: prepare a copy of the tree for a machine without git or network, train
part of a sweep there into OUT, collect what came back (records, checkpoints)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmlab import RunConfig

REPO = Path(__file__).resolve().parent.parent
TINY = dict(train_size=256, val_size=64, test_size=128, batch_size=32, grad_probe_every=0, lr=0.01)


def _sh(args, cwd, **env):
    result = subprocess.run(["bash", "scripts/remote_sweep.sh", *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, "PYTHON": sys.executable, **env}, timeout=300)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_prepare_run_collect(tmp_path, real_data):
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "remote_sweep.sh", tree / "scripts")
    (tree / "mmlab").symlink_to(REPO / "mmlab")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=tree, check=True, capture_output=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tree, capture_output=True, text=True).stdout.strip()

    rc, out = _sh(["prepare", "cgmnist"], tree, MMLAB_DATA=str(real_data))
    assert rc == 0, out
    assert (tree / ".remote" / "data" / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert (tree / ".remote" / "commit").read_text().strip() == commit
    rc, out = _sh(["prepare", "imagenet"], tree, MMLAB_DATA=str(real_data))
    assert rc == 2 and "no data recipe for dataset 'imagenet'" in out
    assert (tree / ".remote" / "commit").exists()  # a refused prepare leaves the last one as it was

    # "there": no .git in the copy, the data from .remote/, everything written under OUT
    remote = tmp_path / "remote"
    shutil.copytree(tree, remote, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    out_dir = tmp_path / "out"
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    rc, out = _sh(["run", "2h", "--profile", "smoke", "--method", "joint", "--seed", "0", "--epochs", "1",
                   "--device", "cpu", *sets], remote, OUT=str(out_dir), MMLAB_DATA="/nonexistent")
    assert rc == 0, out
    assert "1 run: 1 done" in out and (out_dir / "sweep.log").exists()
    config = RunConfig.from_profile(profile="smoke", method="joint", seed=0, epochs=1, **TINY)
    records = list((out_dir / "results").rglob(f"*{config.key}.json"))
    assert len(records) == 1
    provenance = json.loads(records[0].read_text())["provenance"]
    assert provenance["git_commit"] == commit and provenance["git_dirty"] is False

    # back "here": the new record lands in results/, a checkpoint of a recorded run is dropped
    import torch

    checkpoints_back, checkpoints_here = out_dir / "checkpoints", tree / "results" / ".checkpoints"
    torch.save({"epochs_done": 1}, checkpoints_back / f"{config.key}.pt")
    torch.save({"epochs_done": 2}, checkpoints_back / "unfinished.pt")
    torch.save({"epochs_done": 2}, checkpoints_back / "behind.pt")
    (checkpoints_back / "broken.pt").write_bytes(b"partial")
    checkpoints_here.mkdir(parents=True, exist_ok=True)
    torch.save({"epochs_done": 5}, checkpoints_here / "behind.pt")  # further along here than what came back
    rc, out = _sh(["collect", str(out_dir)], tree)
    assert rc == 0, out
    assert "1 new record(s)" in out and "2 checkpoint(s)" in out
    assert (tree / records[0].relative_to(out_dir)).exists()
    assert torch.load(checkpoints_here / "unfinished.pt")["epochs_done"] == 2
    assert torch.load(checkpoints_here / "behind.pt")["epochs_done"] == 5 and "behind.pt has 5 epochs done" in out
    assert not (checkpoints_here / "broken.pt").exists() and "broken.pt is not a readable checkpoint" in out
    assert not (checkpoints_here / f"{config.key}.pt").exists()  # its run is recorded now
    rc, out = _sh(["collect", str(out_dir)], tree)
    assert rc == 0 and "0 new record(s), 1 already here" in out
