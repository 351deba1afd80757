"""MILES, the Modality-Informed Learning ratE Scheduler (Guerra-Manzanares & Shamout, IJCNN 2025, arXiv 2510.17394;
chapter 2, beside the conditional utilisation rate it schedules from).

MILES trains the uniform baseline's losses (the fused head's cross-entropy and one unimodal head's per modality)
and, once per epoch, reads how much each modality adds to the fused prediction. With ``A`` a split's accuracy, for
two modalities ``a`` and ``b``, the conditional utilisation rates of chapter 2 (Wu et al., ICML 2022) are

    u(a|b) = (A(a, b) - A(b)) / A(a, b),        u(b|a) = (A(a, b) - A(a)) / A(a, b),

``A(a)`` being modality ``a``'s unimodal head. Their gap ``delta = |u(a|b) - u(b|a)|`` says how unevenly the fused
model uses the two. If the gap exceeds a threshold ``tau`` (and not both rates are negative, as early in training,
when the fused head is worse than either unimodal one), the modality with the larger rate -- the one the fused
prediction leans on -- trains the next epoch with its encoder's learning rate multiplied by ``mu < 1``; every other
parameter keeps the base rate. Otherwise every rate is the base rate.

How the book reads the rule. The paper's text was not available to the book: the rule above is what its abstract
and the survey (seed 000) say -- learning rates scheduled from the differences of the modalities' conditional
utilisation rates, once per epoch, without unimodal pre-training -- with the details (the threshold on the gap, the
reduction of the dominant modality's rate, the all-negative case) as one public re-implementation reads the
paper's algorithm. Summaries of the paper say the rates come from validation or training metrics. Three choices are
the book's, each an option: the split the accuracies are measured on (``measured_on``: the validation split, as
chapter 2 measures the greedy learner's rates, or ``"train"``), ``threshold`` 0.2 and ``reduction`` 0.5 (the paper's
values are not known to us). The reduction is not cumulative: each epoch's rates are set afresh from the last
measurement. No equation numbers are cited.
"""

from __future__ import annotations

from typing import Any

from ..imbalance import conditional_utilization_rate
from .base import TrainState
from .baselines import UniformBaseline

SPLITS = ("val", "train")


def conditional_utilization_rates(metrics: dict[str, float], split: str,
                                  modalities: list[str]) -> dict[str, float] | None:
    """``u(m|other) = (A(a, b) - A(other)) / A(a, b)`` for each of two modalities, from a split's metrics
    (:func:`mmlab.training.evaluate`: ``<split>/acc`` and each unimodal head's ``<split>/acc/<m>``); ``None`` when
    the fused accuracy is 0 and the rates are undefined."""
    if len(modalities) != 2:
        raise ValueError(f"MILES's rates are defined for two modalities, got {modalities}")
    both = metrics[f"{split}/acc"]
    if not both > 0:
        return None
    a, b = modalities
    return {a: conditional_utilization_rate(both, metrics[f"{split}/acc/{b}"]),
            b: conditional_utilization_rate(both, metrics[f"{split}/acc/{a}"])}


def dominant_modality(rates: dict[str, float], threshold: float) -> str | None:
    """The modality whose encoder MILES slows down for the next epoch: the one with the larger conditional
    utilisation rate, when the two rates differ by more than ``threshold`` and not both are negative; else
    ``None`` (every learning rate stays the base rate)."""
    (a, u_a), (b, u_b) = rates.items()
    if not abs(u_a - u_b) > threshold or (u_a < 0 and u_b < 0):
        return None
    return a if u_a > u_b else b


class MILES(UniformBaseline):
    """MILES: per-modality learning rates scheduled each epoch from the conditional utilisation rates
    (Guerra-Manzanares & Shamout, IJCNN 2025; the rule as the book reads it, see the module)."""

    name = "miles"
    per_modality_learning_rates = True  # one optimiser group per encoder (mmlab.methods.base)
    capturable = False  # the rates change between epochs, a host decision
    stackable = False  # each run's rates are its own; its runs train one after another

    def __init__(self, threshold: float = 0.2, reduction: float = 0.5, measured_on: str = "val"):
        if not threshold >= 0:
            raise ValueError(f"MILES's threshold must be >= 0, got {threshold!r}")
        if not 0 <= reduction <= 1:
            raise ValueError(f"MILES's reduction must be in [0, 1] (it slows the dominant modality), got {reduction!r}")
        if measured_on not in SPLITS:
            raise ValueError(f"MILES's measured_on must be one of {list(SPLITS)}, got {measured_on!r}")
        self.threshold, self.reduction, self.measured_on = float(threshold), float(reduction), measured_on
        self.base_lr: float | None = None

    def setup(self, state: TrainState) -> None:
        if len(state.groups.encoders) != 2:
            raise ValueError(f"MILES's rule is defined for two modalities, the model has {list(state.groups.encoders)}")
        self.base_lr = state.param_group("shared")["lr"]

    def on_epoch_end(self, state: TrainState, evaluate) -> dict[str, float]:
        modalities = list(state.groups.encoders)
        rates = conditional_utilization_rates(evaluate(self.measured_on), self.measured_on, modalities)
        slowed = None if rates is None else dominant_modality(rates, self.threshold)
        logs: dict[str, Any] = {}
        for m in modalities:
            group = state.param_group(f"encoder/{m}")
            # the scale this epoch trained with, then the next epoch's
            logs[f"train/miles_learning_rate_scale/{m}"] = group["lr"] / self.base_lr
            group["lr"] = self.base_lr * (self.reduction if m == slowed else 1.0)
            if rates is not None:
                logs[f"train/miles_conditional_utilization_rate/{m}"] = rates[m]
        return logs
