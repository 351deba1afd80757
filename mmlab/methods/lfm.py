"""LFM (after Yang, Wan, Jiang & Xu, NeurIPS 2024, "Facilitating Multimodal Classification via Dynamically Learning
Modality Gap"), chapter 4, as BalanceBenchmark's ``LFMTrainer`` implements it: the fused cross-entropy traded against
an alignment of the modalities' predictions, with the trade-off learned once per epoch.

The loss of a step is

    L = 2 (alpha_0 CE(f, y) + alpha_1 A),   A = mean over pairs (a, b) of  1/2 [KL(m || p^a) + KL(m || p^b)],

``p^m = softmax(s^m)`` on late fusion's logit shares and ``m = (p^a + p^b) / 2`` (:func:`alignment_as_released`). Before
each epoch, ``alpha_1`` takes one step of a meta-gradient measured on a few validation samples,

    alpha_1 <- clip(alpha_1 - eta * mean(H_total g_cls), 0.05, 0.95),   alpha_0 = 1 - alpha_1,

where ``g_cls`` is the classification loss's gradient and ``H_total`` the Hessian of ``alpha_0 CE + alpha_1 A``, both with
respect to one parameter tensor; ``eta`` halves every 20 epochs, and ``alpha_1`` starts at 0.05
(:func:`alpha_meta_gradient`).

Read from BalanceBenchmark (GeWu-Lab/BalanceBenchmark); the tutorial (seed 001) describes LFM as adding contrastive
losses per modality, which that trainer does not have, and the book could not check the paper's text or its equation
numbers. What the book keeps and names, and where it chooses:

* The alignment is written as released: ``F.kl_div(p.log(), m)`` is ``KL(m || p)``, so ``A`` is *not* the
  Jensen-Shannon divergence ``1/2 [KL(p || m) + KL(q || m)]`` (UDI's, chapter 6); it is symmetric and zero only for
  equal predictions, but not bounded by ``log 2``.
* The released code measures the meta-gradient on the *first* tensor of ``model.parameters()`` (an encoder's first
  convolution there) with the model in training mode, on a quarter of the first validation batch; here it is measured
  on the fused head's weight -- the one tensor every term reaches -- from the validation features in evaluation mode,
  on the first ``alpha_samples`` (16: a quarter of a batch of 64) validation samples.
* ``eta`` is 1e-4, the default of the released function (its configuration's value could not be found).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F

from ..models import ModelOutput
from .base import Method, TrainState


def alignment_as_released(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """``1/2 [KL(m || p) + KL(m || q)]`` (batch mean) for ``p, q`` the two softmaxes and ``m`` their mixture: what
    ``F.kl_div(p.log(), m)`` computes, the released code's "JS" score. ``log p`` is taken as ``log_softmax``: the
    released ``p.log()`` is infinite where a probability underflows (a CG-MNIST smoke run met it by step 33)."""
    log_p, log_q = torch.log_softmax(logits_a.float(), 1), torch.log_softmax(logits_b.float(), 1)
    m = 0.5 * (log_p.exp() + log_q.exp())
    return 0.5 * (F.kl_div(log_p, m, reduction="batchmean") + F.kl_div(log_q, m, reduction="batchmean"))


def prediction_alignment(shares: dict[str, torch.Tensor]) -> torch.Tensor:
    """The alignment averaged over every pair of modalities."""
    pairs = list(itertools.combinations(shares, 2))
    return torch.stack([alignment_as_released(shares[a], shares[b]) for a, b in pairs]).mean()


def alpha_meta_gradient(classification: torch.Tensor, total: torch.Tensor, parameter: torch.Tensor) -> float:
    """``mean(H_total g_cls)`` for one parameter tensor: the Hessian of ``total`` applied to the gradient of
    ``classification`` (both built with a graph), averaged over the tensor's entries."""
    (g_total,) = torch.autograd.grad(total, parameter, create_graph=True)
    (g_cls,) = torch.autograd.grad(classification, parameter, retain_graph=True)
    (hvp,) = torch.autograd.grad(g_total, parameter, grad_outputs=g_cls)
    return float(hvp.mean())


class LFM(Method):
    """LFM: the fused loss traded against the modalities' prediction alignment, the trade-off learned each epoch
    from a validation meta-gradient (after Yang et al., NeurIPS 2024; the rule as in BalanceBenchmark's LFMTrainer)."""

    name = "lfm"
    capturable = False  # alpha changes on the host once per epoch

    def __init__(self, alpha_lr: float = 1e-4, alpha_samples: int = 16, initial_alignment_weight: float = 0.05):
        if not alpha_lr >= 0:
            raise ValueError(f"LFM's alpha_lr must be >= 0, got {alpha_lr!r}")
        if not isinstance(alpha_samples, int) or isinstance(alpha_samples, bool) or alpha_samples < 2:
            raise ValueError(f"LFM's alpha_samples must be a whole number >= 2, got {alpha_samples!r}")
        if not 0.05 <= initial_alignment_weight <= 0.95:
            raise ValueError(f"LFM's initial_alignment_weight must be in [0.05, 0.95], got {initial_alignment_weight!r}")
        self.alpha_lr, self.alpha_samples = float(alpha_lr), alpha_samples
        self.alignment_weight = float(initial_alignment_weight)

    def on_epoch_start(self, state: TrainState) -> None:
        if state.epoch % 20 == 0 and state.epoch != 0:
            self.alpha_lr /= 2
        features, labels = state.features("val")
        features = {m: z[:self.alpha_samples] for m, z in features.items()}
        labels = labels[:self.alpha_samples]
        fusion = state.model.fusion
        with torch.enable_grad():
            classification = F.cross_entropy(fusion(features), labels)
            alignment = prediction_alignment(fusion.modality_shares(features))
            total = (1 - self.alignment_weight) * classification + self.alignment_weight * alignment
            gradient = alpha_meta_gradient(classification, total, fusion.linear.weight)
        self.alignment_weight = min(0.95, max(0.05, self.alignment_weight - self.alpha_lr * gradient))

    def losses(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> dict[str, torch.Tensor]:
        return {"multimodal": F.cross_entropy(output.logits, labels), "alignment": prediction_alignment(output.shares)}

    def total_loss(self, losses: dict[str, torch.Tensor], state: TrainState) -> torch.Tensor:
        state.log("train/lfm/alignment_weight", self.alignment_weight)
        return 2 * ((1 - self.alignment_weight) * losses["multimodal"] + self.alignment_weight * losses["alignment"])

    def state_dict(self) -> dict[str, Any]:
        return {"alignment_weight": self.alignment_weight, "alpha_lr": self.alpha_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alignment_weight, self.alpha_lr = state["alignment_weight"], state["alpha_lr"]
