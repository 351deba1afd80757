"""Where a number came from: package and library versions, commit, device, time."""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from . import __version__

_PACKAGE = Path(__file__).resolve().parent
_REPO = _PACKAGE.parent


@functools.lru_cache(maxsize=None)
def source_digest(package: Path = _PACKAGE) -> str:
    """A fingerprint of the code: the first 16 hex digits of the sha256 of every ``.py`` file of
    the package (its path and its content). Unlike the commit it needs no git (a copy of the tree
    on a remote machine, an install from PyPI) and it sees uncommitted edits: a cached record whose
    digest differs from this process's was made by other code (:func:`mmlab.training.load_or_run`
    says so). Computed once per process, when first asked (training asks as it starts)."""
    digest = hashlib.sha256()
    for path in sorted(Path(package).rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def git_commit() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout the package runs from, or (None, None).

    Where the code runs from a copy without ``.git`` (a remote GPU machine, say),
    ``MMLAB_GIT_COMMIT`` names the commit the copy was made from; such a copy
    is clean by construction only if it was made from a clean tree, so the
    launcher sets ``MMLAB_GIT_DIRTY`` too.
    """
    if os.environ.get("MMLAB_GIT_COMMIT"):
        dirty = os.environ.get("MMLAB_GIT_DIRTY")
        return os.environ["MMLAB_GIT_COMMIT"], None if dirty is None else dirty == "1"
    try:
        commit = subprocess.run(["git", "-C", str(_REPO), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(_REPO), "status", "--porcelain", "--", "mmlab"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return commit or None, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return None, None


def provenance(*, device: str, wall_time_s: float, resumed: bool = False,
               code_version: tuple[str | None, bool | None] | None = None,
               earlier_commits: list[str | None] | None = None,
               source: str | None = None,
               earlier_sources: list[str | None] | None = None) -> dict[str, Any]:
    """The provenance of a record. ``code_version`` is :func:`git_commit` taken when training
    started (a run may take hours, and the checkout can move on meanwhile; the imported code does
    not); without it, the checkout's state now. ``earlier_commits``: the commits of the sessions
    a resumed run continued, where any differs from this one. ``source``: :func:`source_digest`
    when training started (default: now); ``earlier_sources``: the digests of a resumed run's
    earlier parts, where any differs from it (``None``: the checkpoint did not keep it). A resumed
    run whose commits differ but that has no ``earlier_source_digests`` trained every part with
    the same ``mmlab`` code."""
    commit, dirty = code_version if code_version is not None else git_commit()
    out = {
        "mmlab_version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,  # uncommitted changes under mmlab/ when the run (or its last part) started
        "source_digest": source or source_digest(),
        "device": device,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "wall_time_s": round(wall_time_s, 2),
        "resumed": resumed,
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    earlier = sorted({c for c in earlier_commits or () if c != commit}, key=str)
    if earlier:
        out["earlier_commits"] = earlier
    earlier_sources = sorted({d for d in earlier_sources or () if d != out["source_digest"]}, key=str)
    if earlier_sources:
        out["earlier_source_digests"] = earlier_sources
    return out
