"""Unimodal pre-training, then multimodal fine-tuning: the two-stage baseline of MMPareto's
CREMA-D table (Wei & Hu, ICML 2024, Sec. 5.1 and Table 1: "fine-tunes the multimodal model
with individually pre-trained unimodal encoders"). Chapter 1 explains it beside the one-stage
baselines.

One run, two stages, in the one training loop:

* **pre-training** (epochs ``0 .. pretrain_epochs - 1``): the loss is ``sum_m L_u^m``, each
  modality's cross-entropy from its own unimodal head. The encoders and heads of different
  modalities share no parameter, so this trains each modality's model as if alone (the fused
  head receives no gradient and stays at its initialisation);
* **fine-tuning** (the rest): the encoders are trained by the fused cross-entropy ``L_mm`` only,
  from a fresh optimiser state (the momentum of the pre-training is dropped, as a second
  training script would start). The unimodal heads keep learning on the *detached* features: a
  linear classifier of the encoder as it is, trained online. (MMPareto's note measures the
  per-modality accuracy of a model without unimodal predictions with a linear classifier
  fine-tuned afterwards on the frozen final encoder; chapter 1 says where the two differ.)

The stages share the run's learning-rate schedule and its number of epochs (the paper does not
say how long each stage was; the default gives each half).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..models import ModelOutput
from .base import TrainState, first_stage_epochs
from .baselines import UniformBaseline


class PretrainFinetune(UniformBaseline):
    """Unimodal pre-training, then multimodal fine-tuning (MMPareto, Table 1's two-stage baseline)."""

    name = "pretrain_finetune"

    def __init__(self, pretrain_epochs: int | None = None):
        if pretrain_epochs is not None and (not isinstance(pretrain_epochs, int) or pretrain_epochs < 1):
            raise ValueError(f"pretrain_epochs must be a whole number of epochs >= 1 (or None: half the run), "
                             f"got {pretrain_epochs!r}")
        self.pretrain_epochs = pretrain_epochs
        self.stage_epochs = 0  # pre-training epochs of this run, set by setup

    def setup(self, state: TrainState) -> None:
        self.stage_epochs = first_stage_epochs("pretrain_finetune", "pretrain_epochs", self.pretrain_epochs,
                                               state.num_epochs)

    def pretraining(self, state: TrainState) -> bool:
        return state.epoch < self.stage_epochs

    def on_epoch_start(self, state: TrainState) -> None:
        if state.epoch == self.stage_epochs and state.optimizer is not None:
            state.optimizer.state.clear()  # fine-tuning starts with no momentum

    def losses(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> dict[str, torch.Tensor]:
        if self.pretraining(state):
            return super().losses(output, labels, state)
        heads = state.model.unimodal_heads
        terms = {"multimodal": F.cross_entropy(output.logits, labels)}
        for m, z in output.features.items():  # the heads learn, the encoders do not hear them
            terms[f"unimodal/{m}"] = F.cross_entropy(heads[m](z.detach()), labels)
        return terms

    def total_loss(self, losses: dict[str, torch.Tensor], state: TrainState) -> torch.Tensor:
        if self.pretraining(state):
            return torch.stack([v for k, v in losses.items() if k != "multimodal"]).sum()
        return torch.stack(list(losses.values())).sum()

    def on_epoch_end(self, state: TrainState, evaluate) -> dict[str, float]:
        return {"train/pretraining": float(self.pretraining(state))}

    def state_dict(self) -> dict[str, Any]:
        return {"stage_epochs": self.stage_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["stage_epochs"] != self.stage_epochs:
            raise ValueError(f"the checkpoint pre-trained for {state['stage_epochs']} epochs, this run for "
                             f"{self.stage_epochs}")
