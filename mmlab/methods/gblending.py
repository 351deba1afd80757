"""Gradient-Blending (chapter 5, *Audio-visual learning*).

G-Blending (Wang, Tran & Feiszli, "What makes training multi-modal classification networks hard?",
CVPR 2020) trains the uniform baseline's losses -- the fused head's and one unimodal head per
modality -- with weights chosen from how each head *generalises* and how it *overfits*. Over a window
of training (a *super-epoch*, from epoch ``N`` to ``N + n``), for each loss ``k``, with training loss
``L^T`` and validation loss ``L^V``:

* overfitting ``O_N = L^V_N - L^T_N``, its change ``dO_k = O_{N+n} - O_N``;
* generalisation ``dG_k = L^V_N - L^V_{N+n}`` (how much the validation loss fell);
* the overfitting-to-generalisation ratio ``OGR_k = |dO_k / dG_k|``;
* the blending weights ``w_k = (1/Z) dG_k / dO_k^2``, the paper's estimate of the weights that
  minimise the blend's OGR when the losses' gradient noises are uncorrelated (its Proposition 1,
  with ``<grad L*, v_k>`` estimated by ``dG_k`` and the noise ``sigma_k^2`` by ``dO_k^2``).

This is the paper's *online* variant: the weights used in a super-epoch come from the previous one.
Choices of ours, on purpose and in the book: the first super-epoch trains with weights 1 (the uniform
baseline); ``Z`` makes the weights sum to the number of losses, the uniform baseline's sum, so the
learning rate means the same in both; a loss whose validation loss did not fall (``dG_k <= 0``) gets
weight 0, and if none fell the previous weights stay. ``L^T`` is measured on the training split in
evaluation mode, without augmentation, at the start of each super-epoch (two extra evaluation passes,
train and validation, per super-epoch).
"""

from __future__ import annotations

from typing import Any

import torch

from .base import TrainState
from .baselines import UniformBaseline


def blending_weights(generalization: torch.Tensor, overfitting_change: torch.Tensor,
                     total: float | None = None, eps: float = 1e-12) -> torch.Tensor | None:
    """G-Blending's weights ``w_k = (1/Z) max(dG_k, 0) / dO_k^2``, scaled to sum to ``total``
    (default: the number of losses). ``None`` when no loss generalised (every ``dG_k <= 0``)."""
    if generalization.shape != overfitting_change.shape or generalization.dim() != 1:
        raise ValueError("generalization and overfitting_change must be vectors of the same length")
    total = float(len(generalization)) if total is None else total
    gain = generalization.clamp_min(0.0)
    if not bool((gain > 0).any()):
        return None
    raw = gain / overfitting_change.square().clamp_min(eps)
    raw = raw / raw.max()  # scale first: a sum of tiny (subnormal) ratios must not underflow to zero
    return raw / raw.sum() * total


def loss_names(modalities) -> list[str]:
    return ["multimodal"] + [f"unimodal/{m}" for m in modalities]


def split_losses(metrics: dict[str, float], split: str, names: list[str]) -> list[float]:
    """Each named loss's mean cross-entropy on ``split``, from :func:`mmlab.training.evaluate`'s metrics."""
    keys = {n: f"{split}/loss" if n == "multimodal" else f"{split}/loss/{n}" for n in names}
    return [metrics[keys[n]] for n in names]


class GBlending(UniformBaseline):
    """G-Blending: weight each loss by its generalisation over its overfitting squared (Wang et al. 2020)."""

    name = "gblending"

    def __init__(self, super_epoch: int = 10):
        if not isinstance(super_epoch, int) or super_epoch < 1:
            raise ValueError(f"super_epoch must be a whole number of epochs >= 1, got {super_epoch!r}")
        self.super_epoch = super_epoch
        self.names: list[str] = []
        self.weights: torch.Tensor | None = None
        self.snapshot: torch.Tensor | None = None  # [2, K]: train and validation losses at the window's start
        self.ogr: torch.Tensor | None = None
        self._on_device: torch.Tensor | None = None  # the weights as the losses' device and dtype

    def setup(self, state: TrainState) -> None:
        self.names = loss_names(state.model.modalities)
        self.weights = torch.ones(len(self.names), dtype=torch.float64)

    def on_epoch_start(self, state: TrainState) -> None:
        if state.epoch % self.super_epoch:
            return
        if state.evaluate is None:
            raise RuntimeError("G-Blending needs the loop's evaluate (TrainState.evaluate)")
        now = torch.tensor([split_losses(state.evaluate("train"), "train", self.names),
                            split_losses(state.evaluate("val"), "val", self.names)], dtype=torch.float64)
        if self.snapshot is not None:
            before = self.snapshot
            generalization = before[1] - now[1]
            overfitting_change = (now[1] - now[0]) - (before[1] - before[0])
            self.ogr = (overfitting_change / generalization).abs()
            weights = blending_weights(generalization, overfitting_change)
            if weights is not None:
                self.weights, self._on_device = weights, None
        self.snapshot = now

    def total_loss(self, losses: dict[str, torch.Tensor], state: TrainState) -> torch.Tensor:
        values = torch.stack([losses[n] for n in self.names])
        if self._on_device is None or self._on_device.dtype != values.dtype:
            self._on_device = self.weights.to(device=values.device, dtype=values.dtype)
        return (self._on_device * values).sum()

    def on_epoch_end(self, state: TrainState, evaluate) -> dict[str, float]:
        logs = {f"train/gblending_weight/{n}": float(w) for n, w in zip(self.names, self.weights)}
        if self.ogr is not None:
            logs.update({f"train/gblending_ogr/{n}": float(r) for n, r in zip(self.names, self.ogr)
                         if torch.isfinite(r)})  # no ratio where the validation loss did not move
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.clone(), "snapshot": self.snapshot, "ogr": self.ogr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights, self.snapshot, self.ogr = state["weights"], state["snapshot"], state["ogr"]
        self._on_device = None
