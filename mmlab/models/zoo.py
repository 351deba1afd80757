"""Build the classifier for a dataset: which encoder each dataset uses."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from torch import nn

from ..data.registry import DatasetSpec
from ..errors import UnknownNameError
from .classifier import MultimodalClassifier
from .encoders import ConvEncoder, init_weights
from .fusion import ConcatFusion, CosineFusion, SharedHeadFusion
from .mmtm import MMTMClassifier

FEATURE_DIM = 512

# dataset name -> (modality, input channels) -> encoder with ``feature_dim`` outputs. The
# audio-visual data sets (chapter 5) add their entries here; a dataset without one gets the
# small convolutional encoder of chapter 1 for every modality (it pools globally, so it takes
# any input height and width).
def _conv_encoder(modality: str, channels: int) -> nn.Module:
    return ConvEncoder(channels, FEATURE_DIM)


def _cremad_encoder(modality: str, channels: int) -> nn.Module:
    """ResNet-18 per modality, from scratch (OGM-GE, MMPareto): spectrogram or frames."""
    from .resnet import FramesResNet, SpectrogramResNet

    return FramesResNet(channels) if modality == "visual" else SpectrogramResNet(channels)


def _avdigits_encoder(modality: str, channels: int) -> nn.Module:
    """The digits' image: chapter 1's encoder. The spoken digit's 129 x 63 spectrogram: the same
    convolutions, the first with stride 2 (the spectrogram has ten times a digit's pixels), pooled
    to 4 x 4 rather than to one value per channel, so that the encoder still knows when and at
    which frequency the energy was (a global pool leaves a spoken-digit probe far below a linear
    model on the raw spectrogram)."""
    if modality == "audio":
        return ConvEncoder(channels, FEATURE_DIM, pooled_size=4, stem_stride=2)
    return ConvEncoder(channels, FEATURE_DIM)


ENCODERS: dict[str, Callable[[str, int], nn.Module]] = {
    "avdigits": _avdigits_encoder,
    "cgmnist": _conv_encoder,
    "cremad": _cremad_encoder,
    "cremad_shaped": _cremad_encoder,
}


#: how the encoders are connected: late ("concat": encoders apart, concatenation at the end) or
#: with cross-modal modules between their stages as well ("mmtm", chapter 2)
FUSIONS: dict[str, type[MultimodalClassifier]] = {
    "concat": MultimodalClassifier,
    "mmtm": MMTMClassifier,
    "shared_head": MultimodalClassifier,  # one head shared by the modalities (MLA, chapter 6)
    "cosine": MultimodalClassifier,  # concatenation on the unit sphere (MMCosine, chapter 3)
}

#: the fusion module each connection ends in (its options, e.g. MMCosine's ``scaling``, come from the method's
#: ``fusion_options``)
FUSION_HEADS: dict[str, type] = {"concat": ConcatFusion, "mmtm": ConcatFusion, "shared_head": SharedHeadFusion,
                                 "cosine": CosineFusion}


def build_model(
    spec: DatasetSpec, modalities: Sequence[str], unimodal_heads: bool, fusion: str = "concat",
    fusion_options: Mapping[str, Any] | None = None,
) -> MultimodalClassifier:
    """Encoders for ``modalities``, concatenation fusion (with MMTM modules between the
    encoders' stages if ``fusion="mmtm"``; one head shared by the modalities if
    ``fusion="shared_head"``; cosine-normalised shares if ``fusion="cosine"``, with
    ``fusion_options`` such as its ``scaling``), and (optionally) one linear head per modality;
    initialised as the original scripts do."""
    if fusion not in FUSIONS:
        raise UnknownNameError("fusion", fusion, FUSIONS)
    make_encoder = ENCODERS.get(spec.name, _conv_encoder)
    encoders = {m: make_encoder(m, spec.modalities[m]) for m in modalities}
    head = FUSION_HEADS[fusion]({m: FEATURE_DIM for m in modalities}, spec.num_classes, **dict(fusion_options or {}))
    heads = (
        {m: nn.Linear(FEATURE_DIM, spec.num_classes) for m in modalities}
        if unimodal_heads else None
    )
    return init_weights(FUSIONS[fusion](encoders, head, heads))
