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
  pairs with its own optimiser;
* :math:`\\alpha_{con}, \\alpha_{com}`: the **dynamic controller** (:func:`dynamic_loss_weights`), each the
  positive part of the auxiliary loss's gradient alignment with :math:`L_{cls}`'s on the follower's
  parameters, normalised over the two.

This module holds these three pieces, checked against closed forms and autograd (``tests/test_udi.py``); the
method itself, with its stages through the training loop's hooks, is chapter 6's next step.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = ["CLUBEstimator", "dynamic_loss_weights", "js_divergence"]


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
