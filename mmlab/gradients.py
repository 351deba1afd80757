"""Mini-batch gradient statistics at fixed parameters (chapter on gradient conflict and MMPareto).

MMPareto (Wei & Hu, ICML 2024, Sec. 3.2 and 4.2) models a mini-batch gradient as
``g_S ~ N(g, C / |S|)`` and observes that, for a shared encoder, the multimodal
loss's gradient is smaller than the unimodal one in norm *and* in batch-sampling
covariance. :func:`sample_encoder_gradients` draws such gradients for many
mini-batches without changing the model; :func:`covariance_summary` condenses a
set of draws into the quantities the chapter compares.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch

from .methods import Method
from .models import MultimodalClassifier
from .training.batches import ResidentBatches
from .training.loop import per_loss_encoder_gradients


def sample_encoder_gradients(model: MultimodalClassifier, method: Method, batches: ResidentBatches,
                             modality: str, num_batches: int, epoch: int = 0) -> dict[str, torch.Tensor]:
    """``{loss name: [num_batches, P]}``: the flattened gradient of each of ``method``'s
    losses w.r.t. the encoder of ``modality``, one row per mini-batch.

    The model is used in training mode (BatchNorm normalises with each batch's
    statistics, as in a training step) and left exactly as it was: its running
    statistics are restored afterwards and no parameter changes.
    """
    saved = copy.deepcopy(model.state_dict())
    was_training = model.training
    model.train()
    draws: dict[str, list[torch.Tensor]] = {}
    groups = model.parameter_groups()
    try:
        for _, (inputs, labels) in zip(range(num_batches), batches.epoch(epoch)):
            out = model(inputs)
            losses = method.losses(out, labels, None)
            grads = per_loss_encoder_gradients(out, losses, groups)[modality]
            for name, g in grads.items():
                draws.setdefault(name, []).append(torch.cat([t.detach().flatten() for t in g]))
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
    return {name: torch.stack(rows) for name, rows in draws.items()}


def covariance_summary(draws: torch.Tensor, top: int = 5) -> dict[str, object]:
    """Mean norm, norm of the mean, total variance ``tr C_S`` (the trace of the
    batch-sampling covariance) and its ``top`` largest eigenvalues, from
    ``draws`` of shape ``[n, P]`` (``n >= 2``)."""
    n = draws.shape[0]
    if n < 2:
        raise ValueError("need at least two draws to estimate a covariance")
    centred = draws - draws.mean(0)
    # eigenvalues of the P x P sample covariance = squared singular values of centred / sqrt(n - 1)
    eigenvalues = torch.linalg.svdvals(centred.double() / (n - 1) ** 0.5) ** 2
    return {
        "mean_norm": draws.norm(dim=1).mean().item(),
        "norm_of_mean": draws.mean(0).norm().item(),
        "total_variance": centred.pow(2).sum().item() / (n - 1),
        "top_eigenvalues": eigenvalues[:top].tolist(),
    }


def norms(draws: torch.Tensor) -> torch.Tensor:
    """The norm of each draw (for a histogram)."""
    return draws.norm(dim=1)


def combined(draws: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``sum_k weights[k] * draws[k]``, draw by draw (an integration rule with fixed weights)."""
    return sum(w * d for w, d in zip(weights, draws))
