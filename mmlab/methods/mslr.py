"""MSLR, modality-specific learning rates (Yao & Mihalcea, Findings of ACL 2022, pp. 1824-1834; chapter 2, beside
MILES).

An additive late-fusion model predicts with the sum of its modalities' logits, ``z = sum_m s^m`` (chapter 3's view
of concatenation fusion), and trains on the fused cross-entropy alone, as the joint loss does. The paper's
observation: the best unimodal models of different modalities train best at very different learning rates, so one
global rate for the fused model leaves some modality under-trained (its gradient all but vanishes at the rate the
others need). MSLR gives each modality's encoder a rate of its own; every other parameter keeps the base rate ``eta``:

* ``keep`` -- each encoder trains at the rate its modality's best unimodal model was found with,
  ``eta^m = c_m * eta`` for the whole run (``learning_rate_scales``: ``c_m``, found by
  :func:`unimodal_learning_rate_scales` from unimodal runs at several rates);
* ``dynamic`` -- the same start, then every ``N`` epochs (``history_length``) each encoder's rate is multiplied by its
  modality's last accuracy over the mean of its last ``N``,
  ``eta^m <- eta^m * A_e(m) / ((1/N) sum_{k=e-N+1..e} A_k(m))`` (:func:`dynamic_rate_ratio`): a modality still
  improving trains faster, one that stalls or declines slower. ``A(m)`` is the accuracy of modality ``m``'s share
  ``s^m`` of the fused logits, the unimodal prediction of an additive late fusion, on the split ``measured_on``.

How the book reads MSLR. The paper's text was not available to the book. Its abstract says what the paragraph above
says up to the two bullets: late-fusion models built from fine-tuned unimodal models, modality-specific learning rates,
and three strategies to assign them. The bullets are one public re-implementation's reading of two of them (its
"keep" and "dynamic"; it adjusts every 5 epochs, the default here); the survey (seed 000) names the three, and the
third, "smooth", is described by none of the book's sources, so it is not offered. Two choices are the book's: the
encoders start from scratch here (the paper builds the fused model from fine-tuned unimodal models: chapter 6's
pre-training then fine-tuning is that step), and ``measured_on`` is the validation split by default. No equation
numbers are cited.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import UnknownNameError
from .base import TrainState
from .baselines import JointLoss

STRATEGIES = ("keep", "dynamic")
SPLITS = ("val", "train")


def unimodal_learning_rate_scales(validation_accuracy: Mapping[str, Mapping[float, float]]) -> dict[str, float]:
    """``keep``'s scales: for each modality, the learning-rate scale at which its unimodal model reached the best
    validation accuracy (``{modality: {scale: accuracy}}``; of equal accuracies, the smaller scale)."""
    scales = {}
    for modality, by_scale in validation_accuracy.items():
        if not by_scale:
            raise ValueError(f"no unimodal run of {modality!r} to choose its learning rate from")
        scales[modality] = min(by_scale, key=lambda scale: (-by_scale[scale], scale))
    return scales


def dynamic_rate_ratio(accuracies: Sequence[float]) -> float:
    """``dynamic``'s factor for one encoder's rate: the last of a modality's recent accuracies over their mean
    (above 1 while it improves, below 1 when it declines, 1 for a flat history or a mean of 0)."""
    mean = sum(accuracies) / len(accuracies)
    return accuracies[-1] / mean if mean > 0 else 1.0


class MSLR(JointLoss):
    """MSLR: the joint loss with a learning rate per modality's encoder, kept or adapted from each modality's recent
    accuracies (Yao & Mihalcea, Findings of ACL 2022; the strategies as the book reads them, see the module)."""

    name = "mslr"
    per_modality_learning_rates = True  # one optimiser group per encoder (mmlab.methods.base)
    capturable = False  # the rates change between epochs, a host decision
    stackable = False  # each run's rates are its own; its runs train one after another

    def __init__(self, strategy: str = "dynamic", learning_rate_scales: Mapping[str, float] | None = None,
                 history_length: int = 5, measured_on: str = "val"):
        if strategy == "smooth":
            raise ValueError("MSLR's 'smooth' strategy is named by the paper, but none of the book's sources "
                             f"describes it; choose one of {list(STRATEGIES)}")
        if strategy not in STRATEGIES:
            raise UnknownNameError("MSLR strategy", strategy, STRATEGIES)
        scales = dict(learning_rate_scales or {})
        for m, c in scales.items():
            if not (isinstance(c, numbers.Real) and not isinstance(c, bool) and math.isfinite(c) and c >= 0):
                raise ValueError(f"MSLR's learning_rate_scales must map modalities to finite numbers >= 0, got "
                                 f"{m!r}: {c!r}")
        if isinstance(history_length, bool) or not isinstance(history_length, int) or history_length < 2:
            raise ValueError(f"MSLR's history_length must be an integer >= 2 (the last accuracy against the mean "
                             f"of the last N), got {history_length!r}")
        if measured_on not in SPLITS:
            raise ValueError(f"MSLR's measured_on must be one of {list(SPLITS)}, got {measured_on!r}")
        self.strategy, self.history_length, self.measured_on = strategy, history_length, measured_on
        self.learning_rate_scales = {m: float(c) for m, c in scales.items()}
        self.base_lr: float | None = None
        self.accuracies: dict[str, list[float]] = {}  # per modality, the last history_length accuracies

    def modalities(self, available: Sequence[str]) -> list[str]:
        """Every modality of the dataset; a scale for one it does not have is named here, before any data loads."""
        for m in self.learning_rate_scales:
            if m not in available:
                raise UnknownNameError("modality", m, available, source="MSLR's learning_rate_scales")
        return list(available)

    def setup(self, state: TrainState) -> None:
        modalities = list(state.groups.encoders)
        self.base_lr = state.param_group("shared")["lr"]
        for m in modalities:  # a resumed run's rates come back with the optimiser's state, after this
            state.param_group(f"encoder/{m}")["lr"] = self.base_lr * self.learning_rate_scales.get(m, 1.0)
        self.accuracies = {m: [] for m in modalities}

    def on_epoch_end(self, state: TrainState, evaluate) -> dict[str, float]:
        logs: dict[str, Any] = {}
        metrics = evaluate(self.measured_on) if self.strategy == "dynamic" else {}
        for m, history in self.accuracies.items():
            group = state.param_group(f"encoder/{m}")
            logs[f"train/mslr_learning_rate_scale/{m}"] = group["lr"] / self.base_lr  # what this epoch trained with
            if self.strategy == "dynamic":
                history.append(metrics[f"{self.measured_on}/share_acc/{m}"])
                del history[:-self.history_length]
                if (state.epoch + 1) % self.history_length == 0:  # every N epochs done
                    group["lr"] *= dynamic_rate_ratio(history)
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {"accuracies": {m: list(h) for m, h in self.accuracies.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.accuracies = {m: list(h) for m, h in state["accuracies"].items()}
