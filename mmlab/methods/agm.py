"""Adaptive Gradient Modulation (chapter 3, *On-the-fly gradient modulation*).

AGM (Li, Li, Hu, Lei, Li & Zhou, "Boosting multi-modal model performance with adaptive gradient
modulation", ICCV 2023) measures each modality by its **mono-modal response**: the Shapley value of
the modality in the game whose players are the modalities and whose value of a coalition ``S`` is
the fused output ``f(S)`` with the inputs of the modalities outside ``S`` replaced by zeros
(*padded*). With ``M`` modalities,

    m^m = sum_{S not containing m} |S|! (M - |S| - 1)! / M! * (f(S + {m}) - f(S))  +  f({}) / M,

the Shapley value plus an equal share of the empty coalition's output, so that the responses sum to
the fused output, ``sum_m m^m = f(all)`` (for two modalities ``m^a = (f(a, v) - f(0, v) + f(a, 0)) / 2``,
as the hook-based implementation in BalanceBenchmark, ``GradMod``, forms it). Per training batch:

* score ``s^m``: the mean cross-entropy of ``m^m`` (a loss: lower is better; probabilities floored at
  ``1e-8`` as there);
* ratio ``r^m = exp(M / (M - 1) * (mean_k s^k - s^m))``: for two modalities ``exp(s^other - s^m)``,
  above 1 when ``m`` is ahead;
* its running mean over training, ``eta^m``, the same ratio of the scores averaged over every step so far
  (what the ratio of this step is compared with);
* coefficient ``k^m = exp(alpha * min(eta^m - r^m, max_exponent))``: below 1 when ``m`` is further ahead
  than usual, above 1 when it is further behind; the encoder of ``m`` gets ``k^m g`` inside the modulation
  window ``[window_start, window_end)``.

Choices of ours, on purpose and in the chapter: every coalition, the full one included, is evaluated in
evaluation mode without gradient (``GradMod`` takes the full output from the training-mode forward pass and
the padded ones in evaluation mode); the coefficient scales each encoder's parameter gradients,
as BalanceBenchmark's AGM does, rather than the gradient that reaches each mono-modal response (for late
fusion the two responses both pass their gradient to the one fused output, so scaling them there is one
common factor ``(k^a + k^v) / 2`` for every parameter: chapter 3 derives it and checks it with autograd);
the sign of ``r`` is that of ``GradMod``'s two-modality branch (BalanceBenchmark's active trainer forms the
ratio with the opposite sign, which slows a modality that is further *behind* than usual); no gradient
clipping. ``alpha = 0.1`` is BalanceBenchmark's default. Where BalanceBenchmark's active trainer differs
besides: it scales only the encoders' weight tensors (not biases or BatchNorm parameters; here every
parameter of the encoder), caps the exponent at 7 (here ``max_exponent = 10``, as in ``GradMod``'s commented
code), clips the gradient norm at 5 when the fused layer's gradient leaves ``[-5, 5]``, and leaves the empty
coalition out of the sum, so its responses are not the Shapley values plus ``f({}) / M`` used here.

The cost: ``2^M`` forward passes per step in general (:func:`coalition_outputs`). Under the book's late
concatenation fusion every ``f(S)`` is a sum of the shares of the batch and of a blank sample, so
:class:`AGM` takes them from one evaluation pass (:func:`additive_coalition_outputs`, chapter 3 derives
it); a model whose encoders see each other (MMTM) gets the ``2^M`` passes.
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..models import ConcatFusion, ModelOutput, MultimodalClassifier
from .base import Method, TrainState
from .shapley import shapley_values


@torch.no_grad()
def coalition_outputs(model: MultimodalClassifier, inputs: Mapping[str, torch.Tensor]) -> dict[frozenset, torch.Tensor]:
    """``f(S)`` for every subset ``S`` of the model's modalities: the fused logits with the inputs of the
    modalities outside ``S`` set to zero, in evaluation mode (``2^M`` forward passes, no gradient)."""
    was_training = model.training
    model.eval()
    try:
        names = list(model.modalities)
        outputs = {}
        for size in range(len(names) + 1):
            for coalition in itertools.combinations(names, size):
                padded = {m: x if m in coalition else torch.zeros_like(x) for m, x in inputs.items()}
                outputs[frozenset(coalition)] = model(padded).logits.float()
        return outputs
    finally:
        model.train(was_training)


def has_additive_fusion(model: MultimodalClassifier) -> bool:
    """Whether ``f`` is a sum of per-modality shares of independent encoders (late concatenation fusion):
    then :func:`additive_coalition_outputs` gives every ``f(S)`` without ``2^M`` forward passes."""
    return isinstance(model.fusion, ConcatFusion) and type(model).encode is MultimodalClassifier.encode


@torch.no_grad()
def additive_coalition_outputs(model: MultimodalClassifier, inputs: Mapping[str, torch.Tensor]
                               ) -> dict[frozenset, torch.Tensor]:
    """:func:`coalition_outputs` for a model with additive fusion, from one forward pass in evaluation mode.

    Under late fusion ``f(S) = sum_{m in S} s^m(x^m) + sum_{m not in S} s^m(0)`` (chapter 3, the coalitions
    under late fusion):
    the shares of the batch, and those of one blank sample (in evaluation mode a sample's output does not
    depend on the rest of its batch), give every coalition. ``1 + 1/B`` forward passes instead of ``2^M``."""
    if not has_additive_fusion(model):
        raise ValueError(f"{type(model).__name__} does not fuse its modalities additively: use coalition_outputs")
    was_training = model.training
    model.eval()
    try:
        names = list(model.modalities)
        present = model(inputs).shares
        blank = model({m: torch.zeros_like(x[:1]) for m, x in inputs.items()}).shares
        outputs = {}
        for size in range(len(names) + 1):
            for coalition in itertools.combinations(names, size):
                outputs[frozenset(coalition)] = sum(
                    (present[m] if m in coalition else blank[m]).float() for m in names
                ).expand_as(present[names[0]]).contiguous()
        return outputs
    finally:
        model.train(was_training)


def shapley_outputs(coalitions: Mapping[frozenset, torch.Tensor], modalities: Sequence[str]) -> dict[str, torch.Tensor]:
    """AGM's mono-modal responses: each modality's Shapley value in the game ``S -> f(S)``
    (:func:`~mmlab.methods.shapley.shapley_values`), plus ``f({}) / M``, so that they sum to ``f(all)``."""
    empty_share = coalitions[frozenset()] / len(modalities)
    return {m: value + empty_share for m, value in shapley_values(coalitions, modalities).items()}


def mono_modal_scores(responses: Mapping[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """``s^m``: the batch-mean cross-entropy of each mono-modal response, the true class's probability
    floored at ``1e-8``."""
    out = {}
    for m, logits in responses.items():
        p_true = F.softmax(logits.detach().float(), dim=1).gather(1, labels[:, None]).squeeze(1)
        out[m] = -p_true.clamp_min(1e-8).log().mean()
    return out


def competition_ratios(scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``r^m = exp(M / (M - 1) * (mean_k s^k - s^m))``: above 1 for a modality whose response is better
    than the average (for two modalities ``exp(s^other - s^m)``)."""
    names = list(scores)
    if len(names) < 2:
        raise ValueError("AGM needs at least two modalities")
    mean = sum(scores.values()) / len(names)
    factor = len(names) / (len(names) - 1)
    return {m: torch.exp(factor * (mean - scores[m])) for m in names}


def agm_coefficient(reference_ratio: torch.Tensor, ratio: torch.Tensor, alpha: float,
                    max_exponent: float = 10.0) -> torch.Tensor:
    """``k = exp(alpha * min(eta - r, max_exponent))``: the gradient scale of a modality whose ratio is
    ``r`` now and ``eta`` on average so far."""
    return torch.exp(alpha * torch.clamp(reference_ratio - ratio, max=max_exponent))


class AGM(Method):
    """AGM: scale each encoder's gradient by how far its Shapley mono-modal response is ahead of its usual
    course (Li et al. 2023)."""

    name = "agm"

    def __init__(self, alpha: float = 0.1, window_start: int = 0, window_end: int | None = None,
                 max_exponent: float = 10.0):
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if window_end is not None and window_end < window_start:
            raise ValueError("window_end must not be before window_start")
        if not max_exponent > 0:
            raise ValueError(f"max_exponent must be > 0, got {max_exponent}")
        self.alpha, self.window, self.max_exponent = alpha, (window_start, window_end), max_exponent
        self.score_sums: torch.Tensor | None = None  # sum over the steps so far of each s^m
        self.steps = 0
        self.names: list[str] = []
        self.additive = False

    def setup(self, state: TrainState) -> None:
        self.names = list(state.model.modalities)
        if len(self.names) < 2:
            raise ValueError("AGM needs at least two modalities")
        self.additive = has_additive_fusion(state.model)  # then one evaluation pass gives every coalition
        dtype = torch.float32 if state.device.type == "mps" else torch.float64  # MPS has no float64
        self.score_sums = torch.zeros(len(self.names), dtype=dtype, device=state.device)  # no sync per step

    def in_window(self, epoch: int) -> bool:
        start, end = self.window
        return start <= epoch and (end is None or epoch < end)

    def reference_ratios(self) -> dict[str, torch.Tensor]:
        """``eta^m``: the ratio of the running mean scores (1 for every modality before the first step)."""
        mean = self.score_sums / max(self.steps, 1)
        return competition_ratios({m: mean[i] for i, m in enumerate(self.names)})

    def transform_gradients(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> None:
        if state.inputs is None:
            raise RuntimeError("AGM needs the batch's inputs (TrainState.inputs)")
        coalitions = (additive_coalition_outputs if self.additive else coalition_outputs)(state.model, state.inputs)
        responses = shapley_outputs(coalitions, self.names)
        scores = mono_modal_scores(responses, labels)
        ratios = competition_ratios(scores)
        reference = self.reference_ratios()
        self.score_sums += torch.stack([scores[m] for m in self.names]).to(self.score_sums)
        self.steps += 1
        for m in self.names:
            state.log(f"train/agm_score/{m}", scores[m])
            state.log(f"train/agm_ratio/{m}", ratios[m])
        if not self.in_window(state.epoch):
            return
        for m in self.names:
            k = agm_coefficient(reference[m].to(ratios[m]), ratios[m], self.alpha, self.max_exponent)
            state.log(f"train/agm_coefficient/{m}", k)
            grads = [p.grad for p in state.groups.encoders[m] if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, k.to(grads[0].dtype))

    def state_dict(self) -> dict[str, Any]:
        return {"score_sums": self.score_sums.clone(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        target = self.score_sums if self.score_sums is not None else state["score_sums"]
        self.score_sums, self.steps = state["score_sums"].to(target).clone(), int(state["steps"])
