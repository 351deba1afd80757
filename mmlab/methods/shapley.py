"""The Shapley value of a modality game, shared by AGM (chapter 3: the mono-modal responses) and sample-level
modality valuation (chapter 5: each sample's contributions).

For players ``M`` and a game ``v`` on their subsets, player ``m``'s Shapley value is the weighted mean of what it adds
to each coalition of the others,

    phi^m = sum_{S subset of M minus m} |S|! (|M| - |S| - 1)! / |M|!  [ v(S + m) - v(S) ],

and the values sum to ``v(M) - v({})`` (efficiency).
"""

from __future__ import annotations

import itertools
import math
from typing import Mapping, Sequence

import torch


def shapley_values(values: Mapping[frozenset, torch.Tensor], players: Sequence[str],
                   dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Each player's Shapley value in the game ``S -> values[S]`` (every subset of ``players`` a key, the empty one
    included; tensors of one shape, e.g. ``[N]`` for one game per sample, ``[B, C]`` for one per logit), computed
    in ``dtype`` (default: the values' own if they are floating point, else float64: a game of bools, whether a
    coalition is right, has values -1/2, 0, 1/2, 1 for two players)."""
    names = list(players)
    count = len(names)
    full = values[frozenset(names)]
    dtype = dtype or (full.dtype if full.is_floating_point() else torch.float64)
    contributions = {}
    for m in names:
        others = [k for k in names if k != m]
        total = torch.zeros_like(full, dtype=dtype)
        for size in range(count):
            weight = math.factorial(size) * math.factorial(count - size - 1) / math.factorial(count)
            for coalition in itertools.combinations(others, size):
                gain = values[frozenset(coalition) | {m}].to(dtype) - values[frozenset(coalition)].to(dtype)
                total = total + weight * gain
        contributions[m] = total
    return contributions
