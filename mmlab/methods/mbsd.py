"""MBSD, modality-balanced self-distillation (after Liu et al., WSDM 2023, "Multimodal Pre-training with
Self-Distillation for Product Understanding in E-commerce"), chapter 6, beside UMT: on the samples where one modality
already knows the answer, pull the other modality's prediction towards it.

Every term is read from the logit shares of late fusion, ``s^m`` (each modality's unimodal prediction, as
BalanceBenchmark's ``Unimodality_Calculate`` computes them), with ``p^m = softmax(s^m)`` and ``p^m_y`` the probability of
the label. For a pair of modalities ``(a, b)`` and each sample,

    w   = |p^a_y - p^b_y|   if either modality predicts the label, else 0       (:func:`distillation_weights`)
    RS  = (1/C) sum_c (s^a_c - s^b_c)^2                                        (:func:`share_regression`)
    KL  = q (log q - p),  p = max(p^a_y, p^b_y),  q = min(p^a_y, p^b_y)          (:func:`label_kl_as_released`)

and the loss is ``CE(f, y) + sum_m CE(s^m, y) + mean_i w_i RS_i + mean_i w_i KL_i`` (with more modalities, the pair
terms averaged over the pairs).

Read from BalanceBenchmark's ``MBSDTrainer`` (GeWu-Lab/BalanceBenchmark); the seed tutorial (001) describes MBSD as
distilling the dominant modality's predicted distributions and representations into the weaker one, and the book could
not check the paper's text or its equation numbers. Two facts of that implementation the book keeps and names:

* its "KL" is ``F.kl_div(p, q)`` with a *probability* ``p`` where ``F.kl_div`` expects a log-probability, so the term is
  ``q (log q - p)``, not ``KL(q || p)``; :func:`label_kl_as_released` computes exactly that, and chapter 6 shows the
  difference;
* the weights ``w`` are not detached (they are assigned into a tensor element by element, which records the graph),
  so the loss also moves the two probabilities apart or together through ``w``; here ``detach_weights=False`` keeps
  that, and ``True`` is the reading in which ``w`` only weighs.

Its three-modality branch regresses the probabilities instead of the logits; here every pair regresses the logits, as
its two-modality branch does.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from ..models import ModelOutput
from .base import Method, TrainState


def distillation_weights(probs_a: torch.Tensor, probs_b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``|p^a_y - p^b_y|`` where either modality's arg-max is the label, 0 where both are wrong (``[B]``)."""
    right = (probs_a.argmax(1) == labels) | (probs_b.argmax(1) == labels)
    gap = (probs_a.gather(1, labels[:, None]) - probs_b.gather(1, labels[:, None])).abs().squeeze(1)
    return gap * right.to(gap.dtype)


def share_regression(share_a: torch.Tensor, share_b: torch.Tensor) -> torch.Tensor:
    """Each sample's mean squared difference of two modalities' logit shares (``[B]``)."""
    return (share_a - share_b).square().mean(1)


def label_kl_as_released(probs_a: torch.Tensor, probs_b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``q (log q - p)`` per sample, ``p``/``q`` the larger/smaller of the two label probabilities: what
    ``F.kl_div(p, q, reduction="none")`` returns, the released code's term (``[B]``)."""
    pa, pb = probs_a.gather(1, labels[:, None]).squeeze(1), probs_b.gather(1, labels[:, None]).squeeze(1)
    strong, weak = torch.maximum(pa, pb), torch.minimum(pa, pb)
    return F.kl_div(strong, weak, reduction="none")


class MBSD(Method):
    """MBSD: the fused and the shares' cross-entropies, plus a logit regression and a label-probability term between
    the modalities, weighted by their confidence gap where one of them is right (the rule as in BalanceBenchmark's
    MBSDTrainer)."""

    name = "mbsd"

    def __init__(self, detach_weights: bool = False):
        self.detach_weights = bool(detach_weights)

    def losses(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> dict[str, torch.Tensor]:
        terms = {"multimodal": F.cross_entropy(output.logits, labels)}
        shares = {m: s.float() for m, s in output.shares.items()}
        for m, share in shares.items():
            terms[f"share/{m}"] = F.cross_entropy(share, labels)
        probs = {m: torch.softmax(s, 1) for m, s in shares.items()}
        regression, kl = [], []
        for a, b in itertools.combinations(shares, 2):
            w = distillation_weights(probs[a], probs[b], labels)
            if self.detach_weights:
                w = w.detach()
            regression.append((w * share_regression(shares[a], shares[b])).mean())
            kl.append((w * label_kl_as_released(probs[a], probs[b], labels)).mean())
        terms["regression"] = torch.stack(regression).mean()
        terms["label_kl"] = torch.stack(kl).mean()
        return terms
