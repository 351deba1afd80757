"""MLA, Multimodal Learning with Alternating unimodal adaptation (chapter 6).

Zhang, Yoon, Bansal and Yao, *Multimodal Representation Learning by Alternating Unimodal Adaptation*
(CVPR 2024; the GeWu tutorial's [7], the survey's "alternating training"). The equations below are written
from the paper's description and its released code (CXianRen/MLA, ``GSPlugin``); the book's sources do
not carry the paper's equation numbers, so none are cited. MLA trains no joint loss: on every batch the modalities take turns, each with one optimiser
step of its own encoder and a head :math:`h` **shared** by all of them,

.. math::  L^m = \\mathrm{CE}\\big(y, h(z^m)\\big), \\qquad m = 1, \\dots, M \\text{ in turn},

so that no modality can be lazy behind another: each is trained alone, against the labels. Because the
head is shared, a later modality's step would overwrite what the earlier ones taught it; MLA's *gradient
modification* (after orthogonal weight modification, Zeng et al. 2019) keeps a projector
:math:`P` that is updated, before each step, from the mean feature :math:`\\bar z` of the step's batch
(:func:`projector_update`, the recursive least-squares form),

.. math::  k = P \\bar z, \\qquad P \\leftarrow P - \\frac{k k^\\top}{\\alpha + \\bar z^\\top k},
           \\qquad P \\leftarrow P / \\lVert P \\rVert_F ,

and the head's weight gradient is replaced by :math:`\\nabla_W L \\, P^\\top`: directions the earlier
features spanned are (nearly) left alone. :math:`\\alpha = 0.1^{1 + b/B}` for batch :math:`b` of an
epoch of :math:`B` (the original code's schedule); the projector starts as the identity and is first used
on the second step of the run; it acts on the weight, not the bias (as in the original code).

At test time the modalities' predictions are fused with weights from their prediction entropies
(:func:`entropy_fusion_weights`): a confident modality counts more, per sample.

:class:`MLA` is the method, through the loop's ``substeps`` hook (one optimiser step per modality on each
batch; no copy of the loop). The model is the ``shared_head`` one (:class:`~mmlab.models.fusion.SharedHeadFusion`):
each modality's share of the fused logits *is* its prediction through the shared head.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..errors import UnknownNameError
from ..models import ModelOutput
from .base import Method, TrainState

__all__ = ["MLA", "entropy_fusion_weights", "projector_update"]

PREDICTIONS = ("entropy", "sum")


def projector_update(projector: torch.Tensor, mean_feature: torch.Tensor, alpha: float,
                     normalise: bool = True) -> torch.Tensor:
    """One update of MLA's gradient projector from the batch's mean feature :math:`\\bar z` (``[d]``):
    :math:`P - k k^\\top / (\\alpha + \\bar z^\\top k)` with :math:`k = P \\bar z`, then divided by its
    Frobenius norm (``normalise``, the original code's).

    Without the normalisation the new :math:`P` maps :math:`\\bar z` to
    :math:`\\alpha / (\\alpha + \\bar z^\\top P \\bar z)` times the old :math:`P \\bar z` (nearly 0 for a small
    :math:`\\alpha`), and leaves every direction :math:`v` with :math:`P v \\perp \\bar z` as it was: a step
    ``W -= lr * grad @ P.T`` then barely changes the head's response :math:`W \\bar z`. A symmetric positive
    semi-definite :math:`P` stays so.
    """
    if not alpha > 0:
        raise ValueError(f"the projector's alpha must be positive, got {alpha!r}")
    r = mean_feature.reshape(-1, 1).to(projector.dtype)
    k = projector @ r
    updated = projector - (k @ k.T) / (alpha + (r.T @ k))
    updated = 0.5 * (updated + updated.T)  # symmetric in exact arithmetic; keep it so in floating point
    return updated / torch.linalg.matrix_norm(updated) if normalise else updated


def entropy_fusion_weights(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """MLA's test-time fusion weights: per sample, modality :math:`m`'s weight
    :math:`\\lambda^m = e^{-H^m} / \\sum_j e^{-H^j}`, with :math:`H^m = -\\sum_c p^m_c \\log p^m_c` the entropy of
    its predicted distribution (equivalently :math:`\\exp(\\max_j H^j - H^m)` normalised, the paper's form).

    Returns ``[M, N]``: non-negative, summing to 1 over the modalities; equal weights for equal entropies.
    """
    log_p = torch.stack([torch.log_softmax(z.float(), dim=-1) for z in logits])  # [M, N, C]
    entropy = -(log_p.exp() * log_p).sum(-1)  # [M, N]
    return torch.softmax(-entropy, dim=0)


class MLA(Method):
    """MLA: the modalities trained in turn through one shared head, its gradient projected."""

    name = "mla"
    fusion = "shared_head"

    def __init__(self, projection: bool = True, prediction: str = "entropy"):
        if prediction not in PREDICTIONS:
            raise UnknownNameError("mla prediction", prediction, PREDICTIONS)
        self.projection, self.prediction_rule = projection, prediction
        self.projector: torch.Tensor | None = None  # P, [d, d]; set by setup
        self.projected_steps = 0  # optimiser steps taken so far (the first is not projected)

    def setup(self, state: TrainState) -> None:
        weight = state.model.fusion.linear.weight
        self.projector = torch.eye(weight.shape[1], device=weight.device, dtype=weight.dtype)

    def substeps(self, state: TrainState) -> Sequence[str]:
        """One optimiser step per modality, in the dataset's order."""
        return state.model.modalities

    def losses(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> dict[str, torch.Tensor]:
        m = state.substep
        return {f"unimodal/{m}": F.cross_entropy(output.shares[m], labels)}  # shares[m] = h(z^m)

    def transform_gradients(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> None:
        """Update the projector from this step's mean feature, then project the shared head's weight gradient
        (from the run's second step on, as the original code)."""
        if self.projection and self.projected_steps > 0:
            batch = state.step % state.steps_per_epoch
            alpha = 0.1 ** (1 + batch / state.steps_per_epoch)
            mean_feature = output.features[state.substep].detach().float().mean(0)
            self.projector = projector_update(self.projector, mean_feature, alpha)
            weight = state.model.fusion.linear.weight
            weight.grad = weight.grad @ self.projector.T.to(weight.grad.dtype)
            state.log("train/mla/projector_effective_rank", self.effective_rank())
        self.projected_steps += 1

    def effective_rank(self) -> torch.Tensor:
        """:math:`(\\mathrm{tr} P)^2 / \\lVert P \\rVert_F^2`: the number of directions the projector still lets
        through (``d`` for the identity, 1 for a rank-one projector)."""
        p = self.projector
        return torch.trace(p) ** 2 / (p * p).sum()

    def prediction(self, output: ModelOutput) -> torch.Tensor:
        """The entropy-weighted fusion of the modalities' predicted distributions (as log-probabilities), or
        the sum of the shared head's logits (``prediction="sum"``, the alternative the chapter compares)."""
        if self.prediction_rule == "sum":
            return output.logits
        shares = [output.shares[m] for m in output.shares]
        weights = entropy_fusion_weights(shares)  # [M, N]
        probabilities = torch.stack([torch.softmax(z.float(), dim=-1) for z in shares])  # [M, N, C]
        return torch.log((weights.unsqueeze(-1) * probabilities).sum(0).clamp_min(1e-12))

    def state_dict(self) -> dict[str, Any]:
        return {"projector": self.projector.clone(), "projected_steps": self.projected_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.projector = state["projector"].to(self.projector.device)
        self.projected_steps = state["projected_steps"]
