"""AMCo, adaptive mask co-optimisation (Zhou, Liang, Zheng, Xuan & Kumada, ICASSP 2023, "Adaptive Mask
Co-optimization for Modal Dependence in Multimodal Learning"), chapter 3, beside OPM: find the modality the model
depends on, and mask a growing share of its features.

**Which modality the model depends on.** After each step, the logit shares of the modalities are put side by side
and passed through one softmax over all ``M x C`` entries; the share of the probability mass that falls on modality
``m``'s block, averaged over the batch, is its *dependence* (:func:`dependence`). A modality whose dependence reaches
``sigma`` (0.5) is the *dependent* modality for the rest of the epoch (the first found, in the model's order of
modalities; none at the start of an epoch; BalanceBenchmark can flag a second one later in the epoch, and then masks
the first of them in its order of modalities).

**The mask.** Each step, ``N = int(p_t U)`` of the dependent modality's ``U`` feature units, drawn at random, are set
to zero and the rest scaled by ``1 / (1 - p_t)`` (by 10 once ``p_t`` is within 0.1 of 1), where

    p_t = sin(pi/2 * min(eps, l_t) / eps),    l_t = (steps so far in the epoch) * ramp * epoch

(:func:`mask_ratio`, :func:`feature_mask`). The losses are the fused cross-entropy and one cross-entropy per modality
on its logit share (late fusion's unimodal predictions, no extra head).

The rule and its constants (``sigma`` 0.5, ``eps`` 0.3, the ramp of ``epoch / 10`` per step, ``U`` the feature size)
are read from BalanceBenchmark's ``AMCoTrainer`` and its model's forward pass (GeWu-Lab/BalanceBenchmark); the paper's
equation numbers are not cited: the book could not check them. **What that schedule does**, and the book keeps it to
show it: ``l_t`` restarts at 0 every epoch and grows by ``epoch / 10`` per step, so in the first epoch nothing is ever
masked, and from epoch ``e >= 1`` on ``p_t`` reaches 1 after ``ceil(eps / (ramp e))`` steps (three in epoch 1, one from
epoch 3): the dependent modality's features are then *all* zero, times 10, for the rest of the epoch -- the modality is
dropped, not masked. ``ramp`` is a named option; an exercise of chapter 3 asks for a schedule that ramps over the run.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..models import ModelOutput
from .base import Method, TrainState


def dependence(shares: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each modality's share of one softmax over all modalities' logit shares side by side (``[B, M C]``), averaged
    over the batch; they sum to 1."""
    names = list(shares)
    probabilities = torch.softmax(torch.cat([shares[m].detach().float() for m in names], 1), 1)
    blocks = probabilities.split([shares[m].shape[1] for m in names], 1)
    return {m: block.sum(1).mean() for m, block in zip(names, blocks)}


def mask_ratio(step_in_epoch: int, epoch: int, eps: float = 0.3, ramp: float = 0.1) -> float:
    """``p_t = sin(pi/2 min(eps, l_t) / eps)`` with ``l_t = step_in_epoch * ramp * epoch``: the share of the dependent
    modality's features masked at this step."""
    level = step_in_epoch * ramp * epoch
    return math.sin(math.pi / 2 * min(eps, level) / eps)


def feature_mask(units: int, ratio: float, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """A ``[units]`` mask with ``int(ratio * units)`` zeros at random places, the rest ``1 / (1 - ratio)`` (inverted
    dropout), or 10 once ``ratio`` is within 0.1 of 1 (where the inverse would explode), as BalanceBenchmark scales."""
    masked = int(ratio * units)
    keep = torch.ones(units, device=device)
    keep[torch.randperm(units, generator=generator, device=device)[:masked]] = 0.0
    scale = 1.0 / (1.0 - ratio) if abs(ratio - 1.0) > 0.1 else 10.0
    return keep * scale


class AMCo(Method):
    """AMCo: mask a growing share of the dependent modality's features, found from the logit shares' softmax
    (Zhou et al., ICASSP 2023; the rule as in BalanceBenchmark's AMCoTrainer)."""

    name = "amco"
    capturable = False  # the dependent modality and the mask ratio are host decisions, step by step

    def __init__(self, sigma: float = 0.5, eps: float = 0.3, ramp: float = 0.1):
        if not 0 < sigma <= 1:
            raise ValueError(f"AMCo's sigma must be in (0, 1], got {sigma!r}")
        if not eps > 0:
            raise ValueError(f"AMCo's eps must be > 0, got {eps!r}")
        if not ramp >= 0:
            raise ValueError(f"AMCo's ramp must be >= 0, got {ramp!r}")
        self.sigma, self.eps, self.ramp = float(sigma), float(eps), float(ramp)
        self.dependent: str | None = None
        self.step_in_epoch = 0

    def on_epoch_start(self, state: TrainState) -> None:
        self.dependent, self.step_in_epoch = None, 0

    def intervene(self, features: dict[str, torch.Tensor], state: TrainState) -> dict[str, torch.Tensor]:
        ratio = mask_ratio(self.step_in_epoch, state.epoch, self.eps, self.ramp)
        state.log("train/amco/mask_ratio", ratio if self.dependent is not None else 0.0)
        if self.dependent is None:
            return features
        z = features[self.dependent]
        mask = feature_mask(z.shape[1], ratio, state.generator, z.device).to(z.dtype)
        return {**features, self.dependent: z * mask}

    def losses(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> dict[str, torch.Tensor]:
        terms = {"multimodal": F.cross_entropy(output.logits, labels)}
        for m, share in output.shares.items():
            terms[f"share/{m}"] = F.cross_entropy(share, labels)
        self.last_dependence = dependence(output.shares)
        return terms

    def on_step_end(self, state: TrainState) -> None:
        self.step_in_epoch += 1
        for m, value in self.last_dependence.items():
            state.log(f"train/amco/dependence/{m}", value)
        if self.dependent is None:  # the first modality found stays dependent for the epoch
            self.dependent = next((m for m, v in self.last_dependence.items() if float(v) >= self.sigma), None)
        for m in self.last_dependence:
            state.log(f"train/amco/dependent/{m}", float(self.dependent == m))
