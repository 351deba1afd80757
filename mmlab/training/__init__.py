"""Training: the one loop, checkpoints, and ``load_or_run``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import RunConfig
from .device import pick_device  # noqa: F401
from .loop import evaluate, per_loss_encoder_gradients, train  # noqa: F401


def load_or_run(config: RunConfig, *, store=None, overwrite: bool = False, device=None,
                progress: bool = True, data_root: str | None = None) -> dict[str, Any]:
    """The stored record of ``config`` if there is one; else train, store, return it.

    With ``overwrite=True`` the run is trained again and replaces the record.
    An interrupted run resumes from its checkpoint; the checkpoint is removed
    once the record is safely written.
    """
    from ..results import ResultsStore

    store = store if store is not None else ResultsStore()
    if not overwrite:
        record = store.load(config)
        if record is not None:
            return record
    record = train(config, device=device, progress=progress, data_root=data_root,
                   checkpoint_dir=store.root / ".checkpoints")
    store.save(record, overwrite=overwrite)
    checkpoint = record.pop("_checkpoint", None)
    if checkpoint:
        Path(checkpoint).unlink(missing_ok=True)
    return record
