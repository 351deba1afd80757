"""One split of a multimodal data set, as the training loop reads it.

The loop needs only ``inputs`` (one tensor per modality, first dimension ``N``), ``labels``
(``int64 [N]``) and ``len()``. Images are ``uint8`` (the batches divide them by 255);
spectrograms and other real-valued inputs are floating point and are used as they are.
CG-MNIST's :class:`~mmlab.data.cgmnist.MultimodalSplit` adds the colour statistics of its
shortcut; the audio-visual data sets (chapter 5) use this class, with what they want to
keep about each sample in ``extras``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Split:
    name: str
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. which recording each sample uses

    def __post_init__(self) -> None:
        if self.labels.dim() != 1:
            raise ValueError(f"labels must be one-dimensional, but have shape {tuple(self.labels.shape)}.")
        if not self.inputs:
            raise ValueError("inputs must hold at least one modality.")
        n = self.labels.shape[0]
        for key, tensor in self.inputs.items():
            if tensor.shape[0] != n:
                raise ValueError(f"Modality {key!r} has {tensor.shape[0]} samples but there are {n} labels.")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.inputs)
