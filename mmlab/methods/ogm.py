"""On-the-fly Gradient Modulation with Generalization Enhancement (chapter 3).

OGM-GE (Peng et al., CVPR 2022, Eqs. 6-11; the M-modality form of Wei et al.,
TPAMI 2024). With concatenation fusion the fused logits are a sum of shares
``s^m = W^m z^m + b/M``. Per batch:

* score of modality ``m``: ``s_m = sum_i softmax(s^m(x_i))[y_i]``, its confidence in the true class;
* discrepancy ratio ``rho_m = s_m / mean_{j != m} s_j`` (for two modalities, ``s_m / s_other``);
* modulation coefficient ``k_m = 1 - tanh(alpha * rho_m)`` if ``rho_m > 1``, else 1
  (as the official code computes it: at ``rho = 1`` it jumps from 1 to ``1 - tanh(alpha)``;
  ``continuous=True`` uses ``rho_m - 1`` instead);
* after the backward pass of the fused cross-entropy, the encoder of ``m`` gets ``k_m g``,
  then (GE) Gaussian noise ``N(0, std(g)^2)`` per parameter tensor, with the std of the
  unscaled gradient, added to every encoder;
* only inside the modulation window of epochs ``[window_start, window_end)``.

OPM (the on-the-fly *prediction* modulation of the same TPAMI paper) acts in the
forward pass instead: with probability ``p_exe`` per batch, each sample's features
of a dominant modality are dropped (zeroed) with probability
``q_m = q_base (1 + strength * tanh(relu(rho_m - 1))) `` before fusion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models import ModelOutput
from .base import Method, TrainState


def modality_scores(shares: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """``s_m``: the batch sum of each share's softmax probability of the true class
    (vectorised; the official code loops over samples in Python)."""
    return {m: F.softmax(s.detach(), dim=1).gather(1, labels[:, None]).sum() for m, s in shares.items()}


def discrepancy_ratios(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``rho_m = s_m / mean of the other modalities' scores``."""
    names = list(scores)
    if len(names) < 2:
        raise ValueError("OGM-GE needs at least two modalities")
    total = sum(scores.values())
    return {m: scores[m] * (len(names) - 1) / (total - scores[m]).clamp_min(1e-12) for m in names}


def modulation_coefficient(rho: torch.Tensor, alpha: float, continuous: bool = False) -> torch.Tensor:
    """``k = 1 - tanh(alpha * rho)`` (or ``alpha * (rho - 1)``) where ``rho > 1``, else 1."""
    excess = torch.relu(rho - 1) if continuous else torch.relu(rho)
    return torch.where(rho > 1, 1 - torch.tanh(alpha * excess), torch.ones_like(rho))


class OGMGE(Method):
    """OGM-GE: slow down the dominant modality's encoder, add generalisation noise (Peng et al. 2022)."""

    name = "ogm_ge"
    capturable = True  # one graph inside the modulation window, one outside; GE's noise from state.generator

    def capture_key(self, state: TrainState) -> bool:
        return self.in_window(state.epoch)

    def __init__(self, alpha: float = 0.8, window_start: int = 0, window_end: int = 50,
                 noise: bool = True, conv_only: bool = False, continuous: bool = False):
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if window_end < window_start:
            raise ValueError("window_end must not be before window_start")
        self.alpha, self.window = alpha, (window_start, window_end)
        self.noise, self.conv_only, self.continuous = noise, conv_only, continuous

    def in_window(self, epoch: int) -> bool:
        return self.window[0] <= epoch < self.window[1]

    def _modulated(self, params):
        # The official code scales only the 4-D (convolution) weights; the maintainers meant the whole encoder.
        return [p for p in params if p.grad is not None and (not self.conv_only or p.dim() == 4)]

    def transform_gradients(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> None:
        rho = discrepancy_ratios(modality_scores(output.shares, labels))
        for m, r in rho.items():
            state.log(f"train/ogm_rho/{m}", r)
        if not self.in_window(state.epoch):
            return
        for m, params in state.groups.encoders.items():
            k = modulation_coefficient(rho[m], self.alpha, self.continuous)
            state.log(f"train/ogm_coefficient/{m}", k)
            grads = [p.grad for p in self._modulated(params)]
            if not grads:
                continue
            if self.noise:  # std of each unscaled gradient tensor; a one-element tensor gets none
                stds = [g.std() if g.numel() > 1 else torch.zeros((), device=g.device) for g in grads]
            torch._foreach_mul_(grads, k)  # one fused kernel for the whole encoder
            if self.noise:
                flat = torch.randn(sum(g.numel() for g in grads), device=grads[0].device,
                                   generator=state.generator)
                noise = [chunk.view_as(g) for chunk, g in zip(flat.split([g.numel() for g in grads]), grads)]
                torch._foreach_mul_(noise, stds)
                torch._foreach_add_(grads, noise)


def drop_probabilities(rho: dict[str, torch.Tensor], base: float, strength: float) -> dict[str, torch.Tensor]:
    """OPM's per-modality drop probability (Wei et al., TPAMI 2024):
    ``q_m = base * (1 + strength * tanh(relu(rho_m - 1)))`` for a dominant modality
    (``rho_m > 1``), 0 otherwise, clipped to [0, 1]."""
    return {
        m: torch.where(r > 1, (base * (1 + strength * torch.tanh(torch.relu(r - 1)))).clamp(0, 1),
                       torch.zeros_like(r))
        for m, r in rho.items()
    }


class OPM(Method):
    """OPM: drop the dominant modality's features per sample, before fusion (Wei et al., TPAMI 2024)."""

    name = "opm"
    capturable = True  # one graph inside the window, one outside; the drops from state.generator

    def capture_key(self, state: TrainState) -> bool:
        return self.window[0] <= state.epoch < self.window[1]

    def __init__(self, q_base: float = 0.5, strength: float = 0.5, p_exe: float = 0.7,
                 window_start: int = 0, window_end: int = 50):
        for name, value in (("q_base", q_base), ("p_exe", p_exe)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if strength < 0:
            raise ValueError(f"strength must be >= 0, got {strength}")
        self.q_base, self.strength, self.p_exe = q_base, strength, p_exe
        self.window = (window_start, window_end)

    def intervene(self, features: dict[str, torch.Tensor], state: TrainState) -> dict[str, torch.Tensor]:
        if not (self.window[0] <= state.epoch < self.window[1]) or state.labels is None:
            return features
        with torch.no_grad():
            shares = state.model.fusion.modality_shares(features)
            rho = discrepancy_ratios(modality_scores(shares, state.labels))
            q = drop_probabilities(rho, self.q_base, self.strength)
            device = state.labels.device
            execute = torch.rand((), device=device, generator=state.generator) < self.p_exe
        out = {}
        for m, z in features.items():
            state.log(f"train/opm_drop_probability/{m}", q[m] * execute)
            keep = torch.rand(z.shape[0], 1, device=z.device, generator=state.generator) >= q[m] * execute
            out[m] = z * keep.to(z.dtype)
        return out
