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
its features ``z^{m1}`` by their mean (the model's own fusion then applies), which
is what :func:`accuracy_without` does. With cross-modal connections (MMTM) the
modality also reaches the other branches inside the encoders; there its squeezed
vectors are replaced by their running training averages as well.

A late-fusion model has no bypass, hence no conditional learning speed; for it the
learning speed ``mu`` of each encoder and the imbalance ``log10(mu_0 / mu_1)``
(:func:`learning_speed_imbalance`) are what can be measured. :func:`imbalance_metrics`
and :func:`log_learning_speeds` are what the training loop records per epoch and
per step when a run asks for it (``RunConfig(measure_imbalance=True)``).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import torch

from .models import ModelOutput, MultimodalClassifier

if TYPE_CHECKING:  # the training package imports this module: no import cycle at run time
    from .training.batches import ResidentBatches

#: what a model predicts with, from one forward pass's output (a method's ``prediction`` hook)
Prediction = Callable[[ModelOutput], torch.Tensor]


def _predicted(output: ModelOutput, prediction: Prediction | None) -> torch.Tensor:
    return output.logits if prediction is None else prediction(output)


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
    return float(learning_speed_tensor(params))


def learning_speed_tensor(params: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """:func:`learning_speed` as a 0-d tensor on the parameters' device (no host sync);
    NaN if no parameter has a gradient or all are zero."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return torch.tensor(math.nan)
    grad_sq = torch.stack([p.grad.detach().pow(2).sum() for p in params]).double().sum()
    param_sq = torch.stack([p.detach().pow(2).sum() for p in params]).double().sum()
    return torch.where(param_sq > 0, grad_sq / param_sq, torch.full_like(grad_sq, math.nan))


def branch_dominance_ratio(mu_bypass: Iterable[float], mu_main: Iterable[float]) -> float:
    """``BDR = log10(sum mu_bypass / sum mu_main)``."""
    return math.log10(sum(mu_bypass) / sum(mu_main))


def speed_imbalance(bdr_0: float, bdr_1: float) -> float:
    """``d_speed = BDR_0 - BDR_1``."""
    return bdr_0 - bdr_1


def learning_speed_imbalance(mu_0: float, mu_1: float) -> float:
    """``log10(mu_0 / mu_1)`` for two late-fused encoders: positive when ``m0``'s encoder learns faster."""
    return math.log10(mu_0 / mu_1)


def branch_dominance_ratios(model) -> dict[str, torch.Tensor]:
    """``BDR_m = log10(sum_i mu(bypass_i) / sum_i mu(main_i))`` for every branch of a model with
    cross-modal connections, from the gradients in ``p.grad``; ``i`` runs over the MMTM
    locations (:meth:`MMTMClassifier.learning_speed_groups`). 0-d tensors (no host sync)."""
    if not hasattr(model, "learning_speed_groups"):
        raise TypeError(f"{type(model).__name__} has no cross-modal connections, hence no branch dominance ratio")
    out = {}
    for m in model.modalities:
        main, bypass = model.learning_speed_groups(m)
        mu_main = torch.stack([learning_speed_tensor(ps) for ps in main]).sum()
        mu_bypass = torch.stack([learning_speed_tensor(ps) for ps in bypass]).sum()
        out[m] = torch.log10(mu_bypass / mu_main)
    return out


@torch.no_grad()
def mean_features(model: MultimodalClassifier, batches: ResidentBatches,
                  accuracy: dict[str, float] | None = None, prediction: Prediction | None = None
                  ) -> dict[str, torch.Tensor]:
    """Each modality's average feature vector ``z^m`` over ``batches`` (eval mode), as the
    model's forward pass computes it. If ``accuracy`` is a dict, the fused accuracy of the
    same pass is stored in ``accuracy["acc"]`` (of ``prediction(output)``, a method's
    :meth:`~mmlab.methods.Method.prediction`; default the fused head's logits)."""
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = correct = 0

    def capture(features):
        for m, z in features.items():
            sums[m] = sums[m] + z.sum(0) if m in sums else z.sum(0)
        return features

    for inputs, labels in batches.epoch():
        out = model(inputs, intervene=capture)
        correct += int((_predicted(out, prediction).argmax(1) == labels).sum())
        count += len(labels)
    model.train(was_training)
    if accuracy is not None:
        accuracy["acc"] = correct / count
    return {m: s / count for m, s in sums.items()}


@torch.no_grad()
def accuracy_without(model: MultimodalClassifier, batches: ResidentBatches,
                     replaced: Mapping[str, torch.Tensor], prediction: Prediction | None = None) -> float:
    """Accuracy of the fused prediction with the features of the modalities in
    ``replaced`` set to the given vectors (e.g. their training means); in a model with
    cross-modal connections, their inputs to the other branches are replaced by their
    running averages too."""
    was_training = model.training
    model.eval()

    def substitute(features):
        return {m: (replaced[m].expand_as(z) if m in replaced else z) for m, z in features.items()}

    cross = getattr(model, "replacing_cross_modal_inputs", None)
    correct = total = 0
    with (cross(replaced.keys()) if cross is not None and replaced else nullcontext()):
        for inputs, labels in batches.epoch():
            out = model(inputs, intervene=substitute)
            correct += int((_predicted(out, prediction).argmax(1) == labels).sum())
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


# -- what the training loop records with ``RunConfig(measure_imbalance=True)`` -------------------
#: images of a split on which the per-epoch utilization is measured (a fixed subset: the first ones)
UTILIZATION_SAMPLES = 1000


def probe_batches(split, modalities: Sequence[str], device, size: int = UTILIZATION_SAMPLES,
                  batch_size: int = 1000) -> ResidentBatches:
    """The first ``size`` samples of ``split``, in order, as resident batches."""
    from .training.batches import ResidentBatches

    n = min(size, len(split.labels))
    head = SimpleNamespace(inputs={m: split.inputs[m][:n] for m in modalities}, labels=split.labels[:n])
    return ResidentBatches(head, modalities, batch_size, device)


def imbalance_metrics(model: MultimodalClassifier, batches: Mapping[str, ResidentBatches],
                      prediction: Prediction | None = None) -> dict[str, float]:
    """Per split ``s`` in ``batches``: ``s/utilization/<m>`` = ``u(m | the others)`` and
    ``s/acc_without/<m>`` = the fused accuracy with ``m`` replaced by its mean over the same
    samples. One pass over the samples for a late-fusion model (its features do not depend
    on each other, so the fusion is simply applied again); 1 + M passes with cross-modal
    connections. ``prediction(output)``: what the model predicts with (a method's
    :meth:`~mmlab.methods.Method.prediction`: UDI's sum of heads, MLA's entropy-weighted fusion); default the
    fused head's logits."""
    out: dict[str, float] = {}
    for split, b in batches.items():
        if hasattr(model, "replacing_cross_modal_inputs"):
            acc: dict[str, float] = {}
            means = mean_features(model, b, accuracy=acc, prediction=prediction)
            both = acc["acc"]
            without = {m: accuracy_without(model, b, {m: means[m]}, prediction) for m in model.modalities}
        else:
            both, without = _late_fusion_accuracies(model, b, prediction)
        for m in model.modalities:
            out[f"{split}/acc_without/{m}"] = without[m]
            out[f"{split}/utilization/{m}"] = (conditional_utilization_rate(both, without[m])
                                               if both > 0 else math.nan)
    return out


@torch.no_grad()
def _late_fusion_accuracies(model: MultimodalClassifier, batches: ResidentBatches,
                            prediction: Prediction | None = None) -> tuple[float, dict[str, float]]:
    """The fused accuracy, and with each modality's features replaced by their mean, from one pass."""
    was_training = model.training
    model.eval()
    features: dict[str, list[torch.Tensor]] = {m: [] for m in model.modalities}
    labels = []

    def capture(f):
        for m, z in f.items():
            features[m].append(z)
        return f

    for inputs, y in batches.epoch():
        model(inputs, intervene=capture)
        labels.append(y)
    model.train(was_training)
    z = {m: torch.cat(v) for m, v in features.items()}
    y = torch.cat(labels)

    def accuracy(f):
        logits = model.fusion(f) if prediction is None else prediction(model.fuse(f))
        return int((logits.argmax(1) == y).sum()) / len(y)

    means = {m: v.mean(0, keepdim=True) for m, v in z.items()}
    return accuracy(z), {m: accuracy({**z, m: means[m].expand_as(z[m])}) for m in model.modalities}


def log_learning_speeds(groups, log: Callable[[str, Any], None]) -> None:
    """Log ``train/learning_speed/<m>`` (each encoder's ``mu``) and, with cross-modal
    connections, ``train/learning_speed_bypass/<m>``, from the gradients about to be applied."""
    for m, params in groups.encoders.items():
        log(f"train/learning_speed/{m}", learning_speed_tensor(params))
    for m, params in groups.cross_modal.items():
        log(f"train/learning_speed_bypass/{m}", learning_speed_tensor(params))
