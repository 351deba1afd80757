"""CML, Calibrating Multimodal Learning (Ma et al., ICML 2023), chapter 4: a prediction made from fewer modalities
must not be *more confident* than the one made from all of them.

Ma et al. observe that a multimodal classifier trained jointly is often more confident with a modality removed than
with every modality present -- the dominant modality alone already saturates the softmax, and the other one only
disturbs it. CML adds a penalty on exactly that: with ``conf(x) = max_k softmax(f(x))_k``,

    L_conf = max(0, sum_i [conf(f_{-r}(x_i)) - conf(f(x_i))]),

where ``f_{-r}`` is the fused prediction with modality ``r``'s features set to zero (under late fusion: its share of
the logits removed, the bias kept), and the removed prediction is also trained on the labels. The loss is

    L = mean(CE(f(x), y), CE(f_{-r}(x), y)) + lambda * L_conf .

With more than two modalities they are removed one after another, each reduced prediction compared with the one
before it. The rule is read from BalanceBenchmark's ``CMLTrainer`` (GeWu-Lab/BalanceBenchmark): the removal order is
drawn at random once per epoch (here from the run's own generator, so a resumed run draws the same), the penalty is
the batch *sum* clipped at zero as a whole (not per sample), and ``lambda`` is 0.1 (its configuration). The paper's
equation numbers are not cited: the book could not check them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models import ModelOutput
from .base import Method, TrainState


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """Each sample's confidence: the largest softmax probability (in float32 at least, under bf16 autocast too)."""
    return torch.softmax(logits, 1, dtype=torch.promote_types(logits.dtype, torch.float32)).max(1).values


def confidence_penalty(full_logits: torch.Tensor, reduced_logits: torch.Tensor) -> torch.Tensor:
    """CML's regulariser ``max(0, sum_i [conf(reduced_i) - conf(full_i)])``: positive when, over the batch, the
    prediction with a modality removed is the more confident one."""
    return torch.clamp((confidence(reduced_logits) - confidence(full_logits)).sum(), min=0.0)


class CML(Method):
    """CML: the fused loss and the loss with a modality removed, plus a penalty on the removed prediction's excess
    confidence (Ma et al., ICML 2023; the rule as in BalanceBenchmark's CMLTrainer)."""

    name = "cml"

    def __init__(self, lam: float = 0.1):
        if not lam >= 0:
            raise ValueError(f"CML's lam must be >= 0, got {lam!r}")
        self.lam = float(lam)
        self.removal_order: list[str] = []

    def on_epoch_start(self, state: TrainState) -> None:
        names = list(state.model.modalities)
        order = torch.randperm(len(names), generator=state.generator, device=state.device).tolist()
        self.removal_order = [names[k] for k in order][:len(names) - 1]

    def losses(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> dict[str, torch.Tensor]:
        terms = {"multimodal": F.cross_entropy(output.logits, labels)}
        kept, previous, removed = dict(output.features), output.logits, []
        penalty = output.logits.new_zeros(())
        for modality in self.removal_order:
            kept[modality] = torch.zeros_like(kept[modality])
            removed.append(modality)
            reduced = state.model.fusion(kept)
            terms[f"without/{'+'.join(removed)}"] = F.cross_entropy(reduced, labels)
            penalty = penalty + confidence_penalty(previous, reduced)
            previous = reduced
        terms["confidence"] = penalty
        return terms

    def total_loss(self, losses: dict[str, torch.Tensor], state: TrainState) -> torch.Tensor:
        classification = torch.stack([v for k, v in losses.items() if k != "confidence"]).mean()
        return classification + self.lam * losses["confidence"]
