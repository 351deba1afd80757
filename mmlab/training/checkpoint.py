"""Checkpoints, written atomically (see :mod:`mmlab.io`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_bytes


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    import io

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location=None) -> dict[str, Any]:
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # a corrupt checkpoint is reported, never silently ignored
        raise RuntimeError(
            f"The checkpoint {path} cannot be read ({exc}). Delete it to restart the run from scratch."
        ) from exc
