"""Sample-level modality valuation (Wei, Feng, Wang & Hu, CVPR 2024, "Enhancing Multimodal Cooperation via
Sample-level Modality Valuation"), chapter 5.

Where the other methods of the book measure a modality over a whole batch or split, this one asks, *for every
training sample*, how much each modality contributed to getting it right, and trains more on the samples where a
modality contributed little -- with that modality alone.

**The valuation.** For sample ``i`` the game ``v_i(S)`` says whether the model, with only the modalities in ``S``,
predicts its label: ``v_i(S) = 1[argmax f(z restricted to S) = y_i]``, and the empty coalition is never right,
``v_i({}) = 0``. Each modality's contribution is its Shapley value in that game,

    phi_i^m = sum_{S subset of M minus m} |S|! (|M| - |S| - 1)! / |M|!  [ v_i(S + m) - v_i(S) ],

so the contributions of a sample sum to ``v_i(M)``: 1 for a sample the model gets right, 0 otherwise
(:func:`mmlab.methods.shapley.shapley_values`). With two modalities ``phi^a = (v(a) + v(ab) - v(b)) / 2``, one of -1/2, 0, 1/2, 1.

**The re-sampling.** Each epoch after ``warmup_epochs``, every training sample is valued with the model as it is
(evaluation mode, the training split without augmentation), and for each modality ``m`` the epoch gains
:func:`resample_copies` copies of the sample that keep only ``m`` -- none where ``phi^m = 1``, one where
``phi^m > 0.4``, two where ``phi^m > -0.1``, three below. The copies train through the fused head, with the
other modalities' features set to zero; the originals train as in the joint loss. On CG-MNIST early in training the
colour alone gets every training digit right (``phi^colour = 1``: no copy) and gray adds nothing
(``phi^gray = 0``: two gray-only copies), so the epoch grows to about three times its size, two thirds of it gray.

Where this differs from its sources, by the book's choice or for want of a fact:

* The paper's equation numbers are not cited: the book could not check them. The rule is read from
  BalanceBenchmark's ``SampleTrainer`` (GeWu-Lab/BalanceBenchmark: ``Calculate_Shapley_Sample`` and
  ``create_dataset_sample_level``), whose thresholds 1, 0.4 and -0.1 are used here. There a value of exactly 0.4 or
  -0.1 gets no copy (its intervals are open at both ends); here the intervals are half-open, so the copies never
  increase with the contribution. With two modalities no contribution falls on a threshold.
* BalanceBenchmark removes a modality by zeroing its *input*; here its *features* are zeroed (as OPM drops them,
  chapter 3), in the valuation and in the copies alike. Under late fusion that removes exactly the modality's share
  of the logits, and no blank image passes through an encoder's BatchNorm in training mode.
* BalanceBenchmark caches each coalition's predictions in a dictionary that outlives its loop over batches, so every
  batch after the first is valued with the first batch's predictions; here every sample is valued by its own.
* The paper also proposes a *modality-level* variant (re-sample a share of the epoch by the modalities' mean
  contributions); it is an exercise of chapter 5.
"""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import torch

from ..models import MultimodalClassifier
from .base import Method, TrainState
from .shapley import shapley_values

#: ``resample_copies``' thresholds: no copy at a contribution of 1, one above 0.4, two above -0.1, three below
COPY_THRESHOLDS = (1.0, 0.4, -0.1)


@torch.no_grad()
def coalition_correct(model: MultimodalClassifier, features: Mapping[str, torch.Tensor], labels: torch.Tensor,
                      chunk: int = 8192) -> dict[frozenset, torch.Tensor]:
    """``v(S)`` for every subset ``S`` of the modalities, per sample: whether the fused head, given the features of
    ``S`` and zeros for the others, predicts the label (a ``[N]`` bool tensor); the empty coalition is never right.
    ``features``: every modality's ``[N, d]`` features (``state.features(split)``)."""
    names = list(model.modalities)
    was_training = model.training
    model.eval()
    try:
        values = {frozenset(): torch.zeros_like(labels, dtype=torch.bool)}
        for size in range(1, len(names) + 1):
            for coalition in itertools.combinations(names, size):
                right = []
                for start in range(0, len(labels), chunk):
                    part = {m: z[start:start + chunk] if m in coalition else torch.zeros_like(z[start:start + chunk])
                            for m, z in features.items()}
                    right.append(model.fusion(part).argmax(1) == labels[start:start + chunk])
                values[frozenset(coalition)] = torch.cat(right)
        return values
    finally:
        model.train(was_training)


def resample_copies(contribution: torch.Tensor, thresholds: Sequence[float] = COPY_THRESHOLDS) -> torch.Tensor:
    """How many copies of a sample keep only this modality: one more for each threshold its contribution does not
    exceed (0 at ``phi >= 1``, 1 for ``0.4 < phi < 1``, 2 for ``-0.1 < phi <= 0.4``, 3 below)."""
    top, *lower = thresholds
    copies = (contribution < top).long()
    for threshold in lower:
        copies = copies + (contribution <= threshold).long()
    return copies


class SampleValuation(Method):
    """Sample-level modality valuation: each epoch, every training sample's Shapley contribution per modality,
    and copies that keep only a modality where it contributed little (Wei et al., CVPR 2024; rule as in
    BalanceBenchmark's SampleTrainer)."""

    name = "sample_valuation"
    #: the epoch's samples are the model's own valuation: a stacked group would need one list per model
    stackable = False

    def __init__(self, warmup_epochs: int = 1):
        if not isinstance(warmup_epochs, int) or isinstance(warmup_epochs, bool) or warmup_epochs < 0:
            raise ValueError(f"sample_valuation's warmup_epochs must be a whole number of epochs >= 0, "
                             f"got {warmup_epochs!r}")
        self.warmup_epochs = warmup_epochs
        self.kept: torch.Tensor | None = None  # per entry of the epoch's samples: -1 all modalities, else the one kept
        self.names: list[str] = []

    def epoch_samples(self, state: TrainState) -> torch.Tensor | None:
        self.kept = None
        if state.epoch < self.warmup_epochs:
            return None
        features, labels = state.features("train")
        names = self.names = list(state.model.modalities)
        contributions = shapley_values(coalition_correct(state.model, features, labels), names)
        everyone = torch.arange(len(labels), device=labels.device)
        samples = [everyone]
        kept = [torch.full_like(everyone, -1)]
        for k, m in enumerate(names):
            copies = resample_copies(contributions[m])
            samples.append(torch.repeat_interleave(everyone, copies))
            kept.append(torch.full_like(samples[-1], k))
            state.log(f"train/valuation/contribution/{m}", contributions[m].mean())
            state.log(f"train/valuation/copies/{m}", copies.sum())
        self.kept = torch.cat(kept)
        state.log("train/valuation/epoch_size", len(self.kept))
        return torch.cat(samples)

    def intervene(self, features: dict[str, torch.Tensor], state: TrainState) -> dict[str, torch.Tensor]:
        if self.kept is None or state.batch_positions is None:
            return features
        kept = self.kept.index_select(0, state.batch_positions)
        return {m: features[m] * ((kept < 0) | (kept == k)).unsqueeze(1).to(features[m].dtype)
                for k, m in enumerate(self.names)}
