"""Concatenation fusion and its additive decomposition (chapter 1; derived in chapter 3).

With features ``z^m`` of the modalities ``m = 1..M`` and one linear layer over
their concatenation,

.. math::  f(x) = W [z^1; \\dots; z^M] + b = \\sum_m \\left( W^m z^m + b / M \\right),

where ``W^m`` is the block of columns of ``W`` that multiplies ``z^m``. Each
term ``s^m = W^m z^m + b/M`` is that modality's *share* of the fused logits
(OGM-GE, Peng et al. 2022, Eq. 5 and its code split the bias in halves for two
modalities). The shares are what OGM-GE scores and what "each modality's
accuracy" means for a model without unimodal heads.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn


class ConcatFusion(nn.Module):
    """``f(x) = W [z^1; ...; z^M] + b`` with the per-modality shares exposed."""

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int):
        super().__init__()
        self.modalities = tuple(feature_dims)
        self.feature_dims = dict(feature_dims)
        self.linear = nn.Linear(sum(self.feature_dims.values()), num_classes)

    def modality_columns(self) -> dict[str, slice]:
        """Which columns of ``linear.weight`` multiply each modality's features: ``W^m = weight[:, cols]``."""
        slices, start = {}, 0
        for m in self.modalities:
            slices[m] = slice(start, start + self.feature_dims[m])
            start += self.feature_dims[m]
        return slices

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The fused logits, from the concatenated features."""
        return self.linear(torch.cat([features[m] for m in self.modalities], dim=1))

    def modality_shares(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``s^m = W^m z^m + b/M`` for each modality; they add up to :meth:`forward`."""
        weight, bias = self.linear.weight, self.linear.bias
        share_of_bias = bias / len(self.modalities)
        return {
            m: F.linear(features[m], weight[:, cols], share_of_bias)
            for m, cols in self.modality_columns().items()
        }


class SharedHeadFusion(nn.Module):
    """One linear head shared by every modality, ``h(z) = W z + b``, and the fused logits the sum of its
    outputs, ``f(x) = sum_m h(z^m)`` (MLA, Zhang et al., CVPR 2024: the modalities are trained one after
    another through this head). Each modality's share is ``s^m = h(z^m)``, its own prediction;
    the shares add up to :meth:`forward`. Every modality's features must have the same size."""

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int):
        super().__init__()
        sizes = set(feature_dims.values())
        if len(sizes) != 1:
            raise ValueError(f"a shared head needs features of one size for every modality, got {dict(feature_dims)}")
        self.modalities = tuple(feature_dims)
        self.feature_dims = dict(feature_dims)
        self.linear = nn.Linear(sizes.pop(), num_classes)

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The fused logits: the sum of the head's outputs on each modality's features."""
        return torch.stack(list(self.modality_shares(features).values())).sum(0)

    def modality_shares(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``s^m = h(z^m)``: the shared head on one modality's features."""
        return {m: self.linear(features[m]) for m in self.modalities}


class CosineFusion(ConcatFusion):
    """MMCosine's fusion (Xu, Feng, Zhang & Hu, ICASSP 2023): concatenation fusion with each modality's
    features and each class's block of weights on the unit sphere, and no bias,

    .. math::  s^m_c = s \\cos(z^m, W^m_c) = s\\, \\frac{\\langle z^m, W^m_c\\rangle}{\\lVert z^m\\rVert\\,\\lVert W^m_c\\rVert},
               \\qquad f(x) = \\sum_m s^m,

    where ``W^m_c`` is row ``c`` of the columns of ``W`` that multiply ``z^m`` and ``s`` the ``scaling`` (the
    authors' default 10). Every share lies in ``[-s, s]``, whatever the features' norms: a modality can grow its
    share only by pointing its features at its class's weights, not by making them longer (its linear layer has
    no bias)."""

    def __init__(self, feature_dims: Mapping[str, int], num_classes: int, scaling: float = 10.0):
        super().__init__(feature_dims, num_classes)
        self.linear = nn.Linear(sum(self.feature_dims.values()), num_classes, bias=False)
        if not scaling > 0:
            raise ValueError(f"MMCosine's scaling must be positive, got {scaling!r}")
        self.scaling = float(scaling)

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The fused logits: the sum of the modalities' scaled cosines."""
        return torch.stack(list(self.modality_shares(features).values())).sum(0)

    def modality_shares(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``s^m = scaling * cos(z^m, W^m_c)`` for every class ``c``; they add up to :meth:`forward`."""
        weight = self.linear.weight
        return {
            m: self.scaling * F.linear(F.normalize(features[m], dim=1), F.normalize(weight[:, cols], dim=1))
            for m, cols in self.modality_columns().items()
        }
