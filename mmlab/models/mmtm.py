"""Cross-modal connections: the Multimodal Transfer Module (MMTM) and a classifier whose
encoders talk to each other through it (chapter 2, *The greedy learner*).

MMTM (Vaezi Joze, Shaban, Iuzzolino & Koishida, "MMTM: Multimodal Transfer Module for CNN
Fusion", CVPR 2020; chapter 2, Eq. ``eq-greedy-mmtm``): for the feature maps ``A^m``
(``[N, C_m, ...]``) of the modalities at one depth,

* squeeze: ``S^m = mean over the spatial positions of A^m`` (``[N, C_m]``);
* joint bottleneck: ``Z = ReLU(W [S^1; ...; S^M] + b)`` with ``sum_m C_m / ratio`` units (the
  ratio, 4, is this book's choice; the authors' released module also has the ReLU, but gates with
  ``sigmoid`` rather than ``2 sigmoid`` and uses ``sum_m C_m / 2`` units);
* excitation, one per modality: ``E^m = W^m Z + b^m`` and gate ``G^m = 2 sigmoid(E^m)``;
* output: ``A^m * G^m`` channel-wise. A gate of exactly 1 (``E^m = 0``) passes ``A^m`` unchanged.

The paths by which the other modalities reach branch ``m`` -- the bottleneck ``W, b`` and the
excitation ``W^m, b^m`` -- are what the greedy-learner analysis (Wu et al., ICML 2022) calls the
branch's *bypass*; they are declared per modality in :attr:`ParameterGroups.cross_modal`.

A *cut* ``(j, m)`` replaces the squeeze ``S^j`` by its running average (a buffer, not a
parameter, so nothing flows back through it) in the gate of branch ``m`` only: the cross-modal
input from ``j`` into ``m`` is cut. Greedy's re-balancing steps cut every input into the slower
branch; the conditional utilization rate cuts every output of the modality it removes.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Collection, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from .classifier import MultimodalClassifier, ParameterGroups
from .fusion import ConcatFusion

Cut = tuple[str, str]  # (source modality, target branch)


class MMTM(nn.Module):
    """One multimodal transfer module over the modalities' feature maps at one depth."""

    def __init__(self, channels: Mapping[str, int], ratio: int = 4, momentum: float = 0.1):
        super().__init__()
        if len(channels) < 2:
            raise ValueError("MMTM connects at least two modalities")
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must lie in (0, 1], got {momentum}")
        self.modalities = tuple(channels)
        self.channels = dict(channels)
        total = sum(self.channels.values())
        self.bottleneck = max(1, total // ratio)
        self.momentum = momentum
        self.squeeze = nn.Linear(total, self.bottleneck)
        self.excitation = nn.ModuleDict({m: nn.Linear(self.bottleneck, c) for m, c in self.channels.items()})
        # running average of the squeezed vectors [S^1; ...; S^M] over training batches
        self.register_buffer("running_squeeze", torch.zeros(total))
        self.register_buffer("batches_tracked", torch.zeros((), dtype=torch.long))

    def columns(self) -> dict[str, slice]:
        out, start = {}, 0
        for m in self.modalities:
            out[m] = slice(start, start + self.channels[m])
            start += self.channels[m]
        return out

    def branch_parameters(self, modality: str) -> list[nn.Parameter]:
        """The parameters on the path from the other modalities into ``modality``'s branch."""
        return list(self.squeeze.parameters()) + list(self.excitation[modality].parameters())

    @torch.no_grad()
    def _track(self, squeezed: torch.Tensor) -> None:
        mean = squeezed.detach().mean(0)
        if int(self.batches_tracked) == 0:
            self.running_squeeze.copy_(mean)
        else:
            self.running_squeeze.lerp_(mean, self.momentum)
        self.batches_tracked += 1

    def gates(self, features: Mapping[str, torch.Tensor], cuts: Collection[Cut] = ()) -> dict[str, torch.Tensor]:
        """``G^m`` (``[N, C_m]``) for every branch, with the cut inputs replaced by running averages."""
        squeezed = torch.cat([features[m].flatten(2).mean(2) if features[m].dim() > 2 else features[m]
                              for m in self.modalities], dim=1)
        if self.training:
            self._track(squeezed)
        cols = self.columns()
        bottleneck_cache: dict[frozenset, torch.Tensor] = {}
        out = {}
        for target in self.modalities:
            sources = frozenset(j for j, t in cuts if t == target and j != target)
            if sources not in bottleneck_cache:
                x = squeezed
                if sources:
                    keep = torch.ones(squeezed.shape[1], dtype=torch.bool, device=squeezed.device)
                    for j in sources:
                        keep[cols[j]] = False
                    x = torch.where(keep, squeezed, self.running_squeeze.to(squeezed.dtype))
                bottleneck_cache[sources] = torch.relu(self.squeeze(x))
            out[target] = 2.0 * torch.sigmoid(self.excitation[target](bottleneck_cache[sources]))
        return out

    def forward(self, features: Mapping[str, torch.Tensor], cuts: Collection[Cut] = ()) -> dict[str, torch.Tensor]:
        unknown = {m for pair in cuts for m in pair} - set(self.modalities)
        if unknown:
            raise KeyError(f"cuts name unknown modalities {sorted(unknown)}; MMTM has {list(self.modalities)}")
        gates = self.gates(features, cuts)
        out = {}
        for m in self.modalities:
            a, g = features[m], gates[m]
            out[m] = a * g.view(*g.shape, *([1] * (a.dim() - 2)))
        return out


def encoder_stages(encoder: nn.Module, modality: str) -> tuple[list[nn.Module], list[int]]:
    """An encoder's stages and the channels after each, from its ``stages()`` and
    ``stage_channels``; a clear error if it has none."""
    if not (hasattr(encoder, "stages") and hasattr(encoder, "stage_channels")):
        raise TypeError(
            f"The encoder of modality {modality!r} ({type(encoder).__name__}) does not expose stages; "
            "MMTM fusion needs an encoder with a `stages()` method (modules whose composition is the "
            "encoder) and a `stage_channels` attribute (channels after each stage)."
        )
    stages, channels = list(encoder.stages()), list(encoder.stage_channels)
    if len(stages) != len(channels) or len(stages) < 2:
        raise ValueError(f"encoder of {modality!r}: need at least 2 stages with one channel count each")
    return stages, channels


class MMTMClassifier(MultimodalClassifier):
    """The multimodal classifier with an MMTM after every encoder stage but the last.

    The encoders run stage by stage; the features they end with go to the same concatenation
    fusion (and heads) as in :class:`MultimodalClassifier`, so the :class:`ModelOutput`
    contract (features, logits, shares, unimodal logits) is unchanged. Works for any number
    (>= 2) of modalities whose encoders have the same number of stages.
    """

    def __init__(self, encoders: Mapping[str, nn.Module], fusion: ConcatFusion,
                 unimodal_heads: Mapping[str, nn.Module] | None = None, ratio: int = 4):
        super().__init__(encoders, fusion, unimodal_heads)
        if len(self.encoders) < 2:
            raise ValueError("MMTM fusion needs at least two modalities")
        staged = {m: encoder_stages(enc, m) for m, enc in self.encoders.items()}
        depths = {m: len(s) for m, (s, _) in staged.items()}
        if len(set(depths.values())) != 1:
            raise ValueError(f"MMTM needs encoders with the same number of stages, got {depths}")
        depth = next(iter(depths.values()))
        self.cross_modal = nn.ModuleList([
            MMTM({m: staged[m][1][i] for m in self.encoders}, ratio=ratio) for i in range(depth - 1)
        ])
        # plain attributes (not submodules): views of the encoders' own layers
        self._stages = {m: tuple(s) for m, (s, _) in staged.items()}
        self.rebalance_into: frozenset[str] = frozenset()
        self._replaced_sources: frozenset[str] = frozenset()

    # -- cutting cross-modal inputs -------------------------------------------------------------
    def cut_cross_modal_inputs_into(self, branches: Iterable[str]) -> None:
        """In training mode from now on, branch ``m`` (for each ``m`` given) gets the running
        averages of the other modalities' squeezed vectors instead of the current ones.
        An empty iterable restores the normal connections. Evaluation is never cut."""
        branches = frozenset(branches)
        unknown = branches - set(self.modalities)
        if unknown:
            raise KeyError(f"unknown branches {sorted(unknown)}; the model has {list(self.modalities)}")
        self.rebalance_into = branches

    @contextmanager
    def replacing_cross_modal_inputs(self, sources: Iterable[str]) -> Iterator[None]:
        """Within the block, every cross-modal input *from* the given modalities is replaced by
        its running average (in any mode): what "replace the modality by its average" means for
        the other branches (the conditional utilization rate)."""
        previous = self._replaced_sources
        self._replaced_sources = frozenset(sources)
        try:
            yield
        finally:
            self._replaced_sources = previous

    def current_cuts(self) -> frozenset[Cut]:
        cuts = {(s, t) for s in self._replaced_sources for t in self.modalities if t != s}
        if self.training:
            cuts |= {(s, t) for t in self.rebalance_into for s in self.modalities if s != t}
        return frozenset(cuts)

    # -- forward ----------------------------------------------------------------------------------
    def encode(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cuts = self.current_cuts()
        h = {m: inputs[m] for m in self.modalities}
        for i in range(len(self.cross_modal) + 1):
            h = {m: self._stages[m][i](h[m]) for m in self.modalities}
            if i < len(self.cross_modal):
                h = self.cross_modal[i](h, cuts)
        return h

    # -- parameter groups -------------------------------------------------------------------------
    def parameter_groups(self) -> ParameterGroups:
        groups = super().parameter_groups()
        groups.cross_modal = {m: [p for mmtm in self.cross_modal for p in mmtm.branch_parameters(m)]
                              for m in self.modalities}
        return groups

    def learning_speed_groups(self, modality: str) -> tuple[list[list[nn.Parameter]], list[list[nn.Parameter]]]:
        """Per MMTM location ``i``: the *main* parameters of branch ``modality`` (the encoder
        stage whose output MMTM ``i`` recalibrates) and its *bypass* parameters (MMTM ``i``'s
        path into the branch). Greedy's branch dominance ratio sums the learning speeds of each."""
        main = [list(self._stages[modality][i].parameters()) for i in range(len(self.cross_modal))]
        bypass = [mmtm.branch_parameters(modality) for mmtm in self.cross_modal]
        return main, bypass
