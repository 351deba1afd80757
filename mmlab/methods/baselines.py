"""The three baselines of chapter 1, *Modality imbalance, observed*.

* one joint loss -- :class:`mmlab.methods.base.Method`: CE of the fused logits;
* unimodal -- one encoder, trained alone (the reference each modality can reach);
* uniform baseline -- the fused CE plus one CE per modality from a unimodal head,
  ``L = L_mm + sum_m L_u^m`` (MMPareto, Wei & Hu 2024, Sec. 3.1 and Table 3).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import UnknownNameError
from ..models import ModelOutput
from .base import Method, TrainState


class JointLoss(Method):
    """One joint loss: cross-entropy of the fused logits only."""

    name = "joint"
    capturable = True  # its step is tensor functions only (mmlab.training.graph)


class Unimodal(Method):
    """Unimodal: a single modality's encoder and classifier, trained alone."""

    name = "unimodal"
    capturable = True

    def __init__(self, modality: str):
        self.modality = modality

    def modalities(self, available: Sequence[str]) -> list[str]:
        if self.modality not in available:
            raise UnknownNameError("modality", self.modality, available)
        return [self.modality]


class UniformBaseline(Method):
    """Uniform baseline: multimodal CE plus each modality's unimodal CE, weights 1."""

    name = "uniform"
    needs_unimodal_heads = True
    capturable = True

    def losses(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> dict[str, torch.Tensor]:
        terms = {"multimodal": F.cross_entropy(output.logits, labels)}
        for m, logits in output.unimodal_logits.items():
            terms[f"unimodal/{m}"] = F.cross_entropy(logits, labels)
        return terms
