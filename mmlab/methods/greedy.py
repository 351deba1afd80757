"""Balanced multi-modal learning against the greedy learner (chapter 2, *The greedy learner*).

Wu, Jastrzebski, Cho & Geras, "Characterizing and overcoming the greedy nature of learning in
multi-modal deep neural networks", ICML 2022: the balanced multi-modal learning algorithm (the
measures are in :mod:`mmlab.imbalance`). Chapter 2 states it as Algorithm ``alg-greedy``, with the
learning speed as Eq. ``eq-greedy-speed``. The model has cross-modal connections (MMTM modules
between the encoders' stages, :class:`mmlab.models.MMTMClassifier`). Per branch ``m``:

* learning speed ``mu = ||grad theta||^2 / ||theta||^2`` of its *main* parameters (its own
  encoder's stage before each MMTM) and of its *bypass* parameters (each MMTM's path into ``m``);
* branch dominance ratio ``BDR_m = log10(sum mu_bypass / sum mu_main)``: large when branch ``m``
  learns more through the other modalities than through its own;
* speed imbalance ``d_speed = BDR_0 - BDR_1`` (two modalities); with ``M`` modalities the gap
  ``max_m BDR_m - min_m BDR_m`` plays its part.

Schedule: after every *regular* step, if ``|d_speed| > epsilon`` (0.01), the next ``Q`` (5) steps
are *re-balancing* steps, in which the cross-modal input into the slower branch -- the one with
the largest BDR -- is cut: replaced by the detached running average of the other modalities'
squeezed features, so that branch must learn from its own modality. Then a regular step
measures again.

What the book's version fixes where the paper leaves a choice (chapter 2 says so): the learning
speeds are those of each regular step's gradients (before the optimiser step); main and bypass
are paired per MMTM location; a re-balancing step updates every parameter as usual. Where the
authors' released code differs (chapter 2 says so): it trains each branch's own classifier (the sum of
the branches' cross-entropies; the prediction is the mean of their outputs) where the book trains the
concatenation fusion on the fused cross-entropy, it accumulates the speeds over all regular steps since
the start of training (a cumulative BDR), its main group is the whole branch outside the MMTMs, it
re-balances only from the second epoch (after one plain epoch), and its cut replaces the slower branch's
whole gate by a running mean of that gate (over every forward pass) rather than only the other
modality's squeezed input.
"""

from __future__ import annotations

from typing import Any

import torch

from ..imbalance import branch_dominance_ratios
from ..models import ModelOutput
from .base import Method, TrainState


def slower_branch(bdr: dict[str, float]) -> tuple[str, float]:
    """The branch with the largest BDR, and the gap ``max BDR - min BDR`` (``|d_speed|`` for two)."""
    if len(bdr) < 2:
        raise ValueError("the speed imbalance needs at least two branches")
    slowest = max(bdr, key=bdr.get)
    return slowest, bdr[slowest] - min(bdr.values())


class Greedy(Method):
    """Greedy: re-balance the conditional learning speeds by cutting cross-modal inputs (Wu et al. 2022)."""

    name = "greedy"
    fusion = "mmtm"

    def __init__(self, epsilon: float = 0.01, rebalance_steps: int = 5, rebalance: bool = True):
        if not epsilon >= 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        if isinstance(rebalance_steps, bool) or int(rebalance_steps) != rebalance_steps or rebalance_steps < 1:
            raise ValueError(f"rebalance_steps (Q) must be a positive integer, got {rebalance_steps!r}")
        self.epsilon, self.rebalance_steps, self.rebalance = float(epsilon), int(rebalance_steps), bool(rebalance)
        self.remaining = 0  # re-balancing steps still to run
        self.target: str | None = None  # the branch whose cross-modal input is cut
        self._pending: tuple[str, float] | None = None  # (slower branch, gap) of the last regular step

    def setup(self, state: TrainState) -> None:
        model = state.model
        if not (hasattr(model, "cut_cross_modal_inputs_into") and hasattr(model, "learning_speed_groups")):
            raise TypeError(f"{self.name} needs a model with cross-modal connections (fusion='mmtm'), "
                            f"got {type(model).__name__}")
        if len(model.modalities) < 2:
            raise ValueError(f"{self.name} needs at least two modalities")

    @property
    def rebalancing(self) -> bool:
        return self.remaining > 0

    def _apply(self, model) -> None:
        model.cut_cross_modal_inputs_into([self.target] if self.rebalancing else [])

    def on_epoch_start(self, state: TrainState) -> None:
        self._apply(state.model)  # after a resume, the model learns the schedule here

    def transform_gradients(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> None:
        state.log("train/greedy_rebalancing", float(self.rebalancing))
        for m in state.model.modalities:
            state.log(f"train/greedy_cut/{m}", float(self.rebalancing and self.target == m))
        if self.rebalancing:
            return  # speeds are measured on regular steps only
        bdr = {m: float(v) for m, v in branch_dominance_ratios(state.model).items()}
        if not all(torch.isfinite(torch.tensor(list(bdr.values())))):
            return  # no gradient reached a branch (e.g. a zero loss): nothing to decide
        for m, value in bdr.items():
            state.log(f"train/greedy_bdr/{m}", value)
        names = list(bdr)
        if len(names) == 2:
            state.log("train/greedy_d_speed", bdr[names[0]] - bdr[names[1]])
        self._pending = slower_branch(bdr)
        state.log("train/greedy_speed_gap", self._pending[1])

    def on_step_end(self, state: TrainState) -> None:
        if self.rebalancing:  # this step was a re-balancing step
            self.remaining -= 1
            if not self.rebalancing:
                self.target = None
        elif self.rebalance and self._pending is not None and self._pending[1] > self.epsilon:
            self.target, self.remaining = self._pending[0], self.rebalance_steps
        self._pending = None
        self._apply(state.model)

    def state_dict(self) -> dict[str, Any]:
        return {"remaining": self.remaining, "target": self.target}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.remaining, self.target = int(state["remaining"]), state["target"]


class MMTMJoint(Greedy):
    """MMTM fusion trained with one joint loss: Greedy's model and measures, without re-balancing."""

    name = "mmtm"

    def __init__(self):
        super().__init__(rebalance=False)
