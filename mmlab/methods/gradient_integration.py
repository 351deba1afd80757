"""Integrating the multimodal and the unimodal gradient of one encoder
(chapter 4, *Gradient conflict and MMPareto*).

With the uniform baseline's losses, the encoder of modality ``k`` receives two
gradients from one forward pass: ``g_m`` of the multimodal loss and ``g_u`` of
its own unimodal loss. The uniform baseline adds them. These methods combine
them differently, through the loop's ``combine_encoder_gradients`` hook; heads
and fusion keep the plain summed gradient (MMPareto, Algorithm 1: "update
theta_other without gradient integration").

* conventional Pareto (MGDA; Sener & Koltun 2018): the min-norm convex
  combination, ``h = 2 (a_m g_m + a_u g_u)`` (the factor 2 keeps the scale of
  the uniform sum, as MMPareto's Eq. 9 writes it);
* PCGrad (Yu et al. 2020): on conflict, project each gradient onto the normal
  plane of the other, then add;
* MMPareto (Wei & Hu, ICML 2024, Algorithm 1 and Eq. 16): the Pareto direction
  where the two conflict (the plain sum where they do not), with the magnitude
  of the uniform sum, times ``gamma``.
"""

from __future__ import annotations

import torch

from ..metrics import global_norm, gram
from .base import TrainState
from .baselines import UniformBaseline

Gradient = list[torch.Tensor]

# ||h'|| below this fraction of ||g_m|| + ||g_u|| is rounding noise around a Pareto-stationary point.
STATIONARY_TOLERANCE = 1e-6


def min_norm_weights(g1: Gradient, g2: Gradient) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights ``(a, 1 - a)``, ``a`` in [0, 1], that minimise ``||a g1 + (1 - a) g2||``.

    Closed form (MMPareto Sec. 3.3.2; Sener & Koltun 2018, Alg. 1):
    ``a = (g2 - g1) . g2 / ||g1 - g2||^2``, clipped to [0, 1]; equal gradients give 1/2.
    Returned as 0-d tensors (no device sync).
    """
    return min_norm_weights_from_gram(*gram(g1, g2))


def min_norm_weights_from_gram(d11: torch.Tensor, d12: torch.Tensor, d22: torch.Tensor):
    """:func:`min_norm_weights` from the inner products ``g1.g1``, ``g1.g2``, ``g2.g2``."""
    denominator = d11 - 2 * d12 + d22  # ||g1 - g2||^2
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    a = torch.where(denominator > 0, ((d22 - d12) / safe).clamp(0.0, 1.0), torch.full_like(d11, 0.5))
    return a, 1 - a


def _scaled_sum(weights: tuple[torch.Tensor, torch.Tensor], g1: Gradient, g2: Gradient) -> Gradient:
    """``w1 g1 + w2 g2``, tensor by tensor (foreach kernels: no Python loop over the tensors)."""
    out = torch._foreach_mul(g1, weights[0])
    torch._foreach_add_(out, torch._foreach_mul(g2, weights[1]))
    return out


def mmpareto_direction(g_m: Gradient, g_u: Gradient, gamma: float = 1.5) -> tuple[Gradient, dict]:
    """MMPareto's integrated gradient for one encoder (Algorithm 1).

    ``cos(g_m, g_u) >= 0``: ``h' = g_m + g_u``. Else ``h' = 2 (a_m g_m + a_u g_u)``
    with the min-norm weights. Then ``h = gamma * ||g_m + g_u|| * h' / ||h'||``.
    Returns ``h`` and the quantities the chapter plots.
    """
    mm, mu, uu = gram(g_m, g_u)  # g_m.g_m, g_m.g_u, g_u.g_u
    conflict = mu < 0
    a_m, a_u = min_norm_weights_from_gram(mm, mu, uu)
    half = torch.full_like(a_m, 0.5)
    a_m, a_u = torch.where(conflict, a_m, half), torch.where(conflict, a_u, half)
    h_prime = _scaled_sum((2 * a_m, 2 * a_u), g_m, g_u)
    uniform_norm = global_norm(torch._foreach_add(g_m, g_u))
    h_norm = global_norm(h_prime)
    # h' = 0 (up to rounding) is a Pareto-stationary point: no common descent direction, no step.
    stationary = h_norm <= STATIONARY_TOLERANCE * (mm.sqrt() + uu.sqrt())
    scale = gamma * uniform_norm / h_norm.clamp_min(1e-30)
    scale = torch.where(stationary, torch.zeros_like(scale), scale)
    return torch._foreach_mul(h_prime, scale), {"conflict": conflict.float(), "alpha_m": a_m}


class MMPareto(UniformBaseline):
    """MMPareto: Pareto direction on conflict, uniform-sum magnitude times gamma (Wei & Hu 2024, Alg. 1)."""

    name = "mmpareto"
    per_loss_gradients = True
    capturable = True  # torch.where for the conflict cases: no host branch, no sync

    def __init__(self, gamma: float = 1.5, granularity: str = "encoder"):
        if granularity not in ("encoder", "tensor"):
            raise ValueError(f"granularity must be 'encoder' (Algorithm 1) or 'tensor' (the original code), "
                             f"got {granularity!r}")
        if not gamma > 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        self.gamma, self.granularity = gamma, granularity

    def combine_encoder_gradients(self, modality, grads, state: TrainState) -> Gradient:
        g_m, g_u = grads["multimodal"], grads[f"unimodal/{modality}"]
        if self.granularity == "encoder":
            h, info = mmpareto_direction(g_m, g_u, self.gamma)
            state.log(f"train/mmpareto_conflict/{modality}", info["conflict"])
            state.log(f"train/mmpareto_alpha_m/{modality}", info["alpha_m"])
            return h
        return [mmpareto_direction([a], [b], self.gamma)[0][0] for a, b in zip(g_m, g_u)]


class ConventionalPareto(UniformBaseline):
    """Conventional Pareto (MGDA): the min-norm convex combination of g_m and g_u (Sener & Koltun 2018)."""

    name = "mgda"
    per_loss_gradients = True
    capturable = True

    def combine_encoder_gradients(self, modality, grads, state: TrainState) -> Gradient:
        g_m, g_u = grads["multimodal"], grads[f"unimodal/{modality}"]
        a_m, a_u = min_norm_weights(g_m, g_u)
        state.log(f"train/mgda_alpha_m/{modality}", a_m)
        return _scaled_sum((2 * a_m, 2 * a_u), g_m, g_u)


def pcgrad_pair(g1: Gradient, g2: Gradient) -> Gradient:
    """PCGrad for two gradients (Yu et al. 2020, Alg. 1): if they conflict, remove from
    each its component along the other, then add."""
    n1, dot, n2 = gram(g1, g2)
    conflict = dot < 0
    c1 = torch.where(conflict, dot / n2.clamp_min(1e-30), torch.zeros_like(dot))
    c2 = torch.where(conflict, dot / n1.clamp_min(1e-30), torch.zeros_like(dot))
    return _scaled_sum((1 - c2, 1 - c1), g1, g2)  # (g1 - c1 g2) + (g2 - c2 g1)


class PCGrad(UniformBaseline):
    """PCGrad: project conflicting gradients onto each other's normal plane (Yu et al. 2020)."""

    name = "pcgrad"
    per_loss_gradients = True
    capturable = True

    def combine_encoder_gradients(self, modality, grads, state: TrainState) -> Gradient:
        return pcgrad_pair(grads["multimodal"], grads[f"unimodal/{modality}"])
