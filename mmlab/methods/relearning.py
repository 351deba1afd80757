"""Diagnosing & Re-learning (chapter 6).

Wei, Li, Feng and Hu, *Diagnosing and Re-learning for Balanced Multimodal Learning* (ECCV 2024; the
survey's "diagnosing and re-learning", the GeWu tutorial's [21]). Balancing methods push every modality
alike, but a scarcely informative modality pushed hard learns noise. D&R instead **diagnoses** each
modality's learning state from how separable its unimodal representation is, and **re-learns**: every few
epochs each encoder is moved part of the way back to its initialisation, the further the better it has
(over-)learnt. The equations below are written from the paper's description and BalanceBenchmark's trainer
(``ReLearning_trainer.py``, a fact to learn from); the book's sources carry no equation numbers.

* **Diagnosis.** The encoder's features of the training set and of the validation set, each scaled per
  dimension to [-1, 1], are clustered by k-means into as many clusters as classes (:func:`kmeans`); the
  *purity* of a clustering is the share of samples whose cluster's majority label is their own
  (:func:`cluster_purity`). A modality whose training purity is far above its validation purity has fitted
  the training set beyond what generalises.
* **Re-learning strength** (:func:`relearning_strengths`):
  :math:`\\alpha^m = \\tanh\\big(\\lambda \\, |P^m_{train} - P^m_{val}|\\big)`.
* **Soft re-initialisation** (:func:`~mmlab.methods.base.reinitialize_toward`):
  :math:`\\theta^m \\leftarrow (1 - \\alpha^m)\\,\\theta^m + \\alpha^m \\theta^m_0`, with :math:`\\theta^m_0` the
  encoder's initial parameters (the heads and the optimiser's state are left as they are).

Between re-learnings the model trains with the joint loss. :class:`DiagnoseRelearn` is the method, through
the loop's epoch hook and :attr:`~mmlab.methods.TrainState.features` (no copy of the loop). The clustering
draws its initial centres from the run's own generator, so a resumed run diagnoses as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import Method, TrainState, reinitialize_toward

__all__ = ["DiagnoseRelearn", "cluster_purity", "kmeans", "relearning_strengths", "scale_features"]


def scale_features(x: torch.Tensor) -> torch.Tensor:
    """Each dimension mapped linearly onto [-1, 1] (a constant dimension onto 0)."""
    low, high = x.min(0).values, x.max(0).values
    span = (high - low).clamp_min(1e-12)
    return torch.where(high > low, 2 * (x - low) / span - 1, torch.zeros_like(x))


def kmeans(x: torch.Tensor, clusters: int, iterations: int = 30,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Lloyd's k-means with k-means++ initial centres: the cluster (``0..clusters-1``) of each row of
    ``x`` (``[N, d]``). Stops when no assignment changes; an emptied cluster keeps its centre."""
    n = len(x)
    if not 1 <= clusters <= n:
        raise ValueError(f"k-means of {n} points into {clusters} clusters")
    x = x.float()
    first = torch.randint(n, (1,), generator=generator, device=x.device)
    centres = [x[first]]
    nearest = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, clusters):  # k-means++: the next centre far from the chosen ones
        weights = nearest if nearest.sum() > 0 else torch.ones_like(nearest)
        pick = torch.multinomial(weights, 1, generator=generator)
        centres.append(x[pick])
        nearest = torch.minimum(nearest, ((x - x[pick]) ** 2).sum(1))
    centres = torch.cat(centres)
    assignment = torch.cdist(x, centres).argmin(1)
    for _ in range(iterations):
        counts = torch.bincount(assignment, minlength=clusters).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assignment, x)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
        updated = torch.cdist(x, centres).argmin(1)
        if torch.equal(updated, assignment):
            break
        assignment = updated
    return assignment


def cluster_purity(assignment: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of samples whose cluster's most common label is their own: 1 for clusters that are the
    classes, about the largest class's share for clusters that ignore them. Unchanged by renaming clusters."""
    clusters, classes = int(assignment.max()) + 1, int(labels.max()) + 1
    table = torch.bincount(assignment * classes + labels, minlength=clusters * classes).reshape(clusters, classes)
    return float(table.max(1).values.sum()) / len(labels)


def relearning_strengths(train_purity: dict[str, float], val_purity: dict[str, float],
                         scale: float) -> dict[str, float]:
    """:math:`\\alpha^m = \\tanh(\\lambda |P^m_{train} - P^m_{val}|)` per modality, in [0, 1)."""
    return {m: math.tanh(scale * abs(train_purity[m] - val_purity[m])) for m in train_purity}


class DiagnoseRelearn(Method):
    """Diagnosing & Re-learning: the joint loss, and every few epochs each encoder softly re-initialised
    by how far its training-set clustering purity exceeds its validation purity."""

    name = "relearning"

    def __init__(self, relearn_every: int = 10, relearn_limit: int = 5, strength_scale: float = 2.0,
                 diagnosis_samples: int = 5000):
        for option, value in (("relearn_every", relearn_every), ("relearn_limit", relearn_limit),
                              ("diagnosis_samples", diagnosis_samples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{option} must be a whole number >= 1, got {value!r}")
        if not strength_scale >= 0:
            raise ValueError(f"strength_scale (lambda) must be >= 0, got {strength_scale!r}")
        self.relearn_every, self.relearn_limit = relearn_every, relearn_limit
        self.strength_scale, self.diagnosis_samples = strength_scale, diagnosis_samples
        self.relearned = 0  # re-learnings so far
        self.initial: dict[str, list[torch.Tensor]] = {}

    def setup(self, state: TrainState) -> None:
        # called before a resume loads the checkpoint: these are the run's initial parameters
        self.initial = {m: [p.detach().clone() for p in ps] for m, ps in state.groups.encoders.items()}

    def diagnose(self, state: TrainState) -> dict[str, dict[str, float]]:
        """Each modality's clustering purity on (a seeded subset of) the training set and on the
        validation set."""
        purity: dict[str, dict[str, float]] = {}
        for split in ("train", "val"):
            features, labels = state.features(split)
            if len(labels) > self.diagnosis_samples:
                keep = torch.randperm(len(labels), generator=state.generator, device=labels.device)
                keep = keep[:self.diagnosis_samples]
                features, labels = {m: z[keep] for m, z in features.items()}, labels[keep]
            # as many clusters as classes (fewer for a split with fewer samples, where purity means little)
            clusters = min(int(labels.max()) + 1, len(labels))
            purity[split] = {m: cluster_purity(kmeans(scale_features(z), clusters, generator=state.generator), labels)
                             for m, z in features.items()}
        return purity

    def on_epoch_end(self, state: TrainState, evaluate) -> dict[str, float]:
        epoch = state.epoch + 1
        due = epoch % self.relearn_every == 0 and epoch < state.num_epochs and self.relearned < self.relearn_limit
        if not due:
            return {f"train/relearning/strength/{m}": 0.0 for m in self.initial}
        purity = self.diagnose(state)
        strengths = relearning_strengths(purity["train"], purity["val"], self.strength_scale)
        for m, strength in strengths.items():
            reinitialize_toward(state.groups.encoders[m], self.initial[m], strength)
        self.relearned += 1
        out = {f"train/relearning/strength/{m}": s for m, s in strengths.items()}
        for split, by_modality in purity.items():
            out.update({f"{split}/relearning/purity/{m}": p for m, p in by_modality.items()})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"relearned": self.relearned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.relearned = state["relearned"]
