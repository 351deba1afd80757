"""Build the classifier for a dataset: which encoder each dataset uses."""

from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from ..data.registry import DatasetSpec
from .classifier import MultimodalClassifier
from .encoders import ConvEncoder, init_weights
from .fusion import ConcatFusion

FEATURE_DIM = 512

# dataset name -> (input channels -> encoder)
ENCODERS: dict[str, Callable[[int], nn.Module]] = {
    "cgmnist": lambda channels: ConvEncoder(channels, FEATURE_DIM),
}


def build_model(
    spec: DatasetSpec, modalities: Sequence[str], unimodal_heads: bool
) -> MultimodalClassifier:
    """Encoders for ``modalities``, concatenation fusion, and (optionally) one
    linear head per modality; initialised as the original scripts do."""
    make_encoder = ENCODERS[spec.name]
    encoders = {m: make_encoder(spec.modalities[m]) for m in modalities}
    fusion = ConcatFusion({m: FEATURE_DIM for m in modalities}, spec.num_classes)
    heads = (
        {m: nn.Linear(FEATURE_DIM, spec.num_classes) for m in modalities}
        if unimodal_heads else None
    )
    return init_weights(MultimodalClassifier(encoders, fusion, heads))
