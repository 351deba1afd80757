"""CGGM: classifier-guided gradient modulation (Guo, Jin, Chen & Zhao, NeurIPS 2024), chapter 3.

Each modality gets a unimodal classifier on its *detached* features (it watches the encoder, it does not train it).
Its accuracy on the batch, against the previous batch's, says how fast the modality is improving:
``d_m = acc_m(t) - acc_m(t-1)``. Two things follow from the improvements:

* **magnitude** -- each encoder's gradient is multiplied by ``rho * B_m`` with
  ``B_m = (sum_j d_j - d_m) / sum_j d_j`` (:func:`improvement_coefficients`): the modality that improved most
  gets the smallest factor (for two modalities ``B_a = d_v / (d_a + d_v)``);
* **direction** -- a loss pulls the fused head towards the classifiers' heads, weighted by the same coefficients,
  ``L_gm = (sum_m |B_m| - sum_m B_m cos(W^m, W^m_cls)) / M`` (:func:`direction_loss`), added with weight ``lambda``
  to the fused cross-entropy.

Read from the authors' code (zrguo/CGGM, ``src/*train.py``), with three adaptations, all named here:

* the authors' fused head and classifiers both end in a layer over features of one size, so their cosine compares
  the two heads' whole weights; under concatenation fusion the fused head's block ``W^m`` (the columns that multiply
  ``z^m``, chapter 1) is the part that reads modality ``m``, and it is what is compared with classifier ``m``'s
  weights (as there, the classifiers' weights get no gradient from ``L_gm``);
* the authors add the direction loss computed at the previous step (its graph kept over the optimiser step) to this
  step's loss; here it is computed from the previous step's coefficients and the current weights;
* the classifiers are the model's unimodal heads, trained on detached features by the run's own optimiser (the
  authors give them an optimiser of their own, with half the learning rate); what they report per modality is the
  loop's ``acc/<m>``.

As in the authors' code, the coefficients are not clipped (``sum_j d_j`` near zero makes them large, or negative),
and the whole model's gradient is then clipped to the norm ``max_grad_norm`` (their 0.8), which is what keeps such
steps bounded. ``rho = 1.3`` and ``lambda = 0.05`` are the defaults of their Food-101 script. The paper's equation
numbers are not cited: the book could not check them against its text.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models import ModelOutput
from .base import Method, TrainState

#: the authors' guard against a zero sum of improvements
IMPROVEMENT_EPS = 1e-8


def improvement_coefficients(improvements: torch.Tensor) -> torch.Tensor:
    """CGGM's magnitude coefficients ``B_m = (sum_j d_j - d_m) / sum_j d_j`` for the modalities' accuracy
    improvements ``d`` (``[M]``). They sum to ``M - S / (S + eps)`` with ``S = sum_j d_j``: ``M - 1`` unless the
    improvements cancel; for ``S > 0`` the modality that improved most gets the least."""
    total = improvements.sum() + IMPROVEMENT_EPS
    return (total - improvements) / total


def direction_loss(coefficients: torch.Tensor, fused_blocks: list[torch.Tensor],
                   classifier_weights: list[torch.Tensor]) -> torch.Tensor:
    """``(sum_m |B_m| - sum_m B_m cos(W^m, W^m_cls)) / M``: zero when every fused block points where its classifier
    does (``cos = 1``, for non-negative ``B``); the classifiers' weights are read without gradient."""
    cosines = torch.stack([F.cosine_similarity(w.flatten(), c.detach().flatten(), dim=0)
                           for w, c in zip(fused_blocks, classifier_weights)])
    return (coefficients.abs().sum() - (coefficients * cosines).sum()) / len(fused_blocks)


class CGGM(Method):
    """CGGM: classifier-guided gradient modulation (Guo et al., NeurIPS 2024)."""

    name = "cggm"
    needs_unimodal_heads = True  # the classifiers (trained on detached features)

    def __init__(self, rho: float = 1.3, direction_weight: float = 0.05, max_grad_norm: float = 0.8):
        if not rho > 0:
            raise ValueError(f"CGGM's rho must be positive, got {rho!r}")
        if direction_weight < 0:
            raise ValueError(f"CGGM's direction_weight must be >= 0, got {direction_weight!r}")
        if not max_grad_norm > 0:
            raise ValueError(f"CGGM's max_grad_norm must be positive, got {max_grad_norm!r}")
        self.rho = float(rho)
        self.direction_weight = float(direction_weight)
        self.max_grad_norm = float(max_grad_norm)
        self.previous_accuracy: torch.Tensor | None = None  # acc_m(t-1), 0 before the first step (as the authors)
        self.coefficients: torch.Tensor | None = None  # B_m of the previous step (no direction loss before one)

    def setup(self, state: TrainState) -> None:
        self.modality_order = list(state.model.modalities)
        self.previous_accuracy = torch.zeros(len(self.modality_order), device=state.device)

    def losses(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> dict[str, torch.Tensor]:
        terms = {"multimodal": F.cross_entropy(output.logits, labels)}
        heads = state.model.unimodal_heads
        for m in self.modality_order:  # on detached features: the loss reaches the classifier only
            terms[f"unimodal/{m}"] = F.cross_entropy(heads[m](output.features[m].detach()), labels)
        if self.coefficients is not None and self.direction_weight > 0:
            fusion = state.model.fusion
            weight = fusion.linear.weight
            blocks = [weight[:, cols] for cols in fusion.modality_columns().values()]
            terms["direction"] = direction_loss(self.coefficients, blocks,
                                                [heads[m].weight for m in self.modality_order])
        return terms

    def total_loss(self, losses: dict[str, torch.Tensor], state: TrainState) -> torch.Tensor:
        total = losses["multimodal"] + sum(losses[f"unimodal/{m}"] for m in self.modality_order)
        if "direction" in losses:
            total = total + self.direction_weight * losses["direction"]
        return total

    def transform_gradients(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> None:
        with torch.no_grad():
            # the forward pass's unimodal logits: the classifiers' own, on the same (not detached) features
            accuracy = torch.stack([(output.unimodal_logits[m].argmax(1) == labels).float().mean()
                                    for m in self.modality_order])
            coefficients = improvement_coefficients(accuracy - self.previous_accuracy)
            self.previous_accuracy = accuracy
            self.coefficients = coefficients
            # how often the rule runs away: a coefficient beyond 10 in size (the improvements nearly cancelled)
            state.log("train/cggm_large_coefficient", (coefficients.abs().max() > 10).float())
            for m, b in zip(self.modality_order, coefficients):
                state.log(f"train/cggm_coefficient/{m}", b)
                grads = [p.grad for p in state.groups.encoders[m] if p.grad is not None]
                if grads:
                    torch._foreach_mul_(grads, self.rho * b)
            model_params = [p for ps in state.groups.encoders.values() for p in ps] + state.groups.fusion
            torch.nn.utils.clip_grad_norm_(model_params, self.max_grad_norm)  # not the classifiers' (as theirs)

    def state_dict(self) -> dict:
        return {"previous_accuracy": self.previous_accuracy.clone(),
                "coefficients": None if self.coefficients is None else self.coefficients.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.previous_accuracy = state["previous_accuracy"].to(self.previous_accuracy.device)
        coefficients = state["coefficients"]
        self.coefficients = None if coefficients is None else coefficients.to(self.previous_accuracy.device)
