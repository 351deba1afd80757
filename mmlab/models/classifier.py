"""The multimodal classifier: named encoders, a fusion module, optional unimodal heads.

Parameter groups per modality are *declared* by the structure -- the encoder of
modality ``m`` is ``model.encoders[m]`` -- never found by matching parameter
names. Methods read them from :meth:`MultimodalClassifier.parameter_groups`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn

from .fusion import ConcatFusion

FeatureIntervention = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass
class ModelOutput:
    """Everything one forward pass produces."""

    features: dict[str, torch.Tensor]  # z^m, after any forward-time intervention
    logits: torch.Tensor  # the fused logits f(x)
    shares: dict[str, torch.Tensor]  # s^m = W^m z^m + b/M (sum to ``logits``)
    unimodal_logits: dict[str, torch.Tensor] = field(default_factory=dict)  # h^m(z^m)


@dataclass
class ParameterGroups:
    """The model's parameters, grouped by what they belong to."""

    encoders: dict[str, list[nn.Parameter]]
    fusion: list[nn.Parameter]
    heads: dict[str, list[nn.Parameter]]
    # cross-modal connections (MMTM, chapter 2): per branch m, the parameters through which the
    # other modalities reach it. Branches may share some (MMTM's joint bottleneck). Empty for
    # late fusion.
    cross_modal: dict[str, list[nn.Parameter]] = field(default_factory=dict)

    def cross_modal_parameters(self) -> list[nn.Parameter]:
        """Every cross-modal parameter once."""
        seen, out = set(), []
        for ps in self.cross_modal.values():
            for p in ps:
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def non_encoder(self) -> list[nn.Parameter]:
        return self.fusion + [p for ps in self.heads.values() for p in ps] + self.cross_modal_parameters()

    def all(self) -> list[nn.Parameter]:
        return [p for ps in self.encoders.values() for p in ps] + self.non_encoder()


class MultimodalClassifier(nn.Module):
    """``encoders`` (one per modality) -> ``fusion`` -> fused logits, plus
    optional unimodal heads ``h^m`` on each encoder's features (the uniform
    baseline and MMPareto train them)."""

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        fusion: ConcatFusion,
        unimodal_heads: Mapping[str, nn.Module] | None = None,
    ):
        super().__init__()
        self.encoders = nn.ModuleDict(dict(encoders))
        self.fusion = fusion
        self.unimodal_heads = nn.ModuleDict(dict(unimodal_heads or {}))
        if tuple(self.encoders) != tuple(fusion.modalities):
            raise ValueError(
                f"encoders {tuple(self.encoders)} and fusion modalities "
                f"{tuple(fusion.modalities)} differ"
            )
        self.channels_last = False  # see use_channels_last
        extra = set(self.unimodal_heads) - set(self.encoders)
        if extra:
            raise ValueError(f"unimodal heads for unknown modalities: {sorted(extra)}")

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.encoders)

    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        intervene: FeatureIntervention | None = None,
    ) -> ModelOutput:
        missing = set(self.modalities) - set(inputs)
        if missing:
            raise KeyError(f"inputs lack modalities {sorted(missing)}; got {sorted(inputs)}")
        if self.channels_last:
            inputs = {m: x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
                      for m, x in inputs.items()}
        return self.fuse(self.encode(inputs), intervene)

    def fuse(self, features: dict[str, torch.Tensor], intervene: FeatureIntervention | None = None) -> ModelOutput:
        """Everything after the encoders: the intervention, the fused logits, the shares, the heads
        (:class:`~mmlab.models.stacked.StackedEncoders` computes the features of several models at once)."""
        if intervene is not None:
            features = intervene(features)
        return ModelOutput(
            features=features,
            logits=self.fusion(features),
            shares=self.fusion.modality_shares(features),
            unimodal_logits={m: head(features[m]) for m, head in self.unimodal_heads.items()},
        )

    def use_channels_last(self) -> "MultimodalClassifier":
        """Store the convolutions' weights, and take image-shaped inputs, in channels-last (NHWC)
        memory format: the same parameters and results, with the faster kernels (oneDNN on a CPU:
        CG-MNIST's max-pool runs ten times faster; cuDNN on a GPU for CREMA-D's ResNets)."""
        # 4-d tensors only (``.to(memory_format=...)`` refuses a model with 5-d buffers)
        self._apply(lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t)
        self.channels_last = True
        return self

    def encode(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The features ``z^m`` of every modality (here each encoder on its own input)."""
        return {m: self.encoders[m](inputs[m]) for m in self.modalities}

    def parameter_groups(self) -> ParameterGroups:
        return ParameterGroups(
            encoders={m: list(enc.parameters()) for m, enc in self.encoders.items()},
            fusion=list(self.fusion.parameters()),
            heads={m: list(h.parameters()) for m, h in self.unimodal_heads.items()},
        )
