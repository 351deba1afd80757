"""Pick the device: CUDA, then Apple's MPS, then the CPU; ``MMLAB_DEVICE`` or an
argument overrides."""

from __future__ import annotations

import os

import torch


def pick_device(preference: str | torch.device | None = None) -> torch.device:
    """``preference`` (e.g. ``"cpu"``, ``"cuda:1"``), else ``$MMLAB_DEVICE``, else the
    best available. Asking for an unavailable device is an error, not a silent fallback."""
    choice = preference if preference not in (None, "", "auto") else os.environ.get("MMLAB_DEVICE", "auto")
    if choice in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(choice)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"Unknown device {choice!r}: use cpu, cuda (or cuda:N), mps or auto.") from exc
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"mmlab trains on cpu, cuda (or cuda:N) or mps, not {choice!r}.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"Device {choice!r} was asked for, but CUDA is not available here. Use 'cpu' or 'auto'.")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"Device {choice!r} was asked for, but MPS is not available here. Use 'cpu' or 'auto'.")
    return device


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def wait_for_device(device: torch.device) -> None:
    """Wait until the device has run every kernel queued so far (CUDA, MPS; a CPU runs them as they
    come): a GPU's steps, replayed from a graph above all, are queued ahead of the host, and a clock
    read without waiting times the queueing, not the training."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
