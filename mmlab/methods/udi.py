"""The building blocks of UDI, Unidirectional Dynamic Interaction (chapter 6).

Wang, Zhang, Liang, Qian and Hu, *Balanced Multimodal Learning: An Unidirectional Dynamic Interaction
Perspective* (arXiv:2509.02281; the book's seed 002). UDI trains no joint loss. The modality with the best
validation accuracy is trained alone to convergence and frozen: the **anchor** ``a``. Each other modality
``m``, a **follower**, then trains with

.. math::  L = L_{cls} + \\alpha_{con} L_{con} + \\alpha_{com} L_{com}

* :math:`L_{cls}`: the cross-entropy of the follower's own head;
* :math:`L_{con}` (consistency): the Jensen-Shannon divergence between the frozen anchor's predicted
  distribution and the follower's (:func:`js_divergence`);
* :math:`L_{com}` (complementarity): an upper bound of the mutual information between the anchor's features
  :math:`f^a` and the follower's :math:`f^m`, estimated with CLUB (Cheng et al., ICML 2020, Eq. 6 with the
  variational :math:`q_\\phi` of its Eq. 9): :class:`CLUBEstimator`, trained by maximum likelihood on matched
  pairs with its own optimiser; the follower's loss takes it at 0 where the estimate falls below 0 (the book's
  choice: a learned estimator can, and the follower would drive its features off to exploit it);
* :math:`\\alpha_{con}, \\alpha_{com}`: the **dynamic controller** (:func:`dynamic_loss_weights`), each the
  positive part of the auxiliary loss's gradient alignment with :math:`L_{cls}`'s on the follower's
  parameters, normalised over the two.

:class:`UDI` is the method, through the loop's declared hooks (no copy of the loop): two stages in one run,

* **stage 1** (``anchor_epochs``, default half the run): every modality trains alone, through its own head
  (the sum of unimodal cross-entropies: the modalities share no parameter, so each learns as if alone); at
  its end the modality with the best validation accuracy becomes the anchor (or the one named by
  ``anchor``, for the ablation), and its encoder and head are frozen (no gradient, BatchNorm in eval mode);
* **stage 2**: each other modality is a follower, re-initialised (``restart_follower``, default: it starts
  from scratch, as a model trained after the anchor would) and trained with :math:`L` above; the CLUB
  estimator learns from the detached feature pairs with its own Adam optimiser after every step.

The prediction (the seed does not say how anchor and follower combine at test time) is the book's choice:
the sum of the modalities' heads' logits (:meth:`UDI.prediction`). The controller is measured on the
follower's parameters (encoder and head) on the first mini-batch of each epoch (``controller="epoch"``, the
seed's), on every one (``"step"``), or not at all (``"static"``: both weights 0.5).

The pieces are checked against closed forms and autograd, and the stages against the loop
(``tests/test_udi.py``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnknownNameError
from ..models import ModelOutput
from .base import Method, TrainState, first_stage_epochs

__all__ = ["CLUBEstimator", "UDI", "dynamic_loss_weights", "js_divergence"]

CONTROLLERS = ("epoch", "step", "static")


def js_divergence(anchor_logits: torch.Tensor, follower_logits: torch.Tensor) -> torch.Tensor:
    """The Jensen-Shannon divergence between the predicted distributions, averaged over the batch (nats):
    :math:`JS(p, q) = \\tfrac12 KL(p \\| m) + \\tfrac12 KL(q \\| m)`, :math:`m = (p + q)/2`, with
    :math:`p = \\mathrm{softmax}` of the anchor's logits and :math:`q` of the follower's.

    Symmetric, zero only where :math:`p = q`, at most :math:`\\log 2`. Computed from log-probabilities
    (``logsumexp``), so that a confident prediction (a probability that rounds to 0) gives no NaN.
    """
    log_p = torch.log_softmax(anchor_logits, dim=-1)
    log_q = torch.log_softmax(follower_logits, dim=-1)
    log_m = torch.logsumexp(torch.stack([log_p, log_q]), dim=0) - math.log(2.0)
    kl_p = (log_p.exp() * (log_p - log_m)).sum(-1)
    kl_q = (log_q.exp() * (log_q - log_m)).sum(-1)
    return (0.5 * (kl_p + kl_q)).mean()


class CLUBEstimator(nn.Module):
    """CLUB, the Contrastive Log-ratio Upper Bound of mutual information (Cheng et al., ICML 2020).

    A variational conditional :math:`q_\\phi(y \\mid x) = \\mathcal N(\\mu(x), \\mathrm{diag}\\, e^{\\ell(x)})`, its
    mean :math:`\\mu` and log-variance :math:`\\ell` small MLPs of :math:`x` (UDI: :math:`x = f^a`, the anchor's
    features, :math:`y = f^m`, the follower's). :meth:`mutual_information` is the bound

    .. math::  \\hat I = \\mathbb E_{(x, y)}\\big[\\log q_\\phi(y \\mid x)\\big]
                         - \\mathbb E_{x}\\mathbb E_{y}\\big[\\log q_\\phi(y \\mid x)\\big],

    the second expectation over every (x, y') of the batch (the shuffled pairs), which the follower minimises;
    :meth:`learning_loss` is the negative log-likelihood of the matched pairs, which :math:`q_\\phi` minimises
    with its own optimiser. With the true conditional in place of :math:`q_\\phi`, :math:`\\hat I` is an upper
    bound of the mutual information.
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 64):
        super().__init__()
        self.mean = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim))
        self.log_variance = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim), nn.Tanh())

    def _moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean(x), self.log_variance(x)

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """:math:`\\log q_\\phi(y_i \\mid x_i)` per matched pair (``[N]``), constants included."""
        mu, log_var = self._moments(x)
        return (-0.5 * ((y - mu) ** 2 / log_var.exp() + log_var + math.log(2 * math.pi))).sum(-1)

    def learning_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The estimator's own loss: the mean negative log-likelihood of the matched pairs."""
        return -self.log_likelihood(x, y).mean()

    def mutual_information(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The CLUB bound on the batch: matched pairs minus all pairs (the log-variance and the constant, the
        same in both, cancel)."""
        mu, log_var = self._moments(x)
        precision = (-log_var).exp()
        positive = -0.5 * ((y - mu) ** 2 * precision).sum(-1)  # [N]
        # every x_i with every y_j: E_j[(y_j - mu_i)^2] = mean_j y_j^2 - 2 mu_i mean_j y_j + mu_i^2, per dimension
        y_mean, y_sq_mean = y.mean(0, keepdim=True), (y ** 2).mean(0, keepdim=True)
        negative = -0.5 * ((y_sq_mean - 2 * mu * y_mean + mu ** 2) * precision).sum(-1)  # [N]
        return (positive - negative).mean()


def dynamic_loss_weights(classification: Sequence[torch.Tensor],
                         auxiliary: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """UDI's dynamic controller: the weight of each auxiliary loss from its gradient's alignment with the
    classification loss's, on the same parameters,

    .. math::  \\alpha_k = \\frac{\\max(0, \\langle g_{cls}, g_k \\rangle)}{\\sum_j \\max(0, \\langle g_{cls}, g_j \\rangle)},

    and 0 for all when none is aligned (no auxiliary loss then trains).

    Args:
        classification: :math:`g_{cls}`, one tensor per parameter.
        auxiliary: :math:`g_k` for each auxiliary loss, each one tensor per parameter (the same shapes).

    Returns:
        ``float64 [K]``: non-negative weights that sum to 1, or all 0.
    """
    aligned = []
    for grads in auxiliary:
        if len(grads) != len(classification):
            raise ValueError(f"an auxiliary gradient has {len(grads)} tensors, the classification one {len(classification)}")
        dot = sum((g.double() * c.double()).sum() for g, c in zip(grads, classification))
        aligned.append(torch.clamp(torch.as_tensor(dot, dtype=torch.float64), min=0.0))
    aligned = torch.stack(aligned)
    total = aligned.sum()
    return aligned / total if total > 0 else torch.zeros_like(aligned)


class UDI(Method):
    """UDI: the anchor modality alone, then the follower with consistency and complementarity losses."""

    name = "udi"
    needs_unimodal_heads = True
    stackable = False  # each run freezes its own anchor, in evaluation mode (mmlab.methods.base.Method.stackable)

    def __init__(self, anchor: str = "auto", anchor_epochs: int | None = None, controller: str = "epoch",
                 consistency: bool = True, complementarity: bool = True, restart_follower: bool = True,
                 estimator_lr: float = 1e-3):
        if controller not in CONTROLLERS:
            raise UnknownNameError("udi controller", controller, CONTROLLERS)
        if anchor_epochs is not None and (isinstance(anchor_epochs, bool) or not isinstance(anchor_epochs, int)
                                          or anchor_epochs < 1):
            raise ValueError(f"anchor_epochs must be a whole number of epochs >= 1 (or None: half the run), "
                             f"got {anchor_epochs!r}")
        if not estimator_lr > 0:
            raise ValueError(f"estimator_lr must be positive, got {estimator_lr!r}")
        self.anchor_option, self.anchor_epochs_option = anchor, anchor_epochs
        self.controller, self.use_consistency, self.use_complementarity = controller, consistency, complementarity
        self.restart_follower, self.estimator_lr = restart_follower, estimator_lr
        self.stage_epochs = 0  # set by setup
        self.anchor: str | None = None  # chosen at the end of stage 1
        self.weights = torch.tensor([0.5, 0.5], dtype=torch.float64)  # alpha_con, alpha_com
        self.estimator: CLUBEstimator | None = None
        self.estimator_optimizer: torch.optim.Optimizer | None = None
        self._pair: tuple[torch.Tensor, torch.Tensor] | None = None

    def modalities(self, available: Sequence[str]) -> list[str]:
        if len(available) != 2:
            raise ValueError(f"udi trains one anchor and one follower: it needs two modalities, got {list(available)}")
        if self.anchor_option != "auto" and self.anchor_option not in available:
            raise UnknownNameError("anchor modality", self.anchor_option, ["auto", *available])
        return list(available)

    # -- stages ------------------------------------------------------------------------------------
    def setup(self, state: TrainState) -> None:
        self.stage_epochs = first_stage_epochs("udi", "anchor_epochs", self.anchor_epochs_option, state.num_epochs)
        features = {m: head.in_features for m, head in state.model.unimodal_heads.items()}
        first, second = list(features)
        self.estimator = CLUBEstimator(features[first], features[second]).to(state.device)
        self.estimator_optimizer = torch.optim.Adam(self.estimator.parameters(), lr=self.estimator_lr)

    def anchor_stage(self, state: TrainState) -> bool:
        return state.epoch < self.stage_epochs

    @property
    def follower(self) -> str | None:
        return None if self.anchor is None else next(m for m in self._modalities if m != self.anchor)

    def on_epoch_start(self, state: TrainState) -> None:
        self._modalities = list(state.model.modalities)
        if state.epoch == self.stage_epochs and self.anchor is not None and self.restart_follower:
            self._restart(state, self.follower)
        if not self.anchor_stage(state):
            state.model.encoders[self.anchor].eval()  # frozen: its BatchNorm statistics stay as they were

    def _restart(self, state: TrainState, modality: str) -> None:
        """The follower's encoder and head drawn afresh, as the model's were (the original scripts'
        initialisation, seeded from the run's own generator: a resumed run draws the same), its BatchNorm
        statistics reset and its momentum dropped."""
        from ..models.encoders import init_weights

        seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=state.generator, device=state.device).item())
        modules = [state.model.encoders[modality], state.model.unimodal_heads[modality]]
        devices = [state.device] if state.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the run's global random state is left as it was
            torch.manual_seed(seed)
            for module in modules:
                for layer in module.modules():
                    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                        layer.reset_running_stats()
                init_weights(module)
        for module in modules:
            for p in module.parameters():
                state.optimizer.state.pop(p, None)

    def on_epoch_end(self, state: TrainState, evaluate) -> dict[str, float]:
        out = {"train/udi/anchor_stage": float(self.anchor_stage(state))}
        if state.epoch == self.stage_epochs - 1:  # the anchor: the best modality on validation, or the named one
            if self.anchor_option == "auto":
                val = evaluate("val")
                self.anchor = max(self._modalities, key=lambda m: (val[f"val/acc/{m}"], -self._modalities.index(m)))
            else:
                self.anchor = self.anchor_option
        for m in self._modalities:
            out[f"train/udi/anchor/{m}"] = float(self.anchor == m)
        return out

    # -- losses ------------------------------------------------------------------------------------
    def losses(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> dict[str, torch.Tensor]:
        if self.anchor_stage(state):
            return {f"unimodal/{m}": F.cross_entropy(h, labels) for m, h in output.unimodal_logits.items()}
        anchor, follower = self.anchor, self.follower
        with torch.no_grad():  # the frozen anchor: no gradient reaches its encoder or head
            anchor_features = output.features[anchor].detach()
            anchor_logits = state.model.unimodal_heads[anchor](anchor_features)
        follower_features = output.features[follower]
        terms = {f"unimodal/{follower}": F.cross_entropy(output.unimodal_logits[follower], labels)}
        if self.use_consistency:
            terms["consistency"] = js_divergence(anchor_logits, output.unimodal_logits[follower])
        if self.use_complementarity:
            x, y = self._oriented(anchor_features, follower_features)
            # no reward below 0: mutual information is never negative, so an estimate below it is the
            # estimator's error, which the follower would otherwise exploit without bound (features run off
            # until the loss is NaN) while the estimator, a step behind, cannot follow
            terms["complementarity"] = self.estimator.mutual_information(x, y).clamp(min=0.0)
        self._pair = (anchor_features, follower_features.detach())
        if self.controller == "step" or (self.controller == "epoch" and state.step % state.steps_per_epoch == 0):
            self._measure_weights(terms, follower, state)
        return terms

    def _oriented(self, anchor_features: torch.Tensor, follower_features: torch.Tensor):
        """(x, y) in the estimator's order (it is built for the dataset's first modality as x)."""
        first = self._modalities[0]
        return (anchor_features, follower_features) if self.anchor == first else (follower_features, anchor_features)

    def _measure_weights(self, terms: dict[str, torch.Tensor], follower: str, state: TrainState) -> None:
        """The dynamic controller on the follower's parameters (encoder and head)."""
        auxiliary = [k for k in ("consistency", "complementarity") if k in terms]
        if not auxiliary:
            return
        params = [p for p in (*state.model.encoders[follower].parameters(),
                              *state.model.unimodal_heads[follower].parameters()) if p.requires_grad]

        def grads(loss):
            g = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            return [torch.zeros_like(p) if gi is None else gi for p, gi in zip(params, g)]

        measured = dynamic_loss_weights(grads(terms[f"unimodal/{follower}"]), [grads(terms[k]) for k in auxiliary])
        weights = dict(zip(auxiliary, measured.tolist()))
        self.weights = torch.tensor([weights.get("consistency", 0.0), weights.get("complementarity", 0.0)],
                                    dtype=torch.float64)

    def loss_weights(self) -> dict[str, float]:
        """alpha_con and alpha_com as the follower's loss uses them now."""
        if self.controller == "static":
            return {"consistency": 0.5, "complementarity": 0.5}
        return {"consistency": float(self.weights[0]), "complementarity": float(self.weights[1])}

    def total_loss(self, losses: dict[str, torch.Tensor], state: TrainState) -> torch.Tensor:
        if self.anchor_stage(state):
            return torch.stack(list(losses.values())).sum()
        alpha = self.loss_weights()
        for name, weight in alpha.items():
            if name in losses:
                state.log(f"train/udi/alpha/{name}", weight)
        return sum((alpha[k] * v if k in alpha else v) for k, v in losses.items())

    def on_step_end(self, state: TrainState) -> None:
        """The CLUB estimator's own step: maximum likelihood on the step's detached feature pairs."""
        if self._pair is None or not self.use_complementarity:
            return
        x, y = self._oriented(*self._pair)
        self.estimator_optimizer.zero_grad(set_to_none=True)
        loss = self.estimator.learning_loss(x, y)
        loss.backward()
        self.estimator_optimizer.step()
        state.log("train/udi/estimator_nll", loss.detach())
        self._pair = None

    def prediction(self, output: ModelOutput) -> torch.Tensor:
        """The book's choice (the seed says none): the sum of the modalities' heads' logits."""
        return torch.stack(list(output.unimodal_logits.values())).sum(0)

    # -- resuming ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"stage_epochs": self.stage_epochs, "anchor": self.anchor, "weights": self.weights.clone(),
                "estimator": self.estimator.state_dict(), "estimator_optimizer": self.estimator_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["stage_epochs"] != self.stage_epochs:
            raise ValueError(f"the checkpoint trained its anchor for {state['stage_epochs']} epochs, this run for "
                             f"{self.stage_epochs}")
        self.anchor, self.weights = state["anchor"], state["weights"]
        self.estimator.load_state_dict(state["estimator"])
        self.estimator_optimizer.load_state_dict(state["estimator_optimizer"])
