"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018), on the uniform baseline's losses (chapter 4).

Each loss ``L_i`` (the multimodal cross-entropy and each modality's unimodal one) is read as the negative
log-likelihood of a classifier whose softmax has a learned temperature ``sigma_i^2`` (the paper's homoscedastic,
task-dependent noise of a classification output). Its objective for classification outputs weighs each
cross-entropy by ``1 / sigma_i^2`` and adds ``log sigma_i``, which keeps the noise from growing without limit.
With the log-variance ``s_i = log sigma_i^2`` (the paper's own parametrisation, stable to learn):

    L = sum_i exp(-s_i) L_i + s_i / 2.

For fixed losses the objective is minimal at ``s_i = log(2 L_i)``, a loss weight ``exp(-s_i) = 1 / (2 L_i)``: the
rule moves every weighted loss towards the same value, 1/2, so a loss that is already small (the colour's, on
CG-MNIST) is weighted *up*. The log-variances are learned with the model's step size and momentum (an optimiser of
their own, without weight decay, which would pull every ``sigma`` towards 1). Equation numbers are not cited:
the book could not check them against the paper's text.
"""

from __future__ import annotations

import torch

from .base import TrainState
from .baselines import UniformBaseline


def uncertainty_weighted_loss(losses: torch.Tensor, log_variances: torch.Tensor) -> torch.Tensor:
    """``sum_i exp(-s_i) L_i + s_i / 2`` for losses ``L`` and log-variances ``s`` (both ``[k]``): the
    classification objective of Kendall et al. with ``s = log sigma^2``; differentiable in both."""
    return (torch.exp(-log_variances) * losses + 0.5 * log_variances).sum()


def optimal_log_variances(losses: torch.Tensor) -> torch.Tensor:
    """The log-variances that minimise :func:`uncertainty_weighted_loss` for fixed positive losses:
    ``s_i = log(2 L_i)`` (its derivative ``-exp(-s) L + 1/2`` vanishes there)."""
    return torch.log(2 * losses)


class UncertaintyWeighting(UniformBaseline):
    """Uncertainty weighting of the multimodal and unimodal losses (Kendall, Gal & Cipolla, CVPR 2018)."""

    name = "uncertainty"

    def __init__(self, initial_log_variance: float = 0.0):
        self.initial_log_variance = float(initial_log_variance)
        self.log_variances: torch.Tensor | None = None
        self.names: list[str] | None = None

    def setup(self, state: TrainState) -> None:
        self.names = ["multimodal"] + [f"unimodal/{m}" for m in state.model.modalities]
        self.log_variances = torch.full((len(self.names),), self.initial_log_variance, device=state.device,
                                        requires_grad=True)
        group = state.optimizer.param_groups[0]
        self.variance_optimizer = torch.optim.SGD([self.log_variances], lr=group["lr"],
                                                  momentum=group.get("momentum", 0.0))

    def total_loss(self, losses: dict[str, torch.Tensor], state: TrainState) -> torch.Tensor:
        values = torch.stack([losses[n] for n in self.names])
        for n, s in zip(self.names, self.log_variances.detach()):
            state.log(f"train/uncertainty_weight/{n}", torch.exp(-s))
        return uncertainty_weighted_loss(values, self.log_variances)

    def on_step_end(self, state: TrainState) -> None:
        # the loop's backward reached the log-variances too (a leaf of the objective); step them, then clear
        self.variance_optimizer.step()
        self.variance_optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {"log_variances": self.log_variances.detach().clone(),
                "variance_optimizer": self.variance_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.log_variances.copy_(state["log_variances"])
        self.variance_optimizer.load_state_dict(state["variance_optimizer"])
