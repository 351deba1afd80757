"""Prototypical Modal Rebalance (chapter 3, *On-the-fly gradient modulation*).

PMR (Fan et al., CVPR 2023) measures each modality by how well its *own* features classify, with
no help from the fused head: by their distance to class prototypes. For modality ``m`` with
features ``z^m_i`` and prototypes ``c^m_k`` (the mean feature of class ``k``):

* prototype logits ``-||z^m_i - c^m_k||`` (Euclidean distance), whose cross-entropy is the
  *prototypical cross-entropy* ``L_PCE^m``;
* score ``s_m = sum_i softmax_k(-||z^m_i - c^m_k||)[y_i]``, ratio ``rho_m = s_m / s_other``
  (for more modalities, over the mean of the others: OGM-GE's :func:`~mmlab.methods.ogm.discrepancy_ratios`);
* loss ``L = L_CE(fused) + sum_m coefficient_m L_PCE^m`` with ``coefficient_m = alpha`` for the
  slower modality (``rho_m < 1``) and 0 for the others: the PCE term pulls only the slow encoder's
  features toward its class prototypes, so that modality learns faster without touching the
  dominant one.

As the authors' public code does it (``main_Prototype_grad.py``): the switch is a step (``alpha``
for the slower modality, 0 for the others); the prototypes are detached, recomputed after each epoch and blended
with the previous ones, ``c <- (1 - momentum) c_new + momentum c_old`` with momentum 0.2. The paper
also describes an entropy regularisation of the dominant modality early in training (PER); that
script does not apply it and neither does this method.

One difference, on purpose: the original recomputes ``c_new`` in a separate pass over a tenth of a
loader -- on CG-MNIST the *test* loader. Here ``c_new`` is the class mean of the training features
the epoch has already computed (no extra pass, no test data). In the first epoch, before any
prototype exists, the prototypes are the class means of the training features seen so far in it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..models import ModelOutput
from .base import Method, TrainState
from .ogm import discrepancy_ratios


def prototype_logits(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``-||z_i - c_k||``: minus the Euclidean distance of each sample to each class prototype
    (``(batch, classes)``; the original loops over both in Python). The differences are formed
    explicitly: ``torch.cdist``'s matrix-product shortcut loses precision for a feature close to its
    prototype, where the gradient matters. Half-precision features are measured in float32."""
    dtype = torch.promote_types(features.dtype, torch.float32)
    differences = features.to(dtype)[:, None, :] - prototypes.to(dtype)[None, :, :]
    return -torch.linalg.vector_norm(differences, dim=-1)


def prototype_scores(logits: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """``s_m``: the batch sum of the softmax of the prototype logits at the true class."""
    return {m: F.softmax(lg.detach(), dim=1).gather(1, labels[:, None]).sum() for m, lg in logits.items()}


def class_means(sums: torch.Tensor, counts: torch.Tensor, fallback: torch.Tensor | None = None) -> torch.Tensor:
    """Per-class mean features from their sums and counts; a class with no sample keeps its
    ``fallback`` row (its previous prototype), or the zero vector without one."""
    means = sums / counts.clamp_min(1)[:, None]
    empty = counts == 0
    if empty.any():
        means[empty] = 0 if fallback is None else fallback[empty].to(means.dtype)
    return means


class PMR(Method):
    """PMR: a prototypical cross-entropy on the slower modality's features (Fan et al. 2023)."""

    name = "pmr"

    def __init__(self, alpha: float = 1.0, momentum: float = 0.2, window_start: int = 0,
                 window_end: int = 100):
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        if window_end < window_start:
            raise ValueError("window_end must not be before window_start")
        self.alpha, self.momentum, self.window = alpha, momentum, (window_start, window_end)
        self.prototypes: dict[str, torch.Tensor] | None = None  # per modality, (classes, feature dim)
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, torch.Tensor] = {}

    def on_epoch_start(self, state: TrainState) -> None:
        self._sums, self._counts = {}, {}

    def _accumulate(self, features: dict[str, torch.Tensor], labels: torch.Tensor, num_classes: int) -> None:
        for m, z in features.items():
            z = z.detach().to(torch.promote_types(z.dtype, torch.float32))  # as prototype_logits measures
            one_hot = F.one_hot(labels, num_classes).to(z.dtype)
            if m not in self._sums:
                self._sums[m] = torch.zeros(num_classes, z.shape[1], device=z.device, dtype=z.dtype)
                self._counts[m] = torch.zeros(num_classes, device=z.device, dtype=z.dtype)
            self._sums[m] += one_hot.T @ z
            self._counts[m] += one_hot.sum(0)

    def current_prototypes(self) -> dict[str, torch.Tensor]:
        """The prototypes the PCE term uses now (the running means during the first epoch)."""
        if self.prototypes is not None:
            return self.prototypes
        return {m: class_means(self._sums[m], self._counts[m]) for m in self._sums}

    def losses(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> dict[str, torch.Tensor]:
        num_classes = output.logits.shape[1]
        self._accumulate(output.features, labels, num_classes)
        prototypes = self.current_prototypes()
        logits = {m: prototype_logits(z, prototypes[m]) for m, z in output.features.items()}
        rho = discrepancy_ratios(prototype_scores(logits, labels))
        terms = {"multimodal": F.cross_entropy(output.logits, labels)}
        active = self.window[0] <= state.epoch < self.window[1]
        for m, lg in logits.items():
            coefficient = torch.where(rho[m] < 1, self.alpha, 0.0) if active else torch.zeros(())
            state.log(f"train/pmr_rho/{m}", rho[m])
            state.log(f"train/pmr_coefficient/{m}", coefficient)
            terms[f"prototype/{m}"] = coefficient * F.cross_entropy(lg, labels)
        return terms

    def on_epoch_end(self, state: TrainState, evaluate) -> dict[str, float]:
        old = self.prototypes
        new = {m: class_means(self._sums[m], self._counts[m], None if old is None else old[m])
               for m in self._sums}
        if old is not None:
            new = {m: (1 - self.momentum) * new[m] + self.momentum * old[m] for m in new}
        self.prototypes = new
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"prototypes": None if self.prototypes is None else {m: c.clone() for m, c in self.prototypes.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prototypes = state.get("prototypes")
