"""Metrics the loop logs each epoch (chapter 1), as plain tensor functions."""

from __future__ import annotations

from typing import Sequence

import torch


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``C[i, j]`` = number of samples of class ``i`` predicted as ``j``."""
    index = labels.long() * num_classes + predictions.long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return (predictions == labels).double().mean().item() if len(labels) else float("nan")


def macro_f1(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Unweighted mean over classes of ``2 TP / (2 TP + FP + FN)``; a class that is
    neither present nor predicted is left out (as scikit-learn's ``zero_division`` would not)."""
    cm = confusion_matrix(predictions, labels, num_classes).double()
    tp = cm.diag()
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    denom = 2 * tp + fp + fn
    present = denom > 0
    if not present.any():
        return float("nan")
    return (2 * tp[present] / denom[present]).mean().item()


def global_norm(tensors: Sequence[torch.Tensor | None], device: torch.device | None = None) -> torch.Tensor:
    """The l2 norm of a list of tensors seen as one vector (a 0-d tensor, no sync); 0 on ``device`` where
    every tensor is None (no gradient reached them: a captured step must not meet a CPU tensor then)."""
    ts = [t for t in tensors if t is not None]
    if not ts:
        return torch.zeros((), device=device)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(ts)))


def flat_dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def gram(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(a.a, a.b, b.b)`` for two gradients given as lists of tensors (0-d tensors, no sync):
    three dot products of one flattened copy of each, instead of a Python loop per product."""
    flat_a = torch.cat([t.reshape(-1) for t in a])
    flat_b = torch.cat([t.reshape(-1) for t in b])
    return flat_a @ flat_a, flat_a @ flat_b, flat_b @ flat_b


def cosine(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], eps: float = 1e-12) -> torch.Tensor:
    """cos of the angle between two gradients, each a list of tensors."""
    return flat_dot(a, b) / (global_norm(a) * global_norm(b)).clamp_min(eps)
