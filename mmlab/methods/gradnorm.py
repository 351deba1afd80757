"""GradNorm (Chen et al., ICML 2018), on the uniform baseline's losses (chapter 4).

Loss weights ``w_i`` (one per loss: multimodal and each unimodal) are learned so
that each weighted loss's gradient norm on the shared layers,
``G_i = w_i ||grad_W L_i||``, tracks ``mean_j(G_j) * r_i^alpha``, where
``r_i = (L_i / L_i(0)) / mean_j(L_j / L_j(0))`` is the loss's relative inverse
training rate. The weights have their own optimiser and are renormalised to sum
to the number of losses after every step. ``W`` is the output layers of all
encoders together (a ResNet encoder's: its last convolution with its BatchNorm).
The paper takes the last layer shared by every task; here no layer is shared by all three
losses (each unimodal loss reaches only its own encoder), so the multimodal loss's norm is
taken over both encoders' output layers and each unimodal loss's, in effect, over one. A
choice of ours, said in chapter 4.

Since ``G_i`` is linear in ``w_i``, ``d G_i / d w_i = ||grad_W L_i||`` needs no
second-order graph: one cheap gradient of each loss w.r.t. ``W`` per step.
"""

from __future__ import annotations

import torch

from .base import TrainState
from .baselines import UniformBaseline


class GradNorm(UniformBaseline):
    """GradNorm: learn loss weights that balance the losses' gradient norms (Chen et al. 2018)."""

    name = "gradnorm"

    def __init__(self, alpha: float = 1.5, weight_lr: float = 0.025):
        if alpha < 0 or weight_lr <= 0:
            raise ValueError("alpha must be >= 0 and weight_lr > 0")
        self.alpha, self.weight_lr = alpha, weight_lr
        self.weights: torch.Tensor | None = None
        self.initial_losses: torch.Tensor | None = None
        self.names: list[str] | None = None
        self._pending: torch.Tensor | None = None

    def setup(self, state: TrainState) -> None:
        self.names = ["multimodal"] + [f"unimodal/{m}" for m in state.model.modalities]
        self.weights = torch.ones(len(self.names), device=state.device, requires_grad=True)
        self.weight_optimizer = torch.optim.SGD([self.weights], lr=self.weight_lr)
        missing = [m for m, enc in state.model.encoders.items() if not hasattr(enc, "output_layer")]
        if missing:
            raise TypeError(f"GradNorm balances gradient norms on each encoder's output_layer; the {missing[0]} "
                            f"encoder ({type(state.model.encoders[missing[0]]).__name__}) has none")
        self.shared = [p for enc in state.model.encoders.values() for p in enc.output_layer.parameters()]

    def total_loss(self, losses: dict[str, torch.Tensor], state: TrainState) -> torch.Tensor:
        values = torch.stack([losses[n] for n in self.names])
        if self.initial_losses is None:
            self.initial_losses = values.detach().clone()
        grad_norms = torch.stack([
            torch.linalg.vector_norm(torch.cat([
                (g if g is not None else torch.zeros_like(p)).flatten()
                for p, g in zip(self.shared, torch.autograd.grad(losses[n], self.shared, retain_graph=True,
                                                                 allow_unused=True))]))
            for n in self.names
        ])
        G = self.weights * grad_norms  # differentiable in the weights only
        ratios = values.detach() / self.initial_losses
        target = (G.mean() * (ratios / ratios.mean()) ** self.alpha).detach()
        self._pending = (G - target).abs().sum()
        for n, w in zip(self.names, self.weights.detach()):
            state.log(f"train/gradnorm_weight/{n}", w)
        return (self.weights.detach() * values).sum()

    def on_step_end(self, state: TrainState) -> None:
        self.weight_optimizer.zero_grad(set_to_none=True)
        self._pending.backward()
        self.weight_optimizer.step()
        with torch.no_grad():  # renormalise: the weights sum to the number of losses
            self.weights.clamp_(min=1e-3)
            self.weights.mul_(len(self.names) / self.weights.sum())
        self._pending = None

    def state_dict(self) -> dict:
        return {"weights": self.weights.detach().clone(), "initial_losses": self.initial_losses,
                "weight_optimizer": self.weight_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.weights.copy_(state["weights"])
        self.initial_losses = state["initial_losses"]
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
