"""Measures of modality imbalance from the greedy-learner analysis (chapter 2).

Wu, Jastrzebski, Cho & Geras, "Characterizing and overcoming the greedy nature
of learning in multi-modal deep neural networks" (ICML 2022), Secs. 3-4:

* conditional utilization rate ``u(m1|m0) = (A(m0, m1) - A(m0)) / A(m0, m1)``:
  the share of the two-modality model's accuracy owed to ``m1`` given ``m0``,
  where ``A(m0)`` is the accuracy with ``m1``'s input replaced by its average;
  the utilization imbalance is ``d_util = u(m1|m0) - u(m0|m1)``;
* conditional learning speed, from ``mu = ||grad theta||^2 / ||theta||^2`` per
  branch: ``BDR_k = log10(sum mu_bypass / sum mu_main)``, and the speed
  imbalance ``d_speed = BDR_0 - BDR_1``.

For a late-fusion model, "replace ``m1``'s input by its average" means replacing
its features ``z^{m1}`` by their mean over the training set (the model's own
fusion then applies), which is what :func:`accuracy_without` does.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch

from .models import MultimodalClassifier
from .training.batches import ResidentBatches


def conditional_utilization_rate(acc_both: float, acc_without: float) -> float:
    """``u(m1|m0) = (A(m0, m1) - A(m0)) / A(m0, m1)``; ``acc_without`` is ``A(m0)``."""
    if acc_both <= 0:
        raise ValueError("the accuracy with both modalities must be positive")
    return (acc_both - acc_without) / acc_both


def utilization_imbalance(u_1_given_0: float, u_0_given_1: float) -> float:
    """``d_util = u(m1|m0) - u(m0|m1)``: positive when ``m1`` is used more."""
    return u_1_given_0 - u_0_given_1


def learning_speed(params: Iterable[torch.nn.Parameter]) -> float:
    """``mu = sum ||grad||^2 / sum ||theta||^2`` over a branch's parameters (after a backward pass)."""
    params = [p for p in params if p.grad is not None]
    grad_sq = sum(float(p.grad.detach().pow(2).sum()) for p in params)
    param_sq = sum(float(p.detach().pow(2).sum()) for p in params)
    return grad_sq / param_sq if param_sq > 0 else math.nan


def branch_dominance_ratio(mu_bypass: Iterable[float], mu_main: Iterable[float]) -> float:
    """``BDR = log10(sum mu_bypass / sum mu_main)``."""
    return math.log10(sum(mu_bypass) / sum(mu_main))


def speed_imbalance(bdr_0: float, bdr_1: float) -> float:
    """``d_speed = BDR_0 - BDR_1``."""
    return bdr_0 - bdr_1


@torch.no_grad()
def mean_features(model: MultimodalClassifier, batches: ResidentBatches) -> dict[str, torch.Tensor]:
    """Each modality's average feature vector over ``batches`` (eval mode)."""
    was_training = model.training
    model.eval()
    sums, count = {}, 0
    for inputs, _ in batches.epoch():
        for m, enc in model.encoders.items():
            z = enc(inputs[m]).sum(0)
            sums[m] = sums[m] + z if m in sums else z
        count += len(next(iter(inputs.values())))
    model.train(was_training)
    return {m: s / count for m, s in sums.items()}


@torch.no_grad()
def accuracy_without(model: MultimodalClassifier, batches: ResidentBatches,
                     replaced: Mapping[str, torch.Tensor]) -> float:
    """Accuracy of the fused prediction with the features of the modalities in
    ``replaced`` set to the given vectors (e.g. their training means)."""
    was_training = model.training
    model.eval()

    def substitute(features):
        return {m: (replaced[m].expand_as(z) if m in replaced else z) for m, z in features.items()}

    correct = total = 0
    for inputs, labels in batches.epoch():
        out = model(inputs, intervene=substitute)
        correct += int((out.logits.argmax(1) == labels).sum())
        total += len(labels)
    model.train(was_training)
    return correct / total


def utilization_rates(model: MultimodalClassifier, train_batches: ResidentBatches,
                      eval_batches: ResidentBatches) -> dict[str, float]:
    """``u(m | the others)`` for each modality ``m`` on ``eval_batches``, with ``m``'s
    features replaced by their mean over ``train_batches``."""
    means = mean_features(model, train_batches)
    both = accuracy_without(model, eval_batches, {})
    return {m: conditional_utilization_rate(both, accuracy_without(model, eval_batches, {m: means[m]}))
            for m in model.modalities}
