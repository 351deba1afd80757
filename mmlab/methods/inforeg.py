"""InfoReg (Huang et al., CVPR 2025, "Adaptive Unimodal Regulation for Balanced Multimodal Information
Acquisition"), chapter 6: slow the leading modality down *while it is acquiring information*, and only then.

The paper's observation is that a modality acquires most of its information early, in a "prime learning window",
and that the imbalance is set there: the modality that learns fast in the window takes the fused head, and the other
never catches up. InfoReg measures the window by the **trace of each encoder's Fisher information**, estimated as
the sum over the epoch's steps of the squared gradients, ``tr F^m = sum_layers mean_elements sum_steps g^2``
(:func:`fisher_trace`), and the **growth** of that trace over a window of ``window`` epochs,

    k^m = (T_1 - T_0) / T_1,   T_1 = mean of the last ``window`` traces,   T_0 = the same, one epoch earlier

(:func:`trace_growth`; 1 before any epoch is measured). While the leading modality's trace still grows
(``k > threshold``), each step adds a proximal term to its encoder's gradient, pulling it back towards its
parameters at the start of the epoch,

    g^m <- g^m + beta_t (theta^m - theta^m_epoch start),   beta_t = beta * exp(tanh(s^m - s^other)),

the gradient of ``beta_t / 2 ||theta^m - theta^m_0||^2`` (:func:`proximal_gradient`), where ``s^m`` is the
modality's score on the batch: the sum over its samples of its unimodal head's softmax probability of the label.
The losses are the uniform baseline's (the fused cross-entropy plus each head's).

Read from the authors' code (GeWu-Lab/InfoReg_CVPR2025, ``main.py``), which fixes what the paper leaves to it: the
trace sums the per-layer means of the squared gradients of the convolution and linear weights (here: every encoder
parameter with at least two dimensions), after the proximal term is added; the window is 10 epochs, the threshold
0.04 and ``beta`` 0.95; the scores are batch sums, not means. Where the book generalises it:

* The authors' code regulates the audio encoder only: it measures the audio trace alone, and its branch for the
  visual encoder (``beta`` 0.1) can never run, since its condition repeats the first branch's. Here the leading
  modality of each batch is regulated, whichever it is, while *its own* trace grows, with one ``beta``.
* With more than two modalities the score gap is the leader's score minus the best of the others'.

The paper's equation numbers are not cited: the book could not check them.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..models import ModelOutput
from .base import TrainState
from .baselines import UniformBaseline


def fisher_trace(squared_gradient_sums: Sequence[torch.Tensor]) -> float:
    """An encoder's Fisher-information trace for the epoch, as InfoReg's code estimates it: the sum over its layers
    (weights of two or more dimensions) of the mean over elements of the epoch's summed squared gradients."""
    return float(sum(s.double().mean() for s in squared_gradient_sums))


def trace_growth(traces: Sequence[float], window: int = 10) -> float:
    """``k = (T_1 - T_0) / T_1``: the relative growth of the mean trace over the last ``window`` epochs against the
    window one epoch earlier (each divided by ``window``, as in the authors' code, however few epochs there are);
    1 before any epoch is measured, 0 when the traces are all 0."""
    if not traces:
        return 1.0
    latest = sum(traces[-window:]) / window
    earlier = sum(traces[-window - 1:-1]) / window
    return (latest - earlier) / latest if latest != 0 else 0.0


def proximal_gradient(parameters: Sequence[torch.Tensor], anchors: Sequence[torch.Tensor],
                      strength: torch.Tensor) -> list[torch.Tensor]:
    """``strength * (theta - theta_0)`` for each parameter: the gradient of ``strength / 2 ||theta - theta_0||^2``."""
    return [strength * (p.detach() - a) for p, a in zip(parameters, anchors)]


def regulation_strength(scores: dict[str, torch.Tensor], modality: str, beta: float) -> torch.Tensor:
    """``beta * exp(tanh(s^m - max_other s))`` where ``modality`` leads the batch's scores, else 0 (a 0-d tensor)."""
    others = torch.stack([s for m, s in scores.items() if m != modality]).max()
    gap = scores[modality] - others
    return torch.where(gap > 0, beta * torch.exp(torch.tanh(gap)), torch.zeros_like(gap))


class InfoReg(UniformBaseline):
    """InfoReg: a proximal pull on the leading modality's encoder while its Fisher-information trace still grows
    (Huang et al., CVPR 2025; the rule read from the authors' code)."""

    name = "inforeg"
    capturable = False  # whether the window is open is a host decision, once per epoch

    def __init__(self, beta: float = 0.95, threshold: float = 0.04, window: int = 10):
        if not beta >= 0:
            raise ValueError(f"InfoReg's beta must be >= 0, got {beta!r}")
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise ValueError(f"InfoReg's window must be a whole number of epochs >= 1, got {window!r}")
        if not threshold == threshold:  # NaN
            raise ValueError("InfoReg's threshold must be a number, got NaN")
        self.beta, self.threshold, self.window = float(beta), float(threshold), window
        self.traces: dict[str, list[float]] = {}
        self.anchors: dict[str, list[torch.Tensor]] = {}
        self.squared: dict[str, list[torch.Tensor]] = {}
        self.growth: dict[str, float] = {}

    def setup(self, state: TrainState) -> None:
        self.traces = {m: [] for m in state.groups.encoders}

    def layers(self, state: TrainState, m: str) -> list[torch.nn.Parameter]:
        """The parameters whose squared gradients the trace sums: the encoder's weights of two or more dimensions."""
        return [p for p in state.groups.encoders[m] if p.dim() >= 2]

    def on_epoch_start(self, state: TrainState) -> None:
        self.anchors = {m: [p.detach().clone() for p in params] for m, params in state.groups.encoders.items()}
        self.squared = {m: [torch.zeros_like(p) for p in self.layers(state, m)] for m in state.groups.encoders}
        self.growth = {m: trace_growth(self.traces[m], self.window) for m in state.groups.encoders}

    def transform_gradients(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> None:
        scores = {m: torch.softmax(h.detach().float(), 1).gather(1, labels[:, None]).sum()
                  for m, h in output.unimodal_logits.items()}
        for m, params in state.groups.encoders.items():
            if self.growth[m] > self.threshold:  # in m's prime learning window
                strength = regulation_strength(scores, m, self.beta)
                for p, extra in zip(params, proximal_gradient(params, self.anchors[m], strength)):
                    p.grad.add_(extra)
                state.log(f"train/inforeg/strength/{m}", strength)
            for total, p in zip(self.squared[m], self.layers(state, m)):
                total.add_(p.grad.detach().square())

    def on_epoch_end(self, state: TrainState, evaluate) -> dict[str, float]:
        logs = {}
        for m in self.traces:
            self.traces[m].append(fisher_trace(self.squared[m]))
            logs[f"train/inforeg/fisher_trace/{m}"] = self.traces[m][-1]
            logs[f"train/inforeg/growth/{m}"] = self.growth[m]
            logs[f"train/inforeg/window_open/{m}"] = float(self.growth[m] > self.threshold)
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {"traces": {m: list(t) for m, t in self.traces.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.traces = {m: list(t) for m, t in state["traces"].items()}
