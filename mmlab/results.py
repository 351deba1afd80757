"""The results store: one JSON record per finished run (chapter 1; the reproduction chapter reads them all).

A record holds the run's config, its per-epoch metrics (``history``), the final
metrics, the dataset's description and the provenance (package version, git
commit, device, torch version, wall time, profile). Records are written
atomically and a finished record is never overwritten unless asked.

Layout: ``<root>/<profile>/<dataset>/<label>/seed<seed>-<key>.json``. The root
is ``$MMLAB_RESULTS``, else the ``results/`` folder of the book's checkout when
running inside one, else ``./mmlab-results``. Records of the ``full`` profile
are committed to the repository; ``smoke`` and ``quick`` ones are local.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterable

from .config import RunConfig
from .errors import OtherCodeWarning, ResultsFileError
from .io import atomic_write_bytes

SCHEMA_VERSION = 1
REQUIRED_KEYS = ("schema", "key", "config", "history", "final", "provenance")


def default_results_root() -> Path:
    env = os.environ.get("MMLAB_RESULTS")
    if env:
        return Path(env)
    for folder in [Path.cwd(), *Path.cwd().parents]:
        if (folder / "_toc.yml").exists() and (folder / "mmlab").is_dir():
            return folder / "results"
    return Path.cwd() / "mmlab-results"


def other_code_digest(record: dict[str, Any]) -> str | None:
    """The ``source_digest`` of the code that made ``record`` when that is not this process's code
    and the record is a ``smoke`` or ``quick`` one; else ``None``. ``full`` and ``sensitivity`` records are
    committed, kept across versions on purpose (each names its commit); records older than
    the digest are not judged."""
    provenance = record.get("provenance", {})
    made_by = provenance.get("source_digest")
    from .profiles import COMMITTED_PROFILES

    if made_by is None or provenance.get("profile") in COMMITTED_PROFILES:
        return None
    from .provenance import source_digest

    return made_by if made_by != source_digest() else None


def warn_if_other_code(record: dict[str, Any]) -> None:
    """Warn (:class:`~mmlab.errors.OtherCodeWarning`) when a cached record of a ``smoke`` or
    ``quick`` run was made by other code than this process's (:func:`other_code_digest`): after an
    edit of the library (an exercise, say), its numbers need not be what the code now computes."""
    made_by = other_code_digest(record)
    if made_by is not None:
        from .provenance import source_digest

        provenance = record.get("provenance", {})
        warnings.warn(f"the cached record of {record.get('label')} (seed {provenance.get('seed')}, profile "
                      f"{provenance.get('profile')}) was made by other code than this (source {made_by}, now "
                      f"{source_digest()}); it is shown as recorded. Train it again with overwrite=True "
                      "(--overwrite), or remove the local records with `make clean`.", OtherCodeWarning, stacklevel=3)


def make_record(config: RunConfig, history: list[dict], splits: dict, provenance: dict,
                checkpoint_path: Path | None = None) -> dict[str, Any]:
    last = history[-1]
    final = {k: v for k, v in last.items() if k.startswith(("val/", "test/", "test@"))}
    best = max(history, key=lambda h: h["val/acc"])
    return {
        "schema": SCHEMA_VERSION,
        "key": config.key,
        "label": config.label,
        "config": config.to_dict(),
        "data_protocol": data_protocol(config.to_dict()),
        "final": {"epoch": last["epoch"], **final},
        "selection": "last epoch (fixed budget); best_val gives the epoch a validation split would pick",
        "best_val": {"epoch": best["epoch"], "val/acc": best["val/acc"], "test/acc": best["test/acc"]},
        "dataset": {
            name: {"size": len(split),
                   **{k: getattr(split, k) for k in ("colour_label_agreement", "cramers_v") if hasattr(split, k)}}
            for name, split in splits.items()
        },
        "history": history,
        "provenance": {**provenance, "profile": config.profile, "seed": config.seed},
        "_checkpoint": str(checkpoint_path) if checkpoint_path else None,
    }


def data_protocol(config: dict[str, Any]) -> str | None:
    """The data protocol a run's config (a record's ``config``) stands for: CG-MNIST's
    ``"mmlab-1"``, ``"mmlab-1 with test_agreement=0.3"``; ``None`` for a dataset without
    protocols. A record made before protocols had names (no ``protocol`` option) reads as
    the protocol it was made under, :data:`~mmlab.data.cgmnist.LEGACY_PROTOCOL`."""
    from .data.registry import get_dataset

    return get_dataset(config["dataset"]).protocol(config.get("dataset_options") or {})


def record_protocol(record: dict[str, Any]) -> str | None:
    """The data protocol a record was made under: the one it names, else its config's
    (:func:`data_protocol`: a record older than protocol names is ``"mmlab-1"``)."""
    return record.get("data_protocol") or data_protocol(record["config"])


def _validate(record: Any, path: Path) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise ResultsFileError(f"Results file {path} does not hold a JSON object.")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ResultsFileError(f"Results file {path} lacks the {'field' if len(missing) == 1 else 'fields'} {missing}; it is not an mmlab record.")
    if record["schema"] != SCHEMA_VERSION:
        raise ResultsFileError(f"Results file {path} has schema {record['schema']}, expected {SCHEMA_VERSION}.")
    return record


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsFileError(f"Results file {path} cannot be parsed ({exc}). Delete or repair it.") from exc
    return _validate(record, path)


class ResultsStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_results_root()

    def path_for(self, config: RunConfig) -> Path:
        return self.root / config.profile / config.dataset / config.label / f"seed{config.seed}-{config.key}.json"

    @property
    def checkpoint_dir(self) -> Path:
        """Where unfinished runs of this store keep their checkpoints: ``$MMLAB_CHECKPOINTS`` where
        that is set (e.g. a folder that must come back from a remote machine), else
        ``<root>/.checkpoints``."""
        env = os.environ.get("MMLAB_CHECKPOINTS")
        return Path(env) if env else self.root / ".checkpoints"

    def weights_path(self, config: RunConfig) -> Path:
        """Where ``load_or_run(..., keep_weights=True)`` keeps the final model weights
        (local files, not committed: they are reproduced by training)."""
        return self.path_for(config).with_suffix(".weights.pt")

    def load(self, config: RunConfig) -> dict[str, Any] | None:
        path = self.path_for(config)
        return read_record(path) if path.exists() else None

    def save(self, record: dict[str, Any], overwrite: bool = False) -> Path:
        config = RunConfig.from_dict(record["config"])
        path = self.path_for(config)
        if path.exists() and not overwrite:
            raise FileExistsError(
                f"A finished record already exists at {path}; pass overwrite=True to replace it."
            )
        clean = {k: v for k, v in record.items() if not k.startswith("_")}
        atomic_write_bytes(path, (json.dumps(clean, indent=1, sort_keys=False) + "\n").encode())
        return path

    def records(self, profile: str | None = None, dataset: str | None = None,
                label: str | None = None) -> list[dict[str, Any]]:
        """Every record under the root matching the filters (a bad file raises, naming it)."""
        base = self.root
        parts = [profile or "*", dataset or "*", label or "*", "*.json"]
        return [read_record(p) for p in sorted(base.glob("/".join(parts)))]

    def __iter__(self) -> Iterable[dict[str, Any]]:
        return iter(self.records())
