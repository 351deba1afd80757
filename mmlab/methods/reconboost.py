"""ReconBoost: modality-alternating boosting (chapter 6).

Hua, Xu, Bao, Yang and Huang, *ReconBoost: Boosting Can Achieve Modality Reconcilement* (ICML 2024; the
survey's and the GeWu tutorial's [20]). Training alternates between the modalities in **stages**. In the
stage of modality :math:`m` only :math:`m`'s learner :math:`f_m` (its encoder and the head the learners
share) trains, against the ensemble of the other learners :math:`F_{-m} = \\sum_{k \\ne m} f_k`, as in
gradient boosting: the samples the others already get right weigh less. The loss of the released code
(huacong/ReconBoost ``train.py``; the book's sources carry no equation numbers, so none are cited), per
sample with label :math:`y` and :math:`C` classes, is

.. math::  \\ell_{boost} = \\frac{1}{C}\\Big(-w_1 \\log p_m(y) + w_2\\, q_{-m}(y) \\log p_m(y)\\Big),
           \\qquad q_{-m} = \\mathrm{softmax}(F_{-m}) \\text{ (no gradient)},

with :math:`w_1 = 5, w_2 = 1`, i.e. the cross-entropy weighted by :math:`w_1 - w_2 q_{-m}(y)`; in the first
stage no learner is in the ensemble yet and :math:`q_{-m} = 1/C`. The paper's *reconcilement* with the
historical learner (a KL-based regulariser, which the paper shows makes the update a step of Friedman's
gradient boosting) appears in the code as a *memory consolidation* term
:math:`\\alpha \\, \\mathrm{MSE}(\\mathrm{softmax} f_m, \\mathrm{softmax} f_{m'})` towards the learner of the
modality trained just before, :math:`\\alpha = 0.5`. In the released code both sides of it are detached, so
it trains nothing; here the current learner receives its gradient (``consolidation``; 0 gives the released
code's training exactly). Each stage ends with a **global rectification**: the whole ensemble (every learner
trained so far) trains with the cross-entropy of :math:`\\sum_k f_k`. The prediction is that ensemble.

:class:`ReconBoost` is the method, through the loop's epoch hooks (no copy of the loop): epochs are spent in
the order stage of modality 1 (``stage_epochs``), rectification (``rectify_epochs``), stage of modality 2,
rectification, ... (the original's 4 and 4). The learners share the ``shared_head`` model's head (the original
code's ``common_space``), so :math:`f_m` is the model's share ``s^m``. One difference from the released code
remains, a property of the one loop: there each stage and each rectification builds a fresh SGD optimiser (its
momentum restarts; weight decay 5e-4), here the run's one optimiser keeps its momentum across stages (and the
profile's weight decay).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..models import ModelOutput
from .base import Method, TrainState

__all__ = ["ReconBoost", "boosting_loss"]


def boosting_loss(learner_logits: torch.Tensor, ensemble_logits: torch.Tensor | None, labels: torch.Tensor,
                  boost_weight: float = 5.0, ensemble_weight: float = 1.0) -> torch.Tensor:
    """ReconBoost's loss of one modality's learner against the ensemble of the others (batch mean):
    :math:`\\frac1C(-w_1 + w_2 q(y)) \\log p(y)`, :math:`q = \\mathrm{softmax}` of ``ensemble_logits`` without
    gradient (``None``: an empty ensemble, :math:`q = 1/C`)."""
    classes = learner_logits.shape[-1]
    log_p = torch.log_softmax(learner_logits, dim=-1).gather(1, labels[:, None]).squeeze(1)
    if ensemble_logits is None:
        q = torch.full_like(log_p, 1.0 / classes)
    else:
        q = torch.softmax(ensemble_logits.detach(), dim=-1).gather(1, labels[:, None]).squeeze(1)
    return ((-boost_weight + ensemble_weight * q) * log_p).mean() / classes


class ReconBoost(Method):
    """ReconBoost: each modality's learner boosted in turn against the others, each stage followed by a
    global rectification of the ensemble."""

    name = "reconboost"
    fusion = "shared_head"

    def __init__(self, stage_epochs: int = 4, rectify_epochs: int = 4, boost_weight: float = 5.0,
                 ensemble_weight: float = 1.0, consolidation: float = 0.5):
        for option, value, least in (("stage_epochs", stage_epochs, 1), ("rectify_epochs", rectify_epochs, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{option} must be a whole number of epochs >= {least}, got {value!r}")
        if not consolidation >= 0:
            raise ValueError(f"consolidation must be >= 0, got {consolidation!r}")
        self.stage_epochs, self.rectify_epochs = stage_epochs, rectify_epochs
        self.boost_weight, self.ensemble_weight, self.consolidation = boost_weight, ensemble_weight, consolidation
        self._modalities: tuple[str, ...] = ()

    def setup(self, state: TrainState) -> None:
        self._modalities = tuple(state.model.modalities)
        cycle = len(self._modalities) * (self.stage_epochs + self.rectify_epochs)
        if state.num_epochs < cycle - self.rectify_epochs:
            raise ValueError(
                f"reconboost trains every modality in a stage of {self.stage_epochs} epochs, each followed by "
                f"{self.rectify_epochs} of rectification: {len(self._modalities)} modalities need at least "
                f"{cycle - self.rectify_epochs} epochs, this run has {state.num_epochs} (set stage_epochs=1, "
                "rectify_epochs=1 for a short run)")

    # -- the schedule: a function of the epoch alone, so a resumed run follows it without state ---------------
    def phase(self, epoch: int) -> tuple[int, str, bool]:
        """``(stage, modality, rectifying)`` of a (0-based) epoch."""
        per_stage = self.stage_epochs + self.rectify_epochs
        stage, within = divmod(epoch, per_stage)
        return stage, self._modalities[stage % len(self._modalities)], within >= self.stage_epochs

    def ensemble_members(self, epoch: int) -> list[str]:
        """The learners in the ensemble during ``epoch``: every modality whose stage has ended (the current one
        too while its stage's rectification runs)."""
        stage, modality, rectifying = self.phase(epoch)
        done = {self._modalities[s % len(self._modalities)] for s in range(stage)}
        if rectifying:
            done.add(modality)
        return [m for m in self._modalities if m in done]

    def on_epoch_start(self, state: TrainState) -> None:
        self._epoch = state.epoch

    def losses(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> dict[str, torch.Tensor]:
        stage, modality, rectifying = self.phase(state.epoch)
        members = self.ensemble_members(state.epoch)
        if rectifying:  # global rectification: the ensemble of every learner trained so far
            return {"multimodal": F.cross_entropy(torch.stack([output.shares[m] for m in members]).sum(0), labels)}
        others = [m for m in members if m != modality]
        ensemble = torch.stack([output.shares[m] for m in others]).sum(0) if others else None
        terms = {f"boosting/{modality}": boosting_loss(output.shares[modality], ensemble, labels,
                                                       self.boost_weight, self.ensemble_weight)}
        if self.consolidation > 0 and stage > 0:
            previous = self._modalities[(stage - 1) % len(self._modalities)]
            terms["consolidation"] = self.consolidation * F.mse_loss(
                torch.softmax(output.shares[modality], -1), torch.softmax(output.shares[previous], -1).detach())
        return terms

    def prediction(self, output: ModelOutput) -> torch.Tensor:
        """The ensemble: the sum of the learners trained by the end of the epoch being trained (every modality's
        once each has had a stage; every modality's outside training)."""
        epoch = getattr(self, "_epoch", None)
        members = (self.ensemble_members(epoch + 1) if epoch is not None else []) or list(output.shares)
        return torch.stack([output.shares[m] for m in members]).sum(0)

    def on_epoch_end(self, state: TrainState, evaluate) -> dict[str, float]:
        stage, modality, rectifying = self.phase(state.epoch)
        out = {"train/reconboost/stage": float(stage), "train/reconboost/rectifying": float(rectifying)}
        out.update({f"train/reconboost/boosting/{m}": float(m == modality and not rectifying) for m in self._modalities})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {}
